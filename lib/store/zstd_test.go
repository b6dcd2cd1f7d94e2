package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// compressedPack writes to remote, as "pack/cc/cc", a compressed pack of
// an empty object and n more of various sizes, and returns the objects
// with their offsets and frames set, and their contents.
func compressedPack(t *testing.T, remote *memremote.Remote, n int) ([]store.Packed, [][]byte) {
	t.Helper()
	ctx := context.Background()
	w := openPackStore(t, remote, false)
	header := []byte("compressed\n")
	objs, datas := packObjects(t, w, n, header)
	empty := sha256.Sum256(nil)
	key := store.Key{Kind: "output", Name: hex.EncodeToString(empty[:])}
	check := store.Check{Size: 0, SHA256: empty[:]}
	if _, err := w.Write(ctx, key, strings.NewReader(""), check); err != nil {
		t.Fatal(err)
	}
	objs = append([]store.Packed{{Key: key, Check: check}}, objs...)
	datas = append([][]byte{nil}, datas...)

	body, err := w.CompressPack(ctx, objs)
	if err != nil {
		t.Fatalf("CompressPack: %v", err)
	}
	off := int64(len(header))
	for i := range objs {
		objs[i].Zstd, objs[i].Stored, objs[i].Offset = true, body.Stored[i], off
		off += body.Stored[i]
	}
	if err := w.WriteCompressedPack(ctx, "pack/cc/cc", header, body); err != nil {
		t.Fatalf("WriteCompressedPack: %v", err)
	}
	if err := body.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	tmps, _ := filepath.Glob(filepath.Join(w.Dir(), "*", "*", ".tmp-*"))
	if len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	var raw int64
	for _, d := range datas {
		raw += int64(len(d))
	}
	pack, _ := remote.Object("pack/cc/cc")
	if int64(len(pack)) != off || off-int64(len(header)) > raw/10 {
		t.Fatalf("pack is %d bytes (objects %d bytes as they are), want %d and at most a tenth", len(pack), raw, off)
	}
	return objs, datas
}

// readPack reads want (indexes in objs) from the pack of compressedPack
// into a new store, and returns the indexes delivered and the store.
func readPack(t *testing.T, remote *memremote.Remote, objs []store.Packed, datas [][]byte, want ...int) ([]int, *store.Store) {
	t.Helper()
	r := openPackStore(t, remote, false)
	var sub []store.Packed
	for _, i := range want {
		sub = append(sub, objs[i])
	}
	var got []int
	r.ReadPack(context.Background(), "pack/cc/cc", sub, func(k int, obj store.Object, ok bool) {
		if !ok {
			return
		}
		i := want[k]
		if data, err := os.ReadFile(obj.Path); err != nil || !bytes.Equal(data, datas[i]) {
			t.Errorf("object %d: %d bytes (%v), want its %d bytes", i, len(data), err, len(datas[i]))
		}
		got = append(got, i)
	})
	return got, r
}

func TestCompressedPack(t *testing.T) {
	remote := memremote.New()
	objs, datas := compressedPack(t, remote, 8)

	_, ranges0 := remote.Calls()
	got, r := readPack(t, remote, objs, datas, 0, 2, 3, 5, 6)
	if _, ranges := remote.Calls(); !slices.Equal(got, []int{0, 2, 3, 5, 6}) || ranges-ranges0 != 1 {
		t.Errorf("delivered %v with %d ranged reads, want all in one", got, ranges-ranges0)
	}
	if s := r.Stats(); s.RemoteHits != 5 || s.CorruptRemote != 0 {
		t.Errorf("stats %v; want 5 remote hits", s)
	}
}

func TestCompressedPackCorrupt(t *testing.T) {
	remote := memremote.New()
	objs, datas := compressedPack(t, remote, 8)
	good, _ := remote.Object("pack/cc/cc")

	// A byte changed in the middle of object 3's frame: the others are
	// still delivered, 3 is counted corrupt and not installed.
	bad := bytes.Clone(good)
	bad[objs[3].Offset+objs[3].Stored/2] ^= 0x55
	remote.Set("pack/cc/cc", bad)
	got, r := readPack(t, remote, objs, datas, 2, 3, 5)
	if !slices.Equal(got, []int{2, 5}) {
		t.Errorf("with object 3's frame changed, delivered %v, want [2 5]", got)
	}
	if _, ok, _ := r.Stat(objs[3].Key); ok || r.Stats().CorruptRemote != 1 {
		t.Errorf("object 3 installed %v, corrupt %d; want not installed, 1", ok, r.Stats().CorruptRemote)
	}

	// A frame listed for a smaller object than it decodes to: caught by
	// the size, and the next object is still read from its own offset.
	remote.Set("pack/cc/cc", good)
	small := append([]store.Packed(nil), objs...)
	small[3].Check.Size--
	got, r = readPack(t, remote, small, datas, 3, 4)
	if !slices.Equal(got, []int{4}) || r.Stats().CorruptRemote != 1 {
		t.Errorf("with object 3 listed a byte short, delivered %v, corrupt %d; want [4], 1", got, r.Stats().CorruptRemote)
	}

	// A pack cut short inside object 5's frame: 2 and 3 delivered, the
	// rest not, and the remote tier is not blamed.
	remote.Set("pack/cc/cc", good[:objs[5].Offset+objs[5].Stored/2])
	got, r = readPack(t, remote, objs, datas, 2, 3, 5, 6)
	if !slices.Equal(got, []int{2, 3}) || r.Stats().CorruptRemote != 1 || !r.RemoteUsable() {
		t.Errorf("pack cut in object 5: delivered %v, stats %v; want [2 3], 1 corrupt, remote usable", got, r.Stats())
	}
}
