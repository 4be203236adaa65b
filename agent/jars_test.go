package agent_test

import (
	"archive/zip"
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	tc "github.com/dispatcher-dev/dispatcher/internal/testcluster"
)

func makeZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	zw.Close()
	return buf.Bytes()
}

// upload posts a multipart form exactly as curl -F jarfile=@name does, with
// the file name left as given (even a hostile one).
func upload(t *testing.T, a *agent.Agent, filename string, data []byte) (int, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="jarfile"; filename="%s"`, filename))
	h.Set("Content-Type", "application/java-archive")
	pw, _ := mw.CreatePart(h)
	pw.Write(data)
	mw.Close()
	req, _ := http.NewRequest("POST", a.URL()+"/v1/jars/upload", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+tc.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

const bundledJob = `{"name":"bundled","params":{"upto":100},"restartStrategy":{"type":"fixed-delay","attempts":5,"delay":"200ms"},"vertices":[
	{"id":"src","operator":"sequence","params":{"from":1,"to":"${upto}"}},
	{"id":"cnt","operator":"count","inputs":[{"from":"src","ship":"hash","key":"n"}]},
	{"id":"out","operator":"discard","inputs":[{"from":"cnt"}]}]}`

func TestABundleUploadedOnANodeRunsAfterThatNodeDies(t *testing.T) {
	c := tc.New(t, 3, nil)
	leader := c.WaitForLeader(10 * time.Second)
	c.WaitForVoters(3, 10*time.Second)
	receiver := c.Followers()[0]
	code, body := upload(t, receiver, "wordcount.jar", makeZip(t, map[string]string{"job.json": bundledJob, "data/input.txt": "hello"}))
	if code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	var up struct{ Filename, Status string }
	tc.Response{Body: body}.JSON(t, &up)
	jarID := filepath.Base(up.Filename)
	if up.Status != "success" || !strings.HasSuffix(jarID, "_wordcount.jar") {
		t.Fatalf("upload answer %s", body)
	}
	var list struct {
		Files []struct {
			ID      string
			Entry   []struct{ Name string }
			Holders []string
		}
	}
	c.Do(leader, "GET", "/jars", nil).JSON(t, &list)
	if len(list.Files) != 1 || list.Files[0].ID != jarID || len(list.Files[0].Entry) != 1 || len(list.Files[0].Holders) < 2 {
		t.Fatalf("jar list %+v", list)
	}

	c.Kill(receiver.Node.ID())
	runner := c.WaitForLeader(10 * time.Second)
	for _, a := range c.Running() {
		if a != runner {
			runner = a
		}
	}
	jobID := fmt.Sprintf("%032x", 77)
	run := func() tc.Response {
		return c.Do(runner, "POST", "/v1/jars/"+jarID+"/run?program-args=--upto+500&parallelism=2", map[string]any{"jobId": jobID})
	}
	r := run()
	if r.Code != http.StatusOK || !strings.Contains(string(r.Body), jobID) {
		t.Fatalf("run after the receiving node died: %d %s", r.Code, r.Body)
	}
	if r := run(); r.Code != http.StatusOK {
		t.Fatalf("idempotent rerun: %d %s", r.Code, r.Body)
	}
	j := waitJobState(t, runner, jobID, 30*time.Second, fsm.JobFinished, fsm.JobFailed)
	if j.State != fsm.JobFinished {
		t.Fatalf("bundled job %s: %+v", j.State, j.Failures)
	}
	if n := len(runner.Node.FSM.Jobs()); n != 1 {
		t.Errorf("%d jobs after a retried run with one jobId", n)
	}
	if len(j.Placement["src"]) != 2 {
		t.Errorf("parallelism override: placement %v", j.Placement)
	}
	// The plan of a bundle is available on any node too.
	if r := c.Do(runner, "GET", "/v1/jars/"+jarID+"/plan", nil); r.Code != http.StatusOK || !strings.Contains(string(r.Body), `"nodes"`) {
		t.Errorf("plan: %d %s", r.Code, r.Body)
	}
	if r := c.Do(runner, "DELETE", "/v1/jars/"+jarID, nil); r.Code != http.StatusOK {
		t.Errorf("delete: %d %s", r.Code, r.Body)
	}
	if r := c.Do(runner, "DELETE", "/v1/jars/"+jarID, nil); r.Code != http.StatusNotFound {
		t.Errorf("delete twice: %d %s", r.Code, r.Body)
	}
}

func TestBadBundlesAreRefusedAndWriteNothingOutsideTheUploadDirectory(t *testing.T) {
	c := tc.New(t, 1, func(cfg *config.Config) { cfg.MaxBodyBytes = 1 << 20 })
	a := c.WaitForLeader(10 * time.Second)
	var bomb bytes.Buffer
	zw := zip.NewWriter(&bomb)
	w, _ := zw.Create("job.json")
	w.Write([]byte(bundledJob))
	w, _ = zw.Create("zeros.bin")
	w.Write(make([]byte, 20<<20))
	zw.Close()
	cases := map[string]struct {
		name string
		data []byte
		code int
	}{
		"not a zip":               {"x.jar", []byte("just text"), 400},
		"parent in entry name":    {"x.jar", makeZip(t, map[string]string{"job.json": bundledJob, "../evil.txt": "x"}), 400},
		"absolute entry name":     {"x.jar", makeZip(t, map[string]string{"job.json": bundledJob, "/tmp/evil.txt": "x"}), 400},
		"separator in file name":  {"../evil.jar", makeZip(t, map[string]string{"job.json": bundledJob}), 400},
		"directory in file name":  {"a/b.jar", makeZip(t, map[string]string{"job.json": bundledJob}), 400},
		"backslash in file name":  {`..\evil.jar`, makeZip(t, map[string]string{"job.json": bundledJob}), 400},
		"not a jar name":          {"x.exe", makeZip(t, map[string]string{"job.json": bundledJob}), 400},
		"zip bomb":                {"bomb.jar", bomb.Bytes(), 400},
		"no job.json":             {"x.jar", makeZip(t, map[string]string{"readme.txt": "x"}), 400},
		"invalid spec":            {"x.jar", makeZip(t, map[string]string{"job.json": `{"name":"x","vertices":[{"id":"a","operator":"nope"}]}`}), 400},
		"spec that is not JSON":   {"x.jar", makeZip(t, map[string]string{"job.json": `{`}), 400},
		"too large for the limit": {"big.jar", bytes.Repeat([]byte("x"), 2<<20), 413},
	}
	for name, tt := range cases {
		code, body := upload(t, a, tt.name, tt.data)
		if code != tt.code || !strings.Contains(string(body), `"errors"`) {
			t.Errorf("%s: %d %s, want %d with errors", name, code, body, tt.code)
		}
	}
	if n := len(a.Node.FSM.Bundles()); n != 0 {
		t.Errorf("%d bundles stored from bad uploads", n)
	}
	// Nothing but the node's own files anywhere under its data dir.
	filepath.Walk(filepath.Dir(a.Node.Config().DataDir), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(info.Name(), "evil") {
			t.Errorf("a bad upload wrote %s", p)
		}
		return nil
	})
	for path, want := range map[string]int{
		"/v1/jars/" + strings.Repeat("0", 32) + "_x.jar/run": 404,
		"/v1/jars/..%2f..%2fetc%2fpasswd/run":                404,
		"/v1/jars/not-an-id/run":                             400,
	} {
		if r := c.Do(a, "POST", path, nil); r.Code != want {
			t.Errorf("%s: %d %s, want %d", path, r.Code, r.Body, want)
		}
	}
}
