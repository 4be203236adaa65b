package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dispatcher-dev/dispatcher/client"
)

// newJobsCommand is `dispatcher jobs ...`.
func newJobsCommand() *cobra.Command {
	cmd := groupCommand("jobs", "List, inspect, submit, cancel, stop, savepoint and rescale jobs",
		newJobsListCommand(), newJobsInfoCommand(), newJobsSubmitCommand(), newJobsCancelCommand(),
		newJobsStopCommand(), newJobsSavepointCommand(), newJobsRescaleCommand(), newJobsExceptionsCommand())
	addOutputFlag(cmd)
	return cmd
}

// jobIDArg checks the <jobid> argument's format before any request.
func jobIDArg(args []string) (string, error) {
	id := args[0]
	if !client.ValidID(id) {
		return "", usageError{fmt.Errorf("job id %q is not 32 lowercase hex characters", id)}
	}
	return id, nil
}

// completeJobIDs completes a <jobid> argument from the cluster's job list.
var completeJobIDs = completeFrom(func(ctx context.Context, e *env) ([]string, error) {
	jobs, err := e.c.ListJobs(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range jobs.Jobs {
		out = append(out, j.ID+"\t"+j.Name+" ("+j.Status+")")
	}
	return out, nil
})

// completeFrom completes a command's first argument from a list the
// cluster gives; completion stays silent when the cluster cannot be asked.
func completeFrom(list func(ctx context.Context, e *env) ([]string, error)) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		e, stop, err := newEnv(cmd)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer stop()
		ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
		defer cancel()
		out, err := list(ctx, e)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func newJobsListCommand() *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs (GET /jobs)",
		Args:  argsNamed(),
		RunE: apiCommand(func(e *env, _ *cobra.Command, _ []string) error {
			jobs, err := e.c.ListJobs(e.ctx, readOpts(consistent)...)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(jobs.Raw)
				return nil
			}
			sort.SliceStable(jobs.Jobs, func(i, j int) bool { return jobs.Jobs[i].Name < jobs.Jobs[j].Name })
			w := e.table()
			fmt.Fprintln(w, "ID\tNAME\tSTATUS\tVERTICES\tTASKS")
			for _, j := range jobs.Jobs {
				tasks := 0
				for _, v := range j.Vertices {
					tasks += v.Parallelism
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\n", j.ID, orDash(j.Name), j.Status, len(j.Vertices), tasks)
			}
			return w.Flush()
		}),
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "a linearizable read, answered by the leader")
	return cmd
}

func newJobsInfoCommand() *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:               "info <jobid>",
		Short:             "Show a job with its vertices (GET /jobs/:jobid)",
		Args:              argsNamed("<jobid>"),
		ValidArgsFunction: completeJobIDs,
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			id, err := jobIDArg(args)
			if err != nil {
				return err
			}
			j, err := e.c.Job(e.ctx, id, readOpts(consistent)...)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(j.Raw)
				return nil
			}
			printJob(e, j)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "a linearizable read, answered by the leader")
	return cmd
}

func readOpts(consistent bool) []client.ReadOption {
	if consistent {
		return []client.ReadOption{client.Consistent()}
	}
	return nil
}

func printJob(e *env, j *client.JobDetails) {
	w := e.table()
	fmt.Fprintf(w, "ID:\t%s\n", j.JID)
	fmt.Fprintf(w, "Name:\t%s\n", orDash(j.Name))
	fmt.Fprintf(w, "State:\t%s\n", j.State)
	if j.Reason != "" {
		fmt.Fprintf(w, "Reason:\t%s\n", j.Reason)
	}
	fmt.Fprintf(w, "Attempt:\t%d (restarts: %d)\n", j.Attempt, j.Restarts)
	fmt.Fprintf(w, "Started:\t%s\n", fmtMillis(j.StartTime))
	if j.EndTime > 0 {
		fmt.Fprintf(w, "Ended:\t%s\n", fmtMillis(j.EndTime))
	}
	fmt.Fprintf(w, "Duration:\t%s\n", fmtDuration(j.Duration))
	w.Flush()
	if len(j.Vertices) > 0 {
		fmt.Fprintln(e.out)
		w = e.table()
		fmt.Fprintln(w, "VERTEX\tNAME\tPARALLELISM\tSTATUS\tRECORDS IN\tRECORDS OUT")
		for _, v := range j.Vertices {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%d\n", v.ID, v.Name, v.Parallelism, v.Status, v.Metrics.ReadRecords, v.Metrics.WriteRecords)
		}
		w.Flush()
	}
	if n := len(j.Failures); n > 0 {
		last := j.Failures[n-1]
		fmt.Fprintf(e.out, "\n%d failure(s); last at %s on %s[%d]: %s\n", n, fmtMillis(last.Timestamp), orDash(last.VertexID), last.Subtask, firstLine(last.Message))
	}
}

func newJobsSubmitCommand() *cobra.Command {
	var jobID string
	var wait bool
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "submit <spec.json>",
		Short: "Submit a job spec (POST /v1/jobs); - reads the spec from stdin",
		Long: `Submit a job spec (docs/jobspec.md) and print the job id.

The submission always carries a job id (--job-id, else the spec's jobId, else
a new random one), so the server treats a repeat as the same job: the CLI
retries it safely on connection errors and while a leader is being elected.
With --wait it then follows the job until it is FINISHED, FAILED or CANCELED
(progress on a terminal) and exits 1 unless it FINISHED.`,
		Args: argsNamed("<spec.json>"),
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			if jobID != "" && !client.ValidID(jobID) {
				return usageError{fmt.Errorf("--job-id %q is not 32 lowercase hex characters", jobID)}
			}
			spec, err := readSpec(args[0])
			if err != nil {
				return usageError{err}
			}
			if jobID == "" {
				jobID = client.SpecJobID(spec)
			}
			if jobID == "" {
				jobID = client.NewID()
			}
			// A spec that is not a JSON object goes as it is: the server
			// says what is wrong with it.
			if withID, err := client.WithJobID(spec, jobID); err == nil {
				spec = withID
			}
			res, err := e.c.SubmitJob(e.ctx, spec)
			if err != nil {
				return err
			}
			if !wait {
				if e.json {
					e.printJSON(res.Raw)
				} else {
					fmt.Fprintln(e.out, res.JobID)
				}
				return nil
			}
			return waitForJob(e, res.JobID, waitTimeout)
		}),
	}
	cmd.Flags().StringVar(&jobID, "job-id", "", "the job's id (32 hex characters); default: the spec's jobId or a new one")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the job is FINISHED, FAILED or CANCELED")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", 0, "with --wait, give up after this long (0: no limit)")
	return cmd
}

func readSpec(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// waitForJob follows a job to a terminal state and prints it: "<id>
// <STATE>" (or the job's JSON); an error unless it FINISHED.
func waitForJob(e *env, id string, timeout time.Duration) error {
	ctx := e.ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	p := e.progress()
	j, err := e.c.WaitForJobState(ctx, id, client.WaitOptions{Progress: func(state string, elapsed time.Duration) {
		p.update(fmt.Sprintf("job %s: %s (%s)", id, state, elapsed.Round(time.Second)))
	}})
	p.done()
	if j == nil {
		return fmt.Errorf("waiting for job %s: %w", id, err)
	}
	if e.json {
		e.printJSON(j.Raw)
	} else {
		fmt.Fprintf(e.out, "%s %s\n", id, j.State)
	}
	if err == nil && j.State != client.JobFinished {
		err = fmt.Errorf("job %s ended %s", id, j.State)
		if j.Reason != "" {
			err = fmt.Errorf("%w: %s", err, j.Reason)
		}
	}
	return err
}

func newJobsCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "cancel <jobid>",
		Short:             "Cancel a job (PATCH /jobs/:jobid?mode=cancel)",
		Args:              argsNamed("<jobid>"),
		ValidArgsFunction: completeJobIDs,
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			id, err := jobIDArg(args)
			if err != nil {
				return err
			}
			if err := e.c.CancelJob(e.ctx, id); err != nil {
				return err
			}
			if e.json {
				e.printJSON(nil)
			} else {
				fmt.Fprintf(e.out, "cancellation of job %s requested\n", id)
			}
			return nil
		}),
	}
}

func newJobsStopCommand() *cobra.Command {
	var dir string
	var drain, wait bool
	cmd := &cobra.Command{
		Use:   "stop <jobid>",
		Short: "Stop a job with a savepoint (POST /jobs/:jobid/stop)",
		Long: `Stop a job with a savepoint: the job takes a final savepoint and ends
FINISHED. --drain first emits MAX_WATERMARK (fires every event-time timer);
use it only for a pipeline that ends for good. Prints the trigger id, or
with --wait the savepoint's location once it is written.`,
		Args:              argsNamed("<jobid>"),
		ValidArgsFunction: completeJobIDs,
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			id, err := jobIDArg(args)
			if err != nil {
				return err
			}
			trig, err := e.c.StopJob(e.ctx, id, client.StopRequest{TargetDirectory: dir, Drain: drain, TriggerID: client.NewID()})
			if err != nil {
				return err
			}
			return triggered(e, id, trig, wait, "stop")
		}),
	}
	cmd.Flags().StringVar(&dir, "savepoint-dir", "", "where the savepoint goes (default: the cluster's --savepoint-dir)")
	cmd.Flags().BoolVar(&drain, "drain", false, "emit MAX_WATERMARK before the savepoint")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the savepoint and print its location")
	return cmd
}

func newJobsSavepointCommand() *cobra.Command {
	var dir string
	var wait, cancelJob bool
	cmd := &cobra.Command{
		Use:   "savepoint <jobid>",
		Short: "Trigger a savepoint (POST /jobs/:jobid/savepoints)",
		Long: `Trigger a savepoint and print its trigger id; with --wait, poll the trigger
until the savepoint is written (progress on a terminal) and print its
location. The trigger carries an id chosen here, so a repeat after a lost
answer never takes a second savepoint.`,
		Args:              argsNamed("<jobid>"),
		ValidArgsFunction: completeJobIDs,
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			id, err := jobIDArg(args)
			if err != nil {
				return err
			}
			trig, err := e.c.TriggerSavepoint(e.ctx, id, client.SavepointRequest{TargetDirectory: dir, CancelJob: cancelJob, TriggerID: client.NewID()})
			if err != nil {
				return err
			}
			return triggered(e, id, trig, wait, "savepoint")
		}),
	}
	cmd.Flags().StringVar(&dir, "target-directory", "", "where the savepoint goes (default: the cluster's --savepoint-dir)")
	cmd.Flags().BoolVar(&cancelJob, "cancel", false, "cancel the job once the savepoint is taken")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the savepoint and print its location")
	return cmd
}

// triggered prints a savepoint or stop trigger, or waits for it.
func triggered(e *env, jobID string, trig *client.TriggerResponse, wait bool, what string) error {
	if !wait {
		if e.json {
			e.printJSON(trig.Raw)
		} else {
			fmt.Fprintln(e.out, trig.RequestID)
		}
		return nil
	}
	p := e.progress()
	st, err := e.c.WaitForSavepoint(e.ctx, jobID, trig.RequestID, client.WaitOptions{Progress: func(state string, elapsed time.Duration) {
		p.update(fmt.Sprintf("%s %s of job %s: %s (%s)", what, trig.RequestID, jobID, state, elapsed.Round(time.Second)))
	}})
	p.done()
	if st == nil {
		return fmt.Errorf("waiting for %s %s: %w", what, trig.RequestID, err)
	}
	if e.json {
		e.printJSON(st.Raw)
	}
	if err != nil {
		return fmt.Errorf("%s of job %s failed: %s", what, jobID, st.Operation.FailureCause.Message())
	}
	if !e.json {
		loc := ""
		if st.Operation != nil {
			loc = st.Operation.Location
		}
		fmt.Fprintln(e.out, loc)
	}
	return nil
}

func newJobsRescaleCommand() *cobra.Command {
	var vertex string
	var parallelism int
	cmd := &cobra.Command{
		Use:               "rescale <jobid> --vertex V --parallelism N",
		Short:             "Change a vertex's parallelism (PUT /jobs/:jobid/vertices/:vertexid/parallelism)",
		Args:              argsNamed("<jobid>"),
		ValidArgsFunction: completeJobIDs,
		RunE: apiCommand(func(e *env, cmd *cobra.Command, args []string) error {
			id, err := jobIDArg(args)
			if err != nil {
				return err
			}
			if vertex == "" {
				return usageError{fmt.Errorf("--vertex is required")}
			}
			if !cmd.Flags().Changed("parallelism") {
				return usageError{fmt.Errorf("--parallelism is required")}
			}
			if parallelism < 1 {
				return usageError{fmt.Errorf("--parallelism %d: must be at least 1", parallelism)}
			}
			res, err := e.c.Rescale(e.ctx, id, vertex, client.RescaleRequest{NewScale: parallelism, TriggerID: client.NewID()})
			if err != nil {
				return err
			}
			switch {
			case e.json:
				e.printJSON(res.Raw)
			case res.RequestID != "":
				fmt.Fprintln(e.out, res.RequestID)
			default:
				fmt.Fprintf(e.out, "vertex %s of job %s rescaling to parallelism %d\n", vertex, id, parallelism)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&vertex, "vertex", "", "the vertex id (required)")
	cmd.Flags().IntVar(&parallelism, "parallelism", 0, "the new parallelism (required)")
	return cmd
}

func newJobsExceptionsCommand() *cobra.Command {
	var max int
	cmd := &cobra.Command{
		Use:               "exceptions <jobid>",
		Short:             "Show a job's exception history (GET /jobs/:jobid/exceptions)",
		Args:              argsNamed("<jobid>"),
		ValidArgsFunction: completeJobIDs,
		RunE: apiCommand(func(e *env, _ *cobra.Command, args []string) error {
			id, err := jobIDArg(args)
			if err != nil {
				return err
			}
			ex, err := e.c.JobExceptions(e.ctx, id, max)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(ex.Raw)
				return nil
			}
			entries := ex.ExceptionHistory.Entries
			if len(entries) == 0 {
				fmt.Fprintf(e.out, "job %s has no exceptions\n", id)
				return nil
			}
			w := e.table()
			fmt.Fprintln(w, "TIME\tTASK\tTASK MANAGER\tEXCEPTION")
			for _, x := range entries {
				msg := firstLine(x.Stacktrace)
				if msg == "" {
					msg = x.ExceptionName
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", fmtMillis(x.Timestamp), orDash(x.TaskName), orDash(x.TaskManagerID), strings.ReplaceAll(msg, "\t", " "))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if ex.ExceptionHistory.Truncated {
				fmt.Fprintln(e.out, "(older exceptions were dropped)")
			}
			return nil
		}),
	}
	cmd.Flags().IntVar(&max, "max", 0, "at most this many entries (Flink's maxExceptions; 0: the server's default)")
	return cmd
}
