package gobuild

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestManifestRoundTrip(t *testing.T) {
	var ids []aid32
	for i := range 5 {
		ids = append(ids, sha256.Sum256(fmt.Appendf(nil, "action %d", i)))
	}
	data := encodeManifest(ids)
	got, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Fatalf("decoded %d IDs, want %d", len(got), len(ids))
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Errorf("ID %d: got %x, want %x", i, got[i], ids[i])
		}
	}
	if !sameSet(ids, []aid32{ids[4], ids[3], ids[2], ids[1], ids[0]}) || sameSet(ids, ids[1:]) {
		t.Errorf("sameSet is wrong")
	}

	for _, bad := range [][]byte{
		nil,
		[]byte("not a manifest\n"),
		append(bytes.Clone(data), "abc\n"...), // not a whole line
		bytes.Replace(data, []byte("\n"), []byte(" "), 2),                 // a bad separator
		append([]byte(manifestHeader), bytes.Repeat([]byte("zz"), 32)...), // not hex
	} {
		if _, err := decodeManifest(bad); err == nil {
			t.Errorf("decodeManifest(%.80q) succeeded", bad)
		}
	}
}

func TestManifestBounded(t *testing.T) {
	ids := make([]aid32, MaxManifestEntries+10)
	data := encodeManifest(ids)
	if int64(len(data)) != maxManifestSize {
		t.Errorf("manifest of %d IDs is %d bytes, want the bound %d", len(ids), len(data), maxManifestSize)
	}
	if got, err := decodeManifest(data); err != nil || len(got) != MaxManifestEntries {
		t.Errorf("decoded %d IDs (%v), want %d", len(got), err, MaxManifestEntries)
	}
}
