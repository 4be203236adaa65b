package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// backpressure: what continuous back-pressure sampling costs a running job.
// One job, one cluster; measured segments alternate without and with a
// sampling loop (ABBA...), so machine noise hits both alike.

var bp struct {
	segments    int
	segment     time.Duration
	warmup      time.Duration
	refresh     time.Duration
	samples     int
	sampleDelay time.Duration
	pause       time.Duration
	parallelism int
	rate        int
}

func bpFlags(fs *flag.FlagSet) {
	fs.IntVar(&bp.segments, "segments", 8, "backpressure: measured segments (half sampled), in ABBA order")
	fs.DurationVar(&bp.segment, "segment", 8*time.Second, "backpressure: length of one measured segment")
	fs.DurationVar(&bp.warmup, "warmup", 8*time.Second, "backpressure: run time before the first segment")
	fs.DurationVar(&bp.refresh, "refresh-interval", 100*time.Millisecond, "backpressure: jobmanager.web.backpressure.refresh-interval of the nodes")
	fs.IntVar(&bp.samples, "num-samples", 100, "backpressure: jobmanager.web.backpressure.num-samples")
	fs.DurationVar(&bp.sampleDelay, "delay-between-samples", 50*time.Millisecond, "backpressure: jobmanager.web.backpressure.delay-between-samples")
	fs.DurationVar(&bp.pause, "request-pause", 20*time.Millisecond, "backpressure: pause between two GETs of the sampling loop")
	fs.IntVar(&bp.parallelism, "parallelism", 3, "backpressure: parallelism of every vertex")
	fs.IntVar(&bp.rate, "rate", 0, "backpressure: records per second per source subtask (0 = as fast as possible)")
}

func bpEstimate() time.Duration {
	sample := time.Duration(bp.samples) * bp.sampleDelay
	return 2*time.Minute + bp.warmup + time.Duration(bp.segments)*(bp.segment+sample+5*time.Second)
}

var bpVertices = []string{"src", "sq", "cnt", "out"}

func bpSpec(jobID string) []byte {
	p := bp.parallelism
	return []byte(fmt.Sprintf(`{"name":"bench-backpressure","jobId":"%s","vertices":[
		{"id":"src","operator":"sequence","parallelism":%d,"params":{"from":1,"ratePerSecond":%d}},
		{"id":"sq","operator":"map","parallelism":%d,"inputs":[{"from":"src","ship":"forward"}],"params":{"expr":"{\"k\": n %% 10000, \"sq\": n * n}"}},
		{"id":"cnt","operator":"count","parallelism":%d,"inputs":[{"from":"sq","ship":"hash","key":"k"}]},
		{"id":"out","operator":"discard","parallelism":%d,"inputs":[{"from":"cnt","ship":"rebalance"}]}]}`,
		jobID, p, bp.rate, p, p, p))
}

// sinkRecords is the records the sink vertex has read so far.
func sinkRecords(ctx context.Context, api *apiClient, n *node, jobID string) (int64, string, error) {
	code, body, err := api.get(ctx, n, "/v1/jobs/"+jobID, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	if code != http.StatusOK {
		return 0, "", fmt.Errorf("GET job: %d %s", code, firstError(body))
	}
	var j struct {
		State    string `json:"state"`
		Vertices []struct {
			ID      string `json:"id"`
			Metrics struct {
				ReadRecords int64 `json:"read-records"`
			} `json:"metrics"`
		} `json:"vertices"`
	}
	if err := json.Unmarshal(body, &j); err != nil {
		return 0, "", err
	}
	for _, v := range j.Vertices {
		if v.ID == "out" {
			return v.Metrics.ReadRecords, j.State, nil
		}
	}
	return 0, j.State, fmt.Errorf("no sink vertex")
}

type bpSegment struct {
	sampled  bool
	rate     float64 // sink records per second
	cpu      float64 // node CPU seconds per second
	perCPU   float64 // records per node CPU-second
	gets     int64
	sampling int64 // answers that said a sample was in progress
	levels   map[string]string
}

func runBackPressureCost(ctx context.Context, o options, dir string) error {
	cfgPath := filepath.Join(dir, "backpressure.yaml")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	cfg := fmt.Sprintf("jobmanager.web.backpressure.refresh-interval: %d\njobmanager.web.backpressure.num-samples: %d\njobmanager.web.backpressure.delay-between-samples: %d\n",
		bp.refresh.Milliseconds(), bp.samples, bp.sampleDelay.Milliseconds())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o640); err != nil {
		return err
	}
	o.nodeArgs = append(append(stringList{}, o.nodeArgs...), "--config="+cfgPath)
	fmt.Printf("settings: 3 nodes, job sequence(p=%d, rate %d/subtask, 0 = unbounded) → map → hash → count(10,000 keys) → discard\n", bp.parallelism, bp.rate)
	fmt.Printf("  sampling: refresh-interval %s, num-samples %d, delay-between-samples %s; the loop GETs /v1/jobs/:id/vertices/:vid/backpressure\n", bp.refresh, bp.samples, bp.sampleDelay)
	fmt.Printf("  for every vertex in turn, on every node in turn, %s apart; %d segments of %s (ABBA), warm-up %s;\n", bp.pause, bp.segments, bp.segment, bp.warmup)
	fmt.Printf("  an unsampled segment starts only after the last sample has run out (num-samples × delay + 1 s).\n")
	api := newAPIClient(o.token)
	c, leader, err := startCluster(ctx, o, dir, api)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	jobID := newJobIDs().next()
	code, body, err := api.do(ctx, http.MethodPost, c.node(leader).url()+"/v1/jobs", bpSpec(jobID), 10*time.Second)
	if err != nil || code != http.StatusAccepted {
		return fmt.Errorf("submit: %d %s %v", code, firstError(body), err)
	}
	if _, err := waitRunning(ctx, api, c.node(leader), jobID, time.Minute); err != nil {
		return err
	}
	fmt.Printf("  job %s RUNNING; warming up\n", jobID)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(bp.warmup):
	}
	reader := c.nodes[0]
	sampleSpan := time.Duration(bp.samples)*bp.sampleDelay + time.Second

	var segs []bpSegment
	prevSampled := false
	for i := 0; i < bp.segments && ctx.Err() == nil; i++ {
		sampled := i%4 == 1 || i%4 == 2 // A B B A
		var gets, inProgress atomic.Int64
		var mu sync.Mutex
		levels := map[string]string{}
		lctx, stopLoop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		if sampled {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; lctx.Err() == nil; k++ {
					n := c.nodes[k%len(c.nodes)]
					v := bpVertices[k%len(bpVertices)]
					code, body, err := api.get(lctx, n, "/v1/jobs/"+jobID+"/vertices/"+v+"/backpressure", 2*time.Second)
					if err == nil && code == http.StatusOK {
						gets.Add(1)
						var b struct {
							Level    string `json:"backpressureLevel"`
							Sampling bool   `json:"sampling"`
						}
						if json.Unmarshal(body, &b) == nil {
							if b.Sampling {
								inProgress.Add(1)
							}
							mu.Lock()
							if b.Level != "" {
								levels[v] = b.Level
							}
							mu.Unlock()
						}
					}
					select {
					case <-lctx.Done():
					case <-time.After(bp.pause):
					}
				}
			}()
			// Let the first samples start.
			time.Sleep(time.Second)
		} else if prevSampled {
			time.Sleep(sampleSpan)
		}
		r0, _, err := sinkRecords(ctx, api, reader, jobID)
		if err != nil {
			stopLoop()
			wg.Wait()
			return err
		}
		c0 := takeCPU(c)
		time.Sleep(bp.segment)
		r1, state, err := sinkRecords(ctx, api, reader, jobID)
		c1 := takeCPU(c)
		stopLoop()
		wg.Wait()
		if err != nil {
			return err
		}
		if state != "RUNNING" {
			return fmt.Errorf("the job is %s", state)
		}
		el := c1.at.Sub(c0.at).Seconds()
		cpu := 0.0
		for id, v := range c1.nodes {
			cpu += v - c0.nodes[id]
		}
		s := bpSegment{sampled: sampled, rate: float64(r1-r0) / el, cpu: cpu / el, gets: gets.Load(), sampling: inProgress.Load(), levels: levels}
		if cpu > 0 {
			s.perCPU = float64(r1-r0) / cpu
		}
		segs = append(segs, s)
		fmt.Printf("  segment %d sampled=%-5v %9.0f rec/s  nodes %.2f cores  %9.0f rec/cpu-s  GETs %d (sampling in progress in %d)  levels %v\n",
			i+1, sampled, s.rate, s.cpu, s.perCPU, s.gets, s.sampling, s.levels)
		prevSampled = sampled
	}
	printBPCost(segs)
	reportHealth(c)
	return ctx.Err()
}

func printBPCost(segs []bpSegment) {
	var on, off, onCPU, offCPU []float64
	for _, s := range segs {
		if s.sampled {
			on, onCPU = append(on, s.rate), append(onCPU, s.perCPU)
		} else {
			off, offCPU = append(off, s.rate), append(offCPU, s.perCPU)
		}
	}
	if len(on) == 0 || len(off) == 0 {
		return
	}
	mean := func(xs []float64) float64 {
		t := 0.0
		for _, x := range xs {
			t += x
		}
		return t / float64(len(xs))
	}
	spread := func(xs []float64) string {
		s := append([]float64(nil), xs...)
		sort.Float64s(s)
		return fmt.Sprintf("%.0f–%.0f", s[0], s[len(s)-1])
	}
	fmt.Println("\nback-pressure sampling cost:")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tsegments\tmean rec/s\trange\tmean rec/cpu-s\trange\t")
	fmt.Fprintf(tw, "not sampled\t%d\t%.0f\t%s\t%.0f\t%s\t\n", len(off), mean(off), spread(off), mean(offCPU), spread(offCPU))
	fmt.Fprintf(tw, "sampled continuously\t%d\t%.0f\t%s\t%.0f\t%s\t\n", len(on), mean(on), spread(on), mean(onCPU), spread(onCPU))
	tw.Flush()
	drop := 100 * (1 - mean(on)/mean(off))
	dropCPU := 100 * (1 - mean(onCPU)/mean(offCPU))
	fmt.Printf("relative drop of throughput: %.1f%% (goal < 2%%: %s); of records per node CPU-second: %.1f%%\n", drop, yesNo(drop < 2), dropCPU)
	// Each ABBA block compares neighbours, which cancels slow drift in
	// what the rest of the machine takes.
	var blocks []float64
	for i := 0; i+4 <= len(segs); i += 4 {
		a := segs[i].rate + segs[i+3].rate
		b := segs[i+1].rate + segs[i+2].rate
		if a > 0 {
			blocks = append(blocks, 100*(1-b/a))
		}
	}
	if len(blocks) > 0 {
		sorted := append([]float64(nil), blocks...)
		sort.Float64s(sorted)
		fmt.Printf("drop per ABBA block: %s%% (median %.1f%%)\n", fmtFloats(blocks), sorted[len(sorted)/2])
	}
}

func fmtFloats(xs []float64) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%.1f", x)
	}
	return out
}
