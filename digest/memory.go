package digest

import (
	"sync"
	"sync/atomic"
)

// memory holds up to max digests, one per file (a new version replaces
// the old), evicted by the CLOCK algorithm, an approximation of LRU whose
// hits only set a bit: a lookup takes a read lock and writes nothing
// shared but that bit.
type memory struct {
	max   int
	mu    sync.RWMutex
	index map[fileID]int32
	slots []slot
	hand  int
}

type slot struct {
	key Key
	sum Sum
	ref uint32 // atomic: used since the hand last passed
}

// get returns k's digest if memory has that version of the file.
func (m *memory) get(k Key) (Sum, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i, ok := m.index[k.id()]
	if !ok {
		return Sum{}, false
	}
	sl := &m.slots[i]
	if sl.key != k {
		return Sum{}, false
	}
	if atomic.LoadUint32(&sl.ref) == 0 {
		atomic.StoreUint32(&sl.ref, 1)
	}
	return sl.sum, true
}

// put records k's digest, replacing the file's older version if any, else
// the first entry the clock hand finds unused since its last pass.
func (m *memory) put(k Key, s Sum) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := k.id()
	if i, ok := m.index[id]; ok {
		m.slots[i] = slot{key: k, sum: s, ref: 1}
		return
	}
	if len(m.slots) < m.max {
		m.index[id] = int32(len(m.slots))
		m.slots = append(m.slots, slot{key: k, sum: s, ref: 1})
		return
	}
	for {
		sl := &m.slots[m.hand]
		if sl.ref == 0 { // no reader: mu is held for writing
			delete(m.index, sl.key.id())
			*sl = slot{key: k, sum: s, ref: 1}
			m.index[id] = int32(m.hand)
			m.hand = (m.hand + 1) % len(m.slots)
			return
		}
		sl.ref = 0
		m.hand = (m.hand + 1) % len(m.slots)
	}
}

// len is the number of digests held.
func (m *memory) len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.slots)
}
