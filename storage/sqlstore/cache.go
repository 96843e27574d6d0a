package sqlstore

import (
	"container/list"
	"sync"

	"github.com/persistentchat/homeserver/roomdag"
)

// Cache sizes: enough for the state and recent timelines of the busy rooms
// of a department.
const (
	eventCacheSize    = 50000
	snapshotCacheSize = 2000
)

// lru is a size-bounded least-recently-used map, safe for concurrent use.
// epoch counts removals, so a reader that loaded a value before a removal
// does not put the stale value back (see putIfEpoch).
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[K]*list.Element
	epoch uint64
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, ll: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// currentEpoch is read before loading a value from the database.
func (c *lru[K, V]) currentEpoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// putIfEpoch stores v unless something was removed since epoch was read.
func (c *lru[K, V]) putIfEpoch(k K, v V, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if el, ok := c.items[k]; ok {
		el.Value.(*lruEntry[K, V]).val = v
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&lruEntry[K, V]{k, v})
	if c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*lruEntry[K, V]).key)
	}
}

func (c *lru[K, V]) remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if el, ok := c.items[k]; ok {
		c.ll.Remove(el)
		delete(c.items, k)
	}
}

type (
	eventCache    = lru[roomdag.EventID, *roomdag.StoredEvent]
	snapshotCache = lru[int64, map[roomdag.StateKey]roomdag.EventID]
)

// clear removes every entry.
func (c *lru[K, V]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.ll.Init()
	clear(c.items)
}
