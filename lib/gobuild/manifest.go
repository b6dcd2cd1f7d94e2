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

// A manifest lists the actions a build asked for, in the order it first
// asked for them, keeping only those that were hits or were put (the
// others do not exist in the bucket; actions put but never asked for are
// left out too: a build that finds its actions cached never asks for
// them), each with the output the build found or made for it. It is
// stored in the remote tier as "manifest/<name>":
//
//	go-cache-plugin manifest 2
//	<action-id> <output-id> <size> <unix-nanos>
//	...
//
// one line per action, lower-case hex IDs and decimal numbers, at most
// MaxManifestEntries lines. With the output listed, a prefetch fetches the
// output alone, in one round trip, and writes the action's record locally
// from the manifest; the action record in the bucket is read only if that
// output is gone. Version 1 manifests, which list action IDs alone, are
// still read (and a line of a version 2 manifest may hold an action ID
// alone): their actions' records are fetched first.

// manifestHeader is the first line of a manifest; manifestHeaderV1 that
// of a version 1 manifest.
const (
	manifestHeader   = "go-cache-plugin manifest 2\n"
	manifestHeaderV1 = "go-cache-plugin manifest 1\n"
)

// MaxManifestEntries bounds the actions listed in a manifest (a build of
// gopls asks for about 1,700). A build that asks for more records the
// first ones.
const MaxManifestEntries = 50_000

// maxManifestLine is the length of the longest manifest line: two IDs and
// two 19-digit numbers.
const maxManifestLine = 2*(2*cacheprog.IDSize) + 2*19 + 4

// maxManifestSize bounds the size of a manifest.
const maxManifestSize = int64(len(manifestHeader)) + MaxManifestEntries*maxManifestLine

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
}

// hasOutput reports whether the entry lists the action's output.
func (e manifestEntry) hasOutput() bool { return e.size >= 0 }

// record returns the action record the entry describes.
func (e manifestEntry) record() record {
	return record{outputID: e.out[:], time: time.Unix(0, e.nanos), size: e.size}
}

// encodeManifest returns the manifest listing entries.
func encodeManifest(entries []manifestEntry) []byte {
	entries = entries[:min(len(entries), MaxManifestEntries)]
	buf := make([]byte, 0, len(manifestHeader)+len(entries)*(maxManifestLine-20))
	buf = append(buf, manifestHeader...)
	for _, e := range entries {
		buf = hex.AppendEncode(buf, e.id[:])
		if e.hasOutput() {
			buf = append(buf, ' ')
			buf = hex.AppendEncode(buf, e.out[:])
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.size, 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.nanos, 10)
		}
		buf = append(buf, '\n')
	}
	return buf
}

// decodeManifest parses a manifest of either version.
func decodeManifest(data []byte) ([]manifestEntry, error) {
	rest, ok := bytes.CutPrefix(data, []byte(manifestHeader))
	if !ok {
		if rest, ok = bytes.CutPrefix(data, []byte(manifestHeaderV1)); !ok {
			return nil, errors.New("not a manifest: bad header")
		}
	}
	if len(rest) > 0 && rest[len(rest)-1] != '\n' {
		return nil, errors.New("manifest: last line not ended")
	}
	var entries []manifestEntry
	for n := 1; len(rest) > 0; n++ {
		if n > MaxManifestEntries {
			return nil, fmt.Errorf("manifest: more than %d entries", MaxManifestEntries)
		}
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		e, err := parseManifestLine(line)
		if err != nil {
			return nil, fmt.Errorf("manifest line %d: %w", n+1, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// parseManifestLine parses one line of a manifest, without its newline.
func parseManifestLine(line []byte) (manifestEntry, error) {
	e := manifestEntry{size: -1}
	id, rest, more := bytes.Cut(line, []byte{' '})
	if err := decodeID(e.id[:], id); err != nil {
		return e, fmt.Errorf("action ID: %w", err)
	}
	if !more {
		return e, nil
	}
	f := bytes.Split(rest, []byte{' '})
	if len(f) != 3 {
		return e, fmt.Errorf("%d fields, want 1 or 4", len(f)+1)
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
