package rest

import (
	"crypto/subtle"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/web"
)

// dashboardCookie carries the API token for the dashboard's own static
// files: a browser cannot send an Authorization header when it navigates, so
// the dashboard's login form stores the token in sessionStorage (for its API
// calls, which always send the header) and in this session cookie
// (SameSite=Strict) for the page shell and its assets. API routes never
// accept the cookie.
const dashboardCookie = "dispatcher_token"

// registerDashboard serves the web dashboard (issue 9): the page shell at /
// and its embedded assets under /web/. When a token is configured these
// routes require it like every other route, from the Authorization header or
// from the dashboardCookie; without either they answer an empty 401, except
// that a browser navigation (Accept: text/html) gets the built-in login page
// as the 401 body.
func (s *Server) registerDashboard() {
	s.router.GET("/", s.getDashboardIndex)
	s.router.GET("/web/*filepath", s.getDashboardAsset)
}

// isDashboardRoute tells whether a matched route is one of the dashboard's
// own: only those accept the token from the dashboard cookie, because a
// browser cannot send a header when it navigates.
func isDashboardRoute(c *gin.Context) bool {
	p := c.FullPath()
	return p == "/" || p == "/web/*filepath"
}

// dashboardCookieToken checks the dashboard cookie in constant time.
func dashboardCookieToken(c *gin.Context, want []byte) bool {
	ck, err := c.Request.Cookie(dashboardCookie)
	if err != nil {
		return false
	}
	v, err := url.QueryUnescape(ck.Value)
	return err == nil && subtle.ConstantTimeCompare([]byte(v), want) == 1
}

// dashboardLogin answers an unauthenticated browser navigation with the
// built-in login page (no cluster data) as the 401 body.
func dashboardLogin(c *gin.Context) bool {
	if !strings.Contains(c.GetHeader("Accept"), "text/html") {
		return false
	}
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusUnauthorized, "text/html; charset=utf-8", web.LoginPage)
	c.Abort()
	return true
}

func (s *Server) getDashboardIndex(c *gin.Context) {
	s.serveDashboardFile(c, "index.html")
}

func (s *Server) getDashboardAsset(c *gin.Context) {
	name := strings.TrimPrefix(path.Clean("/"+c.Param("filepath")), "/")
	if name == "" || name == "index.html" {
		fail(c, http.StatusNotFound, "Not found: "+c.Request.URL.Path)
		return
	}
	s.serveDashboardFile(c, name)
}

var dashboardTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

func (s *Server) serveDashboardFile(c *gin.Context, name string) {
	data, err := fs.ReadFile(web.Static(), name)
	ctype, known := dashboardTypes[path.Ext(name)]
	if err != nil || !known {
		fail(c, http.StatusNotFound, "Not found: "+c.Request.URL.Path)
		return
	}
	// Always revalidate: the files change with the binary.
	c.Header("Cache-Control", "no-cache")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Referrer-Policy", "no-referrer")
	c.Data(http.StatusOK, ctype, data)
}
