package access

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// idGen makes ids in the lease.NewID format (26 Crockford base32
// characters: a 48-bit millisecond time, then 80 random bits) that also
// increase strictly within one process: an id made in the same
// millisecond as the last one (or when the clock stepped back) is the last
// one plus one. Records then sort in the order they were written even
// under an injected clock that stands still, and lease.ValidID accepts
// them.
type idGen struct {
	mu     sync.Mutex
	ms     uint64 // millisecond part of the last id
	hi, lo uint64 // its 80 random bits: hi holds the top 16
}

func (g *idGen) next(now time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := uint64(now.UnixMilli()) & (1<<48 - 1)
	if ms > g.ms {
		var b [10]byte
		rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
		g.ms = ms
		g.hi = uint64(binary.BigEndian.Uint16(b[:2]))
		g.lo = binary.BigEndian.Uint64(b[2:])
		g.hi &= 0x7fff // leave room to count up within the millisecond
	} else {
		g.lo++
		if g.lo == 0 {
			g.hi++
		}
	}
	hi := g.ms<<16 | g.hi
	lo := g.lo
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"
