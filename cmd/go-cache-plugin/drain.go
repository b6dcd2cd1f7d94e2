package main

import (
	"context"

	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// closeStore is the one drain of the store, in direct and serve mode
// alike: it waits for pending uploads for at most --drain-timeout (and
// until ctx ends), then closes the store. Its error says how many uploads
// were left.
func closeStore(ctx context.Context, cfg *config, st *store.Store) error {
	if cfg.DrainTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.DrainTimeout)
		defer cancel()
	}
	return st.Close(ctx)
}

// drainOnClose is direct mode's build cache: the command owns the store,
// and drains it when the go command closes the session, before answering
// (so that the build waits for its uploads, and a manifest written at
// close names only uploaded outputs). Uploads left are logged, not
// returned: the build's outputs are safe locally, and an error would fail
// the go command.
type drainOnClose struct {
	*gobuild.Cache
	drain func(context.Context) error
}

func (h drainOnClose) Close(ctx context.Context) error {
	if err := h.Cache.Close(ctx); err != nil {
		return err
	}
	if err := h.drain(ctx); err != nil {
		logger(true)("close: %v", err)
	}
	return nil
}
