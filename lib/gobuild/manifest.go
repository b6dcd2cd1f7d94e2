package gobuild

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// A manifest lists the actions a build asked for or put, in the order it
// first asked for or put them, keeping only those that were hits or were
// put (the others do not exist in the bucket; an action put but never
// asked for, such as the subkeys a compiling build stores beside each
// action, is asked for by a build that finds the action cached), each with
// the output the build found or made for it, and the
// packs that hold those outputs. It is stored in the remote tier as
// "manifest/<name>":
//
//	go-cache-plugin manifest 3
//	pack <pack-id>
//	...
//	<action-id> <output-id> <size> <unix-nanos> [<pack>@<offset>]
//	...
//
// with lower-case hex IDs and decimal numbers: first the packs (at most
// MaxManifestPacks), then one line per action (at most
// MaxManifestEntries). An action whose output is in a pack gives the
// pack's number in the list (from 0) and the offset of the output in it.
//
// A manifest that lists a compressed pack is of version 4, so that readers
// that know only version 3 leave it alone (a build writes version 3 when
// it lists no compressed pack). Its pack lines may end in " zstd", and the
// location of an output in such a pack is "<pack>@<offset>+<length>": the
// output is the zstd frame of that length at that offset.
//
// With the output listed, a prefetch fetches the output alone, in one
// round trip, or a whole run of outputs with one ranged read of their pack,
// and writes the action's record locally from the manifest; the action
// record in the bucket is read only if that output cannot be had. Manifests
// of versions 1 (action IDs alone: their records are fetched first) and 2
// (no packs) are still read.
//
// A pack is the remote object "pack/<xx>/<pack-id>":
//
//	go-cache-plugin pack 1
//	<output-id> <size>
//	...
//	(an empty line)
//	the outputs' bytes, back to back, in the order listed
//
// where <pack-id> is the SHA-256 of everything before the outputs' bytes,
// which names them all: a pack's contents never change. A compressed pack
// (written with [Manifests.Compress]) is
//
//	go-cache-plugin pack 2 zstd
//	<output-id> <size> <length>
//	...
//	(an empty line)
//	the outputs' zstd frames, back to back, in the order listed
//
// with one frame of the given length per output (none for an empty one).
// Every output read from a pack is verified against its output ID before
// it is installed.

// manifestHeader is the first line of a manifest; manifestHeaderV1 that
// of a version 1 manifest.
const (
	manifestHeaderV4 = "go-cache-plugin manifest 4\n"
	manifestHeader   = "go-cache-plugin manifest 3\n"
	manifestHeaderV2 = "go-cache-plugin manifest 2\n"
	manifestHeaderV1 = "go-cache-plugin manifest 1\n"
)

// MaxManifestPacks bounds the packs a manifest lists.
const MaxManifestPacks = 256

// MaxManifestEntries bounds the actions listed in a manifest (a build of
// gopls asks for about 1,700). A build that asks for more records the
// first ones.
const MaxManifestEntries = 50_000

// maxManifestLine is the length of the longest manifest line: two IDs,
// two 19-digit numbers and a pack location with a length.
const maxManifestLine = 2*(2*cacheprog.IDSize) + 2*19 + 4 + 3 + 1 + 19 + 1 + 19 + 1

// maxManifestSize bounds the size of a manifest.
const maxManifestSize = int64(len(manifestHeader)) + MaxManifestPacks*(5+2*cacheprog.IDSize+5+1) + MaxManifestEntries*maxManifestLine

// zstdSuffix ends the line of a compressed pack in a manifest (5 bytes,
// counted in maxManifestSize).
const zstdSuffix = " zstd"

// ManifestKind is the prefix of manifests in the remote tier.
const ManifestKind = "manifest"

// ManifestKey returns the remote name of the manifest called name.
func ManifestKey(name string) string { return ManifestKind + "/" + name }

type aid32 = [cacheprog.IDSize]byte

// A manifestEntry is an action a build asked for and the output it found
// or made for it.
type manifestEntry struct {
	id    aid32
	out   aid32
	size  int64 // the output's size; -1 if the output is not listed
	nanos int64 // the record's time, in Unix nanoseconds

	packed bool  // the output is in a pack:
	pack   aid32 // that pack's ID
	offset int64 // and where the output starts in it
	zstd   bool  // the pack is compressed:
	stored int64 // and the output is the zstd frame of this length
}

// packedLen returns the number of bytes the output takes in its pack.
func (e manifestEntry) packedLen() int64 {
	if e.zstd {
		return e.stored
	}
	return e.size
}

// hasOutput reports whether the entry lists the action's output.
func (e manifestEntry) hasOutput() bool { return e.size >= 0 }

// record returns the action record the entry describes.
func (e manifestEntry) record() record {
	return record{outputID: e.out[:], time: time.Unix(0, e.nanos), size: e.size}
}

// encodeManifest returns the manifest listing entries and the packs they
// are in. Past MaxManifestPacks packs, entries are listed without theirs.
func encodeManifest(entries []manifestEntry) []byte {
	entries = entries[:min(len(entries), MaxManifestEntries)]
	packs := map[aid32]int{}
	buf := make([]byte, 0, len(manifestHeader)+len(entries)*(maxManifestLine-40))
	buf = append(buf, manifestHeader...)
	for _, e := range entries {
		if _, ok := packs[e.pack]; e.hasOutput() && e.packed && !ok && len(packs) < MaxManifestPacks {
			packs[e.pack] = len(packs)
			buf = append(buf, "pack "...)
			buf = hex.AppendEncode(buf, e.pack[:])
			if e.zstd {
				buf = append(buf, zstdSuffix...)
				copy(buf, manifestHeaderV4) // as long as manifestHeader
			}
			buf = append(buf, '\n')
		}
	}
	for _, e := range entries {
		buf = hex.AppendEncode(buf, e.id[:])
		if e.hasOutput() {
			buf = append(buf, ' ')
			buf = hex.AppendEncode(buf, e.out[:])
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.size, 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.nanos, 10)
			if n, ok := packs[e.pack]; e.packed && ok {
				buf = append(buf, ' ')
				buf = strconv.AppendInt(buf, int64(n), 10)
				buf = append(buf, '@')
				buf = strconv.AppendInt(buf, e.offset, 10)
				if e.zstd {
					buf = append(buf, '+')
					buf = strconv.AppendInt(buf, e.stored, 10)
				}
			}
		}
		buf = append(buf, '\n')
	}
	return buf
}

// decodeManifest parses a manifest of any version.
func decodeManifest(data []byte) ([]manifestEntry, error) {
	rest, v4 := bytes.CutPrefix(data, []byte(manifestHeaderV4))
	ok := v4
	if !ok {
		rest, ok = bytes.CutPrefix(data, []byte(manifestHeader))
	}
	if !ok {
		rest, ok = bytes.CutPrefix(data, []byte(manifestHeaderV2))
	}
	if !ok {
		if rest, ok = bytes.CutPrefix(data, []byte(manifestHeaderV1)); !ok {
			return nil, errors.New("not a manifest: bad header")
		}
	}
	if len(rest) > 0 && rest[len(rest)-1] != '\n' {
		return nil, errors.New("manifest: last line not ended")
	}
	var packs []manifestPack
	var entries []manifestEntry
	for n := 2; len(rest) > 0; n++ {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if p, ok := bytes.CutPrefix(line, []byte("pack ")); ok {
			if len(entries) > 0 {
				return nil, fmt.Errorf("manifest line %d: pack after the actions", n)
			}
			if len(packs) == MaxManifestPacks {
				return nil, fmt.Errorf("manifest: more than %d packs", MaxManifestPacks)
			}
			var mp manifestPack
			if v4 {
				p, mp.zstd = bytes.CutSuffix(p, []byte(zstdSuffix))
			}
			if err := decodeID(mp.id[:], p); err != nil {
				return nil, fmt.Errorf("manifest line %d: pack ID: %w", n, err)
			}
			packs = append(packs, mp)
			continue
		}
		if len(entries) == MaxManifestEntries {
			return nil, fmt.Errorf("manifest: more than %d entries", MaxManifestEntries)
		}
		e, err := parseManifestLine(line, packs)
		if err != nil {
			return nil, fmt.Errorf("manifest line %d: %w", n, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// A manifestPack is a pack a manifest lists.
type manifestPack struct {
	id   aid32
	zstd bool // a compressed pack
}

// parseManifestLine parses one action's line of a manifest, without its
// newline, whose packs are packs.
func parseManifestLine(line []byte, packs []manifestPack) (manifestEntry, error) {
	e := manifestEntry{size: -1}
	id, rest, more := bytes.Cut(line, []byte{' '})
	if err := decodeID(e.id[:], id); err != nil {
		return e, fmt.Errorf("action ID: %w", err)
	}
	if !more {
		return e, nil
	}
	f := bytes.Split(rest, []byte{' '})
	if len(f) != 3 && len(f) != 4 {
		return e, fmt.Errorf("%d fields, want 1, 4 or 5", len(f)+1)
	}
	if err := decodeID(e.out[:], f[0]); err != nil {
		return e, fmt.Errorf("output ID: %w", err)
	}
	size, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil || size < 0 {
		return e, fmt.Errorf("bad size %.20q", f[1])
	}
	nanos, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil || nanos < 0 {
		return e, fmt.Errorf("bad time %.20q", f[2])
	}
	e.size, e.nanos = size, nanos
	if len(f) == 4 {
		p, o, ok := bytes.Cut(f[3], []byte{'@'})
		o, l, framed := bytes.Cut(o, []byte{'+'})
		pack, err1 := strconv.Atoi(string(p))
		off, err2 := strconv.ParseInt(string(o), 10, 64)
		stored := int64(-1)
		if framed {
			if n, err := strconv.ParseInt(string(l), 10, 64); err == nil {
				stored = n
			}
		}
		switch {
		case !ok || err1 != nil || err2 != nil || off < 0 || framed && stored < 0:
			return e, fmt.Errorf("bad pack location %.40q", f[3])
		case pack < 0 || pack >= len(packs):
			return e, fmt.Errorf("pack %d not listed", pack)
		case framed != packs[pack].zstd:
			return e, fmt.Errorf("pack location %.40q: a length is given for outputs of compressed packs, and only for them", f[3])
		}
		e.packed, e.pack, e.offset = true, packs[pack].id, off
		if framed {
			e.zstd, e.stored = true, stored
		}
	}
	return e, nil
}

// decodeID decodes the lower-case hex ID src into dst.
func decodeID(dst, src []byte) error {
	if len(src) != 2*len(dst) {
		return fmt.Errorf("%d hex digits, want %d", len(src), 2*len(dst))
	}
	for _, c := range src {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("not lower-case hex: %.70q", src)
		}
	}
	_, err := hex.Decode(dst, src)
	return err
}
