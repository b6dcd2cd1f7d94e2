package revproxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

// The stored-object framing (see the package documentation): the body,
// then the metadata as one line of JSON, then a fixed-size footer naming
// the metadata's length.
const (
	footerMagic = "gcp-revproxy/1 "         // 15 bytes
	footerLen   = len(footerMagic) + 16 + 1 // magic, 16 hex digits, newline: 32 bytes
	maxMetaLen  = 64 << 10                  // the largest metadata accepted
	maxHeader   = 8 << 10                   // the longest header value kept
)

// keptHeaders are the response headers stored with a body and sent with
// every hit. Content-Length comes from the body itself.
var keptHeaders = []string{
	"Cache-Control",
	"Content-Disposition",
	"Content-Encoding",
	"Content-Type",
	"Etag",
	"Expires",
	"Last-Modified",
	"Vary",
}

// Meta describes a stored response.
type Meta struct {
	// URL is the origin URL the response was fetched from (the key is
	// the SHA-256 of this string).
	URL string `json:"url"`
	// Status is the response status; always 200 today.
	Status int `json:"status"`
	// Size is the length of the body in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the body.
	SHA256 string `json:"sha256"`
	// Header holds the kept response headers (canonical names).
	Header map[string]string `json:"header,omitempty"`
	// Vary holds, for each request header the response varies on (other
	// than Accept-Encoding), the value the request that filled the entry
	// had; a request with other values is not served this entry.
	Vary map[string]string `json:"vary,omitempty"`
	// Stored is when the response was fetched.
	Stored time.Time `json:"stored"`
}

// errCorrupt marks a stored object that does not parse or verify.
var errCorrupt = errors.New("corrupt stored object")

// encodeTrailer returns the metadata line and footer that follow a body.
func encodeTrailer(m *Meta) ([]byte, error) {
	js, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode metadata of %s: %w", m.URL, err)
	}
	js = append(js, '\n')
	if len(js) > maxMetaLen {
		return nil, fmt.Errorf("metadata of %s is %d bytes, more than %d", m.URL, len(js), maxMetaLen)
	}
	var b bytes.Buffer
	b.Grow(len(js) + footerLen)
	b.Write(js)
	fmt.Fprintf(&b, "%s%016x\n", footerMagic, len(js))
	return b.Bytes(), nil
}

// ParseObject reads the metadata of a stored object of size bytes from r
// and checks the framing: the footer, the metadata, and that the body's
// length is what the metadata says. It does not hash the body; see
// [VerifyObject].
func ParseObject(r io.ReaderAt, size int64) (*Meta, error) {
	if size < int64(footerLen) {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the footer", errCorrupt, size)
	}
	var foot [footerLen]byte
	if _, err := r.ReadAt(foot[:], size-int64(footerLen)); err != nil {
		return nil, fmt.Errorf("read footer: %w", err)
	}
	if string(foot[:len(footerMagic)]) != footerMagic || foot[footerLen-1] != '\n' {
		return nil, fmt.Errorf("%w: bad footer %q", errCorrupt, foot[:])
	}
	hexLen := foot[len(footerMagic) : footerLen-1]
	n, err := strconv.ParseUint(string(hexLen), 16, 64)
	if err != nil || n == 0 || n > maxMetaLen || int64(n) > size-int64(footerLen) {
		return nil, fmt.Errorf("%w: bad metadata length %q", errCorrupt, hexLen)
	}
	js := make([]byte, n)
	metaOff := size - int64(footerLen) - int64(n)
	if _, err := r.ReadAt(js, metaOff); err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	if js[n-1] != '\n' {
		return nil, fmt.Errorf("%w: metadata does not end in a newline", errCorrupt)
	}
	m := new(Meta)
	if err := json.Unmarshal(js[:n-1], m); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", errCorrupt, err)
	}
	switch {
	case m.URL == "":
		return nil, fmt.Errorf("%w: metadata names no URL", errCorrupt)
	case m.Status != http.StatusOK:
		return nil, fmt.Errorf("%w: status %d", errCorrupt, m.Status)
	case m.Size != metaOff:
		return nil, fmt.Errorf("%w: body is %d bytes, metadata says %d", errCorrupt, metaOff, m.Size)
	case len(m.SHA256) != 2*sha256.Size || !isHex(m.SHA256):
		return nil, fmt.Errorf("%w: bad digest %q", errCorrupt, m.SHA256)
	}
	return m, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// VerifyObject checks the stored object in the file at path in full: its
// framing and the SHA-256 of its body. It is the check of every object
// faulted in from the bucket.
func VerifyObject(path string) error {
	return checkObject(path, true)
}

// verifyFraming checks the framing of the stored object at path but not
// the body's digest: the check of objects this process just wrote, whose
// digest it computed as the bytes went by.
func verifyFraming(path string) error {
	return checkObject(path, false)
}

// checkObject checks the framing of the stored object at path and, if
// hashBody is set, the SHA-256 of its body.
func checkObject(path string, hashBody bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	m, err := ParseObject(f, fi.Size())
	if err != nil || !hashBody {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, m.Size)); err != nil {
		return fmt.Errorf("hash body: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
		return fmt.Errorf("%w: body SHA-256 is %s, metadata says %s", errCorrupt, got, m.SHA256)
	}
	return nil
}
