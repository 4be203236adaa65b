// Package client is the Go client of the dispatcher's HTTP API: Flink's
// REST routes, the cluster routes and the Habitat Supervisor gateway. The
// dispatcher CLI, tests and benchmarks use it.
//
// A Client knows every node's address and needs no load balancer: when a
// node cannot be reached it tries the next one, and it remembers the last
// node that answered. Calls that are safe to repeat (every GET, and writes
// that carry an id chosen by the caller: a job spec with a jobId, a jar run
// with a jobId, a savepoint or stop with a triggerId) are retried with
// exponential backoff on connection errors and on 503 (no leader). Other
// writes move to the next node only when the connection could not even be
// opened, so the request cannot have reached a server.
//
// A refusal from the server is an *APIError carrying the HTTP status and
// the server's messages (Flink's {"errors":[...]}).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultAddress is where a client looks when given no address (Flink's
// rest.port on loopback, where `dispatcher agent --dev` listens).
const DefaultAddress = "http://127.0.0.1:8081"

// Config configures a Client.
type Config struct {
	// Addresses of the nodes, "host:port" or "http(s)://host:port"; any
	// node answers every call. Empty means DefaultAddress.
	Addresses []string
	// Token is sent as "Authorization: Bearer <Token>" when not empty.
	Token string
	// HTTPClient sends the requests; nil means a client with a 2 s dial
	// timeout and a 30 s overall timeout per request.
	HTTPClient *http.Client
	// Retry paces the retries of idempotent calls.
	Retry Retry
}

// Retry is the backoff of idempotent calls. Zero fields take the defaults.
type Retry struct {
	// Attempts is how many times an idempotent call is tried in all
	// (each attempt tries every address once); 0 means 6, 1 disables
	// retries.
	Attempts int
	// InitialBackoff is the wait after the first failed attempt (default
	// 100 ms); each further wait doubles, up to MaxBackoff (default 2 s).
	// A Retry-After from the server is honoured up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

func (r Retry) attempts() int {
	if r.Attempts <= 0 {
		return 6
	}
	return r.Attempts
}

func (r Retry) backoff(attempt int, retryAfter time.Duration) time.Duration {
	initial, max := r.InitialBackoff, r.MaxBackoff
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if max <= 0 {
		max = 2 * time.Second
	}
	d := initial << attempt
	if d <= 0 || d > max {
		d = max
	}
	if retryAfter > d {
		d = min(retryAfter, max)
	}
	return d
}

// Client talks to a dispatcher cluster. It is safe for concurrent use.
type Client struct {
	addrs     []string
	token     string
	http      *http.Client
	retry     Retry
	preferred atomic.Int64
}

// New returns a client for the nodes in cfg.Addresses.
func New(cfg Config) (*Client, error) {
	c := &Client{token: cfg.Token, http: cfg.HTTPClient, retry: cfg.Retry}
	if c.http == nil {
		c.http = &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 4,
				IdleConnTimeout:     30 * time.Second,
			},
		}
	}
	addrs := cfg.Addresses
	if len(addrs) == 0 {
		addrs = []string{DefaultAddress}
	}
	for _, a := range addrs {
		n, err := NormalizeAddress(a)
		if err != nil {
			return nil, err
		}
		c.addrs = append(c.addrs, n)
	}
	return c, nil
}

// NormalizeAddress turns "host:port" into "http://host:port" and checks
// that the result is a base URL.
func NormalizeAddress(a string) (string, error) {
	a = strings.TrimSpace(a)
	if a == "" {
		return "", fmt.Errorf("empty address")
	}
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil {
		return "", fmt.Errorf("address %q: %v", a, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("address %q: scheme must be http or https", a)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("address %q: want http://host:port", a)
	}
	return strings.TrimRight(a, "/"), nil
}

// Addresses returns the nodes this client talks to, normalized.
func (c *Client) Addresses() []string { return append([]string(nil), c.addrs...) }

// Node returns a client that talks to one node only, with this client's
// token, HTTP client and retry policy: for per-node calls such as
// readiness, which must not fall over to another node.
func (c *Client) Node(address string) (*Client, error) {
	n, err := NormalizeAddress(address)
	if err != nil {
		return nil, err
	}
	return &Client{addrs: []string{n}, token: c.token, http: c.http, retry: c.retry}, nil
}

// Meta says where a typed answer came from and keeps the server's JSON as
// it was sent (the CLI prints it for -o json).
type Meta struct {
	// Node is the id of the node that produced the answer
	// (X-Dispatcher-Node).
	Node string
	// Address is the node this client sent the request to.
	Address string
	// Raw is the response body exactly as the server sent it.
	Raw json.RawMessage
}

// JSON returns the server's JSON for this answer.
func (m Meta) JSON() json.RawMessage { return m.Raw }

func (m *Meta) setMeta(x Meta) { *m = x }

type metaSetter interface{ setMeta(Meta) }

// APIError is a refusal from the server: an HTTP status of 400 or more with
// the messages of Flink's {"errors":[...]} body.
type APIError struct {
	StatusCode int
	Errors     []string
	// Node is the node that answered, when it said (X-Dispatcher-Node).
	Node string
	// RetryAfter is the server's Retry-After, if any.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := strings.Join(e.Errors, "; ")
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.StatusCode == http.StatusUnauthorized {
		msg += " (missing or wrong API token)"
	}
	return fmt.Sprintf("%d: %s", e.StatusCode, msg)
}

// StatusCode returns the HTTP status of an *APIError in err's chain, or 0.
func StatusCode(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

// IsNotFound tells whether err is the server's 404.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// ConnectionError means no node could be reached; Errs has one error per
// address tried, in order.
type ConnectionError struct {
	Errs []error
}

func (e *ConnectionError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		parts[i] = err.Error()
	}
	return "no node answered: " + strings.Join(parts, "; ")
}

func (e *ConnectionError) Unwrap() []error { return e.Errs }

// request is one call, before it is sent to a node.
type request struct {
	method      string
	path        string // below /v1, starting with "/"
	query       url.Values
	body        []byte
	contentType string
	// idempotent calls may be repeated: retried on connection errors and
	// 503, and moved to another node after any connection error.
	idempotent bool
	// accept lists statuses of 400 and more whose body is the answer
	// (Habitat's service health answers 503 with a body).
	accept []int
	// noVersion sends the path as is (Habitat's and Prometheus' routes are
	// also under /v1, but their tools call them bare).
	noVersion bool
}

// response is a node's answer.
type response struct {
	status  int
	header  http.Header
	body    []byte
	address string
}

func (r *response) meta() Meta {
	return Meta{Node: r.header.Get("X-Dispatcher-Node"), Address: r.address, Raw: json.RawMessage(r.body)}
}

// do sends req, falling over between nodes and retrying as the call
// allows; a status of 400 or more (not in req.accept) is an *APIError.
func (c *Client) do(ctx context.Context, req *request) (*response, error) {
	attempts := 1
	if req.idempotent {
		attempts = c.retry.attempts()
	}
	var last error
	for attempt := 0; ; attempt++ {
		resp, err := c.tryNodes(ctx, req)
		var retryAfter time.Duration
		switch {
		case err != nil:
			last = err
			var ce *ConnectionError
			if !errors.As(err, &ce) {
				return nil, err // the caller's context, or a request we could not build
			}
		case resp.status >= 400 && !accepts(req.accept, resp.status):
			ae := apiError(resp)
			if resp.status != http.StatusServiceUnavailable {
				return resp, ae
			}
			last, retryAfter = ae, ae.RetryAfter
			// Another node may see a leader (or be on the majority side).
			c.rotate()
		default:
			return resp, nil
		}
		if attempt+1 >= attempts {
			return nil, last
		}
		t := time.NewTimer(c.retry.backoff(attempt, retryAfter))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

func accepts(codes []int, code int) bool {
	for _, c := range codes {
		if c == code {
			return true
		}
	}
	return false
}

func (c *Client) rotate() {
	if n := int64(len(c.addrs)); n > 1 {
		p := c.preferred.Load()
		c.preferred.CompareAndSwap(p, (p+1)%n)
	}
}

// tryNodes sends req to each node in turn, starting with the one that
// answered last, until one answers.
func (c *Client) tryNodes(ctx context.Context, req *request) (*response, error) {
	n := len(c.addrs)
	start := int(c.preferred.Load()) % n
	var errs []error
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		resp, err := c.send(ctx, c.addrs[idx], req)
		if err == nil {
			if idx != start {
				c.preferred.Store(int64(idx))
			}
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var be buildError
		if errors.As(err, &be) {
			return nil, be.err
		}
		errs = append(errs, fmt.Errorf("%s: %w", c.addrs[idx], err))
		if !req.idempotent && !isDialError(err) {
			// The request may have reached the server: repeating it
			// elsewhere could apply it twice.
			break
		}
	}
	return nil, &ConnectionError{Errs: errs}
}

type buildError struct{ err error }

func (b buildError) Error() string { return b.err.Error() }

// isDialError tells whether the connection could not be opened at all, so
// the request never left this process.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// maxResponse caps what is read of a response body.
const maxResponse = 64 << 20

func (c *Client) send(ctx context.Context, base string, req *request) (*response, error) {
	u := base
	if !req.noVersion {
		u += "/v1"
	}
	u += req.path
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return nil, buildError{err}
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	if req.body != nil {
		ct := req.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	hr.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data, address: base}, nil
}

func apiError(r *response) *APIError {
	e := &APIError{StatusCode: r.status, Node: r.header.Get("X-Dispatcher-Node")}
	if s := r.header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	var body struct {
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &body); err == nil && len(body.Errors) > 0 {
		e.Errors = body.Errors
	} else if text := strings.TrimSpace(string(r.body)); text != "" && !json.Valid(r.body) {
		if len(text) > 300 {
			text = text[:300] + "..."
		}
		e.Errors = []string{text}
	}
	return e
}

// call sends req and decodes a JSON answer into out (nil: ignore the body).
func (c *Client) call(ctx context.Context, req *request, out any) error {
	resp, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	return decode(resp, out)
}

func decode(resp *response, out any) error {
	if out == nil {
		return nil
	}
	if len(bytes.TrimSpace(resp.body)) > 0 {
		if err := json.Unmarshal(resp.body, out); err != nil {
			return fmt.Errorf("decode the answer of %s: %v", resp.address, err)
		}
	}
	if m, ok := out.(metaSetter); ok {
		m.setMeta(resp.meta())
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, query url.Values, out any) error {
	return c.call(ctx, &request{method: http.MethodGet, path: path, query: query, idempotent: true}, out)
}

// write sends a JSON body (nil for none); idempotent says whether the
// body carries a caller-chosen id that makes repeating it safe.
func (c *Client) write(ctx context.Context, method, path string, query url.Values, body any, idempotent bool, out any) error {
	req := &request{method: method, path: path, query: query, idempotent: idempotent}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		req.body = b
	}
	return c.call(ctx, req, out)
}

// pathEscape escapes one path segment.
func pathEscape(s string) string { return url.PathEscape(s) }
