package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ErrMismatch marks content that failed its [Check]: the wrong size or
// digest, more than Check.MaxSize bytes, or a Check.Verify that refused it.
// Errors of [Store.Write], [Writer.Write] and [Writer.Commit] wrap it when
// (and only when) the content was refused, so that a caller can tell a
// refusal (errors.Is(err, ErrMismatch)) from a local fault or a reader's
// error.
var ErrMismatch = errors.New("content does not match")

// A Writer writes one object to the local tier as its bytes arrive, for a
// caller that produces them in pieces (a response streamed to a client and
// to the store at once, say). The bytes go to a temporary file in the
// object's directory; [Writer.Commit] verifies the file against the
// object's [Check] and renames it into place, and [Writer.Abort] removes
// it. Until Commit returns, nothing is visible under the object's name, so
// a concurrent reader finds the old object or none, never a partial one.
//
// A Writer is not safe for concurrent use. Call Commit or Abort exactly
// once to end it; Abort after Commit does nothing, so that
// "defer w.Abort()" is always safe.
type Writer struct {
	s     *Store
	ctx   context.Context
	key   Key
	check Check
	f     *os.File // nil once ended
	h     hash.Hash
	bp    *[]byte // pooled write buffer
	buf   []byte  // unwritten bytes, a prefix of *bp
	n     int64   // bytes accepted
	err   error   // the first error; sticky
	count bool    // count the write in the store's statistics
}

// Create starts writing the object key, to be verified against check when
// it is committed. Writes stop with ctx's error once ctx ends; the object
// is then never installed. Like [Store.Write], committing does not upload:
// see [Store.Upload].
func (s *Store) Create(ctx context.Context, key Key, check Check) (*Writer, error) {
	w, err := s.create(ctx, key, check)
	if err != nil {
		return nil, err
	}
	w.count = true
	return w, nil
}

func (s *Store) create(ctx context.Context, key Key, check Check) (*Writer, error) {
	if err := key.valid(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("write %s: %w", key, err)
	}
	f, err := s.createTemp(key)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", key, err)
	}
	w := &Writer{s: s, ctx: ctx, key: key, check: check, f: f}
	if check.SHA256 != nil {
		w.h = sha256.New()
	}
	w.bp = copyBuffers.Get().(*[]byte)
	w.buf = (*w.bp)[:0]
	return w, nil
}

// Key returns the key of the object being written.
func (w *Writer) Key() Key { return w.key }

// Write adds p to the object. An error ends the write: every later Write
// and Commit returns it, and only Abort remains to be called.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if err := w.accept(int64(len(p))); err != nil {
		return 0, err
	}
	if w.h != nil {
		w.h.Write(p)
	}
	// Gather small writes into large ones (see copyBufferSize).
	k := 0
	for k < len(p) {
		m := copy(w.buf[len(w.buf):cap(w.buf)], p[k:])
		w.buf = w.buf[:len(w.buf)+m]
		k += m
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return k, err
			}
		}
	}
	w.n += int64(len(p))
	return len(p), nil
}

// ReadFrom writes what r holds until it ends, reading straight into the
// Writer's buffer. An error from r is returned as it is; it does not end
// the Writer, but the caller will usually Abort it.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := w.usable(); err != nil {
			return total, err
		}
		// Fill the buffer, so that a stream that arrives in small reads
		// is still written in large pieces.
		var err error
		for len(w.buf) < cap(w.buf) && err == nil {
			var m int
			m, err = r.Read(w.buf[len(w.buf):cap(w.buf)])
			if m > 0 {
				p := w.buf[len(w.buf) : len(w.buf)+m]
				if aerr := w.accept(int64(m)); aerr != nil {
					return total, aerr
				}
				if w.h != nil {
					w.h.Write(p)
				}
				w.buf = w.buf[:len(w.buf)+m]
				w.n += int64(m)
				total += int64(m)
			}
		}
		if len(w.buf) == cap(w.buf) {
			if ferr := w.flush(); ferr != nil {
				return total, ferr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if cerr := w.ctx.Err(); cerr != nil {
			return total, w.fail(fmt.Errorf("write %s: %w", w.key, cerr))
		}
	}
}

// usable returns the error that ended w, if any, or the context's.
func (w *Writer) usable() error {
	switch {
	case w.err != nil:
		return w.err
	case w.f == nil:
		return fmt.Errorf("write %s: writer already ended", w.key)
	}
	if err := w.ctx.Err(); err != nil {
		return w.fail(fmt.Errorf("write %s: %w", w.key, err))
	}
	return nil
}

// accept checks that k more bytes stay within the check's bounds, so that
// an oversized object is refused as its bytes arrive, not once written.
func (w *Writer) accept(k int64) error {
	c := w.check
	if c.MaxSize > 0 && w.n+k > c.MaxSize {
		return w.fail(fmt.Errorf("%w: %s: more than %d bytes", ErrMismatch, w.key, c.MaxSize))
	}
	return nil
}

// fail records err as the error that ends w and returns it.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// flush writes the buffered bytes to the file.
func (w *Writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.f.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		return w.fail(fmt.Errorf("write %s: %w", w.key, err))
	}
	return nil
}

// Commit verifies the object against its check and renames it into
// place, replacing any object already there, and returns it. On an error
// the object is discarded, as by Abort; an error wrapping [ErrMismatch]
// means the content was refused.
func (w *Writer) Commit() (Object, error) {
	if err := w.usable(); err != nil {
		w.Abort()
		return Object{}, err
	}
	obj, err := w.commit()
	if err != nil {
		w.fail(err)
		w.Abort()
		return Object{}, err
	}
	return obj, nil
}

func (w *Writer) commit() (Object, error) {
	if err := w.flush(); err != nil {
		return Object{}, err
	}
	if err := verify(w.key, w.check, w.n, w.h); err != nil {
		return Object{}, err
	}
	f, tmp := w.f, w.f.Name()
	w.end()
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return Object{}, fmt.Errorf("write %s: %w", w.key, err)
	}
	if w.check.Verify != nil {
		if err := w.check.Verify(tmp); err != nil {
			os.Remove(tmp)
			return Object{}, fmt.Errorf("%w: %s: %w", ErrMismatch, w.key, err)
		}
	}
	s := w.s
	path := s.Path(w.key)
	err := os.Rename(tmp, path)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return Object{}, fmt.Errorf("write %s: %w", w.key, err)
	}
	s.wrote(w.n)
	if w.count {
		s.stats.writes.Add(1)
		s.stats.bytesWritten.Add(w.n)
	}
	return Object{Path: path, Size: w.n, ModTime: time.Now()}, nil
}

// Abort discards the object: its temporary file is removed and nothing is
// installed. It does nothing once the Writer has ended.
func (w *Writer) Abort() {
	if w.f == nil {
		return
	}
	f := w.f
	w.end()
	f.Close()
	os.Remove(f.Name())
	w.fail(fmt.Errorf("write %s: aborted", w.key))
}

// end marks w ended and gives its buffer back.
func (w *Writer) end() {
	w.f = nil
	if w.bp != nil {
		copyBuffers.Put(w.bp)
		w.bp, w.buf = nil, nil
	}
}

// ctxReader is r, ending with ctx's error once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verifyOnly reads r to its end and checks it against check without
// writing it anywhere: for an object already present under its digest.
func verifyOnly(ctx context.Context, key Key, r io.Reader, check Check) error {
	h := sha256.New()
	var src io.Reader = ctxReader{ctx, r}
	if check.MaxSize > 0 {
		src = io.LimitReader(src, check.MaxSize+1)
	}
	n, err := io.Copy(h, src)
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if check.MaxSize > 0 && n > check.MaxSize {
		return fmt.Errorf("%w: %s: more than %d bytes", ErrMismatch, key, check.MaxSize)
	}
	return verify(key, check, n, h)
}
