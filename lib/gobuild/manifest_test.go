package gobuild

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
)

// testEntries returns n manifest entries, every third without its output.
func testEntries(n int) []manifestEntry {
	var entries []manifestEntry
	for i := range n {
		e := manifestEntry{id: sha256.Sum256(fmt.Appendf(nil, "action %d", i)), size: -1}
		if i%3 != 0 {
			e.out = sha256.Sum256(fmt.Appendf(nil, "output %d", i))
			e.size = int64(i * 1000)
			e.nanos = 1_700_000_000_000_000_000 + int64(i)
		}
		entries = append(entries, e)
	}
	return entries
}

func TestManifestRoundTrip(t *testing.T) {
	entries := testEntries(7)
	data := encodeManifest(entries)
	if !bytes.HasPrefix(data, []byte(manifestHeader)) {
		t.Fatalf("manifest starts %.40q", data)
	}
	got, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(entries) {
		t.Fatalf("decoded %d entries, want %d", len(got), len(entries))
	}
	for i := range entries {
		if got[i] != entries[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], entries[i])
		}
	}
	if r := got[1].record(); !bytes.Equal(r.outputID, entries[1].out[:]) || r.size != 1000 || r.time.UnixNano() != entries[1].nanos {
		t.Errorf("record of entry 1 = %+v", r)
	}

	reversed := []manifestEntry{entries[6], entries[5], entries[4], entries[3], entries[2], entries[1], entries[0]}
	if !sameEntries(entries, reversed) {
		t.Errorf("sameEntries: the same entries in another order differ")
	}
	if sameEntries(entries, entries[1:]) {
		t.Errorf("sameEntries: a shorter list is the same")
	}
	changed := append([]manifestEntry(nil), entries...)
	changed[2].out[0] ^= 1
	if sameEntries(entries, changed) {
		t.Errorf("sameEntries: an action with another output is the same")
	}
	withOutputs := testEntries(7)
	withOutputs[0].size = 5
	if sameEntries(withOutputs, entries) {
		t.Errorf("sameEntries: an entry without its output is the same as one with it")
	}
}

func TestManifestVersion1(t *testing.T) {
	// A version 1 manifest, action IDs alone, still reads.
	entries := testEntries(3)
	data := []byte(manifestHeaderV1)
	for _, e := range entries {
		data = fmt.Appendf(data, "%x\n", e.id)
	}
	got, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e.id != entries[i].id || e.hasOutput() {
			t.Errorf("entry %d = %+v, want action %x without output", i, e, entries[i].id)
		}
	}
}

// TestManifestCompressedPacks: a manifest listing a compressed pack is of
// version 4 and gives the length of each output's frame; one without is
// still of version 3, for older readers.
func TestManifestCompressedPacks(t *testing.T) {
	entries := testEntries(7)
	for i := range entries {
		if entries[i].hasOutput() {
			entries[i].packed, entries[i].offset = true, int64(100*i)
			entries[i].pack[0] = byte(i % 2)
		}
	}
	if data := encodeManifest(entries); !bytes.HasPrefix(data, []byte(manifestHeader)) {
		t.Errorf("manifest without compressed packs starts %.30q, want version 3", data)
	}
	for i := range entries {
		if entries[i].hasOutput() && entries[i].pack[0] == 1 {
			entries[i].zstd, entries[i].stored = true, int64(10*i)
		}
	}
	data := encodeManifest(entries)
	if !bytes.HasPrefix(data, []byte(manifestHeaderV4)) || bytes.Count(data, []byte(" zstd\n")) != 1 || bytes.Count(data, []byte("+")) != 2 {
		t.Fatalf("manifest with a compressed pack:\n%s", data)
	}
	got, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if got[i] != entries[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], entries[i])
		}
	}

	id := strings.Repeat("ab", 32)
	line := fmt.Sprintf("%x %x 1 2 ", sha256.Sum256(nil), sha256.Sum256(nil))
	for _, bad := range []struct{ data, want string }{
		{manifestHeaderV4 + "pack " + id + " zstd\n" + line + "0@5\n", "a length is given"},
		{manifestHeaderV4 + "pack " + id + "\n" + line + "0@5+3\n", "a length is given"},
		{manifestHeaderV4 + "pack " + id + " zstd\n" + line + "0@5+x\n", "bad pack location"},
		{manifestHeaderV4 + "pack " + id + " zstd\n" + line + "0@5+-1\n", "bad pack location"},
		{manifestHeader + "pack " + id + " zstd\n", "pack ID: 69 hex digits"},
		{manifestHeaderV4 + "pack " + id + " gzip\n", "pack ID: 69 hex digits"},
	} {
		_, err := decodeManifest([]byte(bad.data))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("decodeManifest(%.200q) = %v, want an error containing %q", bad.data, err, bad.want)
		}
	}
}

func TestManifestMalformed(t *testing.T) {
	data := encodeManifest(testEntries(4))
	line := fmt.Sprintf("%x %x", sha256.Sum256(nil), sha256.Sum256(nil))
	for _, bad := range []struct{ data, want string }{
		{"", "bad header"},
		{"not a manifest\n", "bad header"},
		{string(data) + "abc", "not ended"},
		{string(data) + "abc\n", "line 6: action ID: 3 hex digits"},
		{manifestHeader + strings.Repeat("zz", 32) + "\n", "not lower-case hex"},
		{manifestHeader + strings.Repeat("AB", 32) + "\n", "not lower-case hex"},
		{manifestHeader + line + "\n", "2 fields, want 1, 4 or 5"},
		{manifestHeader + line + " 12\n", "3 fields"},
		{manifestHeader + line + " -1 5\n", "bad size"},
		{manifestHeader + line + " 1 x\n", "bad time"},
		{manifestHeader + line + " 1 2 3\n", "bad pack location"},
		{manifestHeader + line + " 1 2 0@5\n", "pack 0 not listed"},
		{manifestHeader + line + " 1 2 3 4\n", "6 fields"},
		{manifestHeader + line + "  1 2\n", "bad size"},
		{manifestHeader + line + " 1 2\npack " + strings.Repeat("ab", 32) + "\n", "pack after the actions"},
		{manifestHeader + "pack abc\n", "pack ID: 3 hex digits"},
		{manifestHeader + "\n", "action ID: 0 hex digits"},
	} {
		_, err := decodeManifest([]byte(bad.data))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("decodeManifest(%.80q) = %v, want an error containing %q", bad.data, err, bad.want)
		}
	}
}

func TestManifestBounded(t *testing.T) {
	entries := make([]manifestEntry, MaxManifestEntries+10)
	for i := range entries {
		entries[i].size = 1<<63 - 1
		entries[i].nanos = 1<<63 - 1
		entries[i].packed = true
		entries[i].pack[0] = byte(min(i, MaxManifestPacks-1)) // the last pack is 255
		entries[i].offset = 1<<63 - 1
		entries[i].zstd = true // the longest lines: with a frame length
		entries[i].stored = 1<<63 - 1
	}
	data := encodeManifest(entries)
	if n := bytes.Count(data, []byte("\npack ")); n != MaxManifestPacks {
		t.Errorf("manifest of %d entries in different packs lists %d packs, want the bound %d", len(entries), n, MaxManifestPacks)
	}
	// Only the pack numbers of 3 digits make a longest line.
	if n, bound := int64(len(data)), maxManifestSize; n > bound || n < bound-300 {
		t.Errorf("manifest of %d longest entries is %d bytes, want just under the bound %d", len(entries), n, bound)
	}
	if got, err := decodeManifest(data); err != nil || len(got) != MaxManifestEntries {
		t.Errorf("decoded %d entries (%v), want %d", len(got), err, MaxManifestEntries)
	}
	if _, err := decodeManifest(append(data, data[len(manifestHeader):len(manifestHeader)+maxManifestLine]...)); err == nil {
		t.Errorf("a manifest of more than %d entries decoded", MaxManifestEntries)
	}
}

func FuzzDecodeManifest(f *testing.F) {
	f.Add(encodeManifest(testEntries(4)))
	f.Add([]byte(manifestHeaderV1 + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte(manifestHeader + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := decodeManifest(data)
		if err != nil {
			return
		}
		// What decodes re-encodes to a manifest that decodes the same.
		again, err := decodeManifest(encodeManifest(entries))
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
		if len(again) != len(entries) {
			t.Fatalf("re-decoded %d entries, want %d", len(again), len(entries))
		}
		for i := range entries {
			if again[i] != entries[i] {
				t.Fatalf("entry %d: %+v, then %+v", i, entries[i], again[i])
			}
		}
	})
}
