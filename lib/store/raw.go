package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Raw objects: objects of the remote tier read and written by name, outside
// the "<kind>/<xx>/<name>" layout of [Key] and never installed locally. The
// build cache keeps its manifests this way, under "manifest/<name>".
//
// Like every remote call they respect the breaker, count in [Stats] (as
// remote hits, misses, errors and skips, bytes down and up) and turn every
// remote failure into a miss. Unlike [Store.ReadRemote] they can be
// abandoned: a read whose context is cancelled ends at once and counts as
// nothing, neither failure nor success, so that stopping a background job
// never opens the breaker.

// validRawName reports whether name may be used as a raw object's name:
// slash-separated elements of letters, digits and "._@+=-", none empty or
// starting with a dot.
func validRawName(name string) error {
	if name == "" || len(name) > 512 {
		return fmt.Errorf("invalid remote object name %q", name)
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == "" || elem[0] == '.' {
			return fmt.Errorf("invalid remote object name %q", name)
		}
		for _, c := range elem {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("._@+=-", c)) {
				return fmt.Errorf("invalid remote object name %q: character %q", name, c)
			}
		}
	}
	return nil
}

// ReadRemoteRaw reads the remote object called name, which must be at most
// max bytes. It reports false for a missing object, an object too long, a
// remote failure, an open breaker and a cancelled ctx; only the last counts
// as neither success nor failure of the remote.
func (s *Store) ReadRemoteRaw(ctx context.Context, name string, max int64) ([]byte, bool) {
	r := s.remote
	if r == nil || validRawName(name) != nil {
		return nil, false
	}
	return s.readRaw(ctx, name, max)
}

// readRaw is ReadRemoteRaw without the checks of name.
func (s *Store) readRaw(ctx context.Context, name string, max int64) ([]byte, bool) {
	r := s.remote
	if ctx.Err() != nil {
		return nil, false
	}
	if !r.breaker.allow() {
		s.stats.remoteSkipped.Add(1)
		return nil, false
	}
	rc, err := getRaw(ctx, r.remote, name)
	if err == nil {
		defer rc.Close()
		var data []byte
		data, err = io.ReadAll(io.LimitReader(rc, max+1))
		if err == nil {
			r.breaker.success()
			if int64(len(data)) > max {
				s.stats.corruptRemote.Add(1)
				s.logf("remote %s is longer than %d bytes: ignored", name, max)
				return nil, false
			}
			s.stats.remoteHits.Add(1)
			s.stats.bytesDown.Add(int64(len(data)))
			return data, true
		}
	}
	switch {
	case ctx.Err() != nil:
		r.breaker.release() // abandoned: says nothing of the remote
	case errors.Is(err, fs.ErrNotExist):
		r.breaker.success()
		s.stats.remoteMisses.Add(1)
	default:
		r.failedRaw("read", name, err)
	}
	return nil, false
}

// ReadRemoteKey is [Store.ReadRemote] for a small object of at most max
// bytes that can be abandoned: see [Store.ReadRemoteRaw].
func (s *Store) ReadRemoteKey(ctx context.Context, key Key, max int64) ([]byte, bool) {
	if s.remote == nil || key.valid() != nil {
		return nil, false
	}
	return s.readRaw(ctx, key.String(), max)
}

// WriteRemoteRaw writes data to the remote object called name, at once
// (not behind the caller, unlike [Store.Upload]), and reports whether it
// was written. It writes nothing if the remote tier is read-only or its
// breaker open; a failure counts against the breaker.
func (s *Store) WriteRemoteRaw(ctx context.Context, name string, data []byte) error {
	return s.putRaw(ctx, name, bytes.NewReader(data), int64(len(data)), remoteTimeout)
}

// putRaw writes the size bytes of body to the remote object called name
// within timeout. It writes nothing if the remote tier is read-only or its
// breaker open. A remote failure counts against the breaker; a failure to
// read body (a [localError]) or the caller giving up does not.
func (s *Store) putRaw(ctx context.Context, name string, body io.ReadSeeker, size int64, timeout time.Duration) error {
	r := s.remote
	if r == nil {
		return errors.New("no remote tier")
	}
	if err := validRawName(name); err != nil {
		return err
	}
	if s.readOnly {
		s.stats.uploadsSkipped.Add(1)
		return errors.New("remote tier is read-only")
	}
	if !r.breaker.allow() {
		s.stats.remoteSkipped.Add(1)
		return errors.New("remote tier skipped: breaker open")
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := r.remote.Put(ctx, name, body, size); err != nil {
		var lerr localError
		switch {
		case errors.As(err, &lerr):
			r.breaker.release() // a local fault says nothing about the remote
		case parent.Err() != nil:
			r.breaker.release() // abandoned by the caller
		default:
			s.stats.uploadErrors.Add(1)
			r.failedRaw("upload", name, err)
		}
		return err
	}
	r.breaker.success()
	s.stats.uploads.Add(1)
	s.stats.bytesUp.Add(size)
	return nil
}

// RemoteUsable reports whether the remote tier may be called now: there is
// one and its breaker is closed. A background job stops when it is not,
// rather than spend the calls a half-open breaker lets through to probe.
func (s *Store) RemoteUsable() bool {
	return s.remote != nil && s.remote.breaker.state() == "closed"
}

// getRaw is getWithDeadline for a raw name.
func getRaw(ctx context.Context, remote Remote, name string) (io.ReadCloser, error) {
	return openWithin(ctx, remoteTimeout, func(ctx context.Context) (io.ReadCloser, error) {
		rc, _, err := remote.Get(ctx, name)
		return rc, err
	})
}

// openWithin calls open with a context that ends timeout from now, or
// firstByteTimeout from now if open has not returned by then (the error
// then wraps errNoResponse). The returned reader's Close releases the
// context.
func openWithin(ctx context.Context, timeout time.Duration, open func(context.Context) (io.ReadCloser, error)) (io.ReadCloser, error) {
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil); cancelTimeout() }
	t := time.AfterFunc(firstByteTimeout, func() { cancelCause(errNoResponse) })
	rc, err := open(ctx)
	t.Stop()
	if err != nil {
		if context.Cause(ctx) == errNoResponse {
			err = fmt.Errorf("%w: %v", errNoResponse, err)
		}
		cancel()
		return nil, err
	}
	return cancelCloser{rc, cancel}, nil
}

// failedRaw is failed for a raw name.
func (r *remoteTier) failedRaw(op, name string, err error) {
	r.s.stats.remoteErrors.Add(1)
	if r.breaker.failure(errors.Is(err, errNoResponse)) {
		r.abortCalls()
		r.s.logf("remote tier failing (%s %s: %v); skipping it for %v", op, name, err, r.breaker.openFor())
		return
	}
	r.s.logf("remote %s %s: %v", op, name, err)
}
