// Package e2e holds the end-to-end robustness suite of the dispatcher: it
// runs the docker-compose cluster (deploy/cluster.sh), drives it with
// concurrent clients through the load balancer while injecting faults
// (killed, paused, partitioned and restarted nodes, a whole-cluster
// restart), records every operation as a porcupine history and checks it
// for linearizability, and checks that no acknowledged write is lost.
//
// The tests only build with the e2e tag:
//
//	go test -tags e2e ./e2e -run TestE2E -timeout 20m -v          # long mode
//	E2E_SHORT=1 go test -tags e2e ./e2e -run TestE2E -timeout 20m # short mode
//
// deploy/e2e.sh wraps both; deploy/RESULTS.md holds the last long run.
package e2e
