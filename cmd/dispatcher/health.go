package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dispatcher-dev/dispatcher/client"
)

// newHealthCommand checks a node's readiness: the image's health check,
// since a scratch image has no curl. It asks one node (the first
// address) and never falls over to another: the question is about that
// node.
func newHealthCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when the node at --address is ready (GET /v1/health/ready)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addrs, err := addresses(cmd)
			if err != nil {
				return err
			}
			c, err := client.New(client.Config{
				Addresses:  addrs[:1],
				Token:      token(),
				HTTPClient: &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: timeout}).DialContext}},
				Retry:      client.Retry{Attempts: 1},
			})
			if err != nil {
				return usageError{err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			h, err := c.Ready(ctx)
			var ae *client.APIError
			switch {
			case errors.As(err, &ae):
				return fmt.Errorf("not ready (%d): %s", ae.StatusCode, strings.TrimPrefix(ae.Error(), fmt.Sprintf("%d: ", ae.StatusCode)))
			case err != nil:
				return fmt.Errorf("not healthy: %v", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(h.Raw)))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}
