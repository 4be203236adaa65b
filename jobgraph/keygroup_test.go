package jobgraph

import "testing"

// Values computed with Java: String.hashCode and Flink's MathUtils.murmurHash.
func TestKeyGroupsMatchFlink(t *testing.T) {
	cases := []struct {
		key      string
		hashCode int32
		murmur   int32
		kg128    int
		kg32768  int
	}{
		{"", 0, 593689054, 94, 31198},
		{"a", 97, 1455541201, 81, 19409},
		{"hello", 99162322, 1715862179, 35, 31395},
		{"word-count", 376847500, 313596019, 115, 6259},
		{"Flink", 67968320, 688019071, 127, 22143},
		{"über", 7604755, 1864126153, 73, 20169},
		{"😀x", 54959989, 1998616508, 60, 30652},
		{"42", 1662, 1173596941, 13, 11021},
		{"-7", 1450, 1589891960, 120, 21368},
	}
	for _, c := range cases {
		if got := JavaStringHashCode(c.key); got != c.hashCode {
			t.Errorf("hashCode(%q) = %d, want %d", c.key, got, c.hashCode)
		}
		if got := MurmurHash(c.hashCode); got != c.murmur {
			t.Errorf("murmur(%d) = %d, want %d", c.hashCode, got, c.murmur)
		}
		if got := KeyGroupForKey(c.key, 128); got != c.kg128 {
			t.Errorf("keyGroup(%q, 128) = %d, want %d", c.key, got, c.kg128)
		}
		if got := KeyGroupForKey(c.key, 32768); got != c.kg32768 {
			t.Errorf("keyGroup(%q, 32768) = %d, want %d", c.key, got, c.kg32768)
		}
	}
	ints := map[int32]int32{0: 593689054, 1: 68075478, -1: 1982413648, 42: 1134849565, -2147483648: 1718298732, 2147483647: 1653689534}
	for in, want := range ints {
		if got := MurmurHash(in); got != want {
			t.Errorf("murmur(%d) = %d, want %d", in, got, want)
		}
	}
	// Numbers hash by their canonical decimal form.
	for _, k := range []any{int64(42), 42, 42.0} {
		if got := KeyGroupForKey(k, 128); got != 13 {
			t.Errorf("keyGroup(%#v) = %d, want 13 (same as \"42\")", k, got)
		}
	}
	if KeyString(2.5) != "2.5" || KeyString(true) != "true" || KeyString(nil) != "null" ||
		KeyString(map[string]any{"b": int64(1), "a": "x"}) != `{"a":"x","b":1}` {
		t.Errorf("canonical forms: %q %q %q %q", KeyString(2.5), KeyString(true), KeyString(nil), KeyString(map[string]any{"b": int64(1), "a": "x"}))
	}
}

func TestDefaultMaxParallelism(t *testing.T) {
	for p, want := range map[int]int{1: 128, 85: 128, 86: 256, 171: 256, 172: 512, 1000: 2048, 10923: 16384, 10924: 32768, 50000: 32768} {
		if got := DefaultMaxParallelism(p); got != want {
			t.Errorf("DefaultMaxParallelism(%d) = %d, want %d", p, got, want)
		}
	}
}

func TestKeyGroupRangesPartition(t *testing.T) {
	for _, maxP := range []int{1, 7, 128, 1000} {
		for p := 1; p <= maxP && p <= 50; p++ {
			next := 0
			for i := 0; i < p; i++ {
				r := KeyGroupRangeForOperator(maxP, p, i)
				if r.Start != next || r.Len() < 1 {
					t.Fatalf("maxP=%d p=%d subtask %d: range %+v, want start %d", maxP, p, i, r, next)
				}
				for kg := r.Start; kg <= r.End; kg++ {
					if got := OperatorIndexForKeyGroup(maxP, p, kg); got != i {
						t.Fatalf("maxP=%d p=%d kg=%d: operator %d, want %d", maxP, p, kg, got, i)
					}
				}
				next = r.End + 1
			}
			if next != maxP {
				t.Fatalf("maxP=%d p=%d: ranges end at %d", maxP, p, next)
			}
		}
	}
	// Flink's examples: maxP 128, p 3 → [0,42], [43,85], [86,127].
	want := []KeyGroupRange{{0, 42}, {43, 85}, {86, 127}}
	for i, w := range want {
		if got := KeyGroupRangeForOperator(128, 3, i); got != w {
			t.Errorf("range(128,3,%d) = %+v, want %+v", i, got, w)
		}
	}
}

func BenchmarkKeyGroupForKey(b *testing.B) {
	keys := []any{"alpha", "beta", int64(123456), 7.5}
	for i := 0; i < b.N; i++ {
		KeyGroupForKey(keys[i&3], 128)
	}
}
