package gobuild

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// A manifest lists the action IDs a build asked for, in the order it first
// asked for them, keeping only those that were hits or were put (the
// others do not exist in the bucket; actions put but never asked for are
// left out too: a build that finds its actions cached never asks for
// them). It is stored in the remote tier as
// "manifest/<name>":
//
//	go-cache-plugin manifest 1
//	<action-id>
//	...
//
// one lower-case hex ID per line, at most MaxManifestEntries of them.

// manifestHeader is the first line of a manifest.
const manifestHeader = "go-cache-plugin manifest 1\n"

// MaxManifestEntries bounds the actions listed in a manifest (a build of
// gopls asks for about 1,700). A build that asks for more records the
// first ones.
const MaxManifestEntries = 50_000

// maxManifestSize is the size of a manifest of MaxManifestEntries actions.
const maxManifestSize = int64(len(manifestHeader)) + MaxManifestEntries*(2*cacheprog.IDSize+1)

// ManifestKind is the prefix of manifests in the remote tier.
const ManifestKind = "manifest"

// ManifestKey returns the remote name of the manifest called name.
func ManifestKey(name string) string { return ManifestKind + "/" + name }

type aid32 = [cacheprog.IDSize]byte

// encodeManifest returns the manifest listing ids.
func encodeManifest(ids []aid32) []byte {
	ids = ids[:min(len(ids), MaxManifestEntries)]
	buf := make([]byte, 0, len(manifestHeader)+len(ids)*(2*cacheprog.IDSize+1))
	buf = append(buf, manifestHeader...)
	for _, id := range ids {
		buf = hex.AppendEncode(buf, id[:])
		buf = append(buf, '\n')
	}
	return buf
}

// decodeManifest parses a manifest.
func decodeManifest(data []byte) ([]aid32, error) {
	rest, ok := bytes.CutPrefix(data, []byte(manifestHeader))
	if !ok {
		return nil, errors.New("not a manifest: bad header")
	}
	const lineLen = 2*cacheprog.IDSize + 1
	if len(rest)%lineLen != 0 || len(rest)/lineLen > MaxManifestEntries {
		return nil, fmt.Errorf("manifest of %d bytes: not whole lines or too long", len(data))
	}
	ids := make([]aid32, 0, len(rest)/lineLen)
	for len(rest) > 0 {
		var id aid32
		line := rest[:lineLen]
		rest = rest[lineLen:]
		if line[lineLen-1] != '\n' {
			return nil, errors.New("manifest: bad line")
		}
		if _, err := hex.Decode(id[:], line[:lineLen-1]); err != nil {
			return nil, fmt.Errorf("manifest: %v", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
