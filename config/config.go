// Package config turns flags, DISPATCHER_* environment variables and a
// Flink-style YAML file into one validated Config. Precedence: flags, then
// environment, then the file, then defaults.
package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is everything a node needs to start.
type Config struct {
	NodeID          string
	DataDir         string
	HTTPAddr        string
	RaftAddr        string
	GossipAddr      string
	Advertise       string
	Join            []string
	BootstrapExpect int
	Dev             bool

	// AuthToken protects every HTTP route and authenticates node-to-node
	// streams. It only ever comes from the environment, never a flag, so it
	// does not show up in process listings.
	AuthToken string
	// GossipKey encrypts memberlist traffic (16, 24 or 32 bytes).
	GossipKey []byte

	TaskSlots     int
	OutputDir     string
	InputDir      string
	CheckpointDir string
	SavepointDir  string
	// SavepointAllow lists further directories savepoints may be written
	// to and restored from.
	SavepointAllow []string
	AllowExec      bool
	// ExecPaths are the directories the exec operator may run programs from.
	ExecPaths []string

	Raft RaftTimings
	// DeadServerTimeout is how long a server must be dead in gossip before
	// the leader removes it from the Raft configuration.
	DeadServerTimeout time.Duration
	// LeaderWait bounds how long a write waits for a leader before 503.
	LeaderWait time.Duration
	// MaxBodyBytes caps request bodies (Flink's rest.server.max-content-length).
	MaxBodyBytes int64

	RefreshInterval time.Duration
	WebSubmit       bool
	BackPressure    BackPressureConfig
	LogLevel        string

	// Extra holds the config-file keys this build does not interpret, served
	// back by /jobmanager/config like Flink does.
	Extra map[string]string
}

// RaftTimings are tuned for a LAN so that a dead leader is replaced in about
// a second: followers notice after [HeartbeatTimeout, 2*HeartbeatTimeout).
type RaftTimings struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
}

// BackPressureConfig carries Flink's jobmanager.web.backpressure.* keys.
type BackPressureConfig struct {
	RefreshInterval     time.Duration
	NumSamples          int
	DelayBetweenSamples time.Duration
}

// Default returns the configuration of a production node before flags.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		NodeID:     host,
		DataDir:    "",
		HTTPAddr:   "0.0.0.0:8081",
		RaftAddr:   "0.0.0.0:7000",
		GossipAddr: "0.0.0.0:7946",
		TaskSlots:  4,
		Raft: RaftTimings{
			HeartbeatTimeout:   400 * time.Millisecond,
			ElectionTimeout:    400 * time.Millisecond,
			LeaderLeaseTimeout: 300 * time.Millisecond,
			CommitTimeout:      20 * time.Millisecond,
			SnapshotThreshold:  8192,
			SnapshotInterval:   30 * time.Second,
			TrailingLogs:       10240,
		},
		DeadServerTimeout: 30 * time.Second,
		LeaderWait:        5 * time.Second,
		MaxBodyBytes:      100 << 20,
		RefreshInterval:   3 * time.Second,
		WebSubmit:         true,
		BackPressure: BackPressureConfig{
			RefreshInterval:     60 * time.Second,
			NumSamples:          100,
			DelayBetweenSamples: 50 * time.Millisecond,
		},
		LogLevel: "info",
		Extra:    map[string]string{},
	}
}

// Error names the flag (or key) that is wrong; the CLI prints it on one line
// and exits 2.
type Error struct {
	Flag string
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid --%s: %s", e.Flag, e.Msg) }

// Finish fills derived values and validates. Call it after every source has
// been applied.
func (c *Config) Finish() error {
	if c.Dev {
		if c.DataDir == "" {
			dir, err := os.MkdirTemp("", "dispatcher-dev-")
			if err != nil {
				return &Error{"data-dir", err.Error()}
			}
			c.DataDir = dir
		}
		if c.BootstrapExpect == 0 {
			c.BootstrapExpect = 1
		}
	}
	if c.NodeID == "" {
		return &Error{"node-id", "must not be empty (and the hostname is unknown)"}
	}
	if !validNodeID(c.NodeID) {
		return &Error{"node-id", fmt.Sprintf("%q: use letters, digits, '.', '_' and '-' (at most 64)", c.NodeID)}
	}
	if c.DataDir == "" {
		return &Error{"data-dir", "is required (or use --dev)"}
	}
	for flag, addr := range map[string]string{"http-addr": c.HTTPAddr, "raft-addr": c.RaftAddr, "gossip-addr": c.GossipAddr} {
		if _, _, err := SplitHostPort(addr); err != nil {
			return &Error{flag, err.Error()}
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return &Error{"join", fmt.Sprintf("%q is not HOST:PORT", j)}
		}
	}
	if c.BootstrapExpect < 0 {
		return &Error{"bootstrap-expect", "must be 0 or more"}
	}
	if c.TaskSlots < 0 || c.TaskSlots > 1024 {
		return &Error{"task-slots", "must be between 0 and 1024"}
	}
	if n := len(c.GossipKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return &Error{"gossip-key", "must decode to 16, 24 or 32 bytes"}
	}
	if c.Raft.LeaderLeaseTimeout > c.Raft.HeartbeatTimeout {
		return &Error{"raft-leader-lease-timeout", "must not exceed --raft-heartbeat-timeout"}
	}
	if c.Raft.ElectionTimeout < c.Raft.HeartbeatTimeout {
		return &Error{"raft-election-timeout", "must be at least --raft-heartbeat-timeout"}
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return &Error{"data-dir", err.Error()}
	}
	c.DataDir = abs
	for _, d := range []struct {
		flag string
		ptr  *string
		def  string
	}{
		{"output-dir", &c.OutputDir, "output"},
		{"input-dir", &c.InputDir, "input"},
		{"checkpoint-dir", &c.CheckpointDir, "checkpoints"},
		{"savepoint-dir", &c.SavepointDir, "savepoints"},
	} {
		if *d.ptr == "" {
			*d.ptr = filepath.Join(c.DataDir, d.def)
		}
		p, err := filepath.Abs(*d.ptr)
		if err != nil {
			return &Error{d.flag, err.Error()}
		}
		*d.ptr = p
	}
	if c.AllowExec && len(c.ExecPaths) == 0 {
		return &Error{"exec-path", "--allow-exec needs at least one --exec-path directory to run programs from"}
	}
	for i, dir := range c.ExecPaths {
		p, err := filepath.Abs(dir)
		if err != nil || dir == "" {
			return &Error{"exec-path", fmt.Sprintf("%q is not a directory path", dir)}
		}
		c.ExecPaths[i] = p
	}
	for i, dir := range c.SavepointAllow {
		p, err := filepath.Abs(strings.TrimPrefix(dir, "file://"))
		if err != nil || dir == "" {
			return &Error{"savepoint-allow", fmt.Sprintf("%q is not a directory path", dir)}
		}
		c.SavepointAllow[i] = p
	}
	return nil
}

func validNodeID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// SplitHostPort parses HOST:PORT with a numeric port.
func SplitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not HOST:PORT", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port", addr)
	}
	return host, port, nil
}

// DecodeGossipKey accepts base64 (as `consul keygen` prints).
func DecodeGossipKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %v", err)
	}
	return b, nil
}
