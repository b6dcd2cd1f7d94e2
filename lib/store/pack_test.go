package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// packObjects writes n objects of various sizes to st and returns them as
// the contents of a pack after header.
func packObjects(t *testing.T, st *store.Store, n int, header []byte) ([]store.Packed, [][]byte) {
	t.Helper()
	var objs []store.Packed
	var datas [][]byte
	off := int64(len(header))
	for i := range n {
		data := bytes.Repeat([]byte{byte(i)}, 1+i*40_000)
		sum := sha256.Sum256(data)
		key := store.Key{Kind: "output", Name: hex.EncodeToString(sum[:])}
		check := store.Check{Size: int64(len(data)), SHA256: sum[:]}
		if _, err := st.Write(context.Background(), key, bytes.NewReader(data), check); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, store.Packed{Key: key, Check: check, Offset: off})
		datas = append(datas, data)
		off += int64(len(data))
	}
	return objs, datas
}

func openPackStore(t *testing.T, remote store.Remote, readOnly bool) *store.Store {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir(), Remote: remote, ReadOnly: readOnly, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(context.Background()) })
	return st
}

func TestPackWriteRead(t *testing.T) {
	ctx := context.Background()
	remote := memremote.New()
	w := openPackStore(t, remote, false)
	header := []byte("a header\n")
	objs, datas := packObjects(t, w, 12, header)
	if err := w.WritePack(ctx, "pack/ab/abcd", header, objs); err != nil {
		t.Fatal(err)
	}
	pack, ok := remote.Object("pack/ab/abcd")
	if want := append(append([]byte(nil), header...), bytes.Join(datas, nil)...); !ok || !bytes.Equal(pack, want) {
		t.Fatalf("pack is %d bytes, want the header and the objects: %d bytes", len(pack), len(want))
	}

	// A reader with an empty directory reads objects 2, 3, 5 and 6: one
	// range, through the gap of object 4.
	r := openPackStore(t, remote, false)
	if !r.CanReadPacks() {
		t.Fatal("CanReadPacks = false on a RangeRemote")
	}
	want := []int{2, 3, 5, 6}
	var sub []store.Packed
	for _, i := range want {
		sub = append(sub, objs[i])
	}
	_, ranges0 := remote.Calls()
	var got []int
	r.ReadPack(ctx, "pack/ab/abcd", sub, func(i int, obj store.Object, ok bool) {
		if !ok {
			t.Errorf("object %d not delivered", want[i])
			return
		}
		data, err := os.ReadFile(obj.Path)
		if err != nil || !bytes.Equal(data, datas[want[i]]) {
			t.Errorf("object %d: %d bytes (%v), want its %d bytes", want[i], len(data), err, len(datas[want[i]]))
		}
		got = append(got, want[i])
	})
	if _, ranges := remote.Calls(); fmt.Sprint(got) != fmt.Sprint(want) || ranges-ranges0 != 1 {
		t.Errorf("delivered %v with %d ranged reads, want %v in one", got, ranges-ranges0, want)
	}
	if _, ok, _ := r.Stat(objs[4].Key); ok {
		t.Errorf("object 4, in the gap, was installed")
	}
	if s := r.Stats(); s.RemoteHits != 4 || s.CorruptRemote != 0 {
		t.Errorf("stats %v; want 4 remote hits", s)
	}
}

func TestWritePackRefused(t *testing.T) {
	ctx := context.Background()
	header := []byte("h\n")
	remote := memremote.New()
	st := openPackStore(t, remote, false)
	objs, _ := packObjects(t, st, 3, header)

	bad := append([]store.Packed(nil), objs...)
	bad[1].Offset++
	if err := st.WritePack(ctx, "pack/x", header, bad); err == nil || !strings.Contains(err.Error(), "want offset") {
		t.Errorf("WritePack with a wrong offset = %v, want an error", err)
	}
	// An object whose local file is not its size: nothing written, and
	// the remote tier is not blamed.
	if err := os.WriteFile(st.Path(objs[2].Key), []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := st.WritePack(ctx, "pack/y", header, objs); err == nil || !strings.Contains(err.Error(), "not ") {
			t.Errorf("WritePack of a changed object = %v, want an error", err)
		}
	}
	if _, ok := remote.Object("pack/y"); ok {
		t.Error("a pack of a changed object was written")
	}
	if !st.RemoteUsable() {
		t.Error("local faults opened the breaker")
	}
	ro := openPackStore(t, remote, true)
	objs, _ = packObjects(t, ro, 2, header)
	if err := ro.WritePack(ctx, "pack/z", header, objs); err == nil {
		t.Error("WritePack on a read-only remote tier: no error")
	}
}

// TestPackConcatReader: a pack is uploaded through io.ReaderAt in parts
// (as a large one is) as well as read in order.
func TestPackConcatReader(t *testing.T) {
	header := []byte("header\n")
	remote := &partsRemote{Remote: memremote.New(), part: 7_777}
	st := openPackStore(t, remote, false)
	objs, datas := packObjects(t, st, 6, header)
	if err := st.WritePack(context.Background(), "pack/p", header, objs); err != nil {
		t.Fatal(err)
	}
	pack, _ := remote.Object("pack/p")
	if want := append(append([]byte(nil), header...), bytes.Join(datas, nil)...); !bytes.Equal(pack, want) {
		t.Errorf("pack uploaded in parts: %d bytes, differs from the %d bytes of its objects", len(pack), len(want))
	}
}

// partsRemote uploads through io.ReaderAt, part by part, seeking back to
// the start first, as a retried multipart upload does.
type partsRemote struct {
	*memremote.Remote
	part int64
}

func (p *partsRemote) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if _, err := io.Copy(io.Discard, io.LimitReader(r, size/2)); err != nil {
		return err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	ra := r.(io.ReaderAt)
	var buf bytes.Buffer
	for off := int64(0); off < size; off += p.part {
		if _, err := io.Copy(&buf, io.NewSectionReader(ra, off, min(p.part, size-off))); err != nil {
			return err
		}
	}
	return p.Remote.Put(ctx, key, bytes.NewReader(buf.Bytes()), size)
}
