package modproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
	"github.com/go-cache-plugin/go-cache-plugin/internal/modproxytest"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// testEnv is a proxy on a store, in front of a test upstream.
type testEnv struct {
	up   *modproxytest.Server
	dir  string // the store's directory
	st   *store.Store
	p    *Proxy
	url  string // base URL of the proxy: GOPROXY
	logs *logBuf
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newEnv starts a proxy for up (a new test upstream if nil) on a new store
// with remote (if not nil).
func newEnv(t testing.TB, up *modproxytest.Server, remote store.Remote, edit func(*Config)) *testEnv {
	t.Helper()
	if up == nil {
		up = modproxytest.Start(t, modproxytest.ExampleModules()...)
	}
	e := &testEnv{up: up, dir: filepath.Join(t.TempDir(), "cache"), logs: &logBuf{}}
	st, err := store.Open(store.Options{Dir: e.dir, Remote: remote, Logf: e.logs.logf})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	cfg := Config{
		Store:    st,
		Upstream: up.URL,
		SumDBs:   []string{up.VerifierKey},
		Logf:     e.logs.logf,
		Verbosef: e.logs.logf,
		Debugf:   e.logs.logf,
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	srv := httptest.NewServer(http.StripPrefix("/mod", p))
	e.url = srv.URL + "/mod"
	t.Cleanup(func() {
		srv.Close()
		e.close(t)
		if t.Failed() {
			t.Logf("proxy log:\n%s", e.logs)
		}
	})
	return e
}

var closeOnce sync.Map

func (e *testEnv) close(t testing.TB) {
	if _, done := closeOnce.LoadOrStore(e, true); done {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.p.Close(ctx); err != nil {
		t.Error(err)
	}
	if err := e.st.Close(ctx); err != nil {
		t.Error(err)
	}
}

type response struct {
	code int
	body []byte
	h    http.Header
}

func (e *testEnv) get(t testing.TB, path string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest("GET", e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, body, resp.Header}
}

func (e *testEnv) mustGet(t testing.TB, path, wantCache string) response {
	t.Helper()
	r := e.get(t, path)
	if r.code != 200 {
		t.Fatalf("GET %s: %d %s", path, r.code, r.body)
	}
	if got := r.h.Get("X-Cache"); wantCache != "" && got != wantCache {
		t.Fatalf("GET %s: X-Cache %q, want %q", path, got, wantCache)
	}
	return r
}

func TestServeAndCache(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	zipPath := "/example.com/a/@v/v1.0.0.zip"
	for _, tc := range []struct {
		path, ctype, want string
	}{
		{"/example.com/a/@v/list", "text/plain; charset=utf-8", "v1.0.0\nv1.1.0\n"},
		{"/example.com/a/@latest", "application/json", `"Version":"v1.1.0"`},
		{"/example.com/a/@v/v1.0.0.info", "application/json", `"Version":"v1.0.0"`},
		{"/example.com/a/@v/v1.0.0.mod", "text/plain; charset=utf-8", "module example.com/a\n\ngo 1.21\n"},
		{zipPath, "application/zip", ""},
		{"/example.com/!upper/@v/v1.0.0.mod", "text/plain; charset=utf-8", "module example.com/Upper"},
	} {
		for i, cache := range []string{"miss", "hit"} {
			r := e.mustGet(t, tc.path, cache)
			if got := r.h.Get("Content-Type"); got != tc.ctype {
				t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
			}
			if got, want := r.h.Get("Content-Length"), fmt.Sprint(len(r.body)); got != want {
				t.Errorf("GET %s: Content-Length %s, body %s bytes", tc.path, got, want)
			}
			if !strings.Contains(string(r.body), tc.want) {
				t.Errorf("GET %s: body %q does not contain %q", tc.path, r.body, tc.want)
			}
			if cc := r.h.Get("Cache-Control"); cc == "" {
				t.Errorf("GET %s: no Cache-Control", tc.path)
			} else if strings.HasSuffix(tc.path, ".zip") && !strings.Contains(cc, "immutable") {
				t.Errorf("GET %s: Cache-Control %q, want immutable", tc.path, cc)
			}
			if i == 1 {
				if n := e.up.Count(tc.path); n != 1 {
					t.Errorf("GET %s twice: %d upstream requests, want 1", tc.path, n)
				}
			}
		}
	}
	if got, want := e.mustGet(t, zipPath, "hit").body, e.up.Zip("example.com/a", "v1.0.0"); !bytes.Equal(got, want) {
		t.Errorf("zip: got %d bytes, want the upstream's %d", len(got), len(want))
	}

	// Ranges of a cached zip.
	r := e.get(t, zipPath, "Range", "bytes=10-19")
	if want := e.up.Zip("example.com/a", "v1.0.0")[10:20]; r.code != http.StatusPartialContent || !bytes.Equal(r.body, want) {
		t.Errorf("range: %d %q, want 206 %q", r.code, r.body, want)
	}

	// The files are objects named after the request path.
	if _, ok, _ := e.st.Stat(nameKey("example.com/a/@v/v1.0.0.zip")); !ok {
		t.Errorf("zip not in the store under its name")
	}
	s := e.p.Stats()
	if s.Verified < 3 || s.Refused != 0 || s.Fills < 4 {
		t.Errorf("stats %+v: want 3 verified (2 .mod, 1 .zip), none refused", s)
	}

	// HEAD is served without a body.
	req, _ := http.NewRequest("HEAD", e.url+zipPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(e.up.Zip("example.com/a", "v1.0.0"))) {
		t.Errorf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	if r := e.get(t, "/example.com/a/@v/list", "X", ""); r.code != 200 {
		t.Errorf("list: %d", r.code)
	}
}

func TestSingleFlight(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	const path = "/example.com/a/@v/v1.1.0.zip"
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Go(func() {
			resp, err := http.Get(e.url + path)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: %d", i, c)
		}
	}
	if n := e.up.Count(path); n != 1 {
		t.Errorf("16 concurrent requests: %d upstream requests, want 1", n)
	}
}

func TestTampered(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	if err := e.up.Tamper("example.com/a", "v1.0.0", ".zip"); err != nil {
		t.Fatal(err)
	}
	if err := e.up.Tamper("example.com/a", "v1.1.0", ".mod"); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/example.com/a/@v/v1.0.0.zip", "/example.com/a/@v/v1.1.0.mod"} {
		for range 2 {
			r := e.get(t, path)
			if r.code != http.StatusBadGateway || !strings.Contains(string(r.body), "SECURITY ERROR") {
				t.Errorf("GET %s (tampered): %d %q, want 502 with SECURITY ERROR", path, r.code, r.body)
			}
		}
		// Not cached: each request asked the upstream again.
		if n := e.up.Count(path); n != 2 {
			t.Errorf("GET %s twice: %d upstream requests, want 2 (nothing cached)", path, n)
		}
		if _, ok, _ := e.st.Stat(nameKey(strings.TrimPrefix(path, "/"))); ok {
			t.Errorf("%s: tampered file stored", path)
		}
	}
	if s := e.p.Stats(); s.Refused != 4 {
		t.Errorf("refused %d, want 4", s.Refused)
	}
	// The untampered files of the same modules are fine.
	e.mustGet(t, "/example.com/a/@v/v1.0.0.mod", "miss")
	e.mustGet(t, "/example.com/a/@v/v1.1.0.zip", "miss")

	// Exempt from verification: served as the upstream has it.
	e2 := newEnv(t, e.up, nil, func(c *Config) { c.NoSumDB = "example.com/a" })
	if r := e2.mustGet(t, "/example.com/a/@v/v1.1.0.mod", "miss"); !strings.Contains(string(r.body), "tampered") {
		t.Errorf("NoSumDB module: got %q, want the upstream's go.mod", r.body)
	}
}

func TestUpstreamFailures(t *testing.T) {
	e := newEnv(t, nil, nil, func(c *Config) { c.TTL = time.Nanosecond })
	list := e.mustGet(t, "/example.com/a/@v/list", "miss")
	latest := e.mustGet(t, "/example.com/a/@latest", "miss")
	e.mustGet(t, "/example.com/a/@v/v1.0.0.zip", "miss")

	e.up.SetDown(true)
	// Immutable files come from the cache.
	e.mustGet(t, "/example.com/a/@v/v1.0.0.zip", "hit")
	// Mutable ones, past their TTL, are served stale.
	for _, tc := range []struct {
		path string
		want response
	}{{"/example.com/a/@v/list", list}, {"/example.com/a/@latest", latest}} {
		r := e.mustGet(t, tc.path, "stale")
		if !bytes.Equal(r.body, tc.want.body) {
			t.Errorf("stale %s: %q, want %q", tc.path, r.body, tc.want.body)
		}
	}
	// What is not cached is a 502, never a 404.
	if r := e.get(t, "/example.com/a/@v/v1.1.0.zip"); r.code != http.StatusBadGateway {
		t.Errorf("uncached zip, upstream 503: %d %s, want 502", r.code, r.body)
	}
	if r := e.get(t, "/example.com/b/@v/list"); r.code != http.StatusBadGateway {
		t.Errorf("uncached list, upstream 503: %d %s, want 502", r.code, r.body)
	}
	e.up.Close()
	if r := e.get(t, "/example.com/a/@v/v1.1.0.mod"); r.code != http.StatusBadGateway {
		t.Errorf("uncached mod, upstream closed: %d %s, want 502", r.code, r.body)
	}
	e.mustGet(t, "/example.com/a/@v/list", "stale")
	if s := e.p.Stats(); s.Stale < 3 {
		t.Errorf("stale %d, want 3", s.Stale)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer func() { close(release); slow.Close(); wg.Wait() }()
	up := modproxytest.Start(t, modproxytest.ExampleModules()...)
	e := newEnv(t, up, nil, func(c *Config) { c.Upstream = slow.URL; c.Timeout = 50 * time.Millisecond })
	if r := e.get(t, "/example.com/a/@v/v1.0.0.info"); r.code != http.StatusGatewayTimeout {
		t.Errorf("slow upstream: %d %s, want 504", r.code, r.body)
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	for _, path := range []string{"/example.com/nope/@v/list", "/example.com/a/@v/v1.9.9.info", "/example.com/a/@v/v1.9.9.zip"} {
		for range 2 {
			r := e.get(t, path)
			if r.code != http.StatusNotFound && r.code != http.StatusGone {
				t.Errorf("GET %s: %d %s, want the upstream's 404 or 410", path, r.code, r.body)
			}
		}
		if n := e.up.Count(path); n != 1 {
			t.Errorf("GET %s twice: %d upstream requests, want 1 (negative cache)", path, n)
		}
	}
}

func TestBadPaths(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	parent := filepath.Dir(e.dir)
	long := "/example.com/" + strings.Repeat("x", 2000) + "/@v/list"
	for _, path := range []string{
		"/../../etc/passwd",
		"/example.com/../../x/@v/list",
		"/example.com/a/@v/../../../x.zip",
		"/example.com/A/@v/list",
		"/example.com/a/@v/v1.0.0/../../x.zip",
		"/example.com/a/@v/v1.0.zip",
		"/example.com/a/@v/master.zip",
		"/example.com/a/@v/v1.0.0.exe",
		"/example.com/a/@v/V1.0.0.info",
		"/example.com/a/@v/v1.0.0+incompatible.mod",
		"/example.com/a/v2/@v/v1.0.0.mod",
		"/example.com/a/@v/v9.0.0.mod",
		"/example.com/a/@v/",
		"/example.com/a/",
		"/localhost/@v/list",
		"/sumdb/other.db/supported",
		"/sumdb/" + modproxytest.DBName + "/tile/8/0/../../../x",
		"/sumdb/" + modproxytest.DBName + "/lookup/example.com/a",
		"/sumdb/" + modproxytest.DBName + "/lookup/example.com/A@v1.0.0",
		"/sumdb/" + modproxytest.DBName + "/tile/8/0/1",
		"/sumdb/" + modproxytest.DBName + "/etc",
		"/example.com/a/@v/%00.info",
		"/example.com/a b/@v/list",
		long,
	} {
		r := e.get(t, path)
		if r.code < 400 || r.code >= 500 {
			t.Errorf("GET %s: %d %q, want 4xx", path, r.code, r.body)
		}
		if len(bytes.TrimSpace(r.body)) == 0 {
			t.Errorf("GET %s: %d without a message", path, r.code)
		}
	}
	if n := e.up.Total(); n != 0 {
		t.Errorf("bad paths made %d upstream requests: %v", n, e.up.Paths())
	}
	if r := e.get(t, "/example.com/a/@v/list"); r.code != 200 {
		t.Errorf("POST: %d", r.code)
	}
	resp, err := http.Post(e.url+"/example.com/a/@v/list", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	// Nothing was written beside the cache directory.
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "cache" {
		t.Errorf("files beside the cache directory: %v", entries)
	}
	// And inside it, only objects under module/ and the store's own.
	filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(e.dir, path)
		if !d.IsDir() && !strings.HasPrefix(rel, "module"+string(filepath.Separator)) && !strings.HasSuffix(rel, ".lock") {
			t.Errorf("unexpected file in the cache directory: %s", rel)
		}
		return nil
	})
}

func TestSumDBProxy(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	base := "/sumdb/" + modproxytest.DBName
	if r := e.get(t, base+"/supported"); r.code != 200 {
		t.Errorf("supported: %d", r.code)
	}
	if r := e.get(t, "/sumdb/other.example/supported"); r.code != 404 {
		t.Errorf("supported of another database: %d, want 404", r.code)
	}
	lookup := base + "/lookup/example.com/a@v1.0.0"
	r := e.mustGet(t, lookup, "miss")
	if want := e.up.GoSum("example.com/a", "v1.0.0"); !strings.Contains(string(r.body), want) {
		t.Errorf("lookup: %q does not contain %q", r.body, want)
	}
	e.mustGet(t, lookup, "hit")
	if n := e.up.Count(lookup); n != 1 {
		t.Errorf("lookup twice: %d upstream requests, want 1", n)
	}
	e.mustGet(t, base+"/latest", "")
	r = e.mustGet(t, base+"/tile/8/0/000.p/1", "")
	if len(r.body) != 32 {
		t.Errorf("tile of width 1: %d bytes, want 32", len(r.body))
	}
}

func TestSecondDaemonFromBucket(t *testing.T) {
	remote := memremote.New()
	e1 := newEnv(t, nil, remote, nil)
	paths := []string{
		"/example.com/b/@v/list", "/example.com/b/@v/v0.1.0.info", "/example.com/b/@v/v0.1.0.mod",
		"/example.com/b/@v/v0.1.0.zip", "/example.com/a/@v/v1.1.0.mod", "/example.com/a/@v/v1.1.0.zip",
		"/example.com/a/@v/v1.0.0.zip",
	}
	bodies := map[string][]byte{}
	for _, p := range paths {
		bodies[p] = e1.mustGet(t, p, "miss").body
	}
	e1.close(t) // drains the uploads
	e1.up.Close()

	// A second proxy on an empty directory, the upstream gone.
	e2 := newEnv(t, e1.up, remote, func(c *Config) { c.TTL = time.Nanosecond })
	for _, p := range paths {
		want := "hit"
		if strings.HasSuffix(p, "/list") {
			want = "stale"
		}
		if r := e2.mustGet(t, p, want); !bytes.Equal(r.body, bodies[p]) {
			t.Errorf("GET %s from the bucket: %q, want %q", p, r.body, bodies[p])
		}
	}
	if s := e2.p.Stats(); s.Verified != 5 {
		t.Errorf("second proxy verified %d files from the bucket, want 5", s.Verified)
	}

	// A file corrupted in the bucket is refused and not installed.
	e3 := newEnv(t, e1.up, remote, nil)
	key := nameKey("example.com/a/@v/v1.0.0.zip").String()
	other, _ := remote.Object(nameKey("example.com/a/@v/v1.1.0.zip").String())
	remote.Set(key, other)
	if r := e3.get(t, "/example.com/a/@v/v1.0.0.zip"); r.code == 200 {
		t.Errorf("zip swapped in the bucket: served (%d bytes)", len(r.body))
	}
	if _, ok, _ := e3.st.Stat(nameKey("example.com/a/@v/v1.0.0.zip")); ok {
		t.Errorf("zip swapped in the bucket: installed locally")
	}
	if s := e3.st.Stats(); s.CorruptRemote == 0 {
		t.Errorf("zip swapped in the bucket: not counted corrupt: %+v", s)
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	e.mustGet(t, "/example.com/a/@v/v1.0.0.info", "miss")
	e.close(t)
	if r := e.get(t, "/example.com/a/@v/v1.1.0.info"); r.code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d, want 503", r.code)
	}
	e.mustGet(t, "/example.com/a/@v/v1.0.0.info", "hit")
}

func TestLoop(t *testing.T) {
	up := modproxytest.Start(t, modproxytest.ExampleModules()...)
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	defer srv.Close()
	e := newEnv(t, up, nil, func(c *Config) { c.Upstream = srv.URL + "/mod" })
	h = http.StripPrefix("/mod", e.p)
	r := e.get(t, "/example.com/a/@v/v1.0.0.info")
	if r.code != http.StatusBadGateway || !strings.Contains(string(r.body), "loop") {
		t.Errorf("proxy as its own upstream: %d %q, want a 502 naming the loop", r.code, r.body)
	}
}
