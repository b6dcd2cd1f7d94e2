package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// Compressed packs. A pack's objects can be stored compressed, each as one
// zstd frame of its own (an empty object as no bytes at all), so that a
// reader can still read any run of them with one ranged read and install
// each as it arrives. Whoever writes such a pack records, for each object,
// where its frame starts and how long it is (the build cache does so in
// its manifests, which also mark the pack as compressed); [Store.ReadPack]
// decodes each frame and verifies what it decodes against the object's
// [Check], exactly as for an object stored as it is, so that a frame that
// does not decode, or decodes to other bytes, is a corrupt object and is
// never installed. Only packs are ever compressed: objects under their own
// keys stay as they are, readable by any reader of the bucket layout.

// A CompressedBody is the part after the header of a pack of compressed
// objects, staged in a temporary file of the store's directory until
// [Store.WriteCompressedPack] writes it.
type CompressedBody struct {
	f      *os.File
	Stored []int64 // the bytes each object takes in the body, in order
	size   int64
}

// Size returns the length of the body in bytes.
func (b *CompressedBody) Size() int64 { return b.size }

// Close removes the body's temporary file.
func (b *CompressedBody) Close() error {
	b.f.Close()
	return os.Remove(b.f.Name())
}

// CompressPack compresses the local objects objs (whose Check.Size must be
// their size; offsets are ignored), in order, into a new body of a pack,
// at the fastest zstd level: decoding is what a cold worker waits for, and
// it costs about the same at any level. The caller must Close the body.
func (s *Store) CompressPack(ctx context.Context, objs []Packed) (*CompressedBody, error) {
	if len(objs) == 0 {
		return nil, errors.New("compress pack: no objects")
	}
	for _, o := range objs {
		if err := o.valid(); err != nil {
			return nil, fmt.Errorf("compress pack: %w", err)
		}
	}
	f, err := s.createTemp(objs[0].Key)
	if err != nil {
		return nil, fmt.Errorf("compress pack: %w", err)
	}
	b := &CompressedBody{f: f, Stored: make([]int64, 0, len(objs))}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("compress pack: %w", err)
	}
	defer enc.Close()
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			b.Close()
			return nil, err
		}
		n, err := s.compressObject(enc, f, o)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("compress pack: %w", err)
		}
		b.Stored = append(b.Stored, n)
		b.size += n
	}
	return b, nil
}

// compressObject appends the local object o to f as one zstd frame, or as
// nothing if it is empty, and returns the frame's length.
func (s *Store) compressObject(enc *zstd.Encoder, f *os.File, o Packed) (int64, error) {
	if o.Check.Size == 0 {
		return 0, nil
	}
	src, err := os.Open(s.Path(o.Key))
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", o.Key, err)
	}
	defer src.Close()
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	enc.Reset(f)
	n, err := io.Copy(enc, io.LimitReader(src, o.Check.Size+1))
	if err == nil {
		err = enc.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("compress %s: %w", o.Key, err)
	}
	if n != o.Check.Size {
		return 0, fmt.Errorf("%s is %d bytes or more, want %d", o.Key, n, o.Check.Size)
	}
	end, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	return end - start, nil
}

// WriteCompressedPack writes the raw remote object called name: header,
// then body, as [Store.WritePack] does for objects stored as they are.
func (s *Store) WriteCompressedPack(ctx context.Context, name string, header []byte, body *CompressedBody) error {
	seg := segment{what: "compressed pack body", path: body.f.Name(), off: int64(len(header)), size: body.size}
	return s.writePack(ctx, name, header, []segment{seg}, seg.off+seg.size)
}

// newPackDecoder returns a decoder of the frames of a compressed pack, for
// one goroutine, holding at most maxWindow bytes of history.
func newPackDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxWindow))
}

// maxWindow bounds the history a frame of a compressed pack may ask a
// reader to keep (the fastest level uses 4 MiB at most).
const maxWindow = 64 << 20

// frameReader reads the object one frame of a compressed pack decodes to:
// at most limit bytes (the object's size and one more, so that a frame
// that decodes to more than its object is caught by the size check rather
// than written out without end). An error decoding the frame is the
// object's content not matching, not a failing stream: the stream's own
// errors are seen by the caller on the reader under the decoder.
type frameReader struct {
	dec   *zstd.Decoder
	limit int64
}

func (r *frameReader) Read(p []byte) (int, error) {
	if r.limit <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	n, err := r.dec.Read(p)
	r.limit -= int64(n)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: zstd frame: %v", ErrMismatch, err)
	}
	return n, err
}
