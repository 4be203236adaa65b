package rest

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

const (
	// headerNode names the node that produced the response.
	headerNode = "X-Dispatcher-Node"
	// headerForwardedBy marks a request a follower forwarded; a node that
	// receives one and is not the leader refuses instead of forwarding
	// again, so loops are impossible.
	headerForwardedBy = "X-Dispatcher-Forwarded-By"
	// headerNotLeader tells the forwarding node the target lost leadership
	// before taking the write, so retrying elsewhere is safe.
	headerNotLeader = "X-Dispatcher-Not-Leader"
)

// recovery turns a panic in a handler into a logged 500: a bug, never a
// client's fault, and never a dead process.
func (s *Server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(r)
				}
				s.log.Error("handler panic", "path", c.Request.URL.Path, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				if !c.Writer.Written() {
					fail(c, http.StatusInternalServerError, "Internal server error.")
				}
				c.Abort()
			}
		}()
		c.Next()
	}
}

// observe counts every request by route and code, 401s included.
func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		code := fmt.Sprint(c.Writer.Status())
		s.metrics.requests.WithLabelValues(route, c.Request.Method, code).Inc()
		s.metrics.latency.WithLabelValues(route, c.Request.Method).Observe(time.Since(start).Seconds())
		if s.log.Enabled(c, slog.LevelDebug) {
			s.log.Debug("request", "method", c.Request.Method, "path", c.Request.URL.Path, "code", c.Writer.Status(), "took", time.Since(start))
		}
	}
}

// authenticate requires exactly "Authorization: Bearer <token>" on every
// route when a token is configured, compared in constant time. The 401 has
// an empty body, as Habitat's gateway answers.
func (s *Server) authenticate() gin.HandlerFunc {
	want := []byte(s.token)
	return func(c *gin.Context) {
		if len(want) == 0 {
			c.Next()
			return
		}
		header := c.GetHeader("Authorization")
		fields := strings.Fields(header)
		ok := len(fields) == 2 && fields[0] == "Bearer" && subtle.ConstantTimeCompare([]byte(fields[1]), want) == 1
		dashboard := isDashboardRoute(c)
		if !ok && dashboard && header == "" {
			ok = dashboardCookieToken(c, want)
		}
		if !ok {
			c.Header("WWW-Authenticate", `Bearer realm="dispatcher"`)
			if dashboard && dashboardLogin(c) {
				return
			}
			c.AbortWithStatus(http.StatusUnauthorized)
			return
		}
		c.Next()
	}
}

// servedBy names the node that produced the response; it runs after
// authentication so a 401 tells a stranger nothing.
func (s *Server) servedBy() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header(headerNode, s.node.ID())
		c.Next()
	}
}

// limitBody caps request bodies; a larger one is answered 413.
func (s *Server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > s.maxBody {
			fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body is larger than the limit of %d bytes.", s.maxBody))
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.maxBody)
		c.Next()
	}
}

// isBodyTooLarge tells whether reading a body failed on the size cap.
func isBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}
