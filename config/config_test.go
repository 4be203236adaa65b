package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return f.Load(func(k string) string { return env[k] })
}

func TestFlagsBeatEnvironmentWhichBeatsTheFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "conf.yaml")
	os.WriteFile(file, []byte(`
rest.port: 9090
taskmanager.numberOfTaskSlots: 7
bootstrap-expect: 5
node-id: from-file
jobmanager.web.backpressure.num-samples: 20
jobmanager:
  web:
    backpressure:
      refresh-interval: 1500
custom.key: kept
`), 0o600)
	c, err := load(t, []string{"--data-dir", dir, "--config", file, "--node-id", "from-flag"},
		map[string]string{"DISPATCHER_BOOTSTRAP_EXPECT": "3", "DISPATCHER_AUTH_TOKEN": "tok", "DISPATCHER_JOIN": "a:1,b:2"})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "from-flag" || c.BootstrapExpect != 3 || c.HTTPAddr != "0.0.0.0:9090" || c.TaskSlots != 7 {
		t.Errorf("precedence: %+v", c)
	}
	if c.BackPressure.NumSamples != 20 || c.BackPressure.RefreshInterval != 1500*time.Millisecond {
		t.Errorf("back pressure keys: %+v", c.BackPressure)
	}
	if c.AuthToken != "tok" || len(c.Join) != 2 || c.Extra["custom.key"] != "kept" {
		t.Errorf("token/join/extra: %q %v %v", c.AuthToken, c.Join, c.Extra)
	}
	if c.OutputDir != filepath.Join(dir, "output") {
		t.Errorf("output dir %q", c.OutputDir)
	}
}

func TestHabitatNamesAreAliases(t *testing.T) {
	c, err := load(t, []string{"--data-dir", t.TempDir(), "--listen-http", "127.0.0.1:9631", "--node-id", "n"},
		map[string]string{"HAB_SUP_GATEWAY_AUTH_TOKEN": "sekret"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9631" || c.AuthToken != "sekret" {
		t.Errorf("%q %q", c.HTTPAddr, c.AuthToken)
	}
}

func TestDevNeedsNothingElse(t *testing.T) {
	c, err := load(t, []string{"--dev", "--node-id", "dev"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(c.DataDir)
	if c.BootstrapExpect != 1 || c.HTTPAddr != "127.0.0.1:8081" || c.DataDir == "" {
		t.Errorf("dev: %+v", c)
	}
}

func TestBadValuesNameTheirFlag(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("rest.port: banana\n"), 0o600)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("a: [\n"), 0o600)
	for name, tt := range map[string]struct {
		args []string
		env  map[string]string
		flag string
	}{
		"no data dir":      {[]string{"--node-id", "n"}, nil, "data-dir"},
		"bad node id":      {[]string{"--node-id", "a b", "--data-dir", dir}, nil, "node-id"},
		"bad http addr":    {[]string{"--node-id", "n", "--data-dir", dir, "--http-addr", "nope"}, nil, "http-addr"},
		"bad join":         {[]string{"--node-id", "n", "--data-dir", dir, "--join", "nohost"}, nil, "join"},
		"bad env":          {[]string{"--node-id", "n", "--data-dir", dir}, map[string]string{"DISPATCHER_BOOTSTRAP_EXPECT": "x"}, "bootstrap-expect"},
		"bad gossip key":   {[]string{"--node-id", "n", "--data-dir", dir}, map[string]string{"DISPATCHER_GOSSIP_KEY": "c2hvcnQ="}, "gossip-key"},
		"bad file value":   {[]string{"--node-id", "n", "--data-dir", dir, "--config", bad}, nil, "rest.port"},
		"broken file":      {[]string{"--node-id", "n", "--data-dir", dir, "--config", broken}, nil, "config"},
		"missing file":     {[]string{"--node-id", "n", "--data-dir", dir, "--config", filepath.Join(dir, "none")}, nil, "config"},
		"lease > hearbeat": {[]string{"--node-id", "n", "--data-dir", dir, "--raft-leader-lease-timeout", "2s"}, nil, "raft-leader-lease-timeout"},
	} {
		_, err := load(t, tt.args, tt.env)
		var ce *Error
		if !errors.As(err, &ce) || ce.Flag != tt.flag {
			t.Errorf("%s: got %v, want an error naming --%s", name, err, tt.flag)
		}
	}
}
