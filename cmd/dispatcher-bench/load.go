package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// loadResult is what one load run measured.
type loadResult struct {
	ok        int             // responses with the expected status
	errs      map[string]int  // everything else, by status or error kind
	latencies []time.Duration // of the ok responses
	elapsed   time.Duration
}

func (r *loadResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r *loadResult) errCount() int {
	n := 0
	for _, v := range r.errs {
		n += v
	}
	return n
}

func (r *loadResult) errSummary() string {
	if len(r.errs) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(r.errs))
	for k := range r.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, r.errs[k]))
	}
	return strings.Join(parts, ", ")
}

// merge adds o's counts and latencies to r (for runs split in segments).
func (r *loadResult) merge(o *loadResult) {
	r.ok += o.ok
	r.elapsed += o.elapsed
	r.latencies = append(r.latencies, o.latencies...)
	if r.errs == nil {
		r.errs = map[string]int{}
	}
	for k, v := range o.errs {
		r.errs[k] += v
	}
}

// loadClient is a keep-alive client with one idle connection per worker.
func loadClient(concurrency int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

// request builds the i-th request of a worker.
type requestFunc func(ctx context.Context) (*http.Request, error)

// runLoad runs concurrency workers, each sending requests back to back
// (closed loop) until duration has passed, and records the latency of
// every response with status want. Each request has its own timeout.
func runLoad(ctx context.Context, client *http.Client, concurrency int, duration, timeout time.Duration, want int, mk requestFunc) *loadResult {
	type worker struct {
		ok   int
		lat  []time.Duration
		errs map[string]int
	}
	workers := make([]worker, concurrency)
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.errs = map[string]int{}
		w.lat = make([]time.Duration, 0, 4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				req, err := mk(rctx)
				if err != nil {
					cancel()
					w.errs["build: "+err.Error()]++
					return
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					if ctx.Err() != nil {
						return
					}
					w.errs[errKind(err)]++
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(t0)
				cancel()
				switch {
				case err != nil:
					w.errs["read body: "+errKind(err)]++
				case resp.StatusCode != want:
					w.errs[fmt.Sprintf("HTTP %d", resp.StatusCode)]++
				default:
					w.ok++
					w.lat = append(w.lat, d)
				}
			}
		}()
	}
	wg.Wait()
	res := &loadResult{errs: map[string]int{}, elapsed: time.Since(start)}
	for _, w := range workers {
		res.ok += w.ok
		res.latencies = append(res.latencies, w.lat...)
		for k, v := range w.errs {
			res.errs[k] += v
		}
	}
	return res
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset"
	case strings.Contains(err.Error(), "EOF"):
		return "EOF"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// getRequest is a GET with the bearer token (sent to the bare server too,
// so both sides parse the same request).
func getRequest(url, token string) requestFunc {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req, err
	}
}

// postJobRequest submits a fresh job each time.
func postJobRequest(url, token string, ids *jobIDs) requestFunc {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(jobSpec(ids.next())))
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	}
}

// stats are nearest-rank percentiles of a sample.
type stats struct {
	n                       int
	p50, p90, p99, max, min time.Duration
}

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return stats{n: len(s), p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s[len(s)-1], min: s[0]}
}

// percentile is the nearest-rank percentile of sorted s: the smallest value
// with at least p% of the sample at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// ms formats a duration in milliseconds with a precision that suits it.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f ms", f)
	case f >= 10:
		return fmt.Sprintf("%.1f ms", f)
	default:
		return fmt.Sprintf("%.2f ms", f)
	}
}
