package gobuild

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Packs (the format is in manifest.go) let a cold worker fetch the outputs
// a manifest lists with a few ranged reads instead of one request each:
// on a bucket that is fast but not free (a server sharing the machine, or
// 20 ms away), the requests and not the bytes are what a prefetch pays
// for.
//
// A build writes a pack at close, of the outputs its manifest lists that
// no pack holds yet, when they are at least PackMinEntries and at least a
// quarter of the listed bytes or of the listed outputs (each output in no
// pack is a request of its own for a cold worker): the first build of a name packs everything
// it used, and later builds, most of whose outputs are in packs already,
// write a pack only once enough has changed. So a pack is written now and
// then, never once per build, and the bucket holds each output about twice
// at most (under its key, and in a pack). Packs are never rewritten or
// deleted by the plugin; a lifecycle rule on the bucket's "pack/" prefix
// removes old ones (a manifest naming a pack that is gone costs its
// prefetch one failed read, then the outputs are fetched one by one).

// Pack tuning.
const (
	// DefaultPackMinEntries is the default of [Manifests.PackMinEntries].
	DefaultPackMinEntries = 64

	// maxPackSize bounds the outputs a build puts in one pack.
	maxPackSize = 4 << 30

	// packRangeSize is the length a prefetch aims for in each ranged
	// read of a pack: long enough that requests cost little, short enough
	// that the go command, waiting for one output, does not wait for
	// many others, and that reads run in parallel. The first reads of a
	// pack are shorter (packFirstRange, doubling up to packRangeSize):
	// the go command asks first for what they hold, and waits for it.
	packRangeSize  = 8 << 20
	packFirstRange = 1 << 20

	// packReadConcurrency bounds the ranged reads of packs that one
	// prefetch runs at once. A few streams move as many bytes as many
	// (the work is on the CPU: hashing and writing files), and with few
	// the reads end in the order the go command asks for their outputs;
	// with many, each would crawl and the first outputs come last.
	packReadConcurrency = 4

	// packMaxGap is the longest run of unwanted bytes a ranged read
	// reads through rather than starting another read.
	packMaxGap = 256 << 10
)

// PackKind is the prefix of packs in the remote tier.
const PackKind = "pack"

// packName returns the remote name of the pack id.
func packName(id aid32) string {
	h := hex.EncodeToString(id[:])
	return PackKind + "/" + h[:2] + "/" + h
}

const (
	packHeaderLine     = "go-cache-plugin pack 1\n"
	zstdPackHeaderLine = "go-cache-plugin pack 2 zstd\n"
)

// packHeader returns the header of a pack of the outputs of entries, in
// order, and the pack's ID. If stored is not nil, the pack is compressed,
// and stored gives the length of each output's frame.
func packHeader(entries []manifestEntry, stored []int64) ([]byte, aid32) {
	first := packHeaderLine
	if stored != nil {
		first = zstdPackHeaderLine
	}
	buf := make([]byte, 0, len(first)+len(entries)*(2*len(aid32{})+24)+1)
	buf = append(buf, first...)
	for i, e := range entries {
		buf = hex.AppendEncode(buf, e.out[:])
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, e.size, 10)
		if stored != nil {
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, stored[i], 10)
		}
		buf = append(buf, '\n')
	}
	buf = append(buf, '\n')
	return buf, sha256.Sum256(buf)
}

// locatePacked sets the pack location of each of entries whose output
// another manifest listed in a pack (in located, by output ID). It
// returns the bytes of the outputs left out of every pack.
func locatePacked(entries []manifestEntry, located map[aid32]manifestEntry) (unpacked int64) {
	for i := range entries {
		e := &entries[i]
		if l, ok := located[e.out]; ok && l.size == e.size {
			e.packed, e.pack, e.offset, e.zstd, e.stored = true, l.pack, l.offset, l.zstd, l.stored
		} else {
			e.packed, e.zstd = false, false
			unpacked += e.size
		}
	}
	return unpacked
}

// shouldPack reports whether a build whose manifest lists entries, of
// which unpacked bytes are in no pack, writes a pack of those: when at
// least minEntries outputs are in none and they are a quarter of the
// bytes or a quarter of the outputs. The second counts round trips: a
// cold worker fetches each output outside a pack with a request of its
// own, however small (a list of source files, a vet facts file).
func shouldPack(entries []manifestEntry, unpacked int64, minEntries int) bool {
	var total int64
	n := 0
	for _, e := range entries {
		total += e.size
		if !e.packed {
			n++
		}
	}
	return minEntries > 0 && n >= minEntries && unpacked > 0 && (4*unpacked >= total || 4*n >= len(entries))
}

// writePack writes a pack of the outputs of entries that are in no pack
// and are complete in the local directory (up to maxPackSize bytes), and
// sets their locations in entries. It reports whether it wrote one.
func (b *build) writePack(ctx context.Context, entries []manifestEntry) bool {
	st := b.h.Store
	var list []manifestEntry
	var size int64
	seen := map[aid32]bool{}
	for _, e := range entries {
		if e.packed || seen[e.out] || size+e.size > maxPackSize {
			continue
		}
		obj, ok, err := st.Stat(outputKey(e.out[:]))
		if err != nil || !ok || obj.Size != e.size {
			continue
		}
		seen[e.out] = true
		list = append(list, e)
		size += e.size
	}
	if len(list) == 0 {
		return false
	}
	objs := make([]store.Packed, len(list))
	for i, e := range list {
		objs[i] = store.Packed{Key: outputKey(e.out[:]), Check: store.Check{Size: e.size}}
	}
	var body *store.CompressedBody
	var stored []int64
	if b.m.Compress {
		var err error
		if body, err = st.CompressPack(ctx, objs); err != nil {
			b.m.logf("pack: not written: %v", err)
			return false
		}
		defer body.Close()
		stored = body.Stored
	}
	header, id := packHeader(list, stored)
	off := int64(len(header))
	where := map[aid32]manifestEntry{} // where each output is in the pack
	for i, e := range list {
		objs[i].Offset = off
		l := manifestEntry{offset: off, size: e.size}
		if stored != nil {
			objs[i].Zstd, objs[i].Stored = true, stored[i]
			l.zstd, l.stored = true, stored[i]
		}
		where[e.out] = l
		off += l.packedLen()
	}
	name := packName(id)
	var err error
	if body != nil {
		err = st.WriteCompressedPack(ctx, name, header, body)
	} else {
		err = st.WritePack(ctx, name, header, objs)
	}
	if err != nil {
		b.m.logf("pack %s: not written: %v", name, err)
		return false
	}
	b.m.stats.packsWritten.Add(1)
	b.m.stats.packBytes.Add(off)
	if body != nil {
		b.m.logf("pack %s: wrote %d outputs, %d bytes compressed to %d", name, len(list), size, off)
	} else {
		b.m.logf("pack %s: wrote %d outputs, %d bytes", name, len(list), off)
	}
	for i := range entries {
		e := &entries[i]
		if l, ok := where[e.out]; ok && !e.packed {
			e.packed, e.pack, e.offset, e.zstd, e.stored = true, id, l.offset, l.zstd, l.stored
		}
	}
	return true
}

// A fetchJob is one unit of a prefetch: a ranged read of a pack holding
// several listed outputs, or one listed action fetched on its own.
type fetchJob struct {
	first   int             // position in the manifest of its first entry, for ordering
	entries []manifestEntry // for a read of a pack: sorted by offset
	packed  bool            // entries are read from their pack (entries[0].pack)
}

// planFetches divides entries (in manifest order) into fetch jobs: the
// packed outputs into ranged reads of their packs of up to packRangeSize
// bytes each, the first ones shorter (a read reads through gaps up to
// packMaxGap long), the others
// one job each; jobs are in the order of their first entry in the
// manifest. Without packs (usePacks false) every entry is a job of its own.
func planFetches(entries []manifestEntry, usePacks bool) []fetchJob {
	type pos struct {
		e manifestEntry
		i int
	}
	var jobs []fetchJob
	byPack := map[aid32][]pos{}
	for i, e := range entries {
		if usePacks && e.hasOutput() && e.packed {
			byPack[e.pack] = append(byPack[e.pack], pos{e, i})
			continue
		}
		jobs = append(jobs, fetchJob{first: i, entries: []manifestEntry{e}})
	}
	for _, list := range byPack {
		// By offset, and an empty output before the one that starts
		// where it is (a build has hundreds of actions with the empty
		// output, all at one offset).
		slices.SortFunc(list, func(a, b pos) int {
			return cmp.Or(cmp.Compare(a.e.offset, b.e.offset), cmp.Compare(a.e.packedLen(), b.e.packedLen()))
		})
		var cur *fetchJob
		var start, end int64
		var last manifestEntry
		size := int64(packFirstRange)
		for _, p := range list {
			e := p.e
			if e.offset < end && (e.out != last.out || e.offset != last.offset) {
				continue // overlaps the previous output: a bad manifest
			}
			last = e
			if cur == nil || e.offset-end > packMaxGap || e.offset+e.packedLen()-start > size {
				if cur != nil {
					size = min(2*size, packRangeSize)
				}
				jobs = append(jobs, fetchJob{first: p.i, packed: true})
				cur = &jobs[len(jobs)-1]
				start = e.offset
			}
			cur.entries = append(cur.entries, e)
			cur.first = min(cur.first, p.i)
			end = e.offset + e.packedLen()
		}
	}
	slices.SortStableFunc(jobs, func(a, b fetchJob) int { return cmp.Compare(a.first, b.first) })
	return jobs
}

// fetchPacked runs a job reading a pack: it claims the job's actions that
// are neither local nor being fetched, reads their outputs from the pack,
// writes their records, and returns those the pack did not deliver, for
// the caller to fetch one by one.
func (b *build) fetchPacked(ctx context.Context, job fetchJob) (failed []manifestEntry) {
	var mine []manifestEntry
	var chans []*claim
	for _, e := range job.entries {
		if b.h.haveLocal(e.id[:]) {
			b.m.stats.local.Add(1)
			continue
		}
		ch, ok := b.m.claim(e.id)
		if !ok {
			continue // asked for meanwhile, or listed by another build
		}
		mine = append(mine, e)
		chans = append(chans, ch)
	}
	if len(mine) == 0 {
		return nil
	}
	// Several actions may have one output (the empty one, often): it is
	// read once, for all of them.
	var objs []store.Packed
	var users [][]int // indexes in mine of the actions of each of objs
	index := map[aid32]int{}
	for i, e := range mine {
		k, ok := index[e.out]
		if !ok {
			k = len(objs)
			index[e.out] = k
			objs = append(objs, store.Packed{Key: outputKey(e.out[:]), Check: store.Check{Size: e.size, SHA256: e.out[:]},
				Offset: e.offset, Zstd: e.zstd, Stored: e.stored})
			users = append(users, nil)
		}
		users[k] = append(users[k], i)
	}
	b.m.stats.packReads.Add(1)
	b.h.Store.ReadPack(ctx, packName(job.entries[0].pack), objs, func(k int, obj store.Object, ok bool) {
		for _, i := range users[k] {
			e, ok := mine[i], ok
			if ok && ctx.Err() == nil {
				rec := e.record()
				rec.size = obj.Size
				if _, err := b.h.Store.WriteBytes(ctx, actionKey(e.id[:]), rec.local()); err == nil {
					b.m.stats.packed.Add(1)
					b.fetched(e.id, obj.Size)
				} else {
					ok = false
				}
			}
			b.m.release(e.id, chans[i])
			if !ok {
				failed = append(failed, e)
			}
		}
	})
	return failed
}

// fetched counts the output of size bytes of action id as prefetched, and
// as used if the go command asked for it while it was being fetched.
func (b *build) fetched(id aid32, size int64) {
	b.m.stats.prefetched.Add(1)
	b.m.stats.prefetchedBytes.Add(size)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, asked := b.asked[id]; asked {
		// Asked for while it was being fetched: the request waited for it.
		b.m.stats.used.Add(1)
		b.m.stats.usedBytes.Add(size)
	} else {
		b.prefetched[id] = size
	}
}
