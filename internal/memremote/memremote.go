// Package memremote is an in-memory remote tier ([store.Remote]) for tests
// that need a bucket but not a server: it holds every object in a map.
// Tests that need a real S3 server use internal/s3test instead.
package memremote

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Remote is an in-memory remote tier. Its methods are safe for concurrent
// use.
type Remote struct {
	mu     sync.Mutex
	objs   map[string][]byte
	gets   int // calls of Get
	ranges int // calls of GetRange
}

var _ store.Remote = (*Remote)(nil)

// New returns an empty remote tier.
func New() *Remote { return &Remote{objs: map[string][]byte{}} }

// Get implements [store.Remote].
func (r *Remote) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	r.mu.Lock()
	r.gets++
	r.mu.Unlock()
	b, ok := r.Object(key)
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

// GetRange implements [store.Remote]. A range past the end is cut
// short, as a server would.
func (r *Remote) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	r.mu.Lock()
	r.ranges++
	r.mu.Unlock()
	b, ok := r.Object(key)
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("%s: bad range %d+%d", key, off, n)
	}
	if off >= int64(len(b)) {
		return nil, fmt.Errorf("%s: range %d+%d not satisfiable: %w", key, off, n, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b[off:min(off+n, int64(len(b)))])), nil
}

// Calls returns how many times Get and GetRange have been called.
func (r *Remote) Calls() (gets, ranges int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets, r.ranges
}

// Put implements [store.Remote].
func (r *Remote) Put(ctx context.Context, key string, rd io.ReadSeeker, size int64) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return fmt.Errorf("put %s: read %d bytes, want %d", key, len(b), size)
	}
	r.Set(key, b)
	return nil
}

// Exists implements [store.Remote].
func (r *Remote) Exists(ctx context.Context, key string) (bool, error) {
	_, ok := r.Object(key)
	return ok, nil
}

// Object returns a copy of the object at key, if there is one.
func (r *Remote) Object(key string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.objs[key]
	return bytes.Clone(b), ok
}

// Set stores a copy of data at key, as a test's tampering would.
func (r *Remote) Set(key string, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.objs[key] = bytes.Clone(data)
}

// Delete removes the object at key, if there is one.
func (r *Remote) Delete(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.objs, key)
}

// Len returns the number of objects.
func (r *Remote) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.objs)
}
