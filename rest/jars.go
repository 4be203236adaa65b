package rest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/bundle"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/gossip"
	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// Jars are job bundles. Unlike Flink, whose jars live only on the node that
// received them, an upload is acknowledged only once its bytes are on a
// quorum of nodes and its metadata is in Raft, so any node can run or plan
// it after the receiving node is gone.

func (s *Server) jarRoutes() []route {
	return []route{
		{method: "POST", path: "/jars/upload", handler: s.postJarUpload},
		{method: "GET", path: "/jars", handler: s.getJars},
		{method: "DELETE", path: "/jars/:jarid", write: true, handler: s.deleteJar},
		{method: "GET", path: "/jars/:jarid/plan", handler: s.jarPlan},
		{method: "POST", path: "/jars/:jarid/plan", handler: s.jarPlan},
		{method: "POST", path: "/jars/:jarid/run", write: true, handler: s.postJarRun},
		{method: "POST", path: "/internal/bundles", write: true, handler: s.postBundleMeta},
		{method: "PUT", path: "/internal/bundles/:sha", handler: s.putBundleBytes},
		{method: "GET", path: "/internal/bundles/:sha", handler: s.getBundleBytes},
	}
}

var jarIDPattern = regexp.MustCompile(`^[0-9a-f]{32}_[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

func (s *Server) jarParam(c *gin.Context) (*fsm.Bundle, bool) {
	id := c.Param("jarid")
	if !jarIDPattern.MatchString(id) {
		fail(c, http.StatusBadRequest, "Bad request: jar id "+quoteShort(id)+" is malformed.")
		return nil, false
	}
	b, ok := s.node.FSM.Bundle(id)
	if !ok {
		fail(c, http.StatusNotFound, "Jar file "+id+" does not exist.")
		return nil, false
	}
	return b, true
}

func (s *Server) postJarUpload(c *gin.Context) {
	file, header, err := c.Request.FormFile("jarfile")
	if err != nil {
		if isBodyTooLarge(err) {
			fail(c, http.StatusRequestEntityTooLarge, "The jar is larger than the limit of "+strconv.FormatInt(s.maxBody, 10)+" bytes.")
			return
		}
		fail(c, http.StatusBadRequest, "Bad request: expected a multipart form with the file in field \"jarfile\": "+err.Error())
		return
	}
	defer file.Close()
	name := header.Filename
	if raw := rawFilename(header); raw != "" {
		name = raw
	}
	if err := bundle.CheckUploadName(name); err != nil {
		fail(c, http.StatusBadRequest, err.Error())
		return
	}
	data, err := io.ReadAll(file)
	if err != nil {
		fail(c, http.StatusBadRequest, "Cannot read the upload: "+err.Error())
		return
	}
	entries, err := bundle.Inspect(data, s.bundleLimits())
	if err != nil {
		fail(c, http.StatusBadRequest, err.Error())
		return
	}
	for _, e := range entries {
		spec, err := bundle.Spec(data, e.Name, s.bundleLimits())
		if err == nil {
			_, err = jobgraph.Parse(spec, s.parseOptions())
		}
		if err != nil {
			fail(c, http.StatusBadRequest, specProblems(e.Name, err)...)
			return
		}
	}
	sum := bundle.Sum(data)
	holders, err := s.replicateBundle(c.Request.Context(), sum, data)
	if err != nil {
		c.Header("Retry-After", "1")
		fail(c, http.StatusServiceUnavailable, err.Error())
		return
	}
	b := fsm.Bundle{ID: newJarID(name), Name: name, SHA256: sum, Size: int64(len(data)), Uploaded: time.Now().UnixMilli(), Holders: holders}
	for _, e := range entries {
		b.Entries = append(b.Entries, fsm.BundleEntry{Name: e.Name, Description: e.Description})
	}
	if code, msgs := s.viaLeader(c.Request.Context(), "/v1/internal/bundles", b); code != http.StatusOK {
		fail(c, code, msgs...)
		return
	}
	c.JSON(http.StatusOK, gin.H{"filename": filepath.Join(s.node.Config().DataDir, "bundles", b.ID), "status": "success"})
}

// rawFilename returns the file name exactly as the client sent it:
// mime/multipart strips directories, which would hide "../x.jar".
func rawFilename(h *multipart.FileHeader) string {
	cd := h.Header.Get("Content-Disposition")
	i := strings.Index(cd, "filename=")
	if i < 0 {
		return ""
	}
	v := cd[i+len("filename="):]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
	}
	if j := strings.IndexByte(v, ';'); j >= 0 {
		v = v[:j]
	}
	return strings.TrimSpace(v)
}

func newJarID(name string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b) + "_" + name
}

func specProblems(entry string, err error) []string {
	var ve *jobgraph.ValidationError
	if errors.As(err, &ve) {
		out := make([]string, len(ve.Problems))
		for i, p := range ve.Problems {
			out[i] = entry + ": " + p
		}
		return out
	}
	return []string{entry + ": " + err.Error()}
}

func (s *Server) bundleLimits() bundle.Limits {
	lim := bundle.DefaultLimits
	if max := 10 * s.maxBody; max < lim.MaxUncompressed {
		lim.MaxUncompressed = max
	}
	return lim
}

// replicateBundle stores the bytes here and on the other alive nodes, and
// returns once a majority of the voters hold them.
func (s *Server) replicateBundle(ctx context.Context, sum string, data []byte) ([]string, error) {
	if err := s.bundles.Put(sum, data); err != nil {
		return nil, fmt.Errorf("cannot store the bundle: %v", err)
	}
	holders := []string{s.node.ID()}
	quorum := len(s.node.Voters())/2 + 1
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range s.node.Members() {
		if m.ID == s.node.ID() || m.Status != string(gossip.StateAlive) || m.HTTPAddress == "" {
			continue
		}
		wg.Add(1)
		go func(id, addr string) {
			defer wg.Done()
			if err := s.pushBundle(ctx, addr, sum, data); err != nil {
				s.log.Warn("bundle not stored on a peer", "peer", id, "err", err)
				return
			}
			mu.Lock()
			holders = append(holders, id)
			mu.Unlock()
		}(m.ID, m.HTTPAddress)
	}
	wg.Wait()
	if len(holders) < quorum {
		return nil, fmt.Errorf("the bundle reached %d of the %d nodes a quorum needs; try again", len(holders), quorum)
	}
	return holders, nil
}

func (s *Server) pushBundle(ctx context.Context, addr, sum string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+"/v1/internal/bundles/"+sum, bytes.NewReader(data))
	if err != nil {
		return err
	}
	s.peerAuth(req)
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	return nil
}

func (s *Server) peerAuth(req *http.Request) {
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
}

// viaLeader posts a write to this node's own API, whose forwarding takes it
// to the leader; it returns the status and the error messages.
func (s *Server) viaLeader(ctx context.Context, path string, body any) (int, []string) {
	data, err := json.Marshal(body)
	if err != nil {
		return http.StatusInternalServerError, []string{err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, s.leaderWait+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.node.HTTPAddress()+path, bytes.NewReader(data))
	if err != nil {
		return http.StatusInternalServerError, []string{err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	s.peerAuth(req)
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return http.StatusServiceUnavailable, []string{noLeaderMessage}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return http.StatusOK, nil
	}
	var eb errorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Errors
}

func (s *Server) postBundleMeta(c *gin.Context) {
	var b fsm.Bundle
	if err := json.NewDecoder(c.Request.Body).Decode(&b); err != nil || !jarIDPattern.MatchString(b.ID) || !bundle.ValidSum(b.SHA256) {
		fail(c, http.StatusBadRequest, "Bad request: malformed bundle metadata.")
		return
	}
	err := s.apply(c.Request.Context(), &fsm.BundleAdd{Bundle: b})
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": b.ID})
}

func (s *Server) putBundleBytes(c *gin.Context) {
	sum := c.Param("sha")
	if !bundle.ValidSum(sum) {
		fail(c, http.StatusBadRequest, "Bad request: not a sha256.")
		return
	}
	data, ok := readBody(c)
	if !ok {
		return
	}
	if err := s.bundles.Put(sum, data); err != nil {
		var be *bundle.Error
		if errors.As(err, &be) {
			fail(c, http.StatusBadRequest, be.Msg)
			return
		}
		fail(c, http.StatusInternalServerError, "Cannot store the bundle: "+err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"sha256": sum})
}

func (s *Server) getBundleBytes(c *gin.Context) {
	sum := c.Param("sha")
	data, err := s.bundles.Get(sum)
	switch {
	case errors.Is(err, bundle.ErrMissing):
		fail(c, http.StatusNotFound, "Bundle "+sum+" is not stored on this node.")
	case err != nil:
		fail(c, http.StatusBadRequest, err.Error())
	default:
		c.Data(http.StatusOK, "application/zip", data)
	}
}

// bundleBytes returns a bundle's bytes, fetching them from a holder (then
// any alive node) when this node lacks them, and keeping a verified copy.
func (s *Server) bundleBytes(ctx context.Context, b *fsm.Bundle) ([]byte, error) {
	if data, err := s.bundles.Get(b.SHA256); err == nil {
		return data, nil
	}
	addrs := map[string]string{}
	var order []string
	for _, m := range s.node.Members() {
		if m.Status == string(gossip.StateAlive) && m.ID != s.node.ID() && m.HTTPAddress != "" {
			addrs[m.ID] = m.HTTPAddress
		}
	}
	seen := map[string]bool{}
	for _, h := range append(append([]string(nil), b.Holders...), keys(addrs)...) {
		if !seen[h] && addrs[h] != "" {
			seen[h] = true
			order = append(order, h)
		}
	}
	for _, id := range order {
		data, err := s.fetchBundle(ctx, addrs[id], b.SHA256)
		if err != nil {
			s.log.Debug("bundle fetch failed", "peer", id, "err", err)
			continue
		}
		if err := s.bundles.Put(b.SHA256, data); err != nil {
			return nil, err
		}
		return data, nil
	}
	return nil, fmt.Errorf("no alive node holds bundle %s", b.ID)
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (s *Server) fetchBundle(ctx context.Context, addr, sum string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/internal/bundles/"+sum, nil)
	if err != nil {
		return nil, err
	}
	s.peerAuth(req)
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, s.maxBody+1))
	if err != nil {
		return nil, err
	}
	if bundle.Sum(data) != sum {
		return nil, fmt.Errorf("%s sent bytes that do not match %s", addr, sum)
	}
	return data, nil
}

type jarFile struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Uploaded int64      `json:"uploaded"`
	Entry    []jarEntry `json:"entry"`
	SHA256   string     `json:"sha256"`
	Size     int64      `json:"size"`
	Holders  []string   `json:"holders"`
}

type jarEntry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

func (s *Server) getJars(c *gin.Context) {
	files := []jarFile{}
	for _, b := range s.node.FSM.Bundles() {
		f := jarFile{ID: b.ID, Name: b.Name, Uploaded: b.Uploaded, SHA256: b.SHA256, Size: b.Size, Holders: b.Holders, Entry: []jarEntry{}}
		for _, e := range b.Entries {
			f.Entry = append(f.Entry, jarEntry{Name: e.Name, Description: e.Description})
		}
		files = append(files, f)
	}
	c.JSON(http.StatusOK, gin.H{"address": "http://" + s.node.HTTPAddress(), "files": files})
}

func (s *Server) deleteJar(c *gin.Context) {
	b, ok := s.jarParam(c)
	if !ok {
		return
	}
	err := s.apply(c.Request.Context(), &fsm.BundleDelete{ID: b.ID})
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// jarRunRequest is Flink's JarRunRequestBody (and JarPlanRequestBody).
type jarRunRequest struct {
	EntryClass            string   `json:"entryClass"`
	ProgramArgs           string   `json:"programArgs"`
	ProgramArgsList       []string `json:"programArgsList"`
	Parallelism           *int     `json:"parallelism"`
	JobID                 string   `json:"jobId"`
	SavepointPath         string   `json:"savepointPath"`
	AllowNonRestoredState *bool    `json:"allowNonRestoredState"`
}

// jarGraph resolves a run or plan request into a validated job graph.
// Query parameters (seed 000's legacy names) win over the JSON body.
func (s *Server) jarGraph(c *gin.Context, b *fsm.Bundle) (*jobgraph.JobGraph, *jarRunRequest, bool) {
	var req jarRunRequest
	body, ok := readBody(c)
	if !ok {
		return nil, nil, false
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			fail(c, http.StatusBadRequest, "Bad request: the body is not a valid run request: "+err.Error())
			return nil, nil, false
		}
	}
	q := c.Request.URL.Query()
	for _, k := range []string{"entry-class", "entryClass"} {
		if v := q.Get(k); v != "" {
			req.EntryClass = v
		}
	}
	for _, k := range []string{"program-args", "programArgs", "programArg"} {
		if v := q.Get(k); v != "" {
			req.ProgramArgs = v
		}
	}
	if v := q.Get("parallelism"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			fail(c, http.StatusBadRequest, "Bad request: parallelism "+quoteShort(v)+" is not a number.")
			return nil, nil, false
		}
		req.Parallelism = &p
	}
	if v := q.Get("savepointPath"); v != "" {
		req.SavepointPath = v
	}
	if v := q.Get("allowNonRestoredState"); v != "" {
		a := v == "true"
		req.AllowNonRestoredState = &a
	}
	args, err := parseProgramArgs(req.ProgramArgs, req.ProgramArgsList)
	if err != nil {
		fail(c, http.StatusBadRequest, "Bad request: "+err.Error())
		return nil, nil, false
	}
	data, err := s.bundleBytes(c.Request.Context(), b)
	if err != nil {
		c.Header("Retry-After", "1")
		fail(c, http.StatusServiceUnavailable, err.Error())
		return nil, nil, false
	}
	entry := req.EntryClass
	if entry == "" {
		entries := make([]bundle.Entry, len(b.Entries))
		for i, e := range b.Entries {
			entries[i] = bundle.Entry{Name: e.Name}
		}
		if entry, err = bundle.DefaultEntry(entries); err != nil {
			fail(c, http.StatusBadRequest, err.Error())
			return nil, nil, false
		}
	}
	spec, err := bundle.Spec(data, entry, s.bundleLimits())
	if err != nil {
		fail(c, http.StatusBadRequest, err.Error())
		return nil, nil, false
	}
	if req.Parallelism != nil {
		if *req.Parallelism < 1 {
			fail(c, http.StatusBadRequest, "Bad request: parallelism must be at least 1.")
			return nil, nil, false
		}
		// The default parallelism applies to vertices that set none.
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(spec, &doc); err == nil {
			doc["parallelism"] = json.RawMessage(strconv.Itoa(*req.Parallelism))
			spec, _ = json.Marshal(doc)
		}
	}
	opts := s.parseOptions()
	opts.Args = args
	g, err := jobgraph.Parse(spec, opts)
	if err != nil {
		fail(c, http.StatusBadRequest, specProblems(entry, err)...)
		return nil, nil, false
	}
	if req.JobID != "" {
		if !jobIDPattern.MatchString(req.JobID) {
			fail(c, http.StatusBadRequest, "Bad request: jobId "+quoteShort(req.JobID)+" is not 32 lowercase hex characters.")
			return nil, nil, false
		}
		g.JobID = req.JobID
	}
	return g, &req, true
}

// parseProgramArgs reads `--name value` and `name=value` pairs; they fill
// ${name} references in the spec's params.
func parseProgramArgs(line string, list []string) (map[string]string, error) {
	words := append(strings.Fields(line), list...)
	out := map[string]string{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case strings.HasPrefix(w, "--") || (strings.HasPrefix(w, "-") && len(w) > 1):
			name := strings.TrimLeft(w, "-")
			if k, v, ok := strings.Cut(name, "="); ok {
				out[k] = v
				continue
			}
			if i+1 >= len(words) {
				return nil, fmt.Errorf("program argument %q has no value", w)
			}
			out[name] = words[i+1]
			i++
		case strings.Contains(w, "="):
			k, v, _ := strings.Cut(w, "=")
			out[k] = v
		default:
			return nil, fmt.Errorf("program argument %q is neither --name value nor name=value", w)
		}
	}
	return out, nil
}

func (s *Server) postJarRun(c *gin.Context) {
	b, ok := s.jarParam(c)
	if !ok {
		return
	}
	g, req, ok := s.jarGraph(c, b)
	if !ok {
		return
	}
	var restore *fsm.RestoreRef
	if req.SavepointPath != "" {
		allow := req.AllowNonRestoredState != nil && *req.AllowNonRestoredState
		if restore, ok = s.resolveSavepoint(c, req.SavepointPath, allow); !ok {
			return
		}
	}
	id, err := s.submitGraph(c.Request.Context(), g, restore)
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"jobid": id})
}

func (s *Server) jarPlan(c *gin.Context) {
	b, ok := s.jarParam(c)
	if !ok {
		return
	}
	g, _, ok := s.jarGraph(c, b)
	if !ok {
		return
	}
	if g.JobID == "" {
		g.JobID = newJobID()
	}
	c.JSON(http.StatusOK, gin.H{"plan": planFor(g.JobID, g.Name, g.Topological())})
}
