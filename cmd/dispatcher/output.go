package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dispatcher-dev/dispatcher/client"
)

// This file is what the API subcommands (jobs, jars, cluster, health)
// share: where the cluster is, the token, the output format, progress on
// a terminal, and arguments checked as usage errors (exit 2).

// addClientFlags registers the root's persistent --address.
func addClientFlags(root *cobra.Command) {
	root.PersistentFlags().StringArray("address", nil,
		"node address, repeatable or comma-separated; the client falls over to the next one (default $DISPATCHER_ADDR or "+client.DefaultAddress+")")
}

// addOutputFlag registers -o on a command group.
func addOutputFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().StringP("output", "o", "table", "output format: table (for people) or json (the server's JSON, for scripts)")
}

// addresses resolves --address, then $DISPATCHER_ADDR, then the default.
func addresses(cmd *cobra.Command) ([]string, error) {
	var raw []string
	if f := cmd.Flags().Lookup("address"); f != nil && f.Changed {
		raw, _ = cmd.Flags().GetStringArray("address")
	} else if env := os.Getenv("DISPATCHER_ADDR"); env != "" {
		raw = []string{env}
	}
	var out []string
	for _, r := range raw {
		for _, a := range strings.Split(r, ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			n, err := client.NormalizeAddress(a)
			if err != nil {
				return nil, usageError{fmt.Errorf("--address: %v", err)}
			}
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []string{client.DefaultAddress}
	}
	return out, nil
}

// token is the API token from the environment, as the agent reads it.
func token() string {
	if t := os.Getenv("DISPATCHER_AUTH_TOKEN"); t != "" {
		return t
	}
	return os.Getenv("HAB_SUP_GATEWAY_AUTH_TOKEN")
}

// env is what an API subcommand works with.
type env struct {
	c        *client.Client
	ctx      context.Context
	out      io.Writer
	errOut   io.Writer
	json     bool
	terminal bool // stderr is a terminal: show progress
}

// newEnv builds the client from the flags and environment. The context
// ends on SIGINT or SIGTERM; call the returned stop when done.
func newEnv(cmd *cobra.Command) (*env, func(), error) {
	format := "table"
	if f := cmd.Flags().Lookup("output"); f != nil {
		format = f.Value.String()
	}
	if format != "table" && format != "json" {
		return nil, nil, usageError{fmt.Errorf("-o %q: want table or json", format)}
	}
	addrs, err := addresses(cmd)
	if err != nil {
		return nil, nil, err
	}
	c, err := client.New(client.Config{Addresses: addrs, Token: token()})
	if err != nil {
		return nil, nil, usageError{err}
	}
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	return &env{
		c: c, ctx: ctx, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(),
		json: format == "json", terminal: isTerminal(os.Stderr),
	}, stop, nil
}

// isTerminal tells whether f is a character device (a terminal); there is
// no golang.org/x/term in this module.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// apiCommand wraps an API subcommand's body: it builds the env and turns
// a refused token into a message that says what to do.
func apiCommand(run func(e *env, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		e, stop, err := newEnv(cmd)
		if err != nil {
			return err
		}
		defer stop()
		err = run(e, cmd, args)
		var ae *client.APIError
		switch {
		case !errors.As(err, &ae):
		case ae.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("%w; set DISPATCHER_AUTH_TOKEN to the cluster's token", err)
		case ae.StatusCode == http.StatusNotFound && len(ae.Errors) == 1 && strings.HasPrefix(ae.Errors[0], "Not found: /"):
			// The route itself is unknown, not the job or jar.
			return fmt.Errorf("%w (the server has no such route: an older version?)", err)
		}
		return err
	}
}

// printJSON writes the server's JSON as it was sent.
func (e *env) printJSON(raw []byte) {
	raw = []byte(strings.TrimSpace(string(raw)))
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	e.out.Write(append(raw, '\n'))
}

// table returns a tabwriter; call Flush when done.
func (e *env) table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
}

// progress shows one updating status line on stderr when it is a
// terminal, and nothing otherwise.
type progress struct {
	e     *env
	shown bool
}

func (e *env) progress() *progress { return &progress{e: e} }

func (p *progress) update(msg string) {
	if !p.e.terminal {
		return
	}
	fmt.Fprintf(p.e.errOut, "\r\033[K%s", msg)
	p.shown = true
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprint(p.e.errOut, "\r\033[K")
		p.shown = false
	}
}

// Usage checks: a missing or extra argument is a usage error (exit 2).

func argsNamed(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usageError{fmt.Errorf("missing %s", strings.Join(names[len(args):], " "))}
		}
		if len(args) > len(names) {
			return usageError{fmt.Errorf("unexpected argument %q", args[len(names)])}
		}
		return nil
	}
}

// groupCommand is a command made of subcommands: alone it prints its help,
// with an unknown subcommand it is a usage error.
func groupCommand(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q (see dispatcher %s --help)", args[0], cmd.CommandPath(), use)}
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// Formatting helpers for tables.

func fmtMillis(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.UnixMilli(ms).Local().Format("2006-01-02 15:04:05")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func fmtDuration(ms int64) string {
	if ms < 0 {
		return "-"
	}
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
