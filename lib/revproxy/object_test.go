package revproxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// object builds a stored object for body.
func object(t testing.TB, url string, body []byte) []byte {
	sum := sha256.Sum256(body)
	m := &Meta{URL: url, Status: 200, Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:]),
		Header: map[string]string{"Content-Type": "application/x-test"}, Stored: time.Unix(1700000000, 0).UTC()}
	tr, err := encodeTrailer(m)
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte(nil), body...), tr...)
}

func TestObjectRoundTrip(t *testing.T) {
	for _, body := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("abc\n"), 10000)} {
		obj := object(t, "https://registry.test/a.tgz", body)
		if !bytes.HasSuffix(obj, []byte("\n")) || !bytes.Contains(obj[len(obj)-footerLen:], []byte(footerMagic)) || footerLen != 32 {
			t.Fatalf("footer: %q", obj[len(obj)-footerLen:])
		}
		m, err := ParseObject(bytes.NewReader(obj), int64(len(obj)))
		if err != nil {
			t.Fatal(err)
		}
		if m.URL != "https://registry.test/a.tgz" || m.Size != int64(len(body)) || m.Header["Content-Type"] != "application/x-test" {
			t.Errorf("parsed %+v", m)
		}
		path := filepath.Join(t.TempDir(), "obj")
		os.WriteFile(path, obj, 0o644)
		if err := VerifyObject(path); err != nil {
			t.Errorf("VerifyObject: %v", err)
		}
	}
}

func TestObjectCorrupt(t *testing.T) {
	good := object(t, "https://registry.test/a.tgz", []byte("hello, world"))
	metaStart := bytes.IndexByte(good, '{')
	for name, mutate := range map[string]func([]byte) []byte{
		"empty":          func(b []byte) []byte { return nil },
		"truncated":      func(b []byte) []byte { return b[:len(b)-1] },
		"body longer":    func(b []byte) []byte { return append([]byte("x"), b...) },
		"body shorter":   func(b []byte) []byte { return b[1:] },
		"body flipped":   func(b []byte) []byte { b[0] ^= 1; return b },
		"bad magic":      func(b []byte) []byte { b[len(b)-footerLen] = 'G'; return b },
		"bad length":     func(b []byte) []byte { copy(b[len(b)-17:], "ffffffffffffffff"); return b },
		"length too big": func(b []byte) []byte { copy(b[len(b)-17:], "0000000000ffffff"); return b },
		"not json":       func(b []byte) []byte { b[metaStart] = '['; return b },
		"no newline":     func(b []byte) []byte { b[len(b)-footerLen-1] = ' '; return b },
		"footer only":    func(b []byte) []byte { return b[len(b)-footerLen:] },
	} {
		obj := mutate(append([]byte(nil), good...))
		path := filepath.Join(t.TempDir(), "obj")
		os.WriteFile(path, obj, 0o644)
		err := VerifyObject(path)
		if err == nil {
			t.Errorf("%s: VerifyObject accepted it", name)
		} else if !errors.Is(err, errCorrupt) && !strings.Contains(err.Error(), "EOF") {
			t.Errorf("%s: %v, want a corrupt-object error", name, err)
		}
	}
}

func TestObjectTooMuchMetadata(t *testing.T) {
	m := &Meta{URL: "https://registry.test/" + strings.Repeat("x", maxMetaLen), Status: 200}
	if _, err := encodeTrailer(m); err == nil {
		t.Errorf("encodeTrailer accepted %d bytes of metadata", len(m.URL))
	}
}

// FuzzParseObject checks that ParseObject never panics and that what it
// accepts is consistent.
func FuzzParseObject(f *testing.F) {
	f.Add(object(f, "https://registry.test/a.tgz", []byte("hello")))
	f.Add(object(f, "http://files.test/b", nil))
	f.Add([]byte(footerMagic + "0000000000000002\n"))
	f.Add([]byte("{}\n" + footerMagic + "0000000000000003\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseObject(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if m.Size < 0 || m.Size+int64(footerLen) > int64(len(b)) || m.URL == "" || len(m.SHA256) != 64 {
			t.Fatalf("accepted inconsistent metadata %+v for %d bytes", m, len(b))
		}
		// What it accepts, re-encoded, parses the same.
		tr, err := encodeTrailer(m)
		if err != nil {
			return
		}
		again := append(append([]byte(nil), b[:m.Size]...), tr...)
		m2, err := ParseObject(bytes.NewReader(again), int64(len(again)))
		if err != nil || m2.URL != m.URL || m2.Size != m.Size || m2.SHA256 != m.SHA256 {
			t.Fatalf("re-encoded: %+v, %v; was %+v", m2, err, m)
		}
	})
}
