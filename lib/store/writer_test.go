package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// watchReader yields size bytes in reads of at most chunk bytes, failing
// the test if key appears under its final name while it is being read.
type watchReader struct {
	t     *testing.T
	s     *Store
	key   Key
	size  int64
	chunk int
	read  int64
}

func (r *watchReader) Read(p []byte) (int, error) {
	if _, err := os.Lstat(r.s.Path(r.key)); err == nil {
		r.t.Errorf("%s visible under its final name after %d bytes", r.key, r.read)
	}
	if r.read >= r.size {
		return 0, io.EOF
	}
	k := int(min(int64(min(len(p), r.chunk)), r.size-r.read))
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.read += int64(k)
	return k, nil
}

func TestErrMismatchExported(t *testing.T) {
	s := openStore(t, "", nil)
	ctx := context.Background()
	data := []byte("some content")
	key, check := contentKey("output", data)

	bad := check
	bad.SHA256 = bytes.Repeat([]byte{1}, 32)
	if _, err := s.Write(ctx, key, bytes.NewReader(data), bad); !errors.Is(err, ErrMismatch) {
		t.Errorf("wrong digest: err = %v, want ErrMismatch", err)
	}
	refuse := errors.New("refused by Verify")
	vcheck := Check{Size: -1, Verify: func(string) error { return refuse }}
	_, err := s.Write(ctx, key, bytes.NewReader(data), vcheck)
	if !errors.Is(err, ErrMismatch) || !errors.Is(err, refuse) {
		t.Errorf("Verify refusal: err = %v, want ErrMismatch wrapping Verify's error", err)
	}
	boom := errors.New("boom")
	_, err = s.Write(ctx, key, &errAfter{data: data[:4], err: boom}, check)
	if errors.Is(err, ErrMismatch) || !errors.Is(err, boom) {
		t.Errorf("reader error: err = %v, want the reader's error, not ErrMismatch", err)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)
}

// TestMaxSize checks that a body over Check.MaxSize is refused as it
// arrives: never visible under its name, no temporary file left, and not
// read much past the cap; a body of exactly the cap is stored.
func TestMaxSize(t *testing.T) {
	s := openStore(t, "", nil)
	ctx := context.Background()
	const max = 3*copyBufferSize + 17
	key := Key{Kind: "module", Name: "ab01"}
	r := &watchReader{t: t, s: s, key: key, size: 10 * copyBufferSize, chunk: 4093}
	_, err := s.Write(ctx, key, r, Check{Size: -1, MaxSize: max})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("oversized Write: err = %v, want ErrMismatch", err)
	}
	if r.read > max+copyBufferSize {
		t.Errorf("read %d bytes of an oversized body, want at most %d", r.read, max+copyBufferSize)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)

	// The same through a Writer: the Write that crosses the cap fails.
	w, err := s.Create(ctx, key, Check{Size: -1, MaxSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatalf("Write at the cap: %v", err)
	}
	if _, err := w.Write([]byte("a")); !errors.Is(err, ErrMismatch) {
		t.Errorf("Write past the cap: err = %v, want ErrMismatch", err)
	}
	if _, err := w.Commit(); !errors.Is(err, ErrMismatch) {
		t.Errorf("Commit after the cap: err = %v, want ErrMismatch", err)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)

	r = &watchReader{t: t, s: s, key: key, size: max, chunk: 4093}
	obj, err := s.Write(ctx, key, r, Check{Size: -1, MaxSize: max})
	if err != nil || obj.Size != max {
		t.Fatalf("Write of exactly MaxSize: %+v, %v", obj, err)
	}
	checkNoTemp(t, s)
}

func TestWriterCommit(t *testing.T) {
	s := openStore(t, "", nil)
	ctx := context.Background()
	data := bytes.Repeat([]byte("streamed "), copyBufferSize/4) // several buffers
	key, check := contentKey("output", data)
	w, err := s.Create(ctx, key, check)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort() // does nothing once committed
	for p := data; len(p) > 0; {
		k := min(len(p), 1000)
		if n, err := w.Write(p[:k]); n != k || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		p = p[k:]
		checkAbsent(t, s, key)
	}
	obj, err := w.Commit()
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	w.Abort()
	if !bytes.Equal(readFile(t, obj.Path), data) {
		t.Errorf("committed object differs from what was written")
	}
	if got, ok, err := s.Get(ctx, key, check); !ok || err != nil || got.Path != obj.Path {
		t.Errorf("Get after Commit: %+v, %v, %v", got, ok, err)
	}
	if st := s.Stats(); st.Writes != 1 || st.BytesWritten != int64(len(data)) {
		t.Errorf("stats %+v: want 1 write of %d bytes", st, len(data))
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Errorf("Write after Commit succeeded")
	}
	checkNoTemp(t, s)
}

func TestWriterAbortAndMismatch(t *testing.T) {
	s := openStore(t, "", nil)
	ctx := context.Background()
	data := []byte("the object")
	key, check := contentKey("output", data)

	w, err := s.Create(ctx, key, check)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Abort()
	if _, err := w.Commit(); err == nil {
		t.Errorf("Commit after Abort succeeded")
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)

	// Short, long, other bytes: each refused at Commit.
	for _, body := range [][]byte{data[:5], append(data, '!'), []byte("THE OBJECT")} {
		w, err := s.Create(ctx, key, check)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body)
		if _, err := w.Commit(); !errors.Is(err, ErrMismatch) {
			t.Errorf("Commit of %q: err = %v, want ErrMismatch", body, err)
		}
		checkAbsent(t, s, key)
		checkNoTemp(t, s)
	}
	if st := s.Stats(); st.Writes != 0 {
		t.Errorf("stats %+v: want no writes counted", st)
	}
}

func TestWriterCancelled(t *testing.T) {
	s := openStore(t, "", nil)
	data := []byte("never stored")
	key, check := contentKey("output", data)

	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Create(cctx, key, check); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a cancelled context: err = %v, want context.Canceled", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Create(ctx, key, check)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:4]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Write(data[4:]); !errors.Is(err, context.Canceled) {
		t.Errorf("Write after cancel: err = %v, want context.Canceled", err)
	}
	if _, err := w.Commit(); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit after cancel: err = %v, want context.Canceled", err)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)
}

// TestWriterReadersSeeWhole replaces an object through a Writer while
// readers read it: each read finds the old object or the new one, whole.
func TestWriterReadersSeeWhole(t *testing.T) {
	s := openStore(t, "", nil)
	ctx := context.Background()
	key := Key{Kind: "revproxy", Name: "cd02"}
	old := bytes.Repeat([]byte("old "), 50000)
	updated := bytes.Repeat([]byte("new!"), 70000)
	if _, err := s.Write(ctx, key, bytes.NewReader(old), AnyContent); err != nil {
		t.Fatal(err)
	}
	check := func(who string, data []byte) bool {
		if !bytes.Equal(data, old) && !bytes.Equal(data, updated) {
			t.Errorf("%s read %d bytes, neither the old object (%d) nor the new (%d)", who, len(data), len(old), len(updated))
		}
		return bytes.Equal(data, updated)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if data, err := os.ReadFile(s.Path(key)); err == nil {
					check(fmt.Sprintf("reader %d", i), data)
				} else {
					t.Errorf("reader %d: %v", i, err)
					return
				}
			}
		})
	}
	w, err := s.Create(ctx, key, Check{Size: int64(len(updated))})
	if err != nil {
		t.Fatal(err)
	}
	for p := updated; len(p) > 0; {
		k := min(len(p), 7000)
		w.Write(p[:k])
		p = p[k:]
		if check("writer", readFile(t, s.Path(key))) {
			t.Errorf("new object visible before Commit")
		}
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	close(done)
	wg.Wait()
	if !check("after Commit", readFile(t, s.Path(key))) {
		t.Errorf("old object still there after Commit")
	}
	checkNoTemp(t, s)
}

// cancelAfter yields data in chunks, cancelling its context after the
// first, and counts what it was asked for.
type cancelAfter struct {
	data   []byte
	cancel context.CancelFunc
	reads  int
}

func (r *cancelAfter) Read(p []byte) (int, error) {
	r.reads++
	if r.reads == 2 {
		r.cancel()
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), 100)], r.data)
	r.data = r.data[k:]
	return k, nil
}

func TestWriteCancelled(t *testing.T) {
	s := openStore(t, "", nil)
	data := bytes.Repeat([]byte("z"), 10000)
	key, check := contentKey("output", data)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Write(ctx, key, bytes.NewReader(data), check); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a cancelled context: err = %v, want context.Canceled", err)
	}
	checkAbsent(t, s, key)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	r := &cancelAfter{data: data, cancel: cancel}
	if _, err := s.Write(ctx, key, r, check); !errors.Is(err, context.Canceled) {
		t.Errorf("Write cancelled midway: err = %v, want context.Canceled", err)
	}
	if r.reads > 2 {
		t.Errorf("Write went on reading after its context ended: %d reads", r.reads)
	}
	checkAbsent(t, s, key)
	checkNoTemp(t, s)
	if st := s.Stats(); st.Writes != 0 {
		t.Errorf("stats %+v: want no writes counted", st)
	}
}
