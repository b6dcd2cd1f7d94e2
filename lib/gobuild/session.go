package gobuild

import (
	"context"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// Session returns the handler of one protocol session of a daemon that
// serves many sessions from c. Its Get, GetFast and Put are c's; its Close
// ends the session only: it neither waits for nor cuts the uploads pending
// on the shared store, which go on behind the session. The daemon drains
// the store once, when it shuts down, with [store.Store.Close].
func (c *Cache) Session() cacheprog.FastGetter { return session{c} }

// session is a [cacheprog.Handler] for one session on a shared Cache.
type session struct{ c *Cache }

func (s session) Get(ctx context.Context, actionID []byte) (cacheprog.Entry, bool, error) {
	return s.c.Get(ctx, actionID)
}

func (s session) GetFast(actionID []byte) (cacheprog.Entry, bool, bool) {
	return s.c.GetFast(actionID)
}

func (s session) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	return s.c.Put(ctx, req)
}

// Close implements [cacheprog.Handler]; it leaves the shared store alone.
func (s session) Close(context.Context) error { return nil }
