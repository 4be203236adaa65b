package client

import (
	"bytes"
	"context"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path"
	"path/filepath"
)

// Flink's jar routes: a jar here is a job bundle uploaded once and run
// many times (flink.md a7).

// JarUpload is the answer of POST /jars/upload.
type JarUpload struct {
	// Filename is where the server stored the jar; its last element is
	// the jar id.
	Filename string `json:"filename"`
	Status   string `json:"status"` // success
	Meta     `json:"-"`
}

// ID is the jar id: the last element of Filename, as Flink's clients
// derive it.
func (u *JarUpload) ID() string { return path.Base(filepath.ToSlash(u.Filename)) }

// JarEntry is an entry point of a jar.
type JarEntry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// JarFile is one uploaded jar.
type JarFile struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Uploaded int64      `json:"uploaded"` // unix ms
	Entry    []JarEntry `json:"entry"`
	// This dispatcher keeps a bundle on a quorum of nodes: its digest,
	// size and the nodes holding it.
	SHA256  string   `json:"sha256,omitempty"`
	Size    int64    `json:"size,omitempty"`
	Holders []string `json:"holders,omitempty"`
}

// JarList is GET /jars.
type JarList struct {
	Address string    `json:"address"`
	Files   []JarFile `json:"files"`
	Meta    `json:"-"`
}

// JarRunRequest is Flink's JarRunRequestBody. A JobID makes the run
// idempotent, so it is retried on connection errors and 503.
type JarRunRequest struct {
	EntryClass            string            `json:"entryClass,omitempty"`
	ProgramArgsList       []string          `json:"programArgsList,omitempty"`
	Parallelism           int               `json:"parallelism,omitempty"`
	JobID                 string            `json:"jobId,omitempty"`
	AllowNonRestoredState bool              `json:"allowNonRestoredState,omitempty"`
	SavepointPath         string            `json:"savepointPath,omitempty"`
	ClaimMode             string            `json:"claimMode,omitempty"` // CLAIM, NO_CLAIM, LEGACY
	FlinkConfiguration    map[string]string `json:"flinkConfiguration,omitempty"`
}

// JarRunResult is Flink's JarRunResponseBody.
type JarRunResult struct {
	JobID         string `json:"jobid"`
	ApplicationID string `json:"applicationId,omitempty"`
	Meta          `json:"-"`
}

// JarPlanRequest is Flink's JarPlanRequestBody.
type JarPlanRequest struct {
	EntryClass         string            `json:"entryClass,omitempty"`
	ProgramArgsList    []string          `json:"programArgsList,omitempty"`
	Parallelism        int               `json:"parallelism,omitempty"`
	JobID              string            `json:"jobId,omitempty"`
	FlinkConfiguration map[string]string `json:"flinkConfiguration,omitempty"`
}

// JobPlan is Flink's JobPlanInfo.
type JobPlan struct {
	Plan json.RawMessage `json:"plan"`
	Meta `json:"-"`
}

// UploadJar is Flink's POST /jars/upload: content goes as the multipart
// field "jarfile" named name, typed application/x-java-archive. It is not
// retried (each upload makes a new jar).
func (c *Client) UploadJar(ctx context.Context, name string, content []byte) (*JarUpload, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", multipart.FileContentDisposition("jarfile", name))
	h.Set("Content-Type", "application/x-java-archive")
	part, err := mw.CreatePart(h)
	if err != nil {
		return nil, err
	}
	part.Write(content)
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var out JarUpload
	err = c.call(ctx, &request{method: http.MethodPost, path: "/jars/upload", body: buf.Bytes(), contentType: mw.FormDataContentType()}, &out)
	return &out, err
}

// UploadJarFile uploads the file at path under its base name.
func (c *Client) UploadJarFile(ctx context.Context, file string) (*JarUpload, error) {
	content, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return c.UploadJar(ctx, filepath.Base(file), content)
}

// ListJars is Flink's GET /jars.
func (c *Client) ListJars(ctx context.Context, opts ...ReadOption) (*JarList, error) {
	var out JarList
	return &out, c.get(ctx, "/jars", readQuery(opts), &out)
}

// RunJar is Flink's POST /jars/:jarid/run.
func (c *Client) RunJar(ctx context.Context, jarID string, req JarRunRequest) (*JarRunResult, error) {
	var out JarRunResult
	return &out, c.write(ctx, http.MethodPost, "/jars/"+pathEscape(jarID)+"/run", nil, req, req.JobID != "", &out)
}

// JarPlan is Flink's POST /jars/:jarid/plan.
func (c *Client) JarPlan(ctx context.Context, jarID string, req JarPlanRequest) (*JobPlan, error) {
	var out JobPlan
	// Computing a plan changes nothing: safe to repeat.
	return &out, c.write(ctx, http.MethodPost, "/jars/"+pathEscape(jarID)+"/plan", nil, req, true, &out)
}

// DeleteJar is Flink's DELETE /jars/:jarid.
func (c *Client) DeleteJar(ctx context.Context, jarID string) error {
	return c.write(ctx, http.MethodDelete, "/jars/"+pathEscape(jarID), nil, nil, false, nil)
}
