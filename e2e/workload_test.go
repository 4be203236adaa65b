//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
)

// jobSpec is a cheap unbounded job: one record a second into discard. Each
// job has its own name (its own Habitat service group), and a restart
// strategy so a killed node does not fail it.
func jobSpec(id string) []byte {
	b, _ := json.Marshal(map[string]any{
		"name":            "e2e-" + id[:12],
		"jobId":           id,
		"parallelism":     1,
		"restartStrategy": map[string]any{"type": "fixed-delay", "attempts": 100, "delay": "500ms"},
		"vertices": []map[string]any{
			{"id": "src", "operator": "sequence", "params": map[string]any{"from": 1, "ratePerSecond": 1}},
			{"id": "out", "operator": "discard", "inputs": []map[string]any{{"from": "src"}}},
		},
	})
	return b
}

func newJobID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// opRecord is an operation with its outcome, kept for the statistics next
// to the porcupine history.
type opRecord struct {
	Kind   opKind
	Call   int64
	Return int64
	Failed bool // not a definite answer (error, timeout, 5xx) or a read that failed
}

// history records operations from every client.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	recs  []opRecord
	acked map[string]int64 // job id -> return time of its first 202
	// unexpected answers (e.g. a 400 or 500): findings, listed in the report.
	unexpected []string
}

func newHistory() *history {
	return &history{start: time.Now(), acked: map[string]int64{}}
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

// unknownReturn is the return time of an operation whose outcome is not
// known: it may take effect any time after its call.
const unknownReturn = int64(1) << 62

func (h *history) add(client int, in opInput, call int64, out opOutput, ret int64, failed, record bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, opRecord{Kind: in.Kind, Call: call, Return: ret, Failed: failed})
	if !record {
		return
	}
	r := ret
	if out.Result == resUnknown {
		r = unknownReturn
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: r})
	if in.Kind == opSubmit && out.Result == resOK {
		if _, ok := h.acked[in.Job]; !ok {
			h.acked[in.Job] = ret
		}
	}
}

func (h *history) note(format string, args ...any) {
	at := time.Duration(h.now()).Round(time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.unexpected) < 50 {
		h.unexpected = append(h.unexpected, fmt.Sprintf("+%v (%s) ", at, time.Now().UTC().Format("15:04:05.000"))+fmt.Sprintf(format, args...))
	}
}

func (h *history) snapshot() ([]porcupine.Operation, []opRecord, map[string]int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	acked := make(map[string]int64, len(h.acked))
	for k, v := range h.acked {
		acked[k] = v
	}
	return append([]porcupine.Operation(nil), h.ops...), append([]opRecord(nil), h.recs...), acked
}

// actor performs recorded operations against one base URL.
type actor struct {
	c    *cluster
	h    *history
	id   int
	base string
	hc   *http.Client
}

func newActor(c *cluster, h *history, id int, base string, timeout time.Duration) *actor {
	return &actor{c: c, h: h, id: id, base: base, hc: &http.Client{
		Timeout: timeout,
		// One connection per request: a connection the load balancer
		// closed after a restart cannot turn a write into an unknown.
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext},
	}}
}

// neverSent tells whether the request cannot have reached any server.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// fromDispatcher tells whether a node (not haproxy) produced the answer.
func fromDispatcher(r *httpResult) bool { return r.Header.Get("X-Dispatcher-Node") != "" }

// do runs one operation and records it; it returns the outcome.
func (a *actor) do(ctx context.Context, kind opKind, job string) opOutput {
	in := opInput{Kind: kind, Job: job}
	var (
		method, url string
		body        []byte
	)
	switch kind {
	case opSubmit:
		method, url, body = "POST", a.base+"/v1/jobs", jobSpec(job)
	case opGet:
		method, url = "GET", a.base+"/v1/jobs/"+job+"?consistent=true"
	case opCancel:
		method, url = "PATCH", a.base+"/v1/jobs/"+job+"?mode=cancel"
	}
	call := a.h.now()
	r, err := a.c.request(ctx, a.hc, method, url, body)
	ret := a.h.now()
	out := opOutput{Result: resUnknown}
	switch {
	case err != nil:
		out.Raw = "error: " + err.Error()
		if len(out.Raw) > 120 {
			out.Raw = out.Raw[:120]
		}
		// A request that never left, or a read that failed, changes nothing.
		a.h.add(a.id, in, call, out, ret, true, kind != opGet && !neverSent(err))
		return out
	case r.Status >= 500 || r.Status == 429:
		out.Raw = fmt.Sprintf("%d", r.Status)
		if r.Status == 500 {
			a.h.note("%s %s: 500 from %s (forwarded by %q) %s", method, url, r.Header.Get("X-Dispatcher-Node"), r.Header.Get("X-Dispatcher-Forwarded-By"), r.Body)
		}
		// haproxy's own 503 (no server) never reached a node.
		sent := fromDispatcher(r) || r.Status != http.StatusServiceUnavailable
		a.h.add(a.id, in, call, out, ret, true, kind != opGet && sent)
		return out
	}
	out.Raw = fmt.Sprintf("%d", r.Status)
	switch kind {
	case opGet:
		switch r.Status {
		case 200:
			var j struct {
				State string `json:"state"`
			}
			if json.Unmarshal(r.Body, &j) != nil || j.State == "" {
				a.h.note("GET %s: unparseable body %.200s", url, r.Body)
				a.h.add(a.id, in, call, out, ret, true, false)
				return out
			}
			out.Result, out.State, out.Raw = resOK, observedState(j.State), j.State
		case 404:
			out.Result, out.State, out.Raw = resOK, stAbsent, "404"
		default:
			a.h.note("GET %s: %d %.200s", url, r.Status, r.Body)
			a.h.add(a.id, in, call, out, ret, true, false)
			return out
		}
	case opSubmit:
		switch r.Status {
		case 202:
			out.Result = resOK
		case 409:
			out.Result = resConflict
			a.h.note("POST %s (%s): 409 %.200s", url, job, r.Body)
		default:
			a.h.note("POST %s (%s): %d %.200s", url, job, r.Status, r.Body)
			a.h.add(a.id, in, call, out, ret, true, false)
			return out
		}
	case opCancel:
		switch r.Status {
		case 202:
			out.Result = resOK
		case 409:
			out.Result = resConflict
		case 404:
			out.Result = resNotFound
		default:
			a.h.note("PATCH %s: %d %.200s", url, r.Status, r.Body)
			a.h.add(a.id, in, call, out, ret, true, false)
			return out
		}
	}
	a.h.add(a.id, in, call, out, ret, false, true)
	return out
}

// workload runs clients that submit, read and cancel jobs from a shared
// window of job ids, so that several clients work on each id at once.
type workload struct {
	c       *cluster
	h       *history
	clients int
	window  int
	mu      sync.Mutex
	keys    []string
	rng     *mrand.Rand
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	stopped atomic.Bool
}

func newWorkload(c *cluster, h *history, clients, window int, seed int64) *workload {
	w := &workload{c: c, h: h, clients: clients, window: window, rng: mrand.New(mrand.NewSource(seed))}
	for range window {
		w.keys = append(w.keys, newJobID())
	}
	return w
}

// pick returns a job id of the window and, now and then, an id it retired
// (the caller cancels it, so retired jobs do not pile up in the slots).
func (w *workload) pick() (key, retired string, kind opKind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rng.Float64() < 0.04 {
		retired = w.keys[0]
		w.keys = append(w.keys[1:], newJobID())
	}
	key = w.keys[w.rng.Intn(len(w.keys))]
	switch p := w.rng.Float64(); {
	case p < 0.35:
		kind = opSubmit
	case p < 0.80:
		kind = opGet
	default:
		kind = opCancel
	}
	return key, retired, kind
}

func (w *workload) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for i := range w.clients {
		a := newActor(w.c, w.h, i, w.c.lb, 15*time.Second)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.client(ctx, a)
		}()
	}
}

func (w *workload) client(ctx context.Context, a *actor) {
	rng := mrand.New(mrand.NewSource(int64(a.id) + 1))
	for ctx.Err() == nil {
		key, retired, kind := w.pick()
		if retired != "" {
			a.retire(context.Background(), retired)
		}
		out := a.do(context.Background(), kind, key)
		pause := time.Duration(40+rng.Intn(80)) * time.Millisecond
		if out.Result == resUnknown {
			pause = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// retire cancels a job until the answer is definite (bounded).
func (a *actor) retire(ctx context.Context, job string) {
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		if out := a.do(ctx, opCancel, job); out.Result != resUnknown {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (w *workload) stop() {
	if w.stopped.Swap(true) {
		return
	}
	w.cancel()
	w.wg.Wait()
}
