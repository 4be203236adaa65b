package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
)

// readTarget is one side of the comparison.
type readTarget struct {
	name   string
	base   string
	client *http.Client
	res    *loadResult
	cpu    cpuUse
}

func runReads(ctx context.Context, o options, dir string) error {
	if o.segments < 1 {
		o.segments = 1
	}
	seg := o.duration / time.Duration(o.segments)
	fmt.Printf("settings: 3 nodes, concurrency=%d, duration=%s per target and endpoint in %d alternating segments of %s (ABBA...),\n",
		o.concurrency, o.duration, o.segments, seg)
	fmt.Printf("  1s unmeasured warm-up per target, keep-alive clients, %d jobs preloaded, request timeout %s\n", o.preload, o.reqTimeout)
	api := newAPIClient(o.token)
	c, leaderID, err := startCluster(ctx, o, dir, api)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	leader := c.node(leaderID)
	var follower *node
	for _, n := range c.others(leader) {
		follower = n
		break
	}

	// Preload jobs through the leader, then wait for the follower to have them.
	ids := newJobIDs()
	var g errgroup.Group
	g.SetLimit(8)
	for i := 0; i < o.preload; i++ {
		g.Go(func() error {
			code, body, _, err := api.postJob(ctx, leader, ids.next(), 10*time.Second)
			if err == nil && code != 202 {
				err = fmt.Errorf("preload: %d %s", code, body)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		n, err := api.jobCount(ctx, follower)
		if err == nil && n == o.preload {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("follower %s has %d of %d preloaded jobs after 10s (%v)", follower.id, n, o.preload, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Fetch the real bodies once and serve them verbatim from a bare server.
	paths := []string{"/v1/overview", "/v1/cluster/members"}
	type canned struct {
		body        []byte
		contentType string
	}
	bodies := map[string]canned{}
	for _, p := range paths {
		code, body, hdr, err := api.doHeader(ctx, http.MethodGet, follower.url()+p, nil, 5*time.Second)
		if err != nil || code != 200 {
			return fmt.Errorf("GET %s on %s: %d %v", p, follower.id, code, err)
		}
		bodies[p] = canned{body, hdr.Get("Content-Type")}
	}
	mux := http.NewServeMux()
	for _, p := range paths {
		cn := bodies[p]
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", cn.contentType)
			w.Write(cn.body)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bare := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go bare.Serve(ln)
	defer bare.Close()
	fmt.Printf("  target: follower %s (leader is %s); bare net/http server on %s in the bench process\n", follower.id, leaderID, ln.Addr())
	for _, p := range paths {
		fmt.Printf("  %s: %d bytes, Content-Type %q\n", p, len(bodies[p].body), bodies[p].contentType)
	}

	type row struct {
		path       string
		disp, bare *loadResult
	}
	var rows []row
	for _, p := range paths {
		targets := []*readTarget{
			{name: "dispatcher " + follower.id, base: follower.url(), client: loadClient(o.concurrency), res: &loadResult{}},
			{name: "bare net/http", base: "http://" + ln.Addr().String(), client: loadClient(o.concurrency), res: &loadResult{}},
		}
		for _, t := range targets { // warm-up: connections, caches
			runLoad(ctx, t.client, o.concurrency, time.Second, o.reqTimeout, 200, getRequest(t.base+p, o.token))
		}
		for i := 0; i < o.segments && ctx.Err() == nil; i++ {
			order := []*readTarget{targets[0], targets[1]}
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, t := range order {
				a := takeCPU(c)
				t.res.merge(runLoad(ctx, t.client, o.concurrency, seg, o.reqTimeout, 200, getRequest(t.base+p, o.token)))
				t.cpu.add(a, takeCPU(c))
			}
		}
		for _, t := range targets {
			t.client.CloseIdleConnections()
		}
		rows = append(rows, row{p, targets[0].res, targets[1].res})
		fmt.Printf("  %s done\n", p)
		for _, t := range targets {
			fmt.Printf("    while loading %s: %s\n", t.name, t.cpu.report(c))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	fmt.Printf("\nreads at concurrency %d (%s per target and endpoint):\n", o.concurrency, o.duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "endpoint\tserver\trequests\treq/s\tp50\tp99\tmax\terrors\t")
	for _, r := range rows {
		for _, x := range []struct {
			name string
			res  *loadResult
		}{{"dispatcher follower " + follower.id, r.disp}, {"bare net/http, same bytes", r.bare}} {
			s := summarize(x.res.latencies)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t\n", r.path, x.name, x.res.ok, x.res.rate(), ms(s.p50), ms(s.p99), ms(s.max), x.res.errSummary())
		}
	}
	tw.Flush()

	fmt.Println("\nratios and goals (goal: dispatcher ≥ 0.5 × bare req/s, dispatcher p99 < 10 ms):")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "endpoint\treq/s dispatcher/bare\tp50 dispatcher/bare\tp99 dispatcher\t≥0.5×\tp99<10ms\t")
	for _, r := range rows {
		sd, sb := summarize(r.disp.latencies), summarize(r.bare.latencies)
		ratio := r.disp.rate() / r.bare.rate()
		fmt.Fprintf(tw, "%s\t%.2f\t%.1f×\t%s\t%s\t%s\t\n", r.path, ratio, float64(sd.p50)/float64(sb.p50), ms(sd.p99),
			yesNo(ratio >= 0.5), yesNo(sd.p99 < 10*time.Millisecond))
	}
	tw.Flush()
	if reportHealth(c) {
		return fmt.Errorf("a node exited on its own (see above)")
	}
	return nil
}
