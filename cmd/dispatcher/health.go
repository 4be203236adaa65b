package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newHealthCommand checks a node's readiness: the image's health check,
// since a scratch image has no curl.
func newHealthCommand() *cobra.Command {
	var address string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when the node at --address is ready (GET /v1/health/ready)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if address == "" {
				address = os.Getenv("DISPATCHER_ADDR")
			}
			if address == "" {
				address = "http://127.0.0.1:8081"
			}
			if !strings.Contains(address, "://") {
				address = "http://" + address
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(address, "/")+"/v1/health/ready", nil)
			if err != nil {
				return usageError{err}
			}
			if tok := os.Getenv("DISPATCHER_AUTH_TOKEN"); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("not healthy: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready (%d): %s", resp.StatusCode, strings.TrimSpace(string(body)))
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(body)))
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", "", "node address (default $DISPATCHER_ADDR or http://127.0.0.1:8081)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}
