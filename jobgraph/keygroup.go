package jobgraph

import (
	"encoding/json"
	"math"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// Key groups, as in Flink's KeyGroupRangeAssignment:
//
//	keyGroup   = MurmurHash(KeyHashCode(key)) % maxParallelism
//	subtask    = keyGroup * parallelism / maxParallelism
//	range(i)   = [(i*maxP + p - 1) / p, ((i+1)*maxP - 1) / p]
//
// KeyHashCode is Java's String.hashCode of the key's canonical string form
// (see AppendKeyString), so string keys land in exactly the key group Flink
// gives the same java.lang.String key.
const (
	// DefaultLowerBoundMaxParallelism is the smallest default maxParallelism.
	DefaultLowerBoundMaxParallelism = 1 << 7
	// UpperBoundMaxParallelism is the largest allowed maxParallelism.
	UpperBoundMaxParallelism = 1 << 15
)

// DefaultMaxParallelism is Flink's rule for an operator of parallelism p:
// min(max(roundUpToPowerOfTwo(p + p/2), 128), 32768).
func DefaultMaxParallelism(p int) int {
	n := p + p/2
	r := 1
	if n > 1 {
		r = 1 << bits.Len(uint(n-1))
	}
	return min(max(r, DefaultLowerBoundMaxParallelism), UpperBoundMaxParallelism)
}

// MurmurHash is Flink's MathUtils.murmurHash(int): one Murmur3 round, the
// fmix32 finalizer, then a non-negative result (Integer.MIN_VALUE becomes 0).
func MurmurHash(code int32) int32 {
	k := uint32(code)
	k *= 0xcc9e2d51
	k = bits.RotateLeft32(k, 15)
	k *= 0x1b873593
	h := bits.RotateLeft32(k, 13)
	h = h*5 + 0xe6546b64
	h ^= 4
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	r := int32(h)
	if r >= 0 {
		return r
	}
	if r == math.MinInt32 {
		return 0
	}
	return -r
}

// KeyGroupForHashCode returns MurmurHash(hashCode) % maxParallelism.
func KeyGroupForHashCode(hashCode int32, maxParallelism int) int {
	return int(MurmurHash(hashCode)) % maxParallelism
}

// OperatorIndexForKeyGroup returns the subtask owning key group kg.
func OperatorIndexForKeyGroup(maxParallelism, parallelism, kg int) int {
	return kg * parallelism / maxParallelism
}

// KeyGroupRange is an inclusive range of key groups.
type KeyGroupRange struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// Len is the number of key groups in the range.
func (r KeyGroupRange) Len() int { return r.End - r.Start + 1 }

// Contains reports whether kg is in the range.
func (r KeyGroupRange) Contains(kg int) bool { return kg >= r.Start && kg <= r.End }

// KeyGroupRangeForOperator is the key groups owned by subtask i of p.
func KeyGroupRangeForOperator(maxParallelism, parallelism, i int) KeyGroupRange {
	return KeyGroupRange{
		Start: (i*maxParallelism + parallelism - 1) / parallelism,
		End:   ((i+1)*maxParallelism - 1) / parallelism,
	}
}

// KeyGroupForKey is the key group of a key value.
func KeyGroupForKey(key any, maxParallelism int) int {
	return KeyGroupForHashCode(KeyHashCode(key), maxParallelism)
}

// KeyHashCode is the stable hash code of a key value: Java's String.hashCode
// of its canonical string form (UTF-16 code units, s[0]*31^(n-1)+...+s[n-1]).
// It does not allocate for strings, integers, floats, booleans and null.
func KeyHashCode(key any) int32 {
	if s, ok := key.(string); ok {
		return JavaStringHashCode(s)
	}
	var buf [32]byte
	b := AppendKeyString(buf[:0], key)
	return javaBytesHashCode(b)
}

// JavaStringHashCode is java.lang.String.hashCode of s.
func JavaStringHashCode(s string) int32 {
	var h int32
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			h = 31*h + int32(c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r >= 0x10000 {
			r -= 0x10000
			h = 31*h + int32(0xD800+(r>>10))
			h = 31*h + int32(0xDC00+(r&0x3FF))
		} else {
			h = 31*h + int32(r)
		}
	}
	return h
}

func javaBytesHashCode(b []byte) int32 {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return JavaStringHashCode(string(b))
		}
	}
	var h int32
	for _, c := range b {
		h = 31*h + int32(c)
	}
	return h
}

// AppendKeyString appends the canonical string form of a key value:
// a string is itself; integers, and floats with an integral value, are
// decimal integers (so 3, int64(3) and 3.0 are the same key); other floats
// use strconv 'g' with the shortest representation; booleans are true/false;
// null is "null"; arrays and objects are their JSON encoding with sorted
// object keys. Keys of equal canonical form are the same key.
func AppendKeyString(b []byte, key any) []byte {
	switch x := key.(type) {
	case string:
		return append(b, x...)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int32:
		return strconv.AppendInt(b, int64(x), 10)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			return strconv.AppendInt(b, int64(x), 10)
		}
		return strconv.AppendFloat(b, x, 'g', -1, 64)
	case bool:
		return strconv.AppendBool(b, x)
	case nil:
		return append(b, "null"...)
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return strconv.AppendInt(b, n, 10)
		}
		if f, err := x.Float64(); err == nil {
			return AppendKeyString(b, f)
		}
		return append(b, x...)
	}
	enc, err := json.Marshal(key)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, enc...)
}

// KeyString is the canonical string form of a key value.
func KeyString(key any) string {
	if s, ok := key.(string); ok {
		return s
	}
	return string(AppendKeyString(nil, key))
}
