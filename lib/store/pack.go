package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
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

// CanReadPacks reports whether the store has a remote tier, from which
// packs are read with [Remote.GetRange].
func (s *Store) CanReadPacks() bool { return s.remote != nil }

// A Packed is an object in a pack.
type Packed struct {
	Key    Key
	Check  Check // Check.Size must be known
	Offset int64 // where the object starts in the pack

	// Zstd marks an object stored in the pack as one zstd frame of Stored
	// bytes (see [Store.CompressPack]); without it, the object's
	// Check.Size bytes are stored as they are.
	Zstd   bool
	Stored int64
}

// storedSize returns the number of bytes the object takes in its pack.
func (p Packed) storedSize() int64 {
	if p.Zstd {
		return p.Stored
	}
	return p.Check.Size
}

// valid reports whether p describes an object a pack can hold.
func (p Packed) valid() error {
	if err := p.Key.valid(); err != nil {
		return err
	}
	if p.Check.Size < 0 || p.Zstd && p.Stored < 0 {
		return fmt.Errorf("%s: size %d, stored %d", p.Key, p.Check.Size, p.Stored)
	}
	return nil
}

// WritePack writes the raw remote object called name: header, then the
// contents of the local objects objs, in order, each of which must have
// check.Size bytes and start at the offset it gives (the first right after
// the header). The objects are streamed from their files, not held in
// memory. Like [Store.WriteRemoteRaw] it writes at once and nothing if the
// remote tier is read-only or its breaker open; a remote failure counts
// against the breaker. The deadline follows the pack's size.
func (s *Store) WritePack(ctx context.Context, name string, header []byte, objs []Packed) error {
	size := int64(len(header))
	segs := make([]segment, len(objs))
	for i, o := range objs {
		if err := o.valid(); err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		if o.Zstd || o.Offset != size {
			return fmt.Errorf("pack %s: %s at offset %d (zstd %v), want offset %d, not compressed", name, o.Key, o.Offset, o.Zstd, size)
		}
		segs[i] = segment{what: o.Key.String(), path: s.Path(o.Key), off: o.Offset, size: o.Check.Size}
		size += o.Check.Size
	}
	return s.writePack(ctx, name, header, segs, size)
}

// writePack uploads header followed by segs, which make size bytes in all.
func (s *Store) writePack(ctx context.Context, name string, header []byte, segs []segment, size int64) error {
	body := &concatReader{header: header, segs: segs, size: size, cur: -1}
	defer body.close()
	if err := s.putRaw(ctx, name, body, size, transferTimeout(size)); err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	return nil
}

// localError marks a failure to read the local objects of a pack being
// written.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }
func (e localError) Unwrap() error { return e.err }

// A segment is a part of a pack being written: size bytes of the file at
// path, from its start, which go at offset off of the pack.
type segment struct {
	what      string // the object, or what else it is, for errors
	path      string
	off, size int64
}

// concatReader reads a pack being written: its header, then its segments'
// files, one open at a time. It is an io.ReadSeeker and an io.ReaderAt, so
// that a large pack can be uploaded in parts and an upload retried.
type concatReader struct {
	header []byte
	segs   []segment
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

// ReadAt reads from the header and the segments' files. It is not safe for
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
		sg := c.segs[i]
		f, err := c.open(i)
		if err != nil {
			return n, err
		}
		want := min(int64(len(p)-n), sg.off+sg.size-off)
		k, err := f.ReadAt(p[n:n+int(want)], off-sg.off)
		n += k
		off += int64(k)
		if err == io.EOF && int64(k) < want {
			return n, localError{fmt.Errorf("%s is shorter than %d bytes", sg.what, sg.size)}
		} else if err != nil && err != io.EOF {
			return n, localError{fmt.Errorf("read %s: %w", sg.what, err)}
		}
	}
	return n, nil
}

// find returns the index of the segment holding offset off, which is past
// the header and before the end.
func (c *concatReader) find(off int64) int {
	lo, hi := 0, len(c.segs)
	for lo < hi {
		m := (lo + hi) / 2
		if c.segs[m].off+c.segs[m].size <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// open returns the file of segment i, closing the one open before. The
// file must hold exactly the segment.
func (c *concatReader) open(i int) (*os.File, error) {
	if c.file != nil && c.cur == i {
		return c.file, nil
	}
	c.close()
	sg := c.segs[i]
	f, err := os.Open(sg.path)
	if err != nil {
		return nil, localError{fmt.Errorf("open %s: %w", sg.what, err)}
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != sg.size {
		f.Close()
		return nil, localError{fmt.Errorf("%s is not %d bytes", sg.what, sg.size)}
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
// dropped, so callers should leave out only small gaps. An object marked
// Zstd is decoded from its frame (see [Store.CompressPack]) as it is
// read; a frame that does not decode is a corrupt object. A pack shorter
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
	if r == nil || len(objs) == 0 || validRawName(name) != nil || ctx.Err() != nil {
		fail()
		return
	}
	start := objs[0].Offset
	last := objs[len(objs)-1]
	zstdFrames := false
	for j, o := range objs {
		if o.valid() != nil || o.Offset < start ||
			j > 0 && o.Offset < objs[j-1].Offset+objs[j-1].storedSize() {
			fail()
			return
		}
		zstdFrames = zstdFrames || o.Zstd && o.Stored > 0
	}
	n := last.Offset + last.storedSize() - start
	if n == 0 {
		// Empty objects only: nothing to read.
		for ; i < len(objs); i++ {
			obj, err := s.install(objs[i].Key, strings.NewReader(""), objs[i].Check)
			done(i, obj, err == nil)
		}
		return
	}
	var dec *zstd.Decoder
	if zstdFrames {
		var err error
		if dec, err = newPackDecoder(); err != nil {
			s.logf("pack %s: %v", name, err)
			fail()
			return
		}
		defer dec.Close()
	}
	spec := callSpec{kind: callRange, op: "read", name: name, total: transferTimeout(n), firstByte: true}
	out := r.call(ctx, spec, func(c *callState) error {
		body, err := r.remote.GetRange(c.ctx, name, start, n)
		if err != nil {
			return err
		}
		defer body.Close()
		c.answered()
		var end int64
		i, end, err = s.unpack(name, objs, i, dec, errReader{body}, done)
		c.bytes = end - start
		return err
	})
	if out == outNotFound {
		s.logf("pack %s: not found", name)
	}
	fail()
}

// unpack reads the objects of a pack from body, a stream of the pack from
// the offset of objs[i], and installs them as ReadPack says. It returns
// the index of the first object it did not call done for, the offset in
// the pack where it stopped reading, and the error that stopped it: a
// failure of the stream, or a [corruptError] for a pack that ends early.
func (s *Store) unpack(name string, objs []Packed, i int, dec *zstd.Decoder, body io.Reader, done func(int, Object, bool)) (int, int64, error) {
	start := objs[i].Offset
	pos := start
	stream := &recordingReader{r: body}
	var streamErr error // the stream failed: a remote failure
	short := false      // the stream ended early: the pack is not what its reader thinks
	for ; i < len(objs); i++ {
		o := objs[i]
		if gap := o.Offset - pos; gap > 0 {
			k, err := io.CopyN(io.Discard, stream, gap)
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
		in := &io.LimitedReader{R: stream, N: o.storedSize()}
		var obj Object
		var err error
		if local, ok, _ := s.lookup(o.Key, o.Check); ok {
			obj = local
		} else {
			src := io.Reader(in)
			if o.Zstd && o.Stored > 0 {
				if err = dec.Reset(in); err == nil {
					src = &frameReader{dec: dec, limit: o.Check.Size + 1}
				} else {
					err = fmt.Errorf("%w: zstd frame: %v", ErrMismatch, err)
				}
			}
			if err == nil {
				obj, err = s.install(o.Key, src, o.Check)
			}
		}
		if stream.err == nil {
			// What the object did not read of its stored bytes (all of
			// them if it was local; what follows the end of its frame).
			io.Copy(io.Discard, in)
		}
		pos += o.storedSize() - in.N
		var rerr readError
		if errors.As(stream.err, &rerr) {
			streamErr = rerr.err
			break
		}
		if in.N > 0 {
			short = true
			break
		}
		switch {
		case errors.Is(err, ErrMismatch):
			s.stats.corruptRemote.Add(1)
			s.logf("pack %s: %v: not installed", name, err)
			done(i, Object{}, false)
		case err != nil:
			s.logf("pack %s: install %s: %v", name, o.Key, err)
			done(i, Object{}, false)
		default:
			s.remote.uploaded.Store(o.Key.String(), true)
			s.stats.remoteHits.Add(1)
			done(i, obj, true)
		}
	}
	switch {
	case streamErr != nil:
		return i, pos, streamErr
	case short:
		return i, pos, corruptf("pack %s ends %d bytes into the range read, before %s: the rest is not installed", name, pos-start, objs[i].Key)
	}
	return i, pos, nil
}

// A recordingReader keeps the first error other than io.EOF its reader
// returned, so that a failing stream is told from content that does not
// decode, whatever a decoder between them makes of the error.
type recordingReader struct {
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}
