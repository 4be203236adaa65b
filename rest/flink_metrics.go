package rest

import (
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Flink's metric routes. Every body is a bare JSON array (Flink's
// MetricCollectionResponseBody serializer writes only the list): without
// ?get= the available ids, [{"id":"numRecordsIn"}, ...]; with ?get=a,b the
// values of those that exist, [{"id":"a","value":"12"}], values as strings.
// Aggregating routes answer [{"id":"a","min":1,"max":3,"avg":2,"sum":6,"skew":50}]
// with the metricAggregations of ?agg= (all five when absent).

// metricValue is one metric of one entity.
type metricValue struct {
	ID    string `json:"id"`
	Value string `json:"value"`
}

type metricID struct {
	ID string `json:"id"`
}

func metricInt(n int64) string { return strconv.FormatInt(n, 10) }

func metricFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// subtaskMetricValues are a subtask's metrics under Flink's task metric
// names.
func subtaskMetricValues(m runtime.SubtaskMetrics) []metricValue {
	return []metricValue{
		{"numRecordsIn", metricInt(m.NumRecordsIn)},
		{"numRecordsOut", metricInt(m.NumRecordsOut)},
		{"numBytesIn", metricInt(m.NumBytesIn)},
		{"numBytesOut", metricInt(m.NumBytesOut)},
		{"numRecordsInPerSecond", metricFloat(m.NumRecordsInPerSecond)},
		{"numRecordsOutPerSecond", metricFloat(m.NumRecordsOutPerSecond)},
		{"busyTimeMsPerSecond", metricFloat(m.BusyTimeMsPerSecond)},
		{"idleTimeMsPerSecond", metricFloat(m.IdleTimeMsPerSecond)},
		{"backPressuredTimeMsPerSecond", metricFloat(m.BackPressuredTimeMsPerSecond)},
		{"isBackPressured", strconv.FormatBool(m.IsBackPressured)},
		{"buffers.inPoolUsage", metricFloat(m.InPoolUsage)},
		{"buffers.outPoolUsage", metricFloat(m.OutPoolUsage)},
		{"buffers.inputQueueLength", strconv.Itoa(m.InputQueueLength)},
		{"buffers.outputQueueLength", strconv.Itoa(m.OutputQueueLength)},
	}
}

// splitList splits a comma-separated query value, dropping empty items.
func splitQueryList(raw string) []string {
	var out []string
	for _, p := range strings.Split(raw, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// answerMetrics writes one entity's metrics: ids without ?get=, else the
// values of the requested ids that exist (unknown ids are left out, as
// Flink does).
func answerMetrics(c *gin.Context, all []metricValue) {
	get := splitQueryList(c.Query("get"))
	if len(get) == 0 {
		out := make([]metricID, len(all))
		for i, m := range all {
			out[i] = metricID{m.ID}
		}
		c.JSON(http.StatusOK, out)
		return
	}
	byID := make(map[string]string, len(all))
	for _, m := range all {
		byID[m.ID] = m.Value
	}
	out := []metricValue{}
	for _, id := range get {
		if v, ok := byID[id]; ok {
			out = append(out, metricValue{id, v})
		}
	}
	c.JSON(http.StatusOK, out)
}

// aggregatedMetric is Flink's AggregatedMetric.
type aggregatedMetric struct {
	ID   string   `json:"id"`
	Min  *float64 `json:"min,omitempty"`
	Max  *float64 `json:"max,omitempty"`
	Avg  *float64 `json:"avg,omitempty"`
	Sum  *float64 `json:"sum,omitempty"`
	Skew *float64 `json:"skew,omitempty"`
}

var metricAggregations = []string{"min", "max", "avg", "sum", "skew"}

// aggParam parses ?agg= (case-insensitive); 400 for an unknown mode.
func aggParam(c *gin.Context) (map[string]bool, bool) {
	modes := splitQueryList(c.Query("agg"))
	out := map[string]bool{}
	if len(modes) == 0 {
		for _, a := range metricAggregations {
			out[a] = true
		}
		return out, true
	}
	for _, m := range modes {
		m = strings.ToLower(m)
		if !isAggregation(m) {
			fail(c, http.StatusBadRequest, "Bad request, could not parse parameters: agg "+quoteShort(m)+" is not one of min, max, sum, avg, skew.")
			return nil, false
		}
		out[m] = true
	}
	return out, true
}

func isAggregation(m string) bool {
	for _, a := range metricAggregations {
		if a == m {
			return true
		}
	}
	return false
}

// answerAggregated writes metrics aggregated over entities (subtasks, jobs
// or task managers). Without ?get= it lists the ids any entity has. Values
// that are not numbers (isBackPressured) cannot be aggregated and are
// skipped, as in Flink; an id with no numeric value is left out.
func answerAggregated(c *gin.Context, entities [][]metricValue) {
	aggs, ok := aggParam(c)
	if !ok {
		return
	}
	get := splitQueryList(c.Query("get"))
	if len(get) == 0 {
		seen := map[string]bool{}
		out := []metricID{}
		for _, e := range entities {
			for _, m := range e {
				if !seen[m.ID] {
					seen[m.ID] = true
					out = append(out, metricID{m.ID})
				}
			}
		}
		c.JSON(http.StatusOK, out)
		return
	}
	out := []aggregatedMetric{}
	for _, id := range get {
		var vals []float64
		for _, e := range entities {
			for _, m := range e {
				if m.ID != id {
					continue
				}
				if f, err := strconv.ParseFloat(m.Value, 64); err == nil && !math.IsNaN(f) {
					vals = append(vals, f)
				}
			}
		}
		if len(vals) == 0 {
			continue
		}
		out = append(out, aggregateValues(id, vals, aggs))
	}
	c.JSON(http.StatusOK, out)
}

func aggregateValues(id string, vals []float64, aggs map[string]bool) aggregatedMetric {
	minV, maxV, sum := vals[0], vals[0], 0.0
	for _, v := range vals {
		minV, maxV, sum = math.Min(minV, v), math.Max(maxV, v), sum+v
	}
	avg := sum / float64(len(vals))
	// Flink's skew: mean absolute deviation over the mean, in percent,
	// capped at 100 (0 when the mean is 0).
	skew := 0.0
	if avg != 0 {
		dev := 0.0
		for _, v := range vals {
			dev += math.Abs(avg - v)
		}
		skew = math.Min(dev/float64(len(vals))/avg*100, 100)
	}
	out := aggregatedMetric{ID: id}
	pick := func(name string, v float64) *float64 {
		if !aggs[name] {
			return nil
		}
		return &v
	}
	out.Min, out.Max, out.Avg, out.Sum, out.Skew = pick("min", minV), pick("max", maxV), pick("avg", avg), pick("sum", sum), pick("skew", skew)
	return out
}

// rangesParam parses Flink's subtask ranges ("0-2,4"); nil means all.
// 400 for a malformed range.
func rangesParam(c *gin.Context, name string) (func(int) bool, bool) {
	items := splitQueryList(c.Query(name))
	if len(items) == 0 {
		return nil, true
	}
	type span struct{ lo, hi int }
	var spans []span
	bad := func(item string) (func(int) bool, bool) {
		fail(c, http.StatusBadRequest, "Bad request, could not parse parameters: "+name+" "+quoteShort(item)+" is not an index or a range like 1-3.")
		return nil, false
	}
	for _, it := range items {
		lo, hi, isRange := strings.Cut(it, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil || a < 0 {
			return bad(it)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a {
				return bad(it)
			}
		}
		spans = append(spans, span{a, b})
	}
	return func(i int) bool {
		for _, s := range spans {
			if i >= s.lo && i <= s.hi {
				return true
			}
		}
		return false
	}, true
}
