// Package modproxytest runs a hermetic upstream for module proxy tests: a
// module proxy (the GOPROXY protocol) serving test modules built in memory
// with golang.org/x/mod/zip, and a checksum database (sumdb.NewTestServer,
// with a key generated for the run) under /sumdb/<name>/, both on a
// loopback port.
//
// Switches make it fail (SetDown: every request a 503), stop it (Close),
// or serve a tampered zip or go.mod (Tamper) while the checksum database
// keeps the true hashes; counters say what was asked.
package modproxytest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
	modzip "golang.org/x/mod/zip"
)

// DBName is the name of the test checksum database.
const DBName = "sumdb.test"

// A Module is a test module at one version. Files maps slash-separated
// names to contents and must include "go.mod".
type Module struct {
	Path    string
	Version string
	Files   map[string]string
}

// built is a module's files as served.
type built struct {
	mv             module.Version
	files          map[string]string
	info, mod, zip []byte
	hash, modHash  string // go.sum hashes of the true files
}

// Server is a running test upstream.
type Server struct {
	// URL is the base URL of the module proxy ("http://127.0.0.1:<port>").
	URL string
	// VerifierKey is the database's verifier key: GOSUMDB=<VerifierKey>.
	VerifierKey string

	srv       *httptest.Server
	closeOnce sync.Once
	mods      map[module.Version]*built
	vers      map[string][]string // module path -> versions, sorted

	mu       sync.Mutex
	down     bool
	tampered map[string][]byte // request path -> tampered body
	counts   map[string]int    // request path -> requests
	total    int
}

// Start builds mods and starts the upstream; it is closed when tb ends.
func Start(tb testing.TB, mods ...Module) *Server {
	tb.Helper()
	s, err := New(tb.TempDir(), mods...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// New builds mods (using dir for scratch files) and starts the upstream.
// The caller must Close it.
func New(dir string, mods ...Module) (*Server, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, DBName)
	if err != nil {
		return nil, fmt.Errorf("generating the database key: %w", err)
	}
	s := &Server{
		VerifierKey: vkey,
		mods:        map[module.Version]*built{},
		vers:        map[string][]string{},
		tampered:    map[string][]byte{},
		counts:      map[string]int{},
	}
	for i, m := range mods {
		mv := module.Version{Path: m.Path, Version: m.Version}
		if err := module.Check(m.Path, m.Version); err != nil {
			return nil, err
		}
		b, err := build(filepath.Join(dir, fmt.Sprintf("m%d.zip", i)), mv, m.Files)
		if err != nil {
			return nil, fmt.Errorf("building %v: %w", mv, err)
		}
		s.mods[mv] = b
		s.vers[m.Path] = append(s.vers[m.Path], m.Version)
	}
	for _, v := range s.vers {
		semver.Sort(v)
	}
	db := sumdb.NewServer(sumdb.NewTestServer(skey, s.gosum))
	mux := http.NewServeMux()
	mux.Handle("/sumdb/"+DBName+"/", http.StripPrefix("/sumdb/"+DBName, db))
	mux.HandleFunc("/", s.serveProxy)
	s.srv = httptest.NewServer(s.count(mux))
	s.URL = s.srv.URL
	return s, nil
}

func build(zipFile string, mv module.Version, files map[string]string) (*built, error) {
	gomod, ok := files["go.mod"]
	if !ok {
		return nil, fmt.Errorf("no go.mod")
	}
	var zf []modzip.File
	for name, content := range files {
		zf = append(zf, memFile{name, content})
	}
	var buf bytes.Buffer
	if err := modzip.Create(&buf, mv, zf); err != nil {
		return nil, err
	}
	if err := os.WriteFile(zipFile, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	hash, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		return nil, err
	}
	modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(gomod)), nil
	})
	if err != nil {
		return nil, err
	}
	info, _ := json.Marshal(map[string]string{"Version": mv.Version, "Time": "2024-01-02T03:04:05Z"})
	return &built{mv: mv, files: files, info: info, mod: []byte(gomod), zip: buf.Bytes(), hash: hash, modHash: modHash}, nil
}

// gosum is the database's source of truth: the true hashes.
func (s *Server) gosum(path, vers string) ([]byte, error) {
	b := s.mods[module.Version{Path: path, Version: vers}]
	if b == nil {
		return nil, fmt.Errorf("%s@%s: %w", path, vers, fs.ErrNotExist)
	}
	return fmt.Appendf(nil, "%s %s %s\n%s %s/go.mod %s\n", path, vers, b.hash, path, vers, b.modHash), nil
}

// GoSum returns the go.sum lines of mod@vers.
func (s *Server) GoSum(path, vers string) string {
	b, _ := s.gosum(path, vers)
	return string(b)
}

// Zip returns the true zip of mod@vers.
func (s *Server) Zip(path, vers string) []byte {
	if b := s.mods[module.Version{Path: path, Version: vers}]; b != nil {
		return b.zip
	}
	return nil
}

func (s *Server) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[r.URL.Path]++
		s.total++
		down := s.down
		s.mu.Unlock()
		if down {
			http.Error(w, "upstream is down (test switch)", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	body, tampered := s.tampered[p]
	s.mu.Unlock()
	if epath, ok := strings.CutSuffix(p, "/@latest"); ok {
		path, err := module.UnescapePath(epath)
		vs := s.vers[path]
		if err != nil || len(vs) == 0 {
			http.Error(w, "not found: "+epath, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.mods[module.Version{Path: path, Version: vs[len(vs)-1]}].info)
		return
	}
	epath, file, ok := strings.Cut(p, "/@v/")
	path, err := module.UnescapePath(epath)
	if !ok || err != nil || s.vers[path] == nil {
		http.Error(w, "not found: "+p, http.StatusNotFound)
		return
	}
	if file == "list" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, strings.Join(s.vers[path], "\n")+"\n")
		return
	}
	ext := filepath.Ext(file)
	vers, err := module.UnescapeVersion(strings.TrimSuffix(file, ext))
	b := s.mods[module.Version{Path: path, Version: vers}]
	if err != nil || b == nil {
		http.Error(w, "not found: "+p, http.StatusGone)
		return
	}
	switch ext {
	case ".info":
		body = b.info
	case ".mod":
		if !tampered {
			body = b.mod
		}
	case ".zip":
		if !tampered {
			body = b.zip
		}
	default:
		http.Error(w, "not found: "+p, http.StatusNotFound)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// URLPath is the escaped request path of mod@vers's file ext (".zip",
// ".mod", ".info"), without a leading slash.
func URLPath(path, vers, ext string) string {
	ep, _ := module.EscapePath(path)
	ev, _ := module.EscapeVersion(vers)
	return ep + "/@v/" + ev + ext
}

// Tamper makes the upstream serve a modified zip (ext ".zip": one file's
// contents changed) or go.mod (ext ".mod": a line added) of mod@vers; the
// database keeps the true hashes.
func (s *Server) Tamper(path, vers, ext string) error {
	b := s.mods[module.Version{Path: path, Version: vers}]
	if b == nil {
		return fmt.Errorf("no module %s@%s", path, vers)
	}
	var body []byte
	switch ext {
	case ".mod":
		body = append(bytes.Clone(b.mod), "\n// tampered\n"...)
	case ".zip":
		var zf []modzip.File
		for name, content := range b.files {
			if strings.HasSuffix(name, ".go") {
				content += "\n// tampered\n"
			}
			zf = append(zf, memFile{name, content})
		}
		var buf bytes.Buffer
		if err := modzip.Create(&buf, b.mv, zf); err != nil {
			return err
		}
		body = buf.Bytes()
	default:
		return fmt.Errorf("cannot tamper with %q", ext)
	}
	s.mu.Lock()
	s.tampered[URLPath(path, vers, ext)] = body
	s.mu.Unlock()
	return nil
}

// SetDown makes every request fail with a 503 (true) or be served (false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Count returns how many requests were made for path (with a leading
// slash, as "/example.com/a/@v/v1.0.0.zip").
func (s *Server) Count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[path]
}

// Total returns how many requests were made.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Paths returns the paths requested so far, sorted.
func (s *Server) Paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []string
	for p := range s.counts {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Close stops the upstream: its port refuses connections from then on.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// memFile is a module file in memory.
type memFile struct{ name, content string }

func (f memFile) Path() string { return f.name }
func (f memFile) Lstat() (fs.FileInfo, error) {
	return memInfo{f}, nil
}
func (f memFile) Open() (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(f.content)), nil
}

type memInfo struct{ f memFile }

func (i memInfo) Name() string       { return filepath.Base(i.f.name) }
func (i memInfo) Size() int64        { return int64(len(i.f.content)) }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// ExampleModules are small test modules: example.com/a at v1.0.0 and
// v1.1.0, example.com/b v0.1.0 requiring a v1.1.0 (its V is
// "b with a v1.1.0"), example.com/Upper (upper case in its path) and
// example.com/c, which nothing needs (for tampering with).
func ExampleModules() []Module {
	a := func(v string) Module {
		return Module{Path: "example.com/a", Version: v, Files: map[string]string{
			"go.mod": "module example.com/a\n\ngo 1.21\n",
			"a.go":   "package a\n\nconst Version = \"" + v + "\"\n",
		}}
	}
	return []Module{
		a("v1.0.0"), a("v1.1.0"),
		{Path: "example.com/b", Version: "v0.1.0", Files: map[string]string{
			"go.mod": "module example.com/b\n\ngo 1.21\n\nrequire example.com/a v1.1.0\n",
			"b.go":   "package b\n\nimport \"example.com/a\"\n\nconst V = \"b with a \" + a.Version\n",
		}},
		{Path: "example.com/Upper", Version: "v1.0.0", Files: map[string]string{
			"go.mod": "module example.com/Upper\n\ngo 1.21\n",
			"u.go":   "package upper\n",
		}},
		{Path: "example.com/c", Version: "v1.0.0", Files: map[string]string{
			"go.mod": "module example.com/c\n\ngo 1.21\n",
			"c.go":   "package c\n",
		}},
	}
}
