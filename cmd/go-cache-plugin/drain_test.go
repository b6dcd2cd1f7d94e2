package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// stuckRemote is a bucket whose uploads never finish (fault injection).
type stuckRemote struct{ *memremote.Remote }

func (stuckRemote) Put(ctx context.Context, _ string, _ io.ReadSeeker, _ int64) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestDirectCloseDrains checks direct mode's close: the handler's Close
// calls the one drain (closeStore, as serve mode does), bounded by
// --drain-timeout, which reports the uploads left; the go command is
// answered without an error.
func TestDirectCloseDrains(t *testing.T) {
	st, err := store.Open(store.Options{Dir: t.TempDir(), Remote: stuckRemote{memremote.New()}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config{DrainTimeout: time.Millisecond}
	cache := &gobuild.Cache{Store: st, Logf: t.Logf}
	var drains int
	var drainErr error
	h := drainOnClose{cache, func(ctx context.Context) error {
		drains++
		drainErr = closeStore(ctx, cfg, st)
		return drainErr
	}}
	data := []byte("an output")
	oid := sha256.Sum256(data)
	aid := sha256.Sum256([]byte("an action"))
	if _, err := h.Put(t.Context(), cacheprog.PutRequest{ActionID: aid[:], OutputID: oid[:], Size: int64(len(data)), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(t.Context()); err != nil {
		t.Errorf("Close = %v, want nil (uploads left are reported, not returned)", err)
	}
	if drains != 1 {
		t.Fatalf("drained %d times, want 1", drains)
	}
	if drainErr == nil || !strings.Contains(drainErr.Error(), "uploads not finished") {
		t.Errorf("drain = %v, want a report of the uploads not finished", drainErr)
	}
	if q := st.Stats().UploadQueue; q != 0 {
		t.Errorf("upload queue %d after the drain, want 0", q)
	}
}
