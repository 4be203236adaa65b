package main

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/dispatcher-dev/dispatcher/client"
)

// newJarsCommand is `dispatcher jars upload|list|run|delete`: Flink's jar
// routes, where a jar is a job bundle uploaded once and run many times.
func newJarsCommand() *cobra.Command {
	cmd := groupCommand("jars", "Upload, list, run and delete job bundles (Flink's /jars routes)",
		newJarsUploadCommand(), newJarsListCommand(), newJarsRunCommand(), newJarsDeleteCommand())
	addOutputFlag(cmd)
	return cmd
}

// completeJarIDs completes a <jarid> argument from the cluster's jar list.
var completeJarIDs = completeFrom(func(ctx context.Context, e *env) ([]string, error) {
	jars, err := e.c.ListJars(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range jars.Files {
		out = append(out, f.ID+"\t"+f.Name)
	}
	return out, nil
})

func newJarsUploadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "upload <file>",
		Short: "Upload a job bundle (POST /jars/upload) and print its jar id",
		Args:  argsNamed("<file>"),
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			up, err := e.c.UploadJarFile(e.ctx, args[0])
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(up.Raw)
			} else {
				fmt.Fprintln(e.out, up.ID())
			}
			return nil
		}),
	}
}

func newJarsListCommand() *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List uploaded job bundles (GET /jars)",
		Args:  argsNamed(),
		RunE: apiCommand(func(e *env, _ *cobra.Command, _ []string) error {
			jars, err := e.c.ListJars(e.ctx, readOpts(consistent)...)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(jars.Raw)
				return nil
			}
			w := e.table()
			fmt.Fprintln(w, "ID\tNAME\tUPLOADED\tENTRY")
			for _, f := range jars.Files {
				var entries []string
				for _, en := range f.Entry {
					entries = append(entries, en.Name)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", f.ID, f.Name, fmtMillis(f.Uploaded), orDash(strings.Join(entries, ",")))
			}
			return w.Flush()
		}),
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "a linearizable read, answered by the leader")
	return cmd
}

func newJarsRunCommand() *cobra.Command {
	var req client.JarRunRequest
	var args string
	cmd := &cobra.Command{
		Use:   "run <jarid>",
		Short: "Run an uploaded job bundle (POST /jars/:jarid/run) and print the job id",
		Long: `Run an uploaded job bundle and print the new job's id. --args are the
program arguments, split like a shell would ("--input 'a b'" is two
arguments). The run carries a job id (--job-id or a new one), so a repeat
after a lost answer starts no second job.`,
		Args:              argsNamed("<jarid>"),
		ValidArgsFunction: completeJarIDs,
		RunE: apiCommand(func(e *env, cmd *cobra.Command, a []string) error {
			if req.JobID != "" && !client.ValidID(req.JobID) {
				return usageError{fmt.Errorf("--job-id %q is not 32 lowercase hex characters", req.JobID)}
			}
			if cmd.Flags().Changed("parallelism") && req.Parallelism < 1 {
				return usageError{fmt.Errorf("--parallelism %d: must be at least 1", req.Parallelism)}
			}
			list, err := splitArgs(args)
			if err != nil {
				return usageError{fmt.Errorf("--args: %v", err)}
			}
			req.ProgramArgsList = list
			if req.JobID == "" {
				req.JobID = client.NewID()
			}
			res, err := e.c.RunJar(e.ctx, a[0], req)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(res.Raw)
			} else {
				fmt.Fprintln(e.out, res.JobID)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.EntryClass, "entry", "", "entry point (Flink's entryClass)")
	f.IntVar(&req.Parallelism, "parallelism", 0, "default parallelism of the job")
	f.StringVar(&req.SavepointPath, "savepoint-path", "", "restore from this savepoint")
	f.BoolVar(&req.AllowNonRestoredState, "allow-non-restored-state", false, "allow savepoint state that maps to no operator")
	f.StringVar(&args, "args", "", "program arguments, split like a shell would")
	f.StringVar(&req.JobID, "job-id", "", "the new job's id (32 hex characters; default: a new one)")
	return cmd
}

func newJarsDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "delete <jarid>",
		Short:             "Delete an uploaded job bundle (DELETE /jars/:jarid)",
		Args:              argsNamed("<jarid>"),
		ValidArgsFunction: completeJarIDs,
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			if err := e.c.DeleteJar(e.ctx, args[0]); err != nil {
				return err
			}
			if e.json {
				e.printJSON(nil)
			} else {
				fmt.Fprintf(e.out, "jar %s deleted\n", args[0])
			}
			return nil
		}),
	}
}

// splitArgs splits s into words like a POSIX shell: blanks separate words,
// single quotes keep everything literal, double quotes and backslashes
// escape.
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated double quote")
			}
			inWord = true
		case ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case unicode.IsSpace(rune(ch)):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
