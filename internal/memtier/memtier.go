// Package memtier is the one memory tier of the project: a map of values
// bounded by their bytes, least recently used first out, each value
// optionally until it expires. The module proxy keeps its mutable files
// and remembered 404s in one, the reverse proxy its short-lived responses.
//
// The memory tier is a cache in front of the store, never the only copy:
// what it evicts or refuses is found again in the store or the origin.
package memtier

import (
	"container/list"
	"sync"
	"time"
)

// A Cache holds values of type V by string key. Create one with New; it is
// safe for concurrent use.
type Cache[V any] struct {
	max      int64 // bound on the bytes held
	maxEntry int64 // largest entry held

	mu    sync.Mutex
	used  int64
	lru   *list.List // of *entry[V], most recent at the front
	items map[string]*list.Element
}

type entry[V any] struct {
	key     string
	val     V
	size    int64
	expires time.Time // zero: never
}

// New returns a cache holding at most max bytes, and no entry of more
// than maxEntry bytes (max if maxEntry is not positive or is larger).
func New[V any](max, maxEntry int64) *Cache[V] {
	if maxEntry <= 0 || maxEntry > max {
		maxEntry = max
	}
	return &Cache[V]{max: max, maxEntry: maxEntry, lru: list.New(), items: map[string]*list.Element{}}
}

// MaxEntry returns the size of the largest entry the cache takes, so that
// a caller can tell before it buffers a value whether it would be kept.
func (c *Cache[V]) MaxEntry() int64 { return c.maxEntry }

// Get returns the value of key, if the cache holds it and it has not
// expired at now, and marks it as used. An expired entry is dropped.
func (c *Cache[V]) Get(key string, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	e := el.Value.(*entry[V])
	if !e.expires.IsZero() && !now.Before(e.expires) {
		c.removeLocked(el)
		var zero V
		return zero, false
	}
	c.lru.MoveToFront(el)
	return e.val, true
}

// Put adds val for key, counted as size bytes, until expires (never if
// zero), replacing any entry of the same key and evicting the least
// recently used ones to make room. It reports whether val was kept: an
// entry larger than MaxEntry is not (and any older entry of the key is
// dropped, so that it is not served in its place).
func (c *Cache[V]) Put(key string, val V, size int64, expires time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.removeLocked(el)
	}
	if size > c.maxEntry || size < 0 {
		return false
	}
	for c.used+size > c.max && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back())
	}
	c.items[key] = c.lru.PushFront(&entry[V]{key: key, val: val, size: size, expires: expires})
	c.used += size
	return true
}

// Delete drops the entry of key, if any.
func (c *Cache[V]) Delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.removeLocked(el)
	}
}

func (c *Cache[V]) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*entry[V])
	delete(c.items, e.key)
	c.used -= e.size
}

// Usage returns the entries and bytes held.
func (c *Cache[V]) Usage() (entries, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.lru.Len()), c.used
}
