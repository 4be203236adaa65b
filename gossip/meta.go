package gossip

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Meta is what every node tells the others about itself through gossip.
// Short JSON keys keep it well under memberlist's 512-byte limit, which
// memberlist enforces with a panic.
type Meta struct {
	ID       string `json:"i"`
	Role     string `json:"o"`
	RaftAddr string `json:"r"`
	HTTPAddr string `json:"h"`
	Slots    int    `json:"s"`
	Version  string `json:"v"`
	// Expect is the node's --bootstrap-expect.
	Expect int `json:"e,omitempty"`
	// HasState tells peers this node already belongs to a Raft cluster, so
	// nobody bootstraps a second one beside it.
	HasState bool `json:"b,omitempty"`
	// Leaving is gossiped just before a graceful leave. memberlist reports
	// leaves and failures through the same callback without saying which
	// (its Node.State is never set), so the flag is how peers tell them apart.
	Leaving bool `json:"l,omitempty"`
}

// RoleServer is the only role today: every node votes and runs tasks.
const RoleServer = "server"

// Encode returns the wire form, refusing anything memberlist would panic on.
func (m Meta) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata is %d bytes, over the %d-byte limit", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// DecodeMeta parses a peer's metadata.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("empty gossip metadata")
	}
	err := json.Unmarshal(b, &m)
	return m, err
}
