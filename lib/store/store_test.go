package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// openStore opens a store on a fresh directory (or dir, if given) and
// routes its log to t.
func openStore(t testing.TB, dir string, remote Remote) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(Options{Dir: dir, Remote: remote, UploadConcurrency: 1, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// contentKey returns the content-addressed key and check for data.
func contentKey(kind string, data []byte) (Key, Check) {
	sum := sha256.Sum256(data)
	return Key{Kind: kind, Name: hex.EncodeToString(sum[:])}, Check{Size: int64(len(data)), SHA256: sum[:]}
}

// tmpFiles lists the store's temporary files.
func tmpFiles(t *testing.T, s *Store) []string {
	t.Helper()
	paths, err := TempFiles(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// checkNoTemp fails the test if a temporary file was left behind.
func checkNoTemp(t *testing.T, s *Store) {
	t.Helper()
	if names := tmpFiles(t, s); len(names) != 0 {
		t.Errorf("temporary files left behind: %q", names)
	}
}

// checkAbsent fails the test if key has a file under its final name.
func checkAbsent(t *testing.T, s *Store, key Key) {
	t.Helper()
	if _, err := os.Lstat(s.Path(key)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: file under final name (stat err %v), want none", key, err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWriteGetRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", nil)
	data := []byte("hello, tiered world\n")
	key, check := contentKey("output", data)

	obj, err := s.Write(ctx, key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if want := filepath.Join(s.Dir(), "output", key.Name[:2], key.Name); obj.Path != want {
		t.Errorf("Write path = %q, want %q", obj.Path, want)
	}
	if obj.Size != int64(len(data)) {
		t.Errorf("Write size = %d, want %d", obj.Size, len(data))
	}

	got, ok, err := s.Get(ctx, key, check)
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v, want hit", ok, err)
	}
	if got.Path != obj.Path || got.Size != obj.Size {
		t.Errorf("Get = %+v, want path %q size %d", got, obj.Path, obj.Size)
	}
	body := readFile(t, got.Path)
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], check.SHA256) {
		t.Errorf("stored content has SHA-256 %x, want %x", sum, check.SHA256)
	}
	if _, ok, err := s.Stat(key); !ok || err != nil {
		t.Errorf("Stat = %v, %v, want hit", ok, err)
	}
	if _, ok, err := s.Get(ctx, Key{Kind: "output", Name: strings.Repeat("0", 64)}, AnyContent); ok || err != nil {
		t.Errorf("Get of absent key = %v, %v, want miss", ok, err)
	}
	st := s.Stats()
	if st.Writes != 1 || st.BytesWritten != int64(len(data)) || st.LocalHits != 1 || st.LocalMisses != 1 {
		t.Errorf("stats = %v", st)
	}
	if st.Remote || st.Breaker != "" {
		t.Errorf("stats without remote report remote=%v breaker=%q", st.Remote, st.Breaker)
	}
	checkNoTemp(t, s)

	// Remove, then a miss.
	if err := s.Remove(key); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := s.Remove(key); err != nil {
		t.Errorf("Remove of absent key: %v", err)
	}
	if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
		t.Errorf("Get after Remove = %v, %v, want miss", ok, err)
	}
}

func TestWriteRejected(t *testing.T) {
	ctx := context.Background()
	data := []byte("the right content")
	key, check := contentKey("output", data)

	tests := []struct {
		name  string
		body  []byte
		check Check
	}{
		{"wrong SHA-256", []byte("the wrong content"), check},
		{"short body", data[:5], check},
		{"long body", append(append([]byte(nil), data...), 'x'), check},
		{"wrong size, no digest", data, Check{Size: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, "", nil)
			_, err := s.Write(ctx, key, bytes.NewReader(tt.body), tt.check)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("Write err = %v, want a mismatch", err)
			}
			checkAbsent(t, s, key)
			checkNoTemp(t, s)
			if st := s.Stats(); st.Writes != 0 {
				t.Errorf("Writes = %d after a rejected write", st.Writes)
			}
		})
	}
}

// errAfter yields data, then fails.
type errAfter struct {
	data []byte
	err  error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestWriteReaderError(t *testing.T) {
	s := openStore(t, "", nil)
	data := []byte("0123456789")
	key, check := contentKey("output", data)
	boom := errors.New("boom")
	_, err := s.Write(context.Background(), key, &errAfter{data: data[:4], err: boom}, check)
	if !errors.Is(err, boom) {
		t.Fatalf("Write err = %v, want %v", err, boom)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)
}

// chunkReader yields its data n bytes at a time at most.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[k:]
	return k, nil
}

// TestWriteLargeInSmallReads writes an object of several copy buffers that
// arrives in small reads of a size that does not divide the buffer's, and
// one whose stream ends with io.ErrUnexpectedEOF, which is a failed read,
// not the end of the object.
func TestWriteLargeInSmallReads(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", nil)
	data := make([]byte, 2*copyBufferSize+copyBufferSize/2+3)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	key, check := contentKey("output", data)
	obj, err := s.Write(ctx, key, &chunkReader{data: data, n: 7919}, check)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got := readFile(t, obj.Path); !bytes.Equal(got, data) {
		t.Errorf("stored %d bytes, want the %d written", len(got), len(data))
	}

	s = openStore(t, "", nil)
	_, err = s.Write(ctx, key, io.MultiReader(bytes.NewReader(data[:copyBufferSize+5]), &errAfter{err: io.ErrUnexpectedEOF}), Check{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Write of a stream that fails = %v, want %v", err, io.ErrUnexpectedEOF)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)
}

func TestTruncatedLocalObject(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", nil)
	data := []byte("an object that will be truncated on disk")
	key, check := contentKey("output", data)
	obj, err := s.Write(ctx, key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(obj.Path, 7); err != nil {
		t.Fatal(err)
	}

	// Without a size check it is (by design) still found.
	if o, ok, err := s.Get(ctx, key, AnyContent); !ok || err != nil || o.Size != 7 {
		t.Fatalf("Get(AnyContent) = %+v, %v, %v, want the 7-byte file", o, ok, err)
	}

	if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
		t.Fatalf("Get of truncated object = %v, %v, want miss", ok, err)
	}
	checkAbsent(t, s, key)
	if st := s.Stats(); st.CorruptLocal != 1 {
		t.Errorf("CorruptLocal = %d, want 1", st.CorruptLocal)
	}

	// A fresh write repairs it.
	if _, err := s.Write(ctx, key, bytes.NewReader(data), check); err != nil {
		t.Fatal(err)
	}
	if o, ok, err := s.Get(ctx, key, check); !ok || err != nil || !bytes.Equal(readFile(t, o.Path), data) {
		t.Errorf("Get after rewrite = %v, %v", ok, err)
	}
}

func TestWriteExistingContentAddressed(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", nil)
	data := []byte("content-addressed object")
	key, check := contentKey("output", data)
	first, err := s.Write(ctx, key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatal(err)
	}
	fi1, err := os.Stat(first.Path)
	if err != nil {
		t.Fatal(err)
	}

	second, err := s.Write(ctx, key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatalf("second Write: %v", err)
	}
	if second.Path != first.Path {
		t.Errorf("second Write path = %q, want %q", second.Path, first.Path)
	}
	fi2, err := os.Stat(first.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi1, fi2) {
		t.Errorf("existing object was rewritten")
	}
	if st := s.Stats(); st.Writes != 1 {
		t.Errorf("Writes = %d, want 1 (second write not installed)", st.Writes)
	}

	// Same size, wrong content: rejected, and the existing object is intact.
	bad := bytes.Repeat([]byte("x"), len(data))
	if _, err := s.Write(ctx, key, bytes.NewReader(bad), check); !errors.Is(err, ErrMismatch) {
		t.Errorf("Write of wrong body over existing object: err = %v, want mismatch", err)
	}
	// Wrong size: rejected too.
	if _, err := s.Write(ctx, key, bytes.NewReader(data[1:]), check); !errors.Is(err, ErrMismatch) {
		t.Errorf("Write of short body over existing object: err = %v, want mismatch", err)
	}
	if got := readFile(t, first.Path); !bytes.Equal(got, data) {
		t.Errorf("existing object changed to %q", got)
	}
	checkNoTemp(t, s)
}

func TestWriteBytesOverwrites(t *testing.T) {
	// Objects that are not content-addressed (records) are replaced.
	ctx := context.Background()
	s := openStore(t, "", nil)
	key := Key{Kind: "action", Name: "abcdef"}
	if _, err := s.WriteBytes(ctx, key, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteBytes(ctx, key, []byte("second")); err != nil {
		t.Fatal(err)
	}
	data, ok, err := s.ReadLocal(key, 100)
	if err != nil || !ok || string(data) != "second" {
		t.Errorf("ReadLocal = %q, %v, %v, want %q", data, ok, err, "second")
	}
}

func TestReadLocalLimit(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", nil)
	key := Key{Kind: "action", Name: "0123"}
	data := []byte("0123456789")
	if _, err := s.WriteBytes(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.ReadLocal(key, 10); err != nil || !ok || !bytes.Equal(got, data) {
		t.Errorf("ReadLocal(max 10) = %q, %v, %v", got, ok, err)
	}
	if got, ok, err := s.ReadLocal(key, 9); err == nil || ok || got != nil {
		t.Errorf("ReadLocal(max 9) = %q, %v, %v, want an error", got, ok, err)
	}
	if got, ok, err := s.ReadLocal(Key{Kind: "action", Name: "4567"}, 10); err != nil || ok || got != nil {
		t.Errorf("ReadLocal of absent key = %q, %v, %v, want miss", got, ok, err)
	}
}

func TestInvalidKeys(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", newFakeRemote())
	defer s.Close(ctx)
	keys := []Key{
		{Kind: "output", Name: "ABCDEF"},
		{Kind: "output", Name: "abcdeF"},
		{},
		{Kind: "output", Name: ""},
		{Kind: "output", Name: "a"},
		{Kind: "", Name: "abcd"},
		{Kind: "a/b", Name: "abcd"},
		{Kind: `a\b`, Name: "abcd"},
		{Kind: "..", Name: "abcd"},
		{Kind: "output", Name: "ab/cd"},
		{Kind: "output", Name: "../../etc"},
		{Kind: "output", Name: "zz"},
		{Kind: "tmp", Name: "abcd"}, // the legacy temporary directory
	}
	for _, key := range keys {
		t.Run(fmt.Sprintf("%q/%q", key.Kind, key.Name), func(t *testing.T) {
			if _, _, err := s.Get(ctx, key, AnyContent); err == nil {
				t.Error("Get: no error")
			}
			if _, _, err := s.Stat(key); err == nil {
				t.Error("Stat: no error")
			}
			if _, err := s.Write(ctx, key, strings.NewReader("x"), AnyContent); err == nil {
				t.Error("Write: no error")
			}
			if _, err := s.WriteBytes(ctx, key, []byte("x")); err == nil {
				t.Error("WriteBytes: no error")
			}
			if _, _, err := s.ReadLocal(key, 10); err == nil {
				t.Error("ReadLocal: no error")
			}
			if err := s.Remove(key); err == nil {
				t.Error("Remove: no error")
			}
			if data, ok := s.ReadRemoteKey(ctx, key, 1<<10); ok || data != nil {
				t.Error("ReadRemoteKey: hit")
			}
		})
	}
	checkNoTemp(t, s)
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); n != usersFile && n != trimFile {
			names = append(names, n)
		}
	}
	if len(names) != 0 {
		t.Errorf("store directory holds %q after invalid keys, want only the lock files", names)
	}
}

func TestOpenNoDir(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("Open with no directory: no error")
	}
}

func TestCleanTemp(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", nil)
	data := []byte("a real object")
	key, check := contentKey("output", data)
	obj, err := s.Write(ctx, key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatal(err)
	}
	// The object's directory is the only one: CleanTemp sweeps it.
	shard := filepath.Dir(obj.Path)
	old := filepath.Join(shard, ".tmp-old")
	fresh := filepath.Join(shard, ".tmp-fresh")
	trash := filepath.Join(shard, ".tmp-trim-old") // left to trims
	legacy := filepath.Join(s.Dir(), "tmp", "output-old")
	if err := os.Mkdir(filepath.Dir(legacy), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{old, fresh, trash, legacy} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-48 * time.Hour)
	// The object itself is old too: CleanTemp must not touch it.
	for _, p := range []string{old, trash, legacy, obj.Path} {
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}

	if n := s.CleanTemp(24 * time.Hour); n != 2 {
		t.Errorf("CleanTemp removed %d files, want 2", n)
	}
	for _, p := range []string{old, legacy} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("old temporary file %s not removed: %v", p, err)
		}
	}
	for _, p := range []string{fresh, trash, obj.Path, filepath.Dir(legacy)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	if n := s.CleanTemp(24 * time.Hour); n != 0 {
		t.Errorf("second CleanTemp removed %d files, want 0", n)
	}
	got, err := TempFiles(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{fresh, trash}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TempFiles = %q, want %q", got, want)
	}
}

// TestTempInObjectDir: a write creates its temporary file in the object's
// directory (creating it if needed) and leaves none behind.
func TestTempInObjectDir(t *testing.T) {
	s := openStore(t, "", nil)
	defer closeStore(t, s)
	if _, err := os.Stat(filepath.Join(s.Dir(), "tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open created tmp: %v", err)
	}
	key, check := contentKey("output", []byte("streamed"))
	var during []string
	r := io.MultiReader(strings.NewReader("stream"), readerFunc(func([]byte) (int, error) {
		during = tmpFiles(t, s)
		return 0, io.EOF
	}), strings.NewReader("ed"))
	if _, err := s.Write(context.Background(), key, r, check); err != nil {
		t.Fatal(err)
	}
	if len(during) != 1 || filepath.Dir(during[0]) != filepath.Dir(s.Path(key)) || !strings.HasPrefix(filepath.Base(during[0]), ".tmp-") {
		t.Errorf("temporary files while writing %s: %q; want one .tmp- file in its directory", key, during)
	}
	checkNoTemp(t, s)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// checkTree verifies every file under <dir>/output hashes to its name and
// sits in the right <xx> directory, and returns how many there are.
func checkTree(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	root := filepath.Join(dir, "output")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		name := filepath.Base(path)
		if hex.EncodeToString(sum[:]) != name {
			t.Errorf("%s: content hashes to %x", path, sum)
		}
		if filepath.Base(filepath.Dir(path)) != name[:2] {
			t.Errorf("%s: in the wrong directory", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// payload returns distinct, fairly large content for i.
func payload(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("object %d;", i)), 2000+i)
}

// hammer writes and reads keys 0..nkeys-1 from many goroutines through the
// given stores (round-robin), every key several times.
func hammer(t *testing.T, stores []*Store, nkeys, repeat int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range nkeys * repeat {
		wg.Go(func() {
			// Every key is written through every store.
			s := stores[(g/nkeys)%len(stores)]
			data := payload(g % nkeys)
			key, check := contentKey("output", data)
			obj, err := s.Write(ctx, key, bytes.NewReader(data), check)
			if err != nil {
				t.Errorf("Write %d: %v", g, err)
				return
			}
			got, ok, err := s.Get(ctx, key, check)
			if err != nil || !ok {
				t.Errorf("Get %d after Write = %v, %v", g, ok, err)
				return
			}
			if got.Path != obj.Path {
				t.Errorf("Get %d path %q, Write path %q", g, got.Path, obj.Path)
			}
			if b, err := os.ReadFile(got.Path); err != nil || !bytes.Equal(b, data) {
				t.Errorf("object %d: read %d bytes, err %v", g, len(b), err)
			}
		})
	}
	wg.Wait()
	if n := checkTree(t, stores[0].Dir()); n != nkeys {
		t.Errorf("%d objects under output/, want %d", n, nkeys)
	}
	for _, s := range stores {
		checkNoTemp(t, s)
		if st := s.Stats(); st.CorruptLocal != 0 {
			t.Errorf("CorruptLocal = %d under concurrent writes", st.CorruptLocal)
		}
	}
}

func TestConcurrentWrites(t *testing.T) {
	s := openStore(t, "", nil)
	hammer(t, []*Store{s}, 8, 12)
}

func TestTwoStoresOneDir(t *testing.T) {
	dir := t.TempDir()
	a := openStore(t, dir, nil)
	b := openStore(t, dir, nil)
	if a == b || a.Dir() != b.Dir() {
		t.Fatal("want two stores on one directory")
	}
	hammer(t, []*Store{a, b}, 8, 12)
}

// BenchmarkWrite writes objects of a typical build output's size, checked
// against their SHA-256, as a fault-in from a remote stream does.
func BenchmarkWrite(b *testing.B) {
	ctx := context.Background()
	s := openStore(b, "", nil)
	defer s.Close(ctx)
	data := make([]byte, 400<<10)
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		binary.LittleEndian.PutUint64(data, uint64(i))
		key, check := contentKey("output", data)
		if _, err := s.Write(ctx, key, &chunkReader{data: data, n: 64 << 10}, check); err != nil {
			b.Fatal(err)
		}
	}
}
