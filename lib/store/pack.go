package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Packs: many objects moved with one remote call.
//
// A pack is a raw remote object (see [Store.ReadRemoteRaw]) made of a
// header chosen by its writer followed by the contents of several local
// objects, back to back. Whoever writes a pack records where each object
// starts in it (the build cache does so in its manifests); a reader then
// reads a byte range of the pack and installs the objects in it, each
// verified against its [Check] exactly as a fault-in is, so that a worker
// with an empty directory gets hundreds of objects with a few remote calls
// instead of one each. The objects stay in the remote tier under their own
// keys as well: a pack is only a faster way to the same bytes, and an
// object a pack fails to deliver (a pack gone, cut short or holding other
// bytes) is a miss the caller can fetch on its own.

// A RangeRemote is a [Remote] that can read part of an object. Packs are
// read only from a remote tier that is one.
type RangeRemote interface {
	Remote

	// GetRange opens the n bytes of the object at key that start at
	// offset off. It returns an error wrapping fs.ErrNotExist if there is
	// no object at key.
	GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
}

// CanReadPacks reports whether the store has a remote tier that can read
// packs (a [RangeRemote]).
func (s *Store) CanReadPacks() bool {
	if s.remote == nil {
		return false
	}
	_, ok := s.remote.remote.(RangeRemote)
	return ok
}

// A Packed is an object in a pack.
type Packed struct {
	Key    Key
	Check  Check // Check.Size must be known
	Offset int64 // where the object starts in the pack
}

// WritePack writes the raw remote object called name: header, then the
// contents of the local objects objs, in order, each of which must have
// check.Size bytes and start at the offset it gives (the first right after
// the header). The objects are streamed from their files, not held in
// memory. Like [Store.WriteRemoteRaw] it writes at once and nothing if the
// remote tier is read-only or its breaker open; a remote failure counts
// against the breaker. The deadline follows the pack's size.
func (s *Store) WritePack(ctx context.Context, name string, header []byte, objs []Packed) error {
	r := s.remote
	if r == nil {
		return errors.New("no remote tier")
	}
	if err := validRawName(name); err != nil {
		return err
	}
	size := int64(len(header))
	for _, o := range objs {
		if err := o.Key.valid(); err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		if o.Offset != size || o.Check.Size < 0 {
			return fmt.Errorf("pack %s: %s at offset %d with size %d, want offset %d and a size", name, o.Key, o.Offset, o.Check.Size, size)
		}
		size += o.Check.Size
	}
	if s.readOnly {
		s.stats.uploadsSkipped.Add(1)
		return errors.New("remote tier is read-only")
	}
	if !r.breaker.allow() {
		s.stats.remoteSkipped.Add(1)
		return errors.New("remote tier skipped: breaker open")
	}
	body := &concatReader{header: header, objs: objs, path: s.Path, size: size}
	defer body.close()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(size))
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
		return fmt.Errorf("pack %s: %w", name, err)
	}
	r.breaker.success()
	s.stats.uploads.Add(1)
	s.stats.bytesUp.Add(size)
	return nil
}

// localError marks a failure to read the local objects of a pack being
// written.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }
func (e localError) Unwrap() error { return e.err }

// concatReader reads a pack being written: its header, then its objects'
// files, one open at a time. It is an io.ReadSeeker and an io.ReaderAt, so
// that a large pack can be uploaded in parts and an upload retried.
type concatReader struct {
	header []byte
	objs   []Packed
	path   func(Key) string
	size   int64
	off    int64 // for Read and Seek

	cur  int      // index of the open file, or -1
	file *os.File // the open file
}

func (c *concatReader) Read(p []byte) (int, error) {
	n, err := c.ReadAt(p, c.off)
	c.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (c *concatReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += c.off
	case io.SeekEnd:
		offset += c.size
	default:
		return 0, errors.New("concatReader.Seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("concatReader.Seek: negative position")
	}
	c.off = offset
	return offset, nil
}

// ReadAt reads from the header and the objects' files. It is not safe for
// concurrent use (the uploader calls it from one goroutine at a time).
func (c *concatReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		if off >= c.size {
			return n, io.EOF
		}
		if off < int64(len(c.header)) {
			k := copy(p[n:], c.header[off:])
			n += k
			off += int64(k)
			continue
		}
		i := c.find(off)
		o := c.objs[i]
		f, err := c.open(i)
		if err != nil {
			return n, err
		}
		want := min(int64(len(p)-n), o.Offset+o.Check.Size-off)
		k, err := f.ReadAt(p[n:n+int(want)], off-o.Offset)
		n += k
		off += int64(k)
		if err == io.EOF && int64(k) < want {
			return n, localError{fmt.Errorf("%s is shorter than %d bytes", o.Key, o.Check.Size)}
		} else if err != nil && err != io.EOF {
			return n, localError{fmt.Errorf("read %s: %w", o.Key, err)}
		}
	}
	return n, nil
}

// find returns the index of the object holding offset off, which is past
// the header and before the end.
func (c *concatReader) find(off int64) int {
	lo, hi := 0, len(c.objs)
	for lo < hi {
		m := (lo + hi) / 2
		if c.objs[m].Offset+c.objs[m].Check.Size <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// open returns the file of object i, closing the one open before.
func (c *concatReader) open(i int) (*os.File, error) {
	if c.file != nil && c.cur == i {
		return c.file, nil
	}
	c.close()
	f, err := os.Open(c.path(c.objs[i].Key))
	if err != nil {
		return nil, localError{fmt.Errorf("open %s: %w", c.objs[i].Key, err)}
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != c.objs[i].Check.Size {
		f.Close()
		return nil, localError{fmt.Errorf("%s is not %d bytes", c.objs[i].Key, c.objs[i].Check.Size)}
	}
	c.file, c.cur = f, i
	return f, nil
}

func (c *concatReader) close() {
	if c.file != nil {
		c.file.Close()
		c.file, c.cur = nil, -1
	}
}

// ReadPack reads from the pack called name the byte range that holds objs
// (in increasing order of offset, not overlapping) and installs each of
// them that is not local yet, verified against its check. For each object,
// in order, it calls done with the local object and true, or with false if
// the pack did not deliver it: its bytes did not match (counted as
// corrupt; the objects after it are still read), or the pack is missing,
// the stream failed or the remote tier is skipped (then every object not
// yet done gets false). The bytes between the objects are read and
// dropped, so callers should leave out only small gaps. A pack shorter
// than the range counts as corrupt, not as a failing remote tier, as does
// an object that does not match its check. Nothing is uploaded: the
// objects are in the remote tier already.
func (s *Store) ReadPack(ctx context.Context, name string, objs []Packed, done func(i int, obj Object, ok bool)) {
	i := 0
	fail := func() {
		for ; i < len(objs); i++ {
			done(i, Object{}, false)
		}
	}
	r := s.remote
	rr, ok := r.remoteRange()
	if !ok || len(objs) == 0 || validRawName(name) != nil || ctx.Err() != nil {
		fail()
		return
	}
	start := objs[0].Offset
	last := objs[len(objs)-1]
	for j, o := range objs {
		if o.Key.valid() != nil || o.Check.Size < 0 || o.Offset < start ||
			j > 0 && o.Offset < objs[j-1].Offset+objs[j-1].Check.Size {
			fail()
			return
		}
	}
	n := last.Offset + last.Check.Size - start
	if n == 0 {
		// Empty objects only: nothing to read.
		for ; i < len(objs); i++ {
			obj, err := s.install(objs[i].Key, strings.NewReader(""), objs[i].Check)
			done(i, obj, err == nil)
		}
		return
	}
	if !r.breaker.allow() {
		s.stats.remoteSkipped.Add(1)
		fail()
		return
	}
	body, err := openWithin(ctx, transferTimeout(n), func(ctx context.Context) (io.ReadCloser, error) {
		return rr.GetRange(ctx, name, start, n)
	})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.breaker.release()
		fail()
		return
	case errors.Is(err, fs.ErrNotExist):
		r.breaker.success()
		s.stats.remoteMisses.Add(1)
		s.logf("pack %s: not found", name)
		fail()
		return
	default:
		r.failedRaw("read", name, err)
		fail()
		return
	}
	defer body.Close()

	pos := start
	var streamErr error // the stream failed: a remote failure
	short := false      // the stream ended early: the pack is not what its reader thinks
	for ; i < len(objs); i++ {
		o := objs[i]
		if gap := o.Offset - pos; gap > 0 {
			k, err := io.CopyN(io.Discard, errReader{body}, gap)
			pos += k
			if err == io.EOF {
				short = true
			} else if err != nil {
				streamErr = err
			}
			if err != nil {
				break
			}
		}
		in := &io.LimitedReader{R: errReader{body}, N: o.Check.Size}
		var obj Object
		var err error
		if local, ok, _ := s.lookup(o.Key, o.Check); ok {
			_, err = io.Copy(io.Discard, in)
			obj = local
		} else {
			obj, err = s.install(o.Key, in, o.Check)
		}
		pos += o.Check.Size - in.N
		var rerr readError
		if errors.As(err, &rerr) {
			streamErr = rerr.err
			break
		}
		if in.N > 0 {
			short = true
			break
		}
		switch {
		case errors.Is(err, errMismatch):
			s.stats.corruptRemote.Add(1)
			s.logf("pack %s: %v: not installed", name, err)
			done(i, Object{}, false)
		case err != nil:
			s.logf("pack %s: install %s: %v", name, o.Key, err)
			done(i, Object{}, false)
		default:
			r.uploaded.Store(o.Key.String(), true)
			s.stats.remoteHits.Add(1)
			done(i, obj, true)
		}
	}
	s.stats.bytesDown.Add(pos - start)
	switch {
	case streamErr != nil && ctx.Err() != nil:
		r.breaker.release() // abandoned: says nothing of the remote
	case streamErr != nil:
		r.failedRaw("read", name, streamErr)
	case short:
		r.breaker.success()
		s.stats.corruptRemote.Add(1)
		s.logf("pack %s ends %d bytes into the range read, before %s: the rest is not installed", name, pos-start, objs[i].Key)
	default:
		r.breaker.success()
	}
	fail()
}

// remoteRange returns the remote tier as a RangeRemote, if it is one.
func (r *remoteTier) remoteRange() (RangeRemote, bool) {
	if r == nil {
		return nil, false
	}
	rr, ok := r.remote.(RangeRemote)
	return rr, ok
}
