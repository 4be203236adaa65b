// Command dispatcher runs a node of the cluster (`dispatcher agent`) and
// talks to one (`dispatcher health`, `dispatcher version`).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dispatcher-dev/dispatcher/config"
)

// Set at build time with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "0.1.0-dev"
	revision = "unknown"
)

// usageError is a mistake in how the command was called: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

func main() {
	root := newRoot()
	err := root.Execute()
	if err == nil {
		return
	}
	var ue usageError
	var ce *config.Error
	switch {
	case errors.As(err, &ue), errors.As(err, &ce):
		fmt.Fprintf(os.Stderr, "dispatcher: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "dispatcher: %v\n", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "dispatcher",
		Short:         "A highly available, clustered job dispatcher with Flink's REST API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newAgentCommand(), newVersionCommand(), newHealthCommand())
	addClientFlags(root)
	root.AddCommand(newJobsCommand(), newJarsCommand(), newClusterCommand(), newCompletionCommand())
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	}
	root.Args = cobra.ArbitraryArgs
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q (see dispatcher --help)", args[0])}
		}
		return cmd.Help()
	}
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "dispatcher %s (%s)\n", version, revision)
		},
	}
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", args[0])}
	}
	return nil
}
