package revproxy

import (
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memtier"
)

// memCache holds short-lived responses in memory, bounded in bytes, least
// recently used first out, each until it expires: the project's memory
// tier, holding responses of up to an eighth of the bound.
type memCache struct {
	maxEntry int64 // largest body held
	c        *memtier.Cache[*memEntry]
}

type memEntry struct {
	key     string
	meta    *Meta
	body    []byte
	expires time.Time
}

func newMemCache(max int64) *memCache {
	c := memtier.New[*memEntry](max, max/8)
	return &memCache{maxEntry: c.MaxEntry(), c: c}
}

// get returns the live entry for key, if any.
func (c *memCache) get(key string, now time.Time) (*memEntry, bool) {
	return c.c.Get(key, now)
}

// put adds e, replacing any entry of the same key and evicting the least
// recently used ones to make room.
func (c *memCache) put(e *memEntry) {
	c.c.Put(e.key, e, int64(len(e.body)), e.expires)
}

// usage returns the entries and bytes held.
func (c *memCache) usage() (entries, bytes int64) { return c.c.Usage() }
