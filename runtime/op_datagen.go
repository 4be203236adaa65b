package runtime

import (
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// datagen generates deterministic records: event i (0-based, over all
// subtasks) is a pure function of (seed, i), and the events are divided
// into splits like key groups (split k of S = maxParallelism holds events
// k, k+S, ...; see splits), so the job's output does not depend on the
// parallelism and a checkpoint restores at any parallelism.
//
//	words:            {"word"}                   skewed over a 100-word vocabulary
//	nexmark-bids:     {"auction","bidder","price","channel","url","dateTime","extra"}
//	nexmark-persons:  {"id","name","emailAddress","creditCard","city","state","dateTime","extra"}
//	nexmark-auctions: {"id","itemName","description","initialBid","reserve","dateTime","expires","seller","category","extra"}
//
// Nexmark ids and times follow the Nexmark generator's shape (ids from 1000,
// 2% persons / 6% auctions / 92% bids of the event stream, hot auctions and
// bidders, dateTime = base + event * 0.1 ms at the default 10k events/s)
// without being bit-identical to it.
type datagen struct {
	kind    string
	count   int64
	bounded bool
	seed    uint64
	limit   rateLimiter
	ctx     *OpContext
	pcg     rand.PCG
	rng     *rand.Rand
	splits  splits
}

func newDatagen(p jobgraph.Params) SourceOperator {
	d := &datagen{kind: p.StringOr("kind", jobgraph.DatagenWords), seed: uint64(p.IntOr("seed", 0)),
		limit: newRateLimiter(p.FloatOr("ratePerSecond", 0))}
	d.count, d.bounded, _ = p.Int("count")
	d.rng = rand.New(&d.pcg)
	return d
}

func (d *datagen) Open(ctx *OpContext) error {
	d.ctx = ctx
	d.splits = newSplits(ctx.KeyGroups)
	return nil
}
func (d *datagen) Close() error { return nil }

func (d *datagen) snapshotState(*Checkpoint) ([]byte, error) { return d.splits.snapshot() }
func (d *datagen) restoreState(old []oldSubtask) error       { return d.splits.restore(old) }

func (d *datagen) Run(out *Output) error {
	S := int64(d.ctx.MaxParallelism)
	gen := map[string]func(int64) Record{
		jobgraph.DatagenWords:           d.word,
		jobgraph.DatagenNexmarkBids:     d.bid,
		jobgraph.DatagenNexmarkPersons:  d.person,
		jobgraph.DatagenNexmarkAuctions: d.auction,
	}[d.kind]
	index := func(k int, j int64) (int64, bool) {
		if j > (math.MaxInt64-int64(k))/S {
			return 0, false
		}
		i := int64(k) + j*S
		return i, !d.bounded || i < d.count
	}
	return d.splits.run(out, &d.limit, index, func(i int64) error {
		d.pcg.Seed(d.seed, uint64(i))
		return out.Emit(gen(i))
	})
}

var vocabulary = []string{
	"the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
	"this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their", "one",
	"all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "stream",
	"flink", "record", "window", "state", "key", "group", "credit", "buffer", "barrier", "checkpoint", "savepoint",
	"operator", "source", "sink", "task", "slot", "node", "raft", "leader", "follower", "gossip", "member", "cluster",
	"job", "graph", "vertex", "edge", "hash", "rebalance", "forward", "broadcast", "watermark", "latency", "throughput",
	"pressure", "network", "channel", "queue", "batch", "event", "time", "count", "sum", "min", "max", "average", "query",
}

func (d *datagen) word(int64) Record {
	// Skewed: low indexes (common words) are much more frequent.
	u := d.rng.Float64()
	return Record{"word": vocabulary[int(u*u*float64(len(vocabulary)))]}
}

// Nexmark shape constants (NexmarkConfiguration defaults).
const (
	nexFirstID          = 1000
	nexProportion       = 50 // person 1 : auction 3 : bid 46
	nexInFlightAuctions = 100
	nexActivePeople     = 1000
	nexHotRatio         = 2             // hot auctions / bidders / sellers
	nexBaseTime         = 1436918400000 // 2015-07-15T00:00:00Z, ms
	nexCategories       = 5
)

func nexTime(i int64) int64 { return nexBaseTime + i/10 }

// lastPerson / lastAuction are the newest ids created before event i.
func lastPerson(i int64) int64 { return nexFirstID + i/nexProportion }
func lastAuction(i int64) int64 {
	return nexFirstID + (i/nexProportion)*3 + min(max(i%nexProportion-1, 0), 3)
}

func (d *datagen) pick(newest int64, span int64) int64 {
	lo := max(nexFirstID, newest-span)
	return lo + d.rng.Int64N(newest-lo+1)
}

var channels = []string{"Google", "Facebook", "Baidu", "Apple"}

// Each kind is its own stream; bid i, person i and auction i stand for
// event i*50/46, i*50 and i*50/3 of Nexmark's mixed stream.
func (d *datagen) bid(n int64) Record {
	i := n * nexProportion / 46
	auction := d.pick(lastAuction(i), nexInFlightAuctions)
	if d.rng.IntN(nexHotRatio) > 0 {
		auction = (lastAuction(i) / nexHotRatio) * nexHotRatio // a hot auction
	}
	bidder := d.pick(lastPerson(i), nexActivePeople)
	if d.rng.IntN(4) > 0 {
		bidder = (lastPerson(i)/4)*4 + 1 // a hot bidder
	}
	ch := d.rng.IntN(len(channels))
	price := int64(math.Pow(10, d.rng.Float64()*6) * 100)
	return Record{
		"auction": auction, "bidder": bidder, "price": price, "channel": channels[ch],
		"url":      "https://www.nexmark.com/" + strconv.FormatInt(auction, 36) + "/item.htm?query=" + strconv.Itoa(ch),
		"dateTime": nexTime(i), "extra": d.extra(32),
	}
}

var (
	firstNames = []string{"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"}
	lastNames  = []string{"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"}
	cities     = []string{"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"}
	states     = []string{"AZ", "CA", "ID", "OR", "WA", "WY"}
)

func (d *datagen) person(n int64) Record {
	i := n * nexProportion
	id := nexFirstID + n
	name := firstNames[d.rng.IntN(len(firstNames))] + " " + lastNames[d.rng.IntN(len(lastNames))]
	return Record{
		"id": id, "name": name, "emailAddress": d.extra(7) + "@" + d.extra(5) + ".com",
		"creditCard": strconv.Itoa(1000+d.rng.IntN(9000)) + " " + strconv.Itoa(1000+d.rng.IntN(9000)) + " " +
			strconv.Itoa(1000+d.rng.IntN(9000)) + " " + strconv.Itoa(1000+d.rng.IntN(9000)),
		"city": cities[d.rng.IntN(len(cities))], "state": states[d.rng.IntN(len(states))],
		"dateTime": nexTime(i), "extra": d.extra(64),
	}
}

func (d *datagen) auction(n int64) Record {
	i := n * nexProportion / 3
	id := nexFirstID + n
	seller := d.pick(lastPerson(i), nexActivePeople)
	if d.rng.IntN(4) > 0 {
		seller = (lastPerson(i)/4)*4 + 1
	}
	initial := int64(math.Pow(10, d.rng.Float64()*6) * 100)
	return Record{
		"id": id, "itemName": d.extra(12), "description": d.extra(40), "initialBid": initial,
		"reserve": initial + int64(math.Pow(10, d.rng.Float64()*6)*100), "dateTime": nexTime(i),
		"expires": nexTime(i) + 10_000 + d.rng.Int64N(20_000), "seller": seller,
		"category": int64(nexFirstID/100 + d.rng.IntN(nexCategories)), "extra": d.extra(128),
	}
}

const letters = "abcdefghijklmnopqrstuvwxyz"

func (d *datagen) extra(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[d.rng.IntN(len(letters))]
	}
	return string(b)
}
