package fsm

import (
	"fmt"
	"sort"
)

func (f *FSM) applyBundleAdd(c *BundleAdd) Result {
	b := c.Bundle
	if old, ok := f.st.Bundles[b.ID]; ok {
		if old.SHA256 != b.SHA256 {
			return Result{Err: &Conflict{Msg: fmt.Sprintf("Jar %s already exists with other content", b.ID)}}
		}
		return Result{Value: old.clone()}
	}
	f.st.Bundles[b.ID] = &b
	return Result{Value: b.clone()}
}

func (f *FSM) applyBundleDelete(c *BundleDelete) Result {
	if _, ok := f.st.Bundles[c.ID]; !ok {
		return Result{Err: &NotFound{Msg: fmt.Sprintf("Jar %s not found", c.ID)}}
	}
	delete(f.st.Bundles, c.ID)
	return Result{}
}

func (b *Bundle) clone() *Bundle {
	c := *b
	c.Entries = append([]BundleEntry(nil), b.Entries...)
	c.Holders = append([]string(nil), b.Holders...)
	return &c
}

// Bundles returns every bundle, newest first.
func (f *FSM) Bundles() []*Bundle {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Bundle, 0, len(f.st.Bundles))
	for _, b := range f.st.Bundles {
		out = append(out, b.clone())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Uploaded != out[j].Uploaded {
			return out[i].Uploaded > out[j].Uploaded
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Bundle returns one bundle.
func (f *FSM) Bundle(id string) (*Bundle, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, ok := f.st.Bundles[id]
	if !ok {
		return nil, false
	}
	return b.clone(), true
}
