package rest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/cluster"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/gossip"
)

// Flink's cluster routes: every node is a task manager (and a job manager),
// its slots are its --task-slots. Slot use comes from the replicated
// placements; hardware and memory are measured on each node and fetched
// from it (GET /internal/node-info, cached for a second).

// nodeInfo is what a node measures about itself.
type nodeInfo struct {
	CPUCores       int   `json:"cpuCores"`
	PhysicalMemory int64 `json:"physicalMemory"`
	FreeMemory     int64 `json:"freeMemory"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT), -1
	// when none is set.
	MemoryLimit   int64 `json:"memoryLimit"`
	HeapUsed      int64 `json:"heapUsed"`
	HeapCommitted int64 `json:"heapCommitted"`
	// NonHeap is memory the Go runtime holds besides the heap: stacks,
	// runtime structures, GC metadata.
	NonHeapUsed      int64 `json:"nonHeapUsed"`
	NonHeapCommitted int64 `json:"nonHeapCommitted"`
	Goroutines       int   `json:"goroutines"`
	GCCount          int64 `json:"gcCount"`
	GCTimeMs         int64 `json:"gcTimeMs"`
}

func measureNode() nodeInfo {
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	total, avail := memInfo()
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		limit = -1
	}
	return nodeInfo{
		CPUCores: goruntime.NumCPU(), PhysicalMemory: total, FreeMemory: avail, MemoryLimit: limit,
		HeapUsed: int64(ms.HeapAlloc), HeapCommitted: int64(ms.HeapSys - ms.HeapReleased),
		NonHeapUsed:      int64(ms.StackInuse + ms.MSpanInuse + ms.MCacheInuse + ms.BuckHashSys + ms.GCSys + ms.OtherSys),
		NonHeapCommitted: int64(ms.Sys - ms.HeapSys),
		Goroutines:       goruntime.NumGoroutine(), GCCount: int64(ms.NumGC), GCTimeMs: int64(ms.PauseTotalNs / 1e6),
	}
}

// memInfo reads total and available memory from /proc/meminfo; -1 where
// that is not available.
func memInfo() (total, avail int64) {
	total, avail = -1, -1
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total = kb << 10
		case "MemAvailable:":
			avail = kb << 10
		}
	}
	return
}

func (s *Server) getLocalNodeInfo(c *gin.Context) {
	c.JSON(http.StatusOK, measureNode())
}

// nodeInfos caches measurements per node address for a second; nodes of
// one process (tests) share it, which is harmless: an address is one node.
var nodeInfos = struct {
	sync.Mutex
	m map[string]cachedNodeInfo
}{m: map[string]cachedNodeInfo{}}

type cachedNodeInfo struct {
	at   time.Time
	info nodeInfo
	ok   bool
}

const nodeInfoTTL = time.Second

// nodeInfo returns a member's measurements; false when it did not answer.
func (s *Server) nodeInfo(ctx context.Context, m cluster.MemberInfo) (nodeInfo, bool) {
	key := m.ID + "@" + m.HTTPAddress
	nodeInfos.Lock()
	e, hit := nodeInfos.m[key]
	nodeInfos.Unlock()
	if hit && time.Since(e.at) < nodeInfoTTL {
		return e.info, e.ok
	}
	var info nodeInfo
	var err error
	if m.ID == s.node.ID() {
		info = measureNode()
	} else {
		info, err = s.fetchNodeInfo(ctx, m.HTTPAddress)
		if err != nil {
			s.log.Debug("node info unavailable", "node", m.ID, "err", err)
		}
	}
	nodeInfos.Lock()
	if len(nodeInfos.m) >= 256 {
		for k, old := range nodeInfos.m {
			if time.Since(old.at) >= nodeInfoTTL {
				delete(nodeInfos.m, k)
			}
		}
	}
	nodeInfos.m[key] = cachedNodeInfo{at: time.Now(), info: info, ok: err == nil}
	nodeInfos.Unlock()
	return info, err == nil
}

func (s *Server) fetchNodeInfo(ctx context.Context, addr string) (nodeInfo, error) {
	if addr == "" {
		return nodeInfo{}, fmt.Errorf("no address")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/internal/node-info", nil)
	if err != nil {
		return nodeInfo{}, err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return nodeInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nodeInfo{}, fmt.Errorf("answered %s", resp.Status)
	}
	var info nodeInfo
	err = json.NewDecoder(resp.Body).Decode(&info)
	return info, err
}

// nodeInfos measures every member concurrently.
func (s *Server) nodeInfosOf(ctx context.Context, ms []cluster.MemberInfo) ([]nodeInfo, []bool) {
	infos, oks := make([]nodeInfo, len(ms)), make([]bool, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			infos[i], oks[i] = s.nodeInfo(ctx, m)
		}()
	}
	wg.Wait()
	return infos, oks
}

// taskManagers are the members alive (or suspected) in gossip, by id: the
// nodes /overview counts and the scheduler places on.
func (s *Server) taskManagers() []cluster.MemberInfo {
	var out []cluster.MemberInfo
	for _, m := range s.node.Members() {
		if m.Status == string(gossip.StateAlive) || m.Status == string(gossip.StateSuspect) {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// resourceProfile is Flink's ResourceProfileInfo (memory in MiB). A node's
// CPU resource is its slot count, Flink's default taskmanager.cpu.cores;
// memory is not divided between slots here, so the pools are 0.
type resourceProfile struct {
	CPUCores          float64            `json:"cpuCores"`
	TaskHeapMemory    int                `json:"taskHeapMemory"`
	TaskOffHeapMemory int                `json:"taskOffHeapMemory"`
	ManagedMemory     int                `json:"managedMemory"`
	NetworkMemory     int                `json:"networkMemory"`
	ExtendedResources map[string]float64 `json:"extendedResources"`
}

func cpuProfile(cores int) resourceProfile {
	return resourceProfile{CPUCores: float64(cores), ExtendedResources: map[string]float64{}}
}

type hardwareDescription struct {
	CPUCores       int   `json:"cpuCores"`
	PhysicalMemory int64 `json:"physicalMemory"`
	FreeMemory     int64 `json:"freeMemory"`
	ManagedMemory  int64 `json:"managedMemory"`
}

// memoryConfiguration is Flink's TaskExecutorMemoryConfiguration. Go has
// one heap bounded by GOMEMLIMIT (else by the machine): that bound is the
// task heap and the total; Flink's other pools do not exist (0).
type memoryConfiguration struct {
	FrameworkHeap      int64 `json:"frameworkHeap"`
	TaskHeap           int64 `json:"taskHeap"`
	FrameworkOffHeap   int64 `json:"frameworkOffHeap"`
	TaskOffHeap        int64 `json:"taskOffHeap"`
	NetworkMemory      int64 `json:"networkMemory"`
	ManagedMemory      int64 `json:"managedMemory"`
	JvmMetaspace       int64 `json:"jvmMetaspace"`
	JvmOverhead        int64 `json:"jvmOverhead"`
	TotalFlinkMemory   int64 `json:"totalFlinkMemory"`
	TotalProcessMemory int64 `json:"totalProcessMemory"`
}

// taskManagerInfo is Flink's TaskManagerInfo.
type taskManagerInfo struct {
	ID                     string              `json:"id"`
	Path                   string              `json:"path"`
	DataPort               int                 `json:"dataPort"`
	JmxPort                int                 `json:"jmxPort"`
	TimeSinceLastHeartbeat int64               `json:"timeSinceLastHeartbeat"`
	SlotsNumber            int                 `json:"slotsNumber"`
	FreeSlots              int                 `json:"freeSlots"`
	TotalResource          resourceProfile     `json:"totalResource"`
	FreeResource           resourceProfile     `json:"freeResource"`
	Hardware               hardwareDescription `json:"hardware"`
	MemoryConfiguration    memoryConfiguration `json:"memoryConfiguration"`
	Blocked                bool                `json:"blocked"`
	AssignedTasks          int                 `json:"assignedTasks"`
}

// taskManagerInfoOf draws a member; info is its measurement (ok false when
// it did not answer: hardware then shows -1, Flink's "unknown").
func taskManagerInfoOf(m cluster.MemberInfo, jobs []*fsm.Job, used map[string]int, info nodeInfo, ok bool) taskManagerInfo {
	free := max(0, m.Slots-used[m.ID])
	dataPort := -1
	if _, p, err := net.SplitHostPort(m.RaftAddress); err == nil {
		dataPort, _ = strconv.Atoi(p)
	}
	heartbeat := int64(0)
	if !m.LastContact.IsZero() {
		heartbeat = m.LastContact.UnixMilli()
	}
	hw := hardwareDescription{CPUCores: -1, PhysicalMemory: -1, FreeMemory: -1}
	mem := memoryConfiguration{}
	if ok {
		hw = hardwareDescription{CPUCores: info.CPUCores, PhysicalMemory: info.PhysicalMemory, FreeMemory: info.FreeMemory}
		bound := info.MemoryLimit
		if bound < 0 {
			bound = info.PhysicalMemory
		}
		mem.TaskHeap, mem.TotalFlinkMemory, mem.TotalProcessMemory = bound, bound, bound
	}
	return taskManagerInfo{
		ID: m.ID, Path: "http://" + m.HTTPAddress, DataPort: dataPort, JmxPort: -1,
		TimeSinceLastHeartbeat: heartbeat, SlotsNumber: m.Slots, FreeSlots: free,
		TotalResource: cpuProfile(m.Slots), FreeResource: cpuProfile(free), Hardware: hw,
		MemoryConfiguration: mem, AssignedTasks: fsm.TasksOn(jobs, m.ID),
	}
}

func (s *Server) getTaskManagers(c *gin.Context) {
	tms := s.taskManagers()
	jobs := s.node.FSM.Jobs()
	used := fsm.SlotsInUse(jobs)
	infos, oks := s.nodeInfosOf(c.Request.Context(), tms)
	out := make([]taskManagerInfo, len(tms))
	for i, m := range tms {
		out[i] = taskManagerInfoOf(m, jobs, used, infos[i], oks[i])
	}
	c.JSON(http.StatusOK, gin.H{"taskmanagers": out})
}

// taskManagerParam resolves :tmid, a node id; 404 for a node that is not a
// live member.
func (s *Server) taskManagerParam(c *gin.Context) (cluster.MemberInfo, bool) {
	id := c.Param("tmid")
	for _, m := range s.taskManagers() {
		if m.ID == id {
			return m, true
		}
	}
	fail(c, http.StatusNotFound, "Could not find TaskExecutor "+quoteShort(id)+".")
	return cluster.MemberInfo{}, false
}

// slotInfo is Flink's SlotInfo: a slot a job holds on the task manager.
type slotInfo struct {
	JobID         string          `json:"jobId"`
	Resource      resourceProfile `json:"resource"`
	AssignedTasks int             `json:"assignedTasks"`
}

type garbageCollector struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
	Time  int64  `json:"time"`
}

// taskManagerMetrics is Flink's TaskManagerMetricsInfo over the Go runtime;
// direct, mapped and Netty shuffle memory do not exist here (0).
type taskManagerMetrics struct {
	HeapUsed                            int64              `json:"heapUsed"`
	HeapCommitted                       int64              `json:"heapCommitted"`
	HeapMax                             int64              `json:"heapMax"`
	NonHeapUsed                         int64              `json:"nonHeapUsed"`
	NonHeapCommitted                    int64              `json:"nonHeapCommitted"`
	NonHeapMax                          int64              `json:"nonHeapMax"`
	DirectCount                         int64              `json:"directCount"`
	DirectUsed                          int64              `json:"directUsed"`
	DirectMax                           int64              `json:"directMax"`
	MappedCount                         int64              `json:"mappedCount"`
	MappedUsed                          int64              `json:"mappedUsed"`
	MappedMax                           int64              `json:"mappedMax"`
	NettyShuffleMemorySegmentsAvailable int64              `json:"nettyShuffleMemorySegmentsAvailable"`
	NettyShuffleMemorySegmentsUsed      int64              `json:"nettyShuffleMemorySegmentsUsed"`
	NettyShuffleMemorySegmentsTotal     int64              `json:"nettyShuffleMemorySegmentsTotal"`
	NettyShuffleMemoryAvailable         int64              `json:"nettyShuffleMemoryAvailable"`
	NettyShuffleMemoryUsed              int64              `json:"nettyShuffleMemoryUsed"`
	NettyShuffleMemoryTotal             int64              `json:"nettyShuffleMemoryTotal"`
	GarbageCollectors                   []garbageCollector `json:"garbageCollectors"`
}

func (s *Server) getTaskManager(c *gin.Context) {
	m, ok := s.taskManagerParam(c)
	if !ok {
		return
	}
	jobs := s.node.FSM.Jobs()
	info, measured := s.nodeInfo(c.Request.Context(), m)
	slots := []slotInfo{}
	for _, j := range jobs {
		if !fsm.HoldsSlots(j.State) {
			continue
		}
		for i, n := range fsm.SlotNodes(j.Placement) {
			if n != m.ID {
				continue
			}
			tasks := 0
			for _, nodes := range j.Placement {
				if i < len(nodes) && nodes[i] == m.ID {
					tasks++
				}
			}
			slots = append(slots, slotInfo{JobID: j.ID, Resource: cpuProfile(1), AssignedTasks: tasks})
		}
	}
	metrics := taskManagerMetrics{HeapMax: -1, NonHeapMax: -1, GarbageCollectors: []garbageCollector{}}
	if measured {
		metrics.HeapUsed, metrics.HeapCommitted, metrics.HeapMax = info.HeapUsed, info.HeapCommitted, info.MemoryLimit
		metrics.NonHeapUsed, metrics.NonHeapCommitted = info.NonHeapUsed, info.NonHeapCommitted
		metrics.GarbageCollectors = []garbageCollector{{Name: "go", Count: info.GCCount, Time: info.GCTimeMs}}
	}
	c.JSON(http.StatusOK, struct {
		taskManagerInfo
		AllocatedSlots []slotInfo         `json:"allocatedSlots"`
		Metrics        taskManagerMetrics `json:"metrics"`
	}{taskManagerInfoOf(m, jobs, fsm.SlotsInUse(jobs), info, measured), slots, metrics})
}

// taskManagerMetricValues are a node's runtime measurements under Flink's
// task manager metric names (the JVM's names stand for the Go runtime).
func taskManagerMetricValues(info nodeInfo) []metricValue {
	return []metricValue{
		{"Status.JVM.Memory.Heap.Used", metricInt(info.HeapUsed)},
		{"Status.JVM.Memory.Heap.Committed", metricInt(info.HeapCommitted)},
		{"Status.JVM.Memory.Heap.Max", metricInt(info.MemoryLimit)},
		{"Status.JVM.Memory.NonHeap.Used", metricInt(info.NonHeapUsed)},
		{"Status.JVM.Memory.NonHeap.Committed", metricInt(info.NonHeapCommitted)},
		{"Status.JVM.Threads.Count", strconv.Itoa(info.Goroutines)},
		{"Status.JVM.GarbageCollector.go.Count", metricInt(info.GCCount)},
		{"Status.JVM.GarbageCollector.go.Time", metricInt(info.GCTimeMs)},
		{"Status.JVM.CPU.Cores", strconv.Itoa(info.CPUCores)},
	}
}

func (s *Server) getTaskManagerMetrics(c *gin.Context) {
	m, ok := s.taskManagerParam(c)
	if !ok {
		return
	}
	var all []metricValue
	if info, measured := s.nodeInfo(c.Request.Context(), m); measured {
		all = taskManagerMetricValues(info)
	}
	answerMetrics(c, all)
}

// getTaskManagersMetrics aggregates over ?taskmanagers= (node ids; all
// when absent, unknown ones skipped).
func (s *Server) getTaskManagersMetrics(c *gin.Context) {
	var want map[string]bool
	if ids := splitQueryList(strings.Join(c.QueryArray("taskmanagers"), ",")); len(ids) > 0 {
		want = map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
	}
	var tms []cluster.MemberInfo
	for _, m := range s.taskManagers() {
		if want == nil || want[m.ID] {
			tms = append(tms, m)
		}
	}
	infos, oks := s.nodeInfosOf(c.Request.Context(), tms)
	var entities [][]metricValue
	for i := range tms {
		if oks[i] {
			entities = append(entities, taskManagerMetricValues(infos[i]))
		}
	}
	answerAggregated(c, entities)
}

// getJobManagerMetrics are Flink's job manager gauges of the cluster, from
// the replicated state and the membership.
func (s *Server) getJobManagerMetrics(c *gin.Context) {
	tms := s.taskManagers()
	jobs := s.node.FSM.Jobs()
	used := fsm.SlotsInUse(jobs)
	total, free := 0, 0
	for _, m := range tms {
		total += m.Slots
		free += max(0, m.Slots-used[m.ID])
	}
	running := 0
	for _, j := range jobs {
		if !fsm.TerminalJobState(j.State) {
			running++
		}
	}
	answerMetrics(c, []metricValue{
		{"numRegisteredTaskManagers", strconv.Itoa(len(tms))},
		{"numRunningJobs", strconv.Itoa(running)},
		{"taskSlotsAvailable", strconv.Itoa(free)},
		{"taskSlotsTotal", strconv.Itoa(total)},
	})
}

type configEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// sensitiveKeyParts are Flink's (GlobalConfiguration.isSensitive): values
// of matching keys are shown as "******".
var sensitiveKeyParts = []string{"password", "secret", "fs.azure.account.key", "apikey", "api-key", "auth-params",
	"service-key", "token", "basic-auth", "jaas.config", "http-headers"}

// getJobManagerConfig is this node's effective configuration as Flink's
// list of {key, value}: Flink's keys where Flink has one, the flag name
// otherwise, then the config file's keys this build does not interpret.
// The API token and the gossip key are never shown.
func (s *Server) getJobManagerConfig(c *gin.Context) {
	cfg := s.node.Config()
	kv := map[string]string{}
	for k, v := range cfg.Extra {
		kv[k] = v
		for _, part := range sensitiveKeyParts {
			if strings.Contains(strings.ToLower(k), part) {
				kv[k] = "******"
			}
		}
	}
	ms := func(d time.Duration) string { return metricInt(d.Milliseconds()) }
	host, port, _ := net.SplitHostPort(s.node.HTTPAddress())
	bindHost, _, _ := net.SplitHostPort(cfg.HTTPAddr)
	for k, v := range map[string]string{
		"rest.address":                                      host,
		"rest.port":                                         port,
		"rest.bind-address":                                 bindHost,
		"rest.server.max-content-length":                    metricInt(cfg.MaxBodyBytes),
		"taskmanager.numberOfTaskSlots":                     strconv.Itoa(cfg.TaskSlots),
		"state.checkpoints.dir":                             cfg.CheckpointDir,
		"state.savepoints.dir":                              cfg.SavepointDir,
		"execution.checkpointing.dir":                       cfg.CheckpointDir,
		"execution.checkpointing.savepoint-dir":             cfg.SavepointDir,
		"web.refresh-interval":                              ms(cfg.RefreshInterval),
		"web.submit.enable":                                 strconv.FormatBool(cfg.WebSubmit),
		"web.cancel.enable":                                 "true",
		"jobmanager.web.backpressure.refresh-interval":      ms(cfg.BackPressure.RefreshInterval),
		"jobmanager.web.backpressure.num-samples":           strconv.Itoa(cfg.BackPressure.NumSamples),
		"jobmanager.web.backpressure.delay-between-samples": ms(cfg.BackPressure.DelayBetweenSamples),
		"node-id":                   cfg.NodeID,
		"data-dir":                  cfg.DataDir,
		"http-addr":                 cfg.HTTPAddr,
		"raft-addr":                 cfg.RaftAddr,
		"gossip-addr":               cfg.GossipAddr,
		"advertise":                 cfg.Advertise,
		"join":                      strings.Join(cfg.Join, ","),
		"bootstrap-expect":          strconv.Itoa(cfg.BootstrapExpect),
		"dev":                       strconv.FormatBool(cfg.Dev),
		"input-dir":                 cfg.InputDir,
		"output-dir":                cfg.OutputDir,
		"allow-exec":                strconv.FormatBool(cfg.AllowExec),
		"raft-heartbeat-timeout":    cfg.Raft.HeartbeatTimeout.String(),
		"raft-election-timeout":     cfg.Raft.ElectionTimeout.String(),
		"raft-leader-lease-timeout": cfg.Raft.LeaderLeaseTimeout.String(),
		"raft-commit-timeout":       cfg.Raft.CommitTimeout.String(),
		"raft-snapshot-threshold":   strconv.FormatUint(cfg.Raft.SnapshotThreshold, 10),
		"raft-snapshot-interval":    cfg.Raft.SnapshotInterval.String(),
		"raft-trailing-logs":        strconv.FormatUint(cfg.Raft.TrailingLogs, 10),
		"dead-server-timeout":       cfg.DeadServerTimeout.String(),
		"leader-wait":               cfg.LeaderWait.String(),
		"log-level":                 cfg.LogLevel,
	} {
		kv[k] = v
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]configEntry, len(keys))
	for i, k := range keys {
		out[i] = configEntry{k, kv[k]}
	}
	c.JSON(http.StatusOK, out)
}
