package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dispatcher-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "dispatcher")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

func TestBadFlagsExitTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	for name, tt := range map[string]struct {
		env  []string
		args []string
		want string
	}{
		"unknown flag":   {nil, []string{"agent", "--no-such-flag"}, "no-such-flag"},
		"bad int":        {nil, []string{"agent", "--bootstrap-expect", "three"}, "bootstrap-expect"},
		"bad env":        {[]string{"DISPATCHER_TASK_SLOTS=many"}, []string{"agent", "--data-dir", dir}, "task-slots"},
		"no data dir":    {nil, []string{"agent", "--node-id", "n"}, "data-dir"},
		"bad address":    {nil, []string{"agent", "--data-dir", dir, "--raft-addr", "x"}, "raft-addr"},
		"unknown cmd":    {nil, []string{"frobnicate"}, "frobnicate"},
		"stray argument": {nil, []string{"version", "extra"}, "extra"},
	} {
		code, _, stderr := run(t, tt.env, tt.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(stderr, tt.want) || strings.Contains(stderr, "goroutine") {
			t.Errorf("%s: exit %d, stderr %q", name, code, stderr)
		}
	}
}

func TestVersionAndHealthAgainstNothing(t *testing.T) {
	code, out, _ := run(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "dispatcher ") {
		t.Errorf("version: %d %q", code, out)
	}
	code, _, stderr := run(t, nil, "health", "--address", "127.0.0.1:1", "--timeout", "500ms")
	if code != 1 || !strings.Contains(stderr, "not healthy") {
		t.Errorf("health against a closed port: %d %q", code, stderr)
	}
}
