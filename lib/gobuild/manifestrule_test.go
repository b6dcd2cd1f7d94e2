package gobuild

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
)

func TestKeepListed(t *testing.T) {
	listed := testEntries(100)
	changed := func(es []manifestEntry) []manifestEntry {
		es = append([]manifestEntry(nil), es...)
		for i := range es {
			es[i].out[0] ^= 1
			es[i].size = 1
		}
		return es
	}
	for _, tc := range []struct {
		name    string
		entries []manifestEntry
		listed  []manifestEntry
		keep    bool
	}{
		{"no manifest", listed[:5], nil, false},
		{"nothing asked", nil, listed, false},
		{"small and current", listed[:24], listed, true},
		{"a quarter", listed[:25], listed, false},
		{"small, half current", append(append([]manifestEntry(nil), listed[:5]...), testEntries(110)[100:105]...), listed, true},
		{"small, mostly new", append(append([]manifestEntry(nil), listed[:4]...), testEntries(110)[100:106]...), listed, false},
		{"small, outputs changed", changed(listed[1:20]), listed, false},
		{"as big", changed(listed), listed, false},
	} {
		if got := keepListed(tc.entries, tc.listed); got != tc.keep {
			t.Errorf("%s: keepListed = %v, want %v", tc.name, got, tc.keep)
		}
	}
}

// TestSmallRunKeepsManifest: a build that asks for a few of the actions
// its manifest lists leaves the manifest in place; one whose few actions
// the manifest does not list replaces it.
func TestSmallRunKeepsManifest(t *testing.T) {
	remote := memremote.New()
	big := newPackBuild("big", 80)
	big.run(t, remote, 0)
	full, ok := remote.Object(ManifestKey("m"))
	if !ok || bytes.Count(full, []byte("\n")) != 81 {
		t.Fatalf("big build's manifest: %.80q", full)
	}

	small := packBuild{aids: big.aids[:8], datas: big.datas[:8]}
	_, m := small.run(t, remote, 0)
	if s := m.Stats(); s.ManifestsKept != 1 || s.ManifestsWritten != 0 {
		t.Errorf("small run of listed actions: %v; want the manifest kept", s)
	}
	if now, _ := remote.Object(ManifestKey("m")); !bytes.Equal(now, full) {
		t.Errorf("small run replaced the manifest")
	}

	other := newPackBuild("other", 8)
	_, m = other.run(t, remote, 0)
	if s := m.Stats(); s.ManifestsKept != 0 || s.ManifestsWritten != 1 {
		t.Errorf("small run of new actions: %v; want the stale manifest replaced", s)
	}
	if now, _ := remote.Object(ManifestKey("m")); bytes.Count(now, []byte("\n")) != 9 {
		t.Errorf("manifest after the small run of new actions: %.80q; want its 8 actions", now)
	}
}

// slowManifest is a remote whose first read of a manifest answers at once
// and then sends nothing until the caller gives up (fault injection: a
// build that closes before its manifest is read). It answers, so that the
// store's short first-byte deadline is not what ends the read: the test
// does not race a timer, only the much longer bound of a whole read.
type slowManifest struct {
	*memremote.Remote
	hung    atomic.Bool
	started chan struct{} // closed when the first read of the manifest starts
}

func (r *slowManifest) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if key == ManifestKey("m") && r.hung.CompareAndSwap(false, true) {
		close(r.started)
		return io.NopCloser(stalled{ctx}), -1, nil
	}
	return r.Remote.Get(ctx, key)
}

// stalled is a body that sends nothing until its context is done.
type stalled struct{ ctx context.Context }

func (s stalled) Read([]byte) (int, error) {
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

// TestShortRunReadsManifestAtClose: a run that closes before its manifest
// was read reads it at close, and leaves it in place if it is a small run.
func TestShortRunReadsManifestAtClose(t *testing.T) {
	mem := memremote.New()
	big := newPackBuild("big", 40)
	big.run(t, mem, 0)
	full, _ := mem.Object(ManifestKey("m"))

	remote := &slowManifest{Remote: mem, started: make(chan struct{})}
	c := newCache(t, remote)
	m := &Manifests{Cache: c, Concurrency: 4, Logf: t.Logf}
	h := m.Begin(t.Context(), owned{c}, []string{"m"})
	<-remote.started // the build's own read of its manifest is under way, and stalls
	for i, aid := range big.aids[:3] {
		if _, ok, err := h.Get(t.Context(), aid); err != nil || !ok {
			t.Fatalf("action %d: %v, %v; want a hit from the bucket", i, ok, err)
		}
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !remote.hung.Load() {
		t.Fatal("the manifest read at start was not held up")
	}
	if s := m.Stats(); s.ManifestsRead != 0 || s.ManifestsKept != 1 || s.ManifestsWritten != 0 {
		t.Errorf("%v; want the manifest read at close and kept", s)
	}
	if now, _ := mem.Object(ManifestKey("m")); !bytes.Equal(now, full) {
		t.Errorf("the short run replaced the manifest")
	}
	closeCache(t, c)
}
