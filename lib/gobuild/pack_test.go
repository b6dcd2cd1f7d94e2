package gobuild

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// packBuild is one build's worth of actions and outputs: n outputs of
// various sizes, one in ten empty, 10 MB for 80, so that a pack of them is read in several
// ranges. (Not more: the in-memory bucket holds them all, and the tests
// that measure a child's peak RSS run in the same process.)
type packBuild struct {
	aids     [][]byte
	datas    [][]byte
	compress bool // write compressed packs
}

func newPackBuild(tag string, n int) packBuild {
	var b packBuild
	for i := range n {
		b.aids = append(b.aids, actionID(fmt.Sprintf("%s %d", tag, i)))
		size := 100 + (i*7919)%(1<<17) + (i%5)*30_000
		if i%10 == 9 {
			size = 0 // several actions with the empty output, as in real builds
		}
		b.datas = append(b.datas, bytes.Repeat([]byte{byte(i), byte(i >> 8), 'p'}, size/3))
	}
	return b
}

// run runs the build on a cache with an empty directory over remote,
// under manifest "m": every action is asked for, and put when missing. It
// returns the cache (closed) and its build's manifests.
func (pb packBuild) run(t *testing.T, remote store.Remote, packMin int) (*Cache, *Manifests) {
	t.Helper()
	c := newCache(t, remote)
	m := &Manifests{Cache: c, Concurrency: 4, PackMinEntries: packMin, Compress: pb.compress, Logf: t.Logf}
	h := m.Begin(t.Context(), owned{c}, []string{"m"})
	// Wait for the prefetch to end before the build asks, so that what
	// it fetched is known; a build that asks at once is the go command's
	// case, tested end to end with a real bucket.
	h.(*build).wg.Wait()
	for i, aid := range pb.aids {
		e, ok, err := h.Get(t.Context(), aid)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if _, err := h.Put(t.Context(), cacheprog.PutRequest{ActionID: aid, OutputID: outputID(pb.datas[i]), Size: int64(len(pb.datas[i])), Body: bytes.NewReader(pb.datas[i])}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !bytes.Equal(e.OutputID, outputID(pb.datas[i])) {
			t.Fatalf("action %d: output %x, want %x", i, e.OutputID, outputID(pb.datas[i]))
		}
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c, m
}

// checkLocal checks that every action of pb is a local hit with the right
// output, without calling the remote tier.
func (pb packBuild) checkLocal(t *testing.T, c *Cache) {
	t.Helper()
	for i, aid := range pb.aids {
		e, ok, done := c.GetFast(aid)
		if !done || !ok {
			t.Fatalf("action %d not complete locally after the prefetch", i)
		}
		if !bytes.Equal(e.OutputID, outputID(pb.datas[i])) {
			t.Fatalf("action %d: output %x, want %x", i, e.OutputID, outputID(pb.datas[i]))
		}
	}
}

// packsIn returns the packs a manifest lists.
func packsIn(t *testing.T, remote *memremote.Remote) []string {
	t.Helper()
	data, ok := remote.Object(ManifestKey("m"))
	if !ok {
		t.Fatal("no manifest written")
	}
	var packs []string
	for line := range strings.Lines(string(data)) {
		if id, ok := strings.CutPrefix(line, "pack "); ok {
			packs = append(packs, strings.Fields(id)[0])
		}
	}
	return packs
}

func TestPackWrittenAndRead(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testPackWrittenAndRead(t, false) })
	t.Run("compressed", func(t *testing.T) { testPackWrittenAndRead(t, true) })
}

func testPackWrittenAndRead(t *testing.T, compress bool) {
	remote := memremote.New()
	pb := newPackBuild("a", 80)
	pb.compress = compress
	_, m := pb.run(t, remote, 64)
	if s := m.Stats(); s.PacksWritten != 1 || s.ManifestsWritten != 1 {
		t.Fatalf("first build: %v; want a pack and a manifest written", s)
	}
	packs := packsIn(t, remote)
	if len(packs) != 1 {
		t.Fatalf("manifest lists packs %q, want 1", packs)
	}
	pack, ok := remote.Object("pack/" + packs[0][:2] + "/" + packs[0])
	if !ok {
		t.Fatalf("pack %s not in the bucket", packs[0])
	}
	header, _, _ := bytes.Cut(pack, []byte("\n\n"))
	header = append(header, "\n\n"...)
	if id := outputID(header); hex.EncodeToString(id) != packs[0] {
		t.Errorf("pack named %s, but its header hashes to %x", packs[0], id)
	}
	distinct := map[string]bool{}
	for _, d := range pb.datas {
		distinct[string(d)] = true
	}
	if n := bytes.Count(header, []byte("\n")) - 2; n != len(distinct) {
		t.Errorf("pack lists %d outputs, want the %d distinct ones", n, len(distinct))
	}
	var raw int
	for d := range distinct {
		raw += len(d)
	}
	manifest, _ := remote.Object(ManifestKey("m"))
	version, _, _ := bytes.Cut(manifest, []byte("\n"))
	if body := len(pack) - len(header); compress != (body < raw/4) || compress != (string(version) == "go-cache-plugin manifest 4") {
		t.Errorf("compress %v: pack holds %d bytes of outputs of %d, manifest %q", compress, body, raw, version)
	}

	// A cold worker reads the outputs from the pack, a few ranges in all.
	gets0, ranges0 := remote.Calls()
	c := newCache(t, remote)
	m = &Manifests{Cache: c, Concurrency: 4, PackMinEntries: 64, Logf: t.Logf}
	h := m.Begin(t.Context(), owned{c}, []string{"m"})
	h.(*build).wg.Wait()
	gets, ranges := remote.Calls()
	gets, ranges = gets-gets0, ranges-ranges0
	pb.checkLocal(t, c)
	var total int
	for _, d := range pb.datas {
		total += len(d)
	}
	s := m.Stats()
	t.Logf("%d bytes in %d outputs: %d gets, %d ranged reads; %v", total, len(pb.datas), gets, ranges, s)
	if s.Packed != int64(len(pb.aids)) || s.Prefetched != s.Packed || s.Records != 0 {
		t.Errorf("prefetch %v; want every output from the pack", s)
	}
	if gets != 1 || ranges > len(pack)/packRangeSize+3 || ranges != int(s.PackReads) {
		t.Errorf("prefetch made %d gets and %d ranged reads; want the manifest and about one read per %d bytes", gets, ranges, packRangeSize)
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Nothing asked, nothing changed: no new pack, no new manifest.
	if s := m.Stats(); s.PacksWritten != 0 {
		t.Errorf("cold worker: %v; want no pack written", s)
	}
	closeCache(t, c)
}

// tamper changes the pack the manifest lists with f.
func tamper(t *testing.T, remote *memremote.Remote, f func(pack []byte) []byte) {
	t.Helper()
	id := packsIn(t, remote)[0]
	key := "pack/" + id[:2] + "/" + id
	pack, _ := remote.Object(key)
	if pack = f(pack); pack == nil {
		remote.Delete(key)
	} else {
		remote.Set(key, pack)
	}
}

// middle returns the offset of the middle of the outputs in pack p.
func middle(p []byte) int {
	h := bytes.Index(p, []byte("\n\n")) + 2
	return h + (len(p)-h)/2
}

// TestPackFaults: a pack that holds other bytes, is cut short or is gone
// delivers what it can; the rest is fetched one output at a time, and no
// output is installed that is not what its action says.
func TestPackFaults(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tamper     func([]byte) []byte
		wantPacked func(n int64) bool
		corrupt    int64
	}{
		{"one output changed", func(p []byte) []byte { p[middle(p)] ^= 0xff; return p }, func(n int64) bool { return n == 79 }, 1},
		{"cut short", func(p []byte) []byte { return p[:middle(p)] }, func(n int64) bool { return n > 0 && n < 80 }, 1},
		{"gone", func([]byte) []byte { return nil }, func(n int64) bool { return n == 0 }, 0},
		{"garbage", func(p []byte) []byte { return bytes.Repeat([]byte("x"), len(p)) }, func(n int64) bool { return n == 8 }, 72}, // the empty output is still empty
	} {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/compress=%v", tc.name, compress), func(t *testing.T) {
				remote := memremote.New()
				pb := newPackBuild("f", 80)
				pb.compress = compress
				pb.run(t, remote, 64)
				tamper(t, remote, tc.tamper)

				c := newCache(t, remote)
				m := &Manifests{Cache: c, Concurrency: 4, Logf: t.Logf}
				h := m.Begin(t.Context(), owned{c}, []string{"m"})
				h.(*build).wg.Wait()
				pb.checkLocal(t, c)
				s, ss := m.Stats(), c.Store.Stats()
				t.Logf("prefetch %v; store %v", s, ss)
				// (Fetched one by one, the actions of the empty output
				// after the first are not counted: it is local.)
				if !tc.wantPacked(s.Packed) || s.Prefetched < 73 {
					t.Errorf("prefetched %d, %d from the pack; want all, some from the pack", s.Prefetched, s.Packed)
				}
				if ss.CorruptRemote != tc.corrupt {
					t.Errorf("corrupt_remote = %d, want %d", ss.CorruptRemote, tc.corrupt)
				}
				if err := h.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				closeCache(t, c)
			})
		}
	}
}

// TestPackPolicy: a build writes a pack of what no pack holds only once
// that is a quarter of the listed bytes; a manifest can list several.
func TestPackPolicy(t *testing.T) {
	remote := memremote.New()
	pb := newPackBuild("p", 80)
	pb.run(t, remote, 64)
	first := packsIn(t, remote)

	// A few outputs changed: listed out of any pack, no new pack.
	changed := newPackBuild("p", 80)
	for i := range 5 {
		changed.datas[i] = append(changed.datas[i], "changed"...)
		changed.aids[i] = actionID(fmt.Sprintf("p changed %d", i))
	}
	_, m := changed.run(t, remote, 64)
	if s := m.Stats(); s.PacksWritten != 0 || s.ManifestsWritten != 1 {
		t.Errorf("build with 5 changed outputs: %v; want a manifest and no pack", s)
	}
	if got := packsIn(t, remote); len(got) != 1 || got[0] != first[0] {
		t.Errorf("manifest lists packs %q, want %q", got, first)
	}
	data, _ := remote.Object(ManifestKey("m"))
	if n := bytes.Count(data, []byte("@")); n != 75 {
		t.Errorf("manifest places %d outputs in packs, want 75", n)
	}

	// Most changed: a new pack of the new outputs, beside the first.
	most := newPackBuild("p", 80)
	for i := range 70 {
		most.datas[i] = append(most.datas[i], "new"...)
		most.aids[i] = actionID(fmt.Sprintf("p new %d", i))
	}
	c, m := most.run(t, remote, 64)
	if s := m.Stats(); s.PacksWritten != 1 {
		t.Errorf("build with 70 new outputs: %v; want a pack written", s)
	}
	if got := packsIn(t, remote); len(got) != 2 || got[1] != first[0] {
		t.Errorf("manifest lists packs %q, want a new one and %s", got, first[0])
	}
	// The new pack holds only the new outputs.
	if s := c.Store.Stats(); s.BytesUp == 0 {
		t.Errorf("store %v: nothing uploaded", s)
	}
	cold := newCache(t, remote)
	m = &Manifests{Cache: cold, Concurrency: 4, Logf: t.Logf}
	h := m.Begin(t.Context(), owned{cold}, []string{"m"})
	h.(*build).wg.Wait()
	most.checkLocal(t, cold)
	if s := m.Stats(); s.Packed != 80 {
		t.Errorf("cold worker: %v; want all 80 outputs from the two packs", s)
	}
	h.Close(t.Context())
	closeCache(t, cold)

	// No packs written with PackMinEntries 0, whatever changed.
	none := memremote.New()
	_, m = pb.run(t, none, 0)
	if s := m.Stats(); s.PacksWritten != 0 || s.ManifestsWritten != 1 {
		t.Errorf("PackMinEntries 0: %v; want a manifest and no pack", s)
	}
}

func TestPlanFetches(t *testing.T) {
	var pack aid32
	pack[0] = 1
	e := func(i int, off, size int64, packed bool) manifestEntry {
		var id aid32
		id[0] = byte(i)
		return manifestEntry{id: id, out: id, size: size, packed: packed, pack: pack, offset: off}
	}
	const kb, mb = 1 << 10, 1 << 20
	entries := []manifestEntry{
		e(0, 100, 600*kb, true),
		e(1, 0, 5, false),
		e(2, 100+600*kb, 300*kb, true),               // fits the first read, packFirstRange
		e(3, 100+900*kb, 2*mb, true),                 // would not: a second read, of up to 2 MiB
		e(4, 100+900*kb+2*mb, 0, true),               // empty outputs at the same offset as 5...
		e(5, 100+900*kb+2*mb, 1*mb, true),            // ... come first: a third read, up to 4 MiB
		e(6, 100+900*kb+2*mb, 0, true),               //
		e(7, 100+900*kb+3*mb+packMaxGap+1, 10, true), // past the gap: a new read
	}
	jobs := planFetches(entries, true)
	var got []string
	for _, j := range jobs {
		var ids []string
		for _, e := range j.entries {
			ids = append(ids, fmt.Sprint(e.id[0]))
		}
		got = append(got, fmt.Sprintf("%v:%s", j.packed, strings.Join(ids, ",")))
	}
	// Entries 4 and 6 may come in either order.
	want := []string{"true:0,2", "false:1", "true:3,4,6", "true:5", "true:7"}
	alt := []string{"true:0,2", "false:1", "true:3,6,4", "true:5", "true:7"}
	if fmt.Sprint(got) != fmt.Sprint(want) && fmt.Sprint(got) != fmt.Sprint(alt) {
		t.Errorf("planFetches = %v, want %v", got, want)
	}
	if jobs := planFetches(entries, false); len(jobs) != len(entries) {
		t.Errorf("planFetches without packs: %d jobs, want one per entry", len(jobs))
	}
}

// TestManifestListsPuts: a compiling build asks once for each action and
// then puts it and a subkey it never asked for (as the go command stores
// an action's list of source files or its compiler output). A build that
// finds the action cached asks for both, so a cold worker must find both
// in the manifest and the pack, not fetch the subkeys one by one.
func TestManifestListsPuts(t *testing.T) {
	remote := memremote.New()
	const n = 70
	pb := newPackBuild("k", 2*n) // action i at 2i, its subkey at 2i+1
	put := func(h cacheprog.FastGetter, i int) {
		t.Helper()
		if _, err := h.Put(t.Context(), cacheprog.PutRequest{ActionID: pb.aids[i], OutputID: outputID(pb.datas[i]), Size: int64(len(pb.datas[i])), Body: bytes.NewReader(pb.datas[i])}); err != nil {
			t.Fatal(err)
		}
	}
	c := newCache(t, remote)
	m := &Manifests{Cache: c, Concurrency: 4, PackMinEntries: 64, Logf: t.Logf}
	h := m.Begin(t.Context(), owned{c}, []string{"m"})
	h.(*build).wg.Wait()
	for i := 0; i < 2*n; i += 2 {
		if _, ok, err := h.Get(t.Context(), pb.aids[i]); err != nil || ok {
			t.Fatalf("seed: action %d: hit %v, err %v; want a miss", i, ok, err)
		}
		put(h, i)
		put(h, i+1)
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	closeCache(t, c)
	if s := m.Stats(); s.ManifestsWritten != 1 || s.PacksWritten != 1 {
		t.Fatalf("seed: %v; want a manifest and a pack", s)
	}
	data, _ := remote.Object(ManifestKey("m"))
	if got := bytes.Count(data, []byte("@")); got != 2*n {
		t.Errorf("manifest places %d outputs in packs, want %d (each action and its subkey)", got, 2*n)
	}

	gets0, _ := remote.Calls()
	cold := newCache(t, remote)
	m = &Manifests{Cache: cold, Concurrency: 4, PackMinEntries: 64, Logf: t.Logf}
	h = m.Begin(t.Context(), owned{cold}, []string{"m"})
	h.(*build).wg.Wait()
	pb.checkLocal(t, cold)
	gets, _ := remote.Calls()
	if s := m.Stats(); s.Packed != 2*n || gets-gets0 != 1 {
		t.Errorf("cold worker: %v, %d gets; want all %d outputs from the pack and one get (the manifest)", s, gets-gets0, 2*n)
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	closeCache(t, cold)
}

// TestPackPolicyCountsOutputs: many small outputs in no pack get a pack of
// their own though their bytes are few, since each would cost a cold
// worker a request.
func TestPackPolicyCountsOutputs(t *testing.T) {
	big := func(n int) []manifestEntry {
		var es []manifestEntry
		for range n {
			es = append(es, manifestEntry{size: 1 << 20, packed: true})
		}
		return es
	}
	small := func(n int, packed bool) []manifestEntry {
		var es []manifestEntry
		for range n {
			es = append(es, manifestEntry{size: 100, packed: packed})
		}
		return es
	}
	for _, tc := range []struct {
		name    string
		entries []manifestEntry
		want    bool
	}{
		{"a third of the outputs, few bytes", append(big(140), small(70, false)...), true},
		{"a tenth of the outputs, few bytes", append(big(630), small(70, false)...), false},
		{"few outputs in no pack", append(big(10), small(20, false)...), false},
		{"all packed", append(big(10), small(70, true)...), false},
	} {
		var unpacked int64
		for _, e := range tc.entries {
			if !e.packed {
				unpacked += e.size
			}
		}
		if got := shouldPack(tc.entries, unpacked, 64); got != tc.want {
			t.Errorf("%s: shouldPack = %v, want %v", tc.name, got, tc.want)
		}
	}
}
