package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Raw objects: objects of the remote tier read and written by name, outside
// the "<kind>/<xx>/<name>" layout of [Key] and never installed locally. The
// build cache keeps its manifests this way, under "manifest/<name>". A
// small object under a key is read the same way ([Store.ReadRemoteKey]).
//
// Like every remote call they respect the breaker, count in [Stats] (as
// remote hits, misses, errors and skips, bytes down and up) and turn every
// remote failure into a miss. They can be abandoned: a call whose context
// is cancelled ends at once and counts as nothing, neither failure nor
// success, so that stopping a background job never opens the breaker.

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
// max bytes, without installing it locally. It reports false for a missing
// object, an object too long, a remote failure, an open breaker and a
// cancelled ctx; only the last counts as neither success nor failure of
// the remote. A caller that must not abandon the read passes
// [context.WithoutCancel].
func (s *Store) ReadRemoteRaw(ctx context.Context, name string, max int64) ([]byte, bool) {
	if s.remote == nil || validRawName(name) != nil {
		return nil, false
	}
	return s.readSmall(ctx, name, max)
}

// ReadRemoteKey is [Store.ReadRemoteRaw] for the object at key.
func (s *Store) ReadRemoteKey(ctx context.Context, key Key, max int64) ([]byte, bool) {
	if s.remote == nil || key.valid() != nil {
		return nil, false
	}
	return s.readSmall(ctx, key.String(), max)
}

// readSmall is ReadRemoteRaw without the checks of name.
func (s *Store) readSmall(ctx context.Context, name string, max int64) ([]byte, bool) {
	r := s.remote
	var data []byte
	spec := callSpec{kind: callRead, op: "read", name: name, total: remoteTimeout, firstByte: true}
	out := r.call(ctx, spec, func(c *callState) error {
		rc, _, err := r.remote.Get(c.ctx, name)
		if err != nil {
			return err
		}
		defer rc.Close()
		c.answered()
		if data, err = io.ReadAll(io.LimitReader(rc, max+1)); err != nil {
			return err
		}
		if int64(len(data)) > max {
			return corruptf("remote %s is longer than %d bytes: ignored", name, max)
		}
		c.bytes = int64(len(data))
		return nil
	})
	if out != outOK {
		return nil, false
	}
	return data, true
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
	var err error
	spec := callSpec{kind: callWrite, op: "upload", name: name, total: timeout}
	out := r.call(ctx, spec, func(c *callState) error {
		if err = r.remote.Put(c.ctx, name, body, size); err == nil {
			c.bytes = size
		}
		return err
	})
	switch out {
	case outSkipped:
		return errors.New("remote tier skipped: breaker open")
	case outGone:
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// RemoteUsable reports whether the remote tier may be called now: there is
// one and its breaker is closed. A background job stops when it is not,
// rather than spend the calls a half-open breaker lets through to probe.
func (s *Store) RemoteUsable() bool {
	return s.remote != nil && s.remote.breaker.state() == "closed"
}
