package rest

import (
	"testing"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

func TestSupervisorServiceGroupOf(t *testing.T) {
	cases := []struct {
		name string
		svc  *jobgraph.Service
		want string
	}{
		{"clicks", nil, "clicks.default"},
		{"clicks", &jobgraph.Service{Group: "prod"}, "clicks.prod"},
		{"clicks", &jobgraph.Service{Name: "web", Group: "prod", Organization: "acme"}, "web.prod@acme"},
		{"word count v1.2", nil, "word-count-v1-2.default"},
		{"x", &jobgraph.Service{Name: "a.b", Group: "g@h", Organization: "#"}, "a-b.g-h"},
		{"...", nil, "job.default"},
	}
	for _, c := range cases {
		if got := serviceGroupOf(&jobgraph.JobGraph{Name: c.name, Service: c.svc}).String(); got != c.want {
			t.Errorf("%q %+v: %s, want %s", c.name, c.svc, got, c.want)
		}
	}
	for s, ok := range map[string]bool{"redis": true, "my_svc-2": true, "": false, "a.b": false, "a@b": false, "a#b": false, "a b": false} {
		if validHabitatName(s) != ok {
			t.Errorf("validHabitatName(%q) != %v", s, ok)
		}
	}
}
