package revproxy

import (
	"container/list"
	"sync"
	"time"
)

// memCache holds short-lived responses in memory, bounded in bytes, least
// recently used first out, each until it expires.
type memCache struct {
	max      int64 // bound on the bytes of the bodies held
	maxEntry int64 // largest body held

	mu    sync.Mutex
	used  int64
	lru   *list.List // of *memEntry, most recent at the front
	items map[string]*list.Element
}

type memEntry struct {
	key     string
	meta    *Meta
	body    []byte
	expires time.Time
}

func newMemCache(max int64) *memCache {
	return &memCache{
		max:      max,
		maxEntry: max / 8,
		lru:      list.New(),
		items:    map[string]*list.Element{},
	}
}

// get returns the live entry for key, if any.
func (c *memCache) get(key string, now time.Time) (*memEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*memEntry)
	if !now.Before(e.expires) {
		c.removeLocked(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

// put adds e, replacing any entry of the same key and evicting the least
// recently used ones to make room.
func (c *memCache) put(e *memEntry) {
	size := int64(len(e.body))
	if size > c.maxEntry {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.removeLocked(el)
	}
	for c.used+size > c.max && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back())
	}
	c.items[e.key] = c.lru.PushFront(e)
	c.used += size
}

func (c *memCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*memEntry)
	delete(c.items, e.key)
	c.used -= int64(len(e.body))
}

// usage returns the entries and bytes held.
func (c *memCache) usage() (entries, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.lru.Len()), c.used
}
