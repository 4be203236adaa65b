package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newCompletionCommand is cobra's shell completion, with the shells this
// project documents. Job and jar ids complete from the cluster (with the
// same --address and DISPATCHER_AUTH_TOKEN as any other command).
func newCompletionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print a completion script for bash, zsh or fish.

  bash:  source <(dispatcher completion bash)
         (or save it to /etc/bash_completion.d/dispatcher; needs bash-completion)
  zsh:   dispatcher completion zsh > "${fpath[1]}/_dispatcher"
  fish:  dispatcher completion fish > ~/.config/fish/completions/dispatcher.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("want one shell: bash, zsh or fish")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return usageError{fmt.Errorf("unknown shell %q: want bash, zsh or fish", args[0])}
			}
		},
	}
}
