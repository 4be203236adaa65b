package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// This file is the one place where requests move between nodes. Writes and
// ?consistent=true reads run on the leader; a follower forwards them there
// transparently (a client behind a load balancer never sees a redirect),
// waiting up to --leader-wait for an election to finish.

// leaderOnly runs the handler on the leader and forwards from followers.
func (s *Server) leaderOnly() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.node.IsLeader() {
			c.Next()
			return
		}
		s.forward(c)
	}
}

// consistentReads sends ?consistent=true reads to the leader, which
// verifies its leadership with a quorum before answering from its state.
func (s *Server) consistentReads() gin.HandlerFunc {
	return func(c *gin.Context) {
		v, ok := c.GetQuery("consistent")
		if !ok || v == "false" || v == "0" {
			c.Next()
			return
		}
		if !s.node.IsLeader() {
			s.forward(c)
			return
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), s.leaderWait)
		defer cancel()
		if err := s.node.ConsistentRead(ctx); err != nil {
			c.Header(headerNotLeader, "1")
			failNoLeader(c)
			return
		}
		c.Next()
	}
}

var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

func (s *Server) forward(c *gin.Context) {
	if by := c.GetHeader(headerForwardedBy); by != "" {
		// Already forwarded once: the sender thought we lead, we do not.
		c.Header(headerNotLeader, "1")
		failNoLeader(c)
		return
	}
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		if isBodyTooLarge(err) {
			fail(c, http.StatusRequestEntityTooLarge, "Request body is larger than the limit.")
			return
		}
		fail(c, http.StatusBadRequest, "Cannot read the request body: "+err.Error())
		return
	}
	deadline := time.Now().Add(s.leaderWait)
	for {
		if s.node.IsLeader() {
			// Leadership came here while we waited: serve locally.
			c.Request.Body = io.NopCloser(bytes.NewReader(body))
			c.Next()
			return
		}
		leader, ok := s.node.Leader()
		if ok && leader.ID != s.node.ID() && leader.HTTPAddress != "" {
			resp, err := s.proxy(c, leader.ID, leader.HTTPAddress, body, deadline)
			if err == nil {
				retry := resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(headerNotLeader) != ""
				if !retry || time.Now().After(deadline) {
					s.copyResponse(c, resp)
					return
				}
				resp.Body.Close()
			} else if !isDialError(err) && !retrySafe(c, body) {
				// The leader died with the request in flight: it may have
				// been applied, and replaying it could apply it twice.
				s.log.Warn("forwarding to the leader failed mid-request", "leader", leader.ID, "err", err)
				c.Header("Retry-After", "1")
				fail(c, http.StatusServiceUnavailable, "The leader stopped answering while handling this request, which may or may not have been applied. Retry it with a client-chosen jobId or triggerId to make the retry safe.")
				return
			}
		}
		if time.Now().After(deadline) {
			failNoLeader(c)
			return
		}
		select {
		case <-c.Request.Context().Done():
			c.Abort()
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (s *Server) proxy(c *gin.Context, leaderID, leaderAddr string, body []byte, deadline time.Time) (*http.Response, error) {
	ctx, cancel := context.WithDeadline(c.Request.Context(), deadline.Add(30*time.Second))
	// A leader that froze (a paused process) never answers; once another
	// node leads, waiting on it is pointless. The watch ends when the
	// answer's headers arrive, so a body being copied is never cut.
	answered := make(chan struct{})
	defer close(answered)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-answered:
				return
			case <-tick.C:
				if l, ok := s.node.Leader(); ok && l.ID != leaderID {
					cancel()
					return
				}
			}
		}
	}()
	u := *c.Request.URL
	u.Scheme, u.Host = "http", leaderAddr
	req, err := http.NewRequestWithContext(ctx, c.Request.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	for k, vs := range c.Request.Header {
		if !hopHeaders[k] {
			req.Header[k] = vs
		}
	}
	req.Header.Set(headerForwardedBy, s.node.ID())
	resp, err := s.peerClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error { err := c.ReadCloser.Close(); c.cancel(); return err }

func (s *Server) copyResponse(c *gin.Context, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if !hopHeaders[k] {
			c.Writer.Header()[k] = vs
		}
	}
	c.Writer.Header().Set(headerForwardedBy, s.node.ID())
	c.Writer.Header().Del(headerNotLeader)
	c.Status(resp.StatusCode)
	io.Copy(c.Writer, resp.Body)
	c.Abort()
}

// retrySafe tells whether replaying a request cannot apply it twice: the
// methods that set rather than add, and bodies that carry a client-chosen
// id the state machine deduplicates on.
func retrySafe(c *gin.Context, body []byte) bool {
	// PUT sets a value, so replaying it changes nothing. PATCH (cancel)
	// and DELETE are not replayed: the replay of a cancel that went through
	// answers 409 to the client whose cancel succeeded.
	if c.Request.Method == http.MethodPut {
		return true
	}
	var ids struct {
		JobID     string `json:"jobId"`
		TriggerID string `json:"triggerId"`
	}
	if json.Unmarshal(body, &ids) != nil {
		return false
	}
	return ids.JobID != "" || ids.TriggerID != "" ||
		// Internal writes (subtask events, bundle metadata) are idempotent.
		strings.HasPrefix(c.FullPath(), "/v1/internal/") || strings.HasPrefix(c.FullPath(), "/internal/")
}

// isDialError tells whether the request never left this node, which makes
// retrying it against another leader safe.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
