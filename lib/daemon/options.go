package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// SessionOptions are what a client asks of its own session, such as
// "go-cache-plugin connect --manifest". The zero value asks for nothing:
// the daemon's defaults.
type SessionOptions struct {
	// Manifest names the build's manifests, as the --manifest flag does:
	// "name" or "name,name2,...", or "off". Empty means the daemon's own.
	Manifest string `json:"manifest,omitempty"`
	// DerivedManifest is the manifest name derived from the client's
	// working directory and its go command's job kind (see
	// gobuild.ManifestName), for the daemon to use if neither Manifest nor
	// its own flag names one.
	DerivedManifest string `json:"derived_manifest,omitempty"`
}

// optionsPrefix starts the line with which a client sends its
// SessionOptions, as JSON, before anything else: in a hand-over message
// after the marker, or as the first line of a stream (whose first byte is
// then NUL, which no request starts with).
const optionsPrefix = "\x00go-cache-plugin options "

// maxOptionsLine bounds the options line.
const maxOptionsLine = 1 << 10

// EncodeOptions returns the options line for opts, or nil if opts asks for
// nothing (so that a client without options sends what older clients
// sent).
func EncodeOptions(opts SessionOptions) ([]byte, error) {
	if opts == (SessionOptions{}) {
		return nil, nil
	}
	js, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	line := append(append([]byte(optionsPrefix), js...), '\n')
	if len(line) > maxOptionsLine {
		return nil, fmt.Errorf("session options of %d bytes: at most %d", len(line), maxOptionsLine)
	}
	return line, nil
}

// WriteOptions sends opts to the daemon at the start of a stream session;
// with no options it writes nothing.
func WriteOptions(w io.Writer, opts SessionOptions) error {
	line, err := EncodeOptions(opts)
	if err != nil || line == nil {
		return err
	}
	if _, err := w.Write(line); err != nil {
		return fmt.Errorf("send session options: %w", err)
	}
	return nil
}

// parseOptions parses an options line, with or without its newline.
func parseOptions(line []byte) (SessionOptions, error) {
	var opts SessionOptions
	js, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte{'\n'}), []byte(optionsPrefix))
	if !ok {
		return opts, fmt.Errorf("malformed session options %.40q", line)
	}
	if err := json.Unmarshal(js, &opts); err != nil {
		return opts, fmt.Errorf("malformed session options: %w", err)
	}
	return opts, nil
}

// readStreamOptions reads the options line at the start of a stream, if
// there is one, from r, which must buffer at least maxOptionsLine bytes.
// It blocks until the client sends its first byte (or goes away).
func readStreamOptions(r *bufio.Reader) (SessionOptions, error) {
	b, err := r.Peek(1)
	if err != nil || b[0] != 0 {
		return SessionOptions{}, nil // a plain stream (or none: Serve will find out)
	}
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return SessionOptions{}, fmt.Errorf("session options longer than %d bytes", maxOptionsLine)
	} else if err != nil {
		return SessionOptions{}, fmt.Errorf("read session options: %w", err)
	}
	return parseOptions(line)
}

// streamHandshake starts a stream session on a connection that cannot hand
// over (TCP): it writes the capabilities, then reads the client's options
// if it sends any.
func (ss *session) streamHandshake(conn net.Conn, timeout time.Duration) (io.Reader, writeDeadliner, SessionOptions, error) {
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(capsLine); err != nil {
		return nil, nil, SessionOptions{}, fmt.Errorf("write capabilities: %w", err)
	}
	conn.SetWriteDeadline(time.Time{})
	br := bufio.NewReaderSize(conn, maxOptionsLine)
	opts, err := readStreamOptions(br)
	return br, &skipLine{writeDeadliner: conn}, opts, err
}
