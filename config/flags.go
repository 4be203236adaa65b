package config

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// EnvPrefix prefixes the environment variable of every flag:
// --bootstrap-expect comes from DISPATCHER_BOOTSTRAP_EXPECT.
const EnvPrefix = "DISPATCHER_"

// EnvName is the environment variable that can set a flag.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Flags binds the agent's flags to a Config that starts from Default.
type Flags struct {
	fs         *pflag.FlagSet
	cfg        *Config
	configFile string
	listenHTTP string
}

// BindFlags registers every agent flag on fs.
func BindFlags(fs *pflag.FlagSet) *Flags {
	c := Default()
	f := &Flags{fs: fs, cfg: &c}
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "unique node id in the cluster (default: hostname)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "raft log and stable store, snapshots, node files")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "REST API and dashboard address (Flink's rest.port)")
	fs.StringVar(&f.listenHTTP, "listen-http", "", "alias of --http-addr (Habitat's flag)")
	fs.StringVar(&c.RaftAddr, "raft-addr", c.RaftAddr, "Raft transport address")
	fs.StringVar(&c.GossipAddr, "gossip-addr", c.GossipAddr, "gossip (memberlist) address, UDP and TCP")
	fs.StringVar(&c.Advertise, "advertise", "", "host name or IP peers use to reach this node")
	fs.StringSliceVar(&c.Join, "join", nil, "gossip seeds HOST:PORT[,HOST:PORT]; may be repeated")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", 0, "bootstrap Raft once this many servers see each other")
	fs.StringVar(&f.configFile, "config", "", "YAML file with Flink-style flat keys (rest.port, ...)")
	fs.BoolVar(&c.Dev, "dev", false, "one node, data in a temp dir, bootstraps at once")
	fs.IntVar(&c.TaskSlots, "task-slots", c.TaskSlots, "task slots this node offers")
	fs.StringVar(&c.OutputDir, "output-dir", "", "where file sinks write (default <data-dir>/output)")
	fs.StringVar(&c.InputDir, "input-dir", "", "where file sources read (default <data-dir>/input)")
	fs.StringVar(&c.CheckpointDir, "checkpoint-dir", "", "checkpoint storage (default <data-dir>/checkpoints)")
	fs.StringVar(&c.SavepointDir, "savepoint-dir", "", "default savepoint root (default <data-dir>/savepoints)")
	fs.StringSliceVar(&c.SavepointAllow, "savepoint-allow", nil, "further directories savepoints may use; repeatable")
	fs.BoolVar(&c.AllowExec, "allow-exec", false, "allow the exec operator to run programs (from --exec-path)")
	fs.StringSliceVar(&c.ExecPaths, "exec-path", nil, "directories the exec operator may run programs from; repeatable")
	fs.DurationVar(&c.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", c.Raft.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&c.Raft.ElectionTimeout, "raft-election-timeout", c.Raft.ElectionTimeout, "Raft election timeout")
	fs.DurationVar(&c.Raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", c.Raft.LeaderLeaseTimeout, "Raft leader lease timeout")
	fs.DurationVar(&c.Raft.CommitTimeout, "raft-commit-timeout", c.Raft.CommitTimeout, "Raft commit timeout")
	fs.Uint64Var(&c.Raft.SnapshotThreshold, "raft-snapshot-threshold", c.Raft.SnapshotThreshold, "log entries between snapshots")
	fs.DurationVar(&c.Raft.SnapshotInterval, "raft-snapshot-interval", c.Raft.SnapshotInterval, "how often to check for a snapshot")
	fs.Uint64Var(&c.Raft.TrailingLogs, "raft-trailing-logs", c.Raft.TrailingLogs, "log entries kept after a snapshot")
	fs.DurationVar(&c.DeadServerTimeout, "dead-server-timeout", c.DeadServerTimeout, "remove a server dead this long from Raft")
	fs.DurationVar(&c.LeaderWait, "leader-wait", c.LeaderWait, "how long a write waits for a leader before 503")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest accepted request body")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	return f
}

// Load applies environment variables and the config file to every flag the
// command line left unset, then validates.
func (f *Flags) Load(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	fromEnv := map[string]bool{}
	var envErr error
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if envErr != nil || fl.Changed {
			return
		}
		if v := getenv(EnvName(fl.Name)); v != "" {
			if err := f.fs.Set(fl.Name, v); err != nil {
				envErr = &Error{fl.Name, fmt.Sprintf("from %s: %v", EnvName(fl.Name), err)}
			}
			fromEnv[fl.Name] = true
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	if f.configFile != "" {
		if err := f.applyFile(f.configFile, fromEnv); err != nil {
			return Config{}, err
		}
	}
	if f.listenHTTP != "" && !f.fs.Changed("http-addr") {
		f.cfg.HTTPAddr = f.listenHTTP
	}
	c := *f.cfg
	c.AuthToken = getenv("DISPATCHER_AUTH_TOKEN")
	if c.AuthToken == "" {
		c.AuthToken = getenv("HAB_SUP_GATEWAY_AUTH_TOKEN")
	}
	key, err := DecodeGossipKey(getenv("DISPATCHER_GOSSIP_KEY"))
	if err != nil {
		return Config{}, &Error{"gossip-key", "DISPATCHER_GOSSIP_KEY " + err.Error()}
	}
	c.GossipKey = key
	if c.Dev {
		for flag, def := range map[string]*string{"http-addr": &c.HTTPAddr, "raft-addr": &c.RaftAddr, "gossip-addr": &c.GossipAddr} {
			if !f.fs.Changed(flag) && !fromEnv[flag] {
				*def = devAddr(flag)
			}
		}
	}
	if err := c.Finish(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// A dev node listens on loopback only, with the usual API port and
// kernel-chosen ports for Raft and gossip.
func devAddr(flag string) string {
	if flag == "http-addr" {
		return "127.0.0.1:8081"
	}
	return "127.0.0.1:0"
}

// flinkKeys maps Flink configuration keys onto this node's settings.
var flinkKeys = map[string]func(c *Config, v string) error{
	"rest.port": func(c *Config, v string) error {
		host, _, _ := SplitHostPort(c.HTTPAddr)
		if _, err := strconv.ParseUint(v, 10, 16); err != nil {
			return fmt.Errorf("not a port")
		}
		c.HTTPAddr = host + ":" + v
		return nil
	},
	"rest.bind-address": func(c *Config, v string) error {
		_, port, _ := SplitHostPort(c.HTTPAddr)
		c.HTTPAddr = fmt.Sprintf("%s:%d", v, port)
		return nil
	},
	"taskmanager.numberOfTaskSlots": intKey(func(c *Config, n int) { c.TaskSlots = n }),
	"state.checkpoints.dir":         func(c *Config, v string) error { c.CheckpointDir = strings.TrimPrefix(v, "file://"); return nil },
	"state.savepoints.dir":          func(c *Config, v string) error { c.SavepointDir = strings.TrimPrefix(v, "file://"); return nil },
	"rest.server.max-content-length": func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("not a positive byte count")
		}
		c.MaxBodyBytes = n
		return nil
	},
	"web.refresh-interval": msKey(func(c *Config, d time.Duration) { c.RefreshInterval = d }),
	"web.submit.enable": func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		c.WebSubmit = b
		return err
	},
	"jobmanager.web.backpressure.refresh-interval":      msKey(func(c *Config, d time.Duration) { c.BackPressure.RefreshInterval = d }),
	"jobmanager.web.backpressure.delay-between-samples": msKey(func(c *Config, d time.Duration) { c.BackPressure.DelayBetweenSamples = d }),
	"jobmanager.web.backpressure.num-samples":           intKey(func(c *Config, n int) { c.BackPressure.NumSamples = n }),
}

func intKey(set func(*Config, int)) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("not a non-negative integer")
		}
		set(c, n)
		return nil
	}
}

// msKey accepts Flink's bare milliseconds or a Go duration.
func msKey(set func(*Config, time.Duration)) func(*Config, string) error {
	return func(c *Config, v string) error {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			set(c, time.Duration(n)*time.Millisecond)
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("not a positive duration in ms")
		}
		set(c, d)
		return nil
	}
}

func (f *Flags) applyFile(path string, fromEnv map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return &Error{"config", err.Error()}
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return &Error{"config", fmt.Sprintf("%s: %v", path, firstLine(err.Error()))}
	}
	flat := map[string]string{}
	flatten("", doc, flat)
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := flat[k]
		if fl := f.fs.Lookup(k); fl != nil {
			if fl.Changed || fromEnv[k] {
				continue
			}
			if err := f.fs.Set(k, v); err != nil {
				return &Error{k, fmt.Sprintf("in %s: %v", path, err)}
			}
			continue
		}
		if apply, ok := flinkKeys[k]; ok {
			if err := apply(f.cfg, v); err != nil {
				return &Error{k, fmt.Sprintf("in %s: %q %v", path, v, err)}
			}
			continue
		}
		f.cfg.Extra[k] = v
	}
	return nil
}

func flatten(prefix string, v any, out map[string]string) {
	switch t := v.(type) {
	case map[string]any:
		for k, sub := range t {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, sub, out)
		}
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		out[prefix] = strings.Join(parts, ",")
	default:
		out[prefix] = fmt.Sprint(t)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
