// Package web is the dashboard: plain HTML, CSS and JavaScript modules,
// embedded in the binary and served by package rest at / and /web/. It is
// built only on the public HTTP API; there is no build step.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// LoginPage is the self-contained page a browser gets as the body of a 401
// when it opens the dashboard without a token: a single token field, no data.
//
//go:embed login.html
var LoginPage []byte

// Static is the dashboard's files: index.html, style.css and js/*.js.
func Static() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	return sub
}
