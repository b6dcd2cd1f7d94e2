package cacheprog

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
)

// chunkSize is how much base64 text a body reader decodes at a time.
const chunkSize = 32 << 10

// errFraming marks errors after which the stream cannot be read further.
var errFraming = errors.New("protocol framing")

// bodyReader decodes one put body from the protocol stream: optional
// whitespace, a double quote, standard base64 text, a double quote.
//
// It checks the decoded length against the declared size. When it finds the
// body wrong but still framed (bad base64, wrong length) it skips to the
// closing quote before reporting the error, so the stream stays in step and
// the session can go on. Once it has consumed the closing quote or failed,
// it never touches the stream again and closes released.
type bodyReader struct {
	br   *bufio.Reader
	id   int64
	want int64 // declared BodySize
	got  int64 // decoded bytes so far

	started bool   // opening quote consumed
	padded  bool   // a quad with '=' padding was seen: the text must end there
	carry   []byte // base64 characters not yet forming a whole quad
	raw     []byte // scratch for base64 text
	pend    []byte // decoded bytes not yet returned
	dec     []byte // backing store for pend

	err      error // sticky terminal error (nil with done=true means a good body)
	done     bool  // terminal state reached
	once     sync.Once
	released chan struct{}
}

func newBodyReader(br *bufio.Reader, id, size int64) *bodyReader {
	return &bodyReader{
		br:       br,
		id:       id,
		want:     size,
		raw:      make([]byte, 0, chunkSize+4),
		dec:      make([]byte, base64.StdEncoding.DecodedLen(chunkSize+4)),
		released: make(chan struct{}),
	}
}

// Read implements io.Reader, yielding the decoded body.
func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.pend) == 0 {
		if b.done {
			if b.err != nil {
				return 0, b.err
			}
			return 0, io.EOF
		}
		b.fill()
	}
	n := copy(p, b.pend)
	b.pend = b.pend[n:]
	return n, nil
}

// drain reads to the end of the body, discarding it, and reports the
// body's terminal error, if any.
func (b *bodyReader) drain() error {
	_, err := io.Copy(io.Discard, b)
	return err
}

// fatal reports whether the body ended in an error that leaves the stream
// out of step.
func (b *bodyReader) fatal() bool { return b.done && errors.Is(b.err, errFraming) }

// finish enters the terminal state with err.
func (b *bodyReader) finish(err error) {
	b.done = true
	b.err = err
	b.pend = nil
	b.once.Do(func() { close(b.released) })
}

// fail ends the body with a request error, first skipping to the closing
// quote so that the stream stays framed.
func (b *bodyReader) fail(err error) {
	if b.started {
		for {
			// ReadSlice returns ErrBufferFull for long runs; keep going.
			seg, serr := b.br.ReadSlice('"')
			if bytes.IndexByte(seg, '\n') >= 0 {
				// As in fill: a newline means the string was never closed.
				b.finish(fmt.Errorf("%w: request %d: body string not terminated before end of line", errFraming, b.id))
				return
			}
			if serr == nil {
				break
			}
			if !errors.Is(serr, bufio.ErrBufferFull) {
				b.finish(fmt.Errorf("%w: request %d: body string not terminated: %v", errFraming, b.id, serr))
				return
			}
		}
	}
	b.finish(err)
}

// fill reads and decodes the next chunk of base64 text into pend, or moves
// to the terminal state.
func (b *bodyReader) fill() {
	if !b.started {
		for {
			c, err := b.br.ReadByte()
			if err != nil {
				b.finish(fmt.Errorf("%w: request %d: input ended before the %d-byte body", errFraming, b.id, b.want))
				return
			}
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				continue
			}
			if c != '"' {
				b.finish(fmt.Errorf("%w: request %d: expected the body as a JSON string, found %q", errFraming, b.id, c))
				return
			}
			b.started = true
			break
		}
	}

	// Gather base64 text up to the closing quote or a chunk's worth.
	b.raw = append(b.raw[:0], b.carry...)
	b.carry = nil
	closed := false
	for len(b.raw) < chunkSize && !closed {
		if b.br.Buffered() == 0 {
			if _, err := b.br.Peek(1); err != nil {
				b.finish(fmt.Errorf("%w: request %d: input ended inside the body after %d of %d bytes", errFraming, b.id, b.got, b.want))
				return
			}
		}
		seg, _ := b.br.Peek(min(b.br.Buffered(), chunkSize-len(b.raw)))
		if i := bytes.IndexByte(seg, '"'); i >= 0 {
			seg, closed = seg[:i], true
		}
		if bytes.IndexByte(seg, '\n') >= 0 {
			// A newline inside the string means it was never closed:
			// there is no way to find where the body ends.
			b.finish(fmt.Errorf("%w: request %d: body string not terminated before end of line", errFraming, b.id))
			return
		}
		b.raw = append(b.raw, seg...)
		skip := len(seg)
		if closed {
			skip++
		}
		b.br.Discard(skip)
	}

	whole := len(b.raw) &^ 3
	if closed && whole != len(b.raw) {
		b.finish(fmt.Errorf("request %d: body is not valid base64: %d trailing characters", b.id, len(b.raw)-whole))
		return
	}
	text := b.raw[:whole]
	if len(text) > 0 && b.padded {
		b.failOrFinish(closed, fmt.Errorf("request %d: body is not valid base64: data after padding", b.id))
		return
	}
	n, err := base64.StdEncoding.Decode(b.dec, text)
	if err != nil {
		b.failOrFinish(closed, fmt.Errorf("request %d: body is not valid base64: %v", b.id, err))
		return
	}
	if whole > 0 && text[whole-1] == '=' {
		b.padded = true
	}
	if !closed {
		b.carry = append(b.carry, b.raw[whole:]...)
	}
	if b.got+int64(n) > b.want {
		b.failOrFinish(closed, fmt.Errorf("request %d: body is longer than its BodySize %d", b.id, b.want))
		return
	}
	b.got += int64(n)
	b.pend = b.dec[:n]
	if closed {
		if b.got != b.want {
			b.finish(fmt.Errorf("request %d: body is %d bytes, BodySize says %d", b.id, b.got, b.want))
			return
		}
		// Hand out the last bytes, then report EOF.
		last := b.pend
		b.finish(nil)
		b.pend = last
	}
}

// failOrFinish ends the body with err, skipping to the closing quote unless
// it has been consumed already.
func (b *bodyReader) failOrFinish(closed bool, err error) {
	if closed {
		b.finish(err)
	} else {
		b.fail(err)
	}
}
