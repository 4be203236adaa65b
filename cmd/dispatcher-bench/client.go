package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// apiClient makes the bench's control requests (leader, readiness,
// members, single writes). Load uses its own clients (load.go).
type apiClient struct {
	token string
	http  *http.Client
}

func newAPIClient(token string) *apiClient {
	return &apiClient{token: token, http: &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}}
}

func (a *apiClient) do(ctx context.Context, method, url string, body []byte, timeout time.Duration) (int, []byte, error) {
	code, b, _, err := a.doHeader(ctx, method, url, body, timeout)
	return code, b, err
}

// doHeader is do that also returns the response headers.
func (a *apiClient) doHeader(ctx context.Context, method, url string, body []byte, timeout time.Duration) (int, []byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, b, resp.Header, err
}

func (a *apiClient) get(ctx context.Context, n *node, path string, timeout time.Duration) (int, []byte, error) {
	return a.do(ctx, http.MethodGet, n.url()+path, nil, timeout)
}

type leaderInfo struct {
	ID          string    `json:"id"`
	HTTPAddress string    `json:"http_address"`
	RaftAddress string    `json:"raft_address"`
	Term        uint64    `json:"term"`
	Since       time.Time `json:"since"`
}

// leader asks node n whom it sees as leader; an error when none.
func (a *apiClient) leader(ctx context.Context, n *node, timeout time.Duration) (leaderInfo, error) {
	code, body, err := a.get(ctx, n, "/v1/cluster/leader", timeout)
	if err != nil {
		return leaderInfo{}, err
	}
	if code != http.StatusOK {
		return leaderInfo{}, fmt.Errorf("%d %s", code, strings.TrimSpace(string(body)))
	}
	var l leaderInfo
	if err := json.Unmarshal(body, &l); err != nil {
		return leaderInfo{}, err
	}
	if l.ID == "" {
		return leaderInfo{}, fmt.Errorf("empty leader id")
	}
	return l, nil
}

type memberInfo struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

func (a *apiClient) members(ctx context.Context, n *node, timeout time.Duration) ([]memberInfo, error) {
	code, body, err := a.get(ctx, n, "/v1/cluster/members", timeout)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%d %s", code, strings.TrimSpace(string(body)))
	}
	var out struct {
		Members []memberInfo `json:"members"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, err
	}
	return out.Members, nil
}

// jobIDs makes unique 32-hex-char job ids: a random run prefix and a
// counter, so that ids never repeat within or across runs.
type jobIDs struct {
	prefix string
	n      atomic.Uint64
}

func newJobIDs() *jobIDs {
	b := make([]byte, 8)
	rand.Read(b)
	return &jobIDs{prefix: hex.EncodeToString(b)}
}

func (g *jobIDs) next() string { return fmt.Sprintf("%s%016x", g.prefix, g.n.Add(1)) }

// jobSpec is the small valid job the bench submits (a 10-element sequence
// into a discard sink).
func jobSpec(jobID string) []byte {
	// Each job names its own Habitat service group (the group defaults to the
	// job name, and two running jobs may not share one).
	return []byte(`{"name":"bench-` + jobID + `","jobId":"` + jobID + `","vertices":[{"id":"src","operator":"sequence","params":{"from":1,"to":10}},{"id":"out","operator":"discard","inputs":[{"from":"src","ship":"forward"}]}]}`)
}

// postJob submits one job to node n: the status, body, the node that
// produced the answer (X-Dispatcher-Node) and the error.
func (a *apiClient) postJob(ctx context.Context, n *node, jobID string, timeout time.Duration) (int, []byte, string, error) {
	code, body, hdr, err := a.doHeader(ctx, http.MethodPost, n.url()+"/v1/jobs", jobSpec(jobID), timeout)
	return code, body, hdr.Get("X-Dispatcher-Node"), err
}

// jobCount sums the job counters of n's /v1/overview.
func (a *apiClient) jobCount(ctx context.Context, n *node) (int, error) {
	code, body, err := a.get(ctx, n, "/v1/overview", 5*time.Second)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("overview: %d %s", code, strings.TrimSpace(string(body)))
	}
	var o struct {
		Running   int `json:"jobs-running"`
		Finished  int `json:"jobs-finished"`
		Cancelled int `json:"jobs-cancelled"`
		Failed    int `json:"jobs-failed"`
	}
	if err := json.Unmarshal(body, &o); err != nil {
		return 0, err
	}
	return o.Running + o.Finished + o.Cancelled + o.Failed, nil
}

// missingJobs returns the ids among want that node n does not know.
func (a *apiClient) missingJobs(ctx context.Context, n *node, want []string) ([]string, error) {
	var missing []string
	for _, id := range want {
		code, body, err := a.get(ctx, n, "/v1/jobs/"+id, 2*time.Second)
		if err != nil {
			return nil, err
		}
		switch code {
		case http.StatusOK:
		case http.StatusNotFound:
			missing = append(missing, id)
		default:
			return nil, fmt.Errorf("GET /v1/jobs/%s: %d %s", id, code, strings.TrimSpace(string(body)))
		}
	}
	return missing, nil
}
