package roomdag

import (
	"hash/maphash"
	"sync"
)

// DefaultRoomCacheSize is how many rooms keep their state in memory when
// the caller does not say (configs.Caches.Rooms has the same default).
// BenchmarkRoomCacheMemory in storage/sqlite measures a cached room at
// about 25 KiB for a dozen members, 150 KiB for a hundred and 1.5 MiB for
// a thousand (state events are about 1.4 KiB each in memory), and a cold
// reload at 0.5 ms, 3 ms and 25 ms: 2,000 rooms of a dozen members take
// some 50 MiB, and a department's busy rooms stay in memory.
const DefaultRoomCacheSize = 2000

// roomCache holds the rooms' in-memory entries, bounded: past its size the
// least recently used idle rooms leave memory, to be reloaded from storage
// when next used. A room that is pinned (a write queued and not answered,
// a writer holding or waiting for its lock, a load in progress) is never
// evicted: its in-memory head may be ahead of storage, and two entries for
// one room would mean two writers. The entries are sharded by room so that
// rooms do not contend on one lock; each shard keeps its own LRU order and
// its share of the bound.
type roomCache struct {
	seed   maphash.Seed
	shards []cacheShard
}

type cacheShard struct {
	mu    sync.Mutex
	max   int
	rooms map[RoomID]*room
	// lru is the sentinel of a ring through room.next and room.prev:
	// lru.next is the most recently used entry, lru.prev the least.
	lru room
}

// minPerShard keeps shards large enough for their LRU order to mean
// something: a small cache is one shard, an exact LRU.
const minPerShard = 64

func newRoomCache(size int) *roomCache {
	if size < 1 {
		size = 1
	}
	n := 1
	for n < 64 && size/(n*2) >= minPerShard {
		n *= 2
	}
	c := &roomCache{seed: maphash.MakeSeed(), shards: make([]cacheShard, n)}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.max = size / n
		if i < size%n {
			sh.max++
		}
		sh.rooms = map[RoomID]*room{}
		sh.lru.next, sh.lru.prev = &sh.lru, &sh.lru
	}
	return c
}

func (c *roomCache) shard(id RoomID) *cacheShard {
	if len(c.shards) == 1 {
		return &c.shards[0]
	}
	return &c.shards[maphash.String(c.seed, string(id))&uint64(len(c.shards)-1)]
}

// peek returns the room's entry if it is cached, marking it used, without
// pinning it: what a reader of durable state needs.
func (c *roomCache) peek(id RoomID) *room {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.rooms[id]
	if r != nil {
		sh.touch(r)
	}
	return r
}

// acquire returns the room's entry, pinned and marked used, making it if
// needed. Every acquire is matched by one release.
func (c *roomCache) acquire(id RoomID) *room {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.rooms[id]
	if r == nil {
		r = &room{id: id}
		sh.rooms[id] = r
		r.next, r.prev = r, r // unlinked: touch links it
		sh.touch(r)
		r.pins++
		sh.trim()
		return r
	}
	sh.touch(r)
	r.pins++
	return r
}

// release unpins an entry. An idle entry that holds no state (a room that
// turned out not to exist, or one whose creation failed) is dropped, so
// requests naming made-up rooms do not grow the cache.
func (c *roomCache) release(r *room) {
	sh := c.shard(r.id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r.pins--
	if r.pins == 0 && r.durable.Load() == nil && sh.rooms[r.id] == r {
		sh.remove(r)
	}
	sh.trim()
}

// drop removes the room's entry if it is idle and reports whether it did
// (or there was none).
func (c *roomCache) drop(id RoomID) bool {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.rooms[id]
	if r == nil {
		return true
	}
	if r.pins > 0 {
		return false
	}
	sh.remove(r)
	return true
}

// len counts the cached entries.
func (c *roomCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.rooms)
		sh.mu.Unlock()
	}
	return n
}

// touch makes r the most recently used entry. Caller holds sh.mu.
func (sh *cacheShard) touch(r *room) {
	if sh.lru.next == r {
		return
	}
	r.prev.next, r.next.prev = r.next, r.prev
	r.prev, r.next = &sh.lru, sh.lru.next
	sh.lru.next.prev = r
	sh.lru.next = r
}

// remove unlinks r and deletes it from the map. Caller holds sh.mu.
func (sh *cacheShard) remove(r *room) {
	r.prev.next, r.next.prev = r.next, r.prev
	r.prev, r.next = r, r
	delete(sh.rooms, r.id)
}

// trim evicts the least recently used idle entries while the shard is over
// its bound. Pinned entries are passed over; if every entry is pinned the
// shard stays over until they are released. Caller holds sh.mu.
func (sh *cacheShard) trim() {
	for r := sh.lru.prev; len(sh.rooms) > sh.max && r != &sh.lru; {
		newer := r.prev
		if r.pins == 0 {
			sh.remove(r)
		}
		r = newer
	}
}
