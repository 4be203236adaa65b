package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// These tests pin down the retry and failover rules with scripted servers;
// everything else is tested against real clusters (client_test.go).

var fast = Retry{Attempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

// scripted answers each request with the next status of codes (the last
// one repeats) and counts requests.
func scripted(t *testing.T, codes ...int) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		code := codes[min(i, len(codes)-1)]
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Dispatcher-Node", "n1")
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(code)
			io.WriteString(w, `{"errors":["Service temporarily unavailable due to an ongoing leader election. Please refresh."]}`)
			return
		}
		w.WriteHeader(code)
		switch {
		case code >= 400:
			io.WriteString(w, `{"errors":["first","second"]}`)
		case r.URL.Path == "/v1/jobs" && r.Method == http.MethodPost:
			io.WriteString(w, `{"jobid":"0123456789abcdef0123456789abcdef"}`)
		default:
			io.WriteString(w, `{"id":"n1","http_address":"127.0.0.1:1","term":3}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func newTest(t *testing.T, addrs ...string) *Client {
	t.Helper()
	c, err := New(Config{Addresses: addrs, Token: "t", Retry: fast})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// closedAddr is an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestGetRetries503ThenSucceeds(t *testing.T) {
	srv, n := scripted(t, 503, 503, 200)
	l, err := newTest(t, srv.URL).Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.ID != "n1" || l.Term != 3 || n.Load() != 3 {
		t.Fatalf("leader %+v after %d requests", l, n.Load())
	}
	if l.Meta.Node != "n1" || !strings.Contains(string(l.Raw), `"term":3`) {
		t.Fatalf("meta %+v", l.Meta)
	}
}

func TestGetGivesUpAfterAttemptsWithTheServersMessage(t *testing.T) {
	srv, n := scripted(t, 503)
	_, err := newTest(t, srv.URL).Leader(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 503 || !strings.Contains(ae.Errors[0], "leader election") || ae.RetryAfter != time.Second {
		t.Fatalf("err %v (%#v)", err, err)
	}
	if n.Load() != int32(fast.Attempts) {
		t.Fatalf("%d requests, want %d", n.Load(), fast.Attempts)
	}
}

func TestWriteWithoutIDIsNotRetriedOn503(t *testing.T) {
	srv, n := scripted(t, 503, 202)
	_, err := newTest(t, srv.URL).SubmitJob(context.Background(), []byte(`{"name":"x"}`))
	if StatusCode(err) != 503 || n.Load() != 1 {
		t.Fatalf("err %v after %d requests; want one 503", err, n.Load())
	}
}

func TestWriteWithClientChosenIDIsRetried(t *testing.T) {
	srv, n := scripted(t, 503, 202)
	res, err := newTest(t, srv.URL).SubmitJob(context.Background(), []byte(`{"name":"x","jobId":"0123456789abcdef0123456789abcdef"}`))
	if err != nil || res.JobID != "0123456789abcdef0123456789abcdef" || n.Load() != 2 {
		t.Fatalf("%+v %v after %d requests", res, err, n.Load())
	}
	// Savepoints and stops with a trigger id too.
	srv2, n2 := scripted(t, 503, 202)
	if _, err := newTest(t, srv2.URL).TriggerSavepoint(context.Background(), "0123456789abcdef0123456789abcdef", SavepointRequest{TriggerID: NewID()}); err != nil || n2.Load() != 2 {
		t.Fatalf("savepoint: %v after %d requests", err, n2.Load())
	}
}

func TestOtherErrorsAreNotRetried(t *testing.T) {
	srv, n := scripted(t, 404, 200)
	_, err := newTest(t, srv.URL).Leader(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 404 || strings.Join(ae.Errors, ",") != "first,second" || n.Load() != 1 {
		t.Fatalf("err %v after %d requests", err, n.Load())
	}
	if ae.Error() != "404: first; second" || !IsNotFound(err) {
		t.Fatalf("message %q", ae.Error())
	}
}

func TestUnauthorizedSaysWhy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer right" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dispatcher"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"jobs":[]}`)
	}))
	defer srv.Close()
	_, err := newTest(t, srv.URL).ListJobs(context.Background())
	if StatusCode(err) != 401 || !strings.Contains(err.Error(), "token") {
		t.Fatalf("err %v", err)
	}
}

func TestDeadAddressFallsOverEvenForWrites(t *testing.T) {
	srv, n := scripted(t, 202)
	c := newTest(t, closedAddr(t), srv.URL)
	// A dial failure cannot have reached a server: safe for any call.
	if _, err := c.SubmitJob(context.Background(), []byte(`{"name":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Fatalf("%d requests", n.Load())
	}
	// The node that answered is tried first from now on.
	if got := c.preferred.Load(); got != 1 {
		t.Fatalf("preferred %d, want 1", got)
	}
}

func TestBrokenConnectionAfterSendingMovesOnlyIdempotentCalls(t *testing.T) {
	// The first node takes the request and drops the connection.
	var dropped atomic.Int32
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dropped.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer bad.Close()
	good, n := scripted(t, 202)

	c := newTest(t, bad.URL, good.URL)
	_, err := c.SubmitJob(context.Background(), []byte(`{"name":"x"}`))
	var ce *ConnectionError
	if !errors.As(err, &ce) || n.Load() != 0 {
		t.Fatalf("a write without an id went elsewhere after reaching a node: err %v, %d requests on the other", err, n.Load())
	}
	c = newTest(t, bad.URL, good.URL)
	if _, err := c.SubmitJob(context.Background(), []byte(`{"jobId":"0123456789abcdef0123456789abcdef"}`)); err != nil || n.Load() != 1 {
		t.Fatalf("an idempotent write: %v, %d requests", err, n.Load())
	}
}

func TestNoNodeAnswers(t *testing.T) {
	c := newTest(t, closedAddr(t), closedAddr(t))
	_, err := c.Leader(context.Background())
	var ce *ConnectionError
	if !errors.As(err, &ce) || len(ce.Errs) != 2 || !strings.Contains(err.Error(), "no node answered") {
		t.Fatalf("err %v", err)
	}
}

func TestContextStopsTheBackoff(t *testing.T) {
	srv, _ := scripted(t, 503)
	c, _ := New(Config{Addresses: []string{srv.URL}, Retry: Retry{Attempts: 100, InitialBackoff: time.Second, MaxBackoff: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Leader(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	r := Retry{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for i, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		if got := r.backoff(i, 0); got != want*time.Millisecond {
			t.Errorf("attempt %d: %v, want %v", i, got, want*time.Millisecond)
		}
	}
	if got := r.backoff(0, 5*time.Second); got != time.Second {
		t.Errorf("Retry-After beyond the cap: %v", got)
	}
	if got := r.backoff(0, 500*time.Millisecond); got != 500*time.Millisecond {
		t.Errorf("Retry-After: %v", got)
	}
}

func TestAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8081":      "http://127.0.0.1:8081",
		"http://h:1/":         "http://h:1",
		"https://h.example:2": "https://h.example:2",
	} {
		if got, err := NormalizeAddress(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "ftp://h:1", "http://", "http://h:1/?x=1"} {
		if _, err := NormalizeAddress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestWithJobIDKeepsTheSpec(t *testing.T) {
	spec, err := WithJobID([]byte(`{"name":"x","vertices":[{"id":"a"}]}`), "0123456789abcdef0123456789abcdef")
	if err != nil || SpecJobID(spec) != "0123456789abcdef0123456789abcdef" || !strings.Contains(string(spec), `"vertices":[{"id":"a"}]`) {
		t.Fatalf("%s %v", spec, err)
	}
	if _, err := WithJobID([]byte(`[1]`), "x"); err == nil {
		t.Fatal("an array accepted as a spec")
	}
}
