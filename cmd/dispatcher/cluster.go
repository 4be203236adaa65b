package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
)

// newClusterCommand is `dispatcher cluster members|leader|census`.
func newClusterCommand() *cobra.Command {
	members := &cobra.Command{
		Use:   "members",
		Short: "List the nodes gossip and Raft know (GET /v1/cluster/members)",
		Args:  argsNamed(),
		RunE: apiCommand(func(e *env, _ *cobra.Command, _ []string) error {
			m, err := e.c.Members(e.ctx)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(m.Raw)
				return nil
			}
			sort.Slice(m.Members, func(i, j int) bool { return m.Members[i].ID < m.Members[j].ID })
			w := e.table()
			fmt.Fprintln(w, "ID\tSTATUS\tSUFFRAGE\tLEADER\tHTTP\tRAFT\tGOSSIP\tSLOTS\tVERSION")
			for _, x := range m.Members {
				leader := ""
				if x.Leader {
					leader = "*"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", x.ID, x.Status, x.Suffrage, orDash(leader),
					orDash(x.HTTPAddress), orDash(x.RaftAddress), orDash(x.GossipAddress), x.Slots, orDash(x.Version))
			}
			return w.Flush()
		}),
	}
	leader := &cobra.Command{
		Use:   "leader",
		Short: "Show the Raft leader (GET /v1/cluster/leader)",
		Args:  argsNamed(),
		RunE: apiCommand(func(e *env, _ *cobra.Command, _ []string) error {
			l, err := e.c.Leader(e.ctx)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(l.Raw)
				return nil
			}
			w := e.table()
			fmt.Fprintln(w, "ID\tHTTP\tRAFT\tTERM\tSINCE")
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", l.ID, l.HTTPAddress, l.RaftAddress, l.Term, fmtTime(l.Since))
			return w.Flush()
		}),
	}
	census := &cobra.Command{
		Use:   "census",
		Short: "Show Habitat's census: service groups, their leader and members (GET /census)",
		Args:  argsNamed(),
		RunE: apiCommand(func(e *env, _ *cobra.Command, _ []string) error {
			c, err := e.c.Census(e.ctx)
			if err != nil {
				return err
			}
			if e.json {
				e.printJSON(c.Raw)
				return nil
			}
			groups := make([]string, 0, len(c.CensusGroups))
			for g := range c.CensusGroups {
				groups = append(groups, g)
			}
			sort.Strings(groups)
			w := e.table()
			for i, name := range groups {
				g := c.CensusGroups[name]
				leader := "none"
				if g.LeaderID != nil {
					leader = *g.LeaderID
				}
				if i > 0 {
					fmt.Fprintln(w)
				}
				fmt.Fprintf(w, "%s: %s, leader %s (answered by %s)\n", name, g.ElectionStatus, leader, c.LocalMemberID)
				fmt.Fprintln(w, "MEMBER\tHEALTH\tROLE\tHTTP GATEWAY\tGOSSIP\tPACKAGE")
				ids := make([]string, 0, len(g.Population))
				for id := range g.Population {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				for _, id := range ids {
					m := g.Population[id]
					role := "follower"
					if m.Leader {
						role = "leader"
					} else if !m.Follower {
						role = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s:%d\t%s:%d\t%s\n", id, m.Health(), role,
						m.Sys.HTTPGatewayIP, m.Sys.HTTPGatewayPort, m.Sys.GossipIP, m.Sys.GossipPort, m.Package)
				}
			}
			return w.Flush()
		}),
	}
	cmd := groupCommand("cluster", "Inspect the cluster: members, leader, Habitat census", members, leader, census)
	addOutputFlag(cmd)
	return cmd
}
