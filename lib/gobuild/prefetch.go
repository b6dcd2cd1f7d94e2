package gobuild

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	inflight "github.com/go-cache-plugin/go-cache-plugin/internal/flight"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Manifests records what builds ask of a [Cache] as manifests in the
// remote tier, and prefetches the objects a manifest lists when a build
// starts, so that a worker with an empty local directory finds most of
// what the go command asks for already there.
//
// Each build (a protocol session) is wrapped by [Manifests.Begin]. At
// start the build reads its manifests and, for each action listed that is
// not complete in the local directory, fetches its output (with ranged
// reads of its pack if the manifest places it in one, see pack.go; else
// through the store's single-flight fault-in) and writes the action's
// record locally from the manifest, in manifest order, Concurrency at a
// time. (An action listed without its output, or whose output is gone from
// the remote tier, costs a second round trip: its record is fetched
// first.) It runs beside the build and never ahead of it: the go
// command's requests are answered as they come, and one for
// an action being prefetched waits for that fetch (and an action fetched
// on demand is not fetched again by the prefetch). The prefetch stops at
// the first remote failure that opens the store's breaker, and when the
// build closes. At close, the build writes the actions it asked for or
// put, in the order it first asked for or put them, to the first of its
// manifests: the most recent build of a name wins, unless it asked for
// much less than that manifest lists and the manifest is current (see
// manifestrule.go): a small run leaves a big run's manifest in place.
// Before that it writes a pack of the listed outputs that no pack holds,
// when they are enough (PackMinEntries).
type Manifests struct {
	Cache *Cache

	// Concurrency bounds the fetches of one build's prefetch. If zero,
	// nothing is prefetched; manifests are still written.
	Concurrency int

	// PackMinEntries is the fewest outputs, in no pack yet, that a build
	// writes a pack of at close (see pack.go); if zero or negative, no
	// pack is written, and packs are still read.
	PackMinEntries int

	// Compress makes the packs a build writes compressed (zstd, one frame
	// per output, see pack.go): about a quarter of the bytes for a cold
	// worker to read, for the CPU to decode them. Packs are read either
	// way. A manifest that lists a compressed pack can be read only by
	// readers that know manifest version 4.
	Compress bool

	// Logf, if set, receives log lines about manifests read and written.
	Logf func(format string, args ...any)

	flights inflight.Group[aid32, struct{}] // actions being fetched from the remote tier

	stats prefetchCounters
}

// prefetchCounters are the live counters of Manifests, the twins of
// [PrefetchStats]'s fields (see internal/counters).
type prefetchCounters struct {
	manifestsRead, manifestsWritten, manifestsKept atomic.Int64
	entries                                        atomic.Int64
	prefetched, prefetchedBytes, used, usedBytes   atomic.Int64
	wasted, wastedBytes, waited, stopped, local    atomic.Int64
	early, records                                 atomic.Int64
	packReads, packed, packsWritten, packBytes     atomic.Int64
}

// PrefetchStats are the counts of manifests and prefetches.
type PrefetchStats struct {
	ManifestsRead    int64 `json:"manifests_read"`    // manifests found at the start of builds
	ManifestsWritten int64 `json:"manifests_written"` // manifests written at close
	ManifestsKept    int64 `json:"manifests_kept"`    // manifests left in place at close by builds that asked for much less (manifestrule.go)
	Entries          int64 `json:"manifest_entries"`  // actions listed in the manifests read
	Local            int64 `json:"prefetch_local"`    // listed actions already complete locally
	Prefetched       int64 `json:"prefetched"`        // outputs fetched by prefetches
	PrefetchedBytes  int64 `json:"prefetched_bytes"`  // their bytes
	Used             int64 `json:"prefetch_used"`     // prefetched outputs the go command asked for later
	UsedBytes        int64 `json:"prefetch_used_bytes"`
	Wasted           int64 `json:"prefetch_wasted"` // prefetched outputs not asked for by the build's close
	WastedBytes      int64 `json:"prefetch_wasted_bytes"`
	Waited           int64 `json:"prefetch_waited"`  // requests that waited for a prefetch in flight
	Stopped          int64 `json:"prefetch_stopped"` // prefetches stopped early by a failing remote tier
	Early            int64 `json:"answered_early"`   // requests answered before the build's manifests were read
	Records          int64 `json:"prefetch_records"` // action records read from the remote tier (the manifest not listing the output, or the output gone)
	PackReads        int64 `json:"pack_reads"`       // ranged reads of packs
	Packed           int64 `json:"prefetch_packed"`  // prefetched outputs read from packs (counted in Prefetched too)
	PacksWritten     int64 `json:"packs_written"`    // packs written at close
	PackBytes        int64 `json:"pack_bytes_written"`
}

// Stats returns the counts so far.
func (m *Manifests) Stats() PrefetchStats {
	return counters.Snapshot[PrefetchStats](&m.stats)
}

// String formats the counts as key=value pairs in field order, keyed by
// their json tags, for logs.
func (s PrefetchStats) String() string { return counters.Format(s) }

func (m *Manifests) logf(format string, args ...any) {
	if m.Logf != nil {
		m.Logf(format, args...)
	}
}

// A claim is the fetch of one action in progress: the project's
// single-flight, led inline (Join and Land), since its callers differ in
// what they do when another leads. A prefetch finding an action claimed
// skips it; a request of the go command waits for the claim to end, then
// looks for the action itself; a request leading its own lookup holds the
// claim so that no prefetch fetches it again meanwhile. Nobody needs a
// value from the leader, only the moment it is done.
type claim = inflight.Call[struct{}]

// claim marks id as being fetched. It returns the claim and whether the
// caller is the one to do it (and to call release).
func (m *Manifests) claim(id aid32) (*claim, bool) {
	return m.flights.Join(id)
}

func (m *Manifests) release(id aid32, c *claim) {
	m.flights.Land(id, c, struct{}{}, nil)
}

// Begin starts a build served by h (in direct mode the Cache, with a
// Close that drains the store, or a session of it), reading its manifests from names (the first is written
// at close) and prefetching them in the background until the build
// closes. With no names it only passes requests to h. The returned
// handler's Close stops the prefetch, closes h and then writes the
// manifest.
func (m *Manifests) Begin(ctx context.Context, h cacheprog.FastGetter, names []string) cacheprog.FastGetter {
	if len(names) == 0 || !m.Cache.Store.HasRemote() {
		return h
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b := &build{m: m, h: m.Cache, next: h, names: names, cancel: cancel,
		asked: make(map[aid32]manifestEntry), prefetched: make(map[aid32]int64)}
	b.wg.Go(func() { b.run(ctx) })
	return b
}

// build is one build's handler: it records the requests and runs the
// prefetch.
type build struct {
	m      *Manifests
	h      *Cache
	next   cacheprog.FastGetter
	names  []string
	cancel context.CancelFunc
	wg     sync.WaitGroup // the prefetch

	mu         sync.Mutex
	order      []aid32                 // actions in the order first asked
	asked      map[aid32]manifestEntry // with the output, once known (a hit, or put and uploaded)
	prefetched map[aid32]int64         // prefetched outputs not yet asked for: their sizes
	listed     []manifestEntry         // the first manifest as read, if any
	firstRead  bool                    // the read of the first manifest ended (found or not), not cut short by close
	located    map[aid32]manifestEntry // outputs in packs, by output ID, from every manifest read
	readDone   atomic.Bool             // the manifests have been read (or not found)
}

// answered counts a request answered before the manifests were read: the
// build does not wait for them.
func (b *build) answered() {
	if !b.readDone.Load() {
		b.m.stats.early.Add(1)
	}
}

// ask notes that the go command asked for id.
func (b *build) ask(id aid32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.asked[id]; ok {
		return
	}
	b.asked[id] = manifestEntry{id: id, size: -1}
	b.order = append(b.order, id)
	if size, ok := b.prefetched[id]; ok {
		delete(b.prefetched, id)
		b.m.stats.used.Add(1)
		b.m.stats.usedBytes.Add(size)
	}
}

// known notes that id exists (in the bucket too), with an output of size
// bytes recorded at t.
func (b *build) known(id aid32, out []byte, size int64, t time.Time) {
	b.note(id, out, size, t, false)
}

// stored notes that the go command put id, with an output of size bytes.
// An action put but not asked for joins the manifest where it was put: a
// build that misses asks for an action once and then puts it and its
// subkeys (the list of source files, the compiler's output, the vet
// facts, the test log), which it never asked for, and a build that finds
// the action cached asks for every one of them. Left out, they are about
// half of what a cold worker asks for, fetched one by one.
func (b *build) stored(id aid32, out []byte, size int64, t time.Time) {
	b.note(id, out, size, t, true)
}

func (b *build) note(id aid32, out []byte, size int64, t time.Time, add bool) {
	if len(out) != cacheprog.IDSize || size < 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.asked[id]
	if !ok && !add {
		return
	}
	if !ok {
		b.order = append(b.order, id)
	}
	b.asked[id] = manifestEntry{id: id, out: aid32(out), size: size, nanos: max(t.UnixNano(), 0)}
}

func (b *build) GetFast(aid []byte) (cacheprog.Entry, bool, bool) {
	e, hit, done := b.next.GetFast(aid)
	if done {
		b.answered()
	}
	if done && len(aid) == cacheprog.IDSize {
		id := aid32(aid)
		b.ask(id)
		if hit {
			b.known(id, e.OutputID, e.Size, e.Time)
		}
	}
	return e, hit, done
}

func (b *build) Get(ctx context.Context, aid []byte) (cacheprog.Entry, bool, error) {
	if len(aid) != cacheprog.IDSize {
		return b.next.Get(ctx, aid)
	}
	id := aid32(aid)
	b.ask(id)
	c, mine := b.m.claim(id)
	if mine {
		defer b.m.release(id, c)
	} else {
		// Being prefetched: wait for it, then find it locally.
		b.m.stats.waited.Add(1)
		c.Wait(ctx) // until the fetch ends or ctx does: look either way
	}
	e, hit, err := b.next.Get(ctx, aid)
	b.answered()
	if hit {
		b.known(id, e.OutputID, e.Size, e.Time)
	}
	return e, hit, err
}

func (b *build) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	path, err := b.next.Put(ctx, req)
	if err == nil && len(req.ActionID) == cacheprog.IDSize && req.Size >= b.h.MinUploadSize {
		b.stored(aid32(req.ActionID), req.OutputID, req.Size, time.Now())
	}
	return path, err
}

// Close stops the prefetch, closes the next handler and writes the
// manifest.
func (b *build) Close(ctx context.Context) error {
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	for _, size := range b.prefetched {
		b.m.stats.wasted.Add(1)
		b.m.stats.wastedBytes.Add(size)
	}
	clear(b.prefetched)
	var entries []manifestEntry
	for _, id := range b.order {
		if e := b.asked[id]; e.hasOutput() {
			entries = append(entries, e)
		}
	}
	listed, located, firstRead := b.listed, b.located, b.firstRead
	b.mu.Unlock()

	err := b.next.Close(ctx)
	if !firstRead && len(entries) > 0 && !b.h.Store.ReadOnly() {
		// A short run closed before its manifest was read: read it
		// now, for the rule on small runs.
		listed = b.readListed(ctx)
	}
	b.writeManifest(ctx, entries, listed, located)
	return err
}

// writeManifest writes entries as the first manifest, unless there are
// none or they are what it already lists. Outputs in the packs of the
// manifests read at start (located) are listed in them, and if too many
// are in none, a new pack of those is written first (see pack.go). Packs
// are written only by a build that has read its manifests: one that closes
// before does not know what is packed.
func (b *build) writeManifest(ctx context.Context, entries, listed []manifestEntry, located map[aid32]manifestEntry) {
	entries = entries[:min(len(entries), MaxManifestEntries)]
	name := b.names[0]
	if b.h.Store.ReadOnly() {
		return // the remote tier is read-only: nothing is written, as expected
	}
	if keepListed(entries, listed) {
		b.m.stats.manifestsKept.Add(1)
		b.m.logf("manifest %s: kept: this build asked for %d actions, it lists %d (a small run leaves a current manifest in place)", name, len(entries), len(listed))
		return
	}
	unpacked := locatePacked(entries, located)
	if b.readDone.Load() && b.h.Store.CanReadPacks() && shouldPack(entries, unpacked, b.m.PackMinEntries) {
		b.writePack(ctx, entries)
	}
	switch {
	case len(entries) == 0:
		b.m.logf("manifest %s: the build asked for nothing cached: not written", name)
		return
	case sameEntries(entries, listed):
		// The order the go command asks in varies from run to run
		// with its parallelism: not worth a write.
		b.m.logf("manifest %s: unchanged (%d actions)", name, len(entries))
		return
	}
	if err := b.h.Store.WriteRemoteRaw(ctx, ManifestKey(name), encodeManifest(entries)); err != nil {
		b.m.logf("manifest %s: not written: %v", name, err)
		return
	}
	b.m.stats.manifestsWritten.Add(1)
	b.m.logf("manifest %s: wrote %d actions", name, len(entries))
}

// readListed reads the first manifest, at close, for a build that closed
// before it was read; it returns nil if there is none.
func (b *build) readListed(ctx context.Context) []manifestEntry {
	data, ok := b.h.Store.ReadRemoteRaw(ctx, ManifestKey(b.names[0]), maxManifestSize)
	if !ok {
		return nil
	}
	list, err := decodeManifest(data)
	if err != nil {
		return nil
	}
	return list
}

// sameEntries reports whether a and b, each without duplicate actions,
// list the same actions with the same outputs in the same places. An entry
// without its output (from a version 1 manifest) is never the same as one
// with it.
func sameEntries(a, b []manifestEntry) bool {
	if len(a) != len(b) {
		return false
	}
	in := make(map[aid32]manifestEntry, len(b))
	for _, e := range b {
		in[e.id] = e
	}
	for _, e := range a {
		o, ok := in[e.id]
		if !ok || o.hasOutput() != e.hasOutput() || o.out != e.out ||
			o.packed != e.packed || o.pack != e.pack || o.offset != e.offset {
			return false
		}
	}
	return true
}

// run reads the manifests and prefetches what they list.
func (b *build) run(ctx context.Context) {
	st := b.h.Store
	var entries []manifestEntry
	seen := make(map[aid32]bool)
	located := make(map[aid32]manifestEntry) // outputs in packs
	for i, name := range b.names {
		data, ok := st.ReadRemoteRaw(ctx, ManifestKey(name), maxManifestSize)
		if i == 0 && (ok || ctx.Err() == nil) {
			b.mu.Lock()
			b.firstRead = true
			b.mu.Unlock()
		}
		if !ok {
			if ctx.Err() == nil {
				b.m.logf("manifest %s: none read", name)
			}
			continue
		}
		list, err := decodeManifest(data)
		if err != nil {
			b.m.logf("manifest %s: %v: ignored", name, err)
			continue
		}
		b.m.stats.manifestsRead.Add(1)
		b.m.stats.entries.Add(int64(len(list)))
		if i == 0 {
			b.mu.Lock()
			b.listed = list
			b.mu.Unlock()
		}
		for _, e := range list {
			if e.packed {
				if _, ok := located[e.out]; !ok {
					located[e.out] = e
				}
			}
			if !seen[e.id] {
				seen[e.id] = true
				entries = append(entries, e)
			}
		}
	}
	b.mu.Lock()
	b.located = located
	b.mu.Unlock()
	b.readDone.Store(true)
	if len(entries) == 0 || b.m.Concurrency <= 0 {
		return
	}
	start := time.Now()
	jobs := planFetches(entries, st.CanReadPacks())
	packReads := make(chan struct{}, packReadConcurrency)
	var next atomic.Int64
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for range min(b.m.Concurrency, len(jobs)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) {
					return
				}
				if !st.RemoteUsable() {
					stopped.Store(true)
					return
				}
				job := jobs[i]
				if job.packed {
					// What the pack did not deliver is fetched
					// on its own.
					select {
					case packReads <- struct{}{}:
					case <-ctx.Done():
						return
					}
					job.entries = b.fetchPacked(ctx, job)
					<-packReads
				}
				for _, e := range job.entries {
					if ctx.Err() != nil {
						break
					}
					if !st.RemoteUsable() {
						stopped.Store(true)
						return
					}
					b.prefetch(ctx, e)
				}
			}
		})
	}
	wg.Wait()
	if stopped.Load() {
		b.m.stats.stopped.Add(1)
	}
	how := "done"
	switch {
	case ctx.Err() != nil:
		how = "stopped by close"
	case stopped.Load():
		how = "stopped: remote tier failing"
	}
	b.m.logf("prefetch of %s %s after %v: %s", strings.Join(b.names, ","), how,
		time.Since(start).Round(time.Millisecond), b.m.Stats())
}

// prefetch makes the action e lists and its output local, unless they
// are local or being fetched already: from the manifest's record and the
// output, or, if the manifest does not list the output or the remote tier
// does not have it, from the action's record in the remote tier.
func (b *build) prefetch(ctx context.Context, e manifestEntry) {
	id := e.id
	if b.h.haveLocal(id[:]) {
		b.m.stats.local.Add(1)
		return
	}
	c, mine := b.m.claim(id)
	if !mine {
		return // asked for meanwhile, or listed by another build
	}
	defer b.m.release(id, c)
	st := b.h.Store
	akey := actionKey(id[:])
	var rec record
	var obj store.Object
	ok, local := false, false
	if e.hasOutput() {
		rec = e.record()
		obj, local, ok = b.fetchOutput(ctx, rec)
	}
	if !ok && ctx.Err() == nil && st.RemoteUsable() {
		b.m.stats.records.Add(1)
		data, found := st.ReadRemoteKey(ctx, akey, maxRecord)
		if !found {
			return
		}
		var err error
		if rec, err = parseRecord(data, false); err != nil {
			return
		}
		obj, local, ok = b.fetchOutput(ctx, rec)
	}
	if !ok || ctx.Err() != nil {
		return
	}
	rec.size = obj.Size
	if _, err := st.WriteBytes(ctx, akey, rec.local()); err != nil {
		return
	}
	if !local {
		b.fetched(id, obj.Size)
	}
}

// fetchOutput makes the output rec names local, faulting it in if need be.
// It reports whether the output was local already and whether it is now.
func (b *build) fetchOutput(ctx context.Context, rec record) (obj store.Object, local, ok bool) {
	st := b.h.Store
	okey := outputKey(rec.outputID)
	_, local, _ = st.Stat(okey)
	obj, ok, err := st.Get(ctx, okey, store.Check{Size: rec.size, SHA256: rec.outputID})
	return obj, local, ok && err == nil
}

// haveLocal reports whether the action id and its output are complete in
// the local directory, as GetFast would find them, without counting it.
func (c *Cache) haveLocal(id []byte) bool {
	data, ok, err := c.Store.ReadLocal(actionKey(id), maxRecord)
	if err != nil || !ok {
		return false
	}
	rec, err := parseRecord(data, true)
	if err != nil || rec.size < 0 {
		return false
	}
	obj, ok, err := c.Store.Stat(outputKey(rec.outputID))
	return err == nil && ok && obj.Size == rec.size
}
