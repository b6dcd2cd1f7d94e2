package revproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/memremote"
	"github.com/go-cache-plugin/go-cache-plugin/internal/revproxytest"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// harness is a proxy on a local listener in front of a test origin.
type harness struct {
	t      *testing.T
	origin *revproxytest.Origin
	st     *store.Store
	ca     *CA
	proxy  *Proxy
	srv    *http.Server
	addr   string // the proxy's listener
	client *http.Client
	logs   *logBuf
}

// logBuf collects log lines.
type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type harnessOpts struct {
	remote   store.Remote
	origin   *revproxytest.Origin
	noTunnel bool
	timeout  time.Duration
	targets  []string    // nil: registry.test and files.test
	realDial bool        // no Config.Dial: targets are dialled by name
	policy   *DialPolicy // nil: loopback allowed (the origin's address)
}

// dialLoopback connects to 127.0.0.1 at addr's port, whatever addr's
// host: the made-up target names of the tests are served by the local
// origin.
func dialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, logs: new(logBuf)}
	if o.origin == nil {
		origin, err := revproxytest.Start(t.TempDir(), "registry.test", "files.test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(origin.Close)
		o.origin = origin
	}
	h.origin = o.origin
	dir := t.TempDir()
	st, err := store.Open(store.Options{Dir: dir, Remote: o.remote, Logf: h.logs.logf})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	ca, err := LoadOrCreateCA(filepath.Join(dir, "revproxy"))
	if err != nil {
		t.Fatal(err)
	}
	h.ca = ca
	cfg := Config{
		Store:           st,
		CA:              ca,
		Targets:         []string{"registry.test", "files.test"},
		Tunnel:          !o.noTunnel,
		Policy:          DialPolicy{Allow: []AddrRule{{Prefix: netip.MustParsePrefix("127.0.0.0/8")}}},
		UpstreamTimeout: o.timeout,
		Logf:            h.logs.logf,
		Debugf:          h.logs.logf,
		RootCAs:         h.origin.CAPool,
		Dial:            dialLoopback,
	}
	if o.targets != nil {
		cfg.Targets = o.targets
	}
	if o.realDial {
		cfg.Dial = nil
	}
	if o.policy != nil {
		cfg.Policy = *o.policy
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.proxy = p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	h.srv = &http.Server{Handler: p}
	served := make(chan struct{})
	go func() { defer close(served); h.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		<-served
		st.Close(ctx)
		if t.Failed() {
			t.Logf("proxy log:\n%s", h.logs)
		}
	})
	h.client = h.newClient()
	return h
}

// newClient returns a client using the proxy and trusting its CA.
func (h *harness) newClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.ca.CertPEM)
	proxyURL := &url.URL{Scheme: "http", Host: h.addr}
	return &http.Client{Transport: &http.Transport{
		Proxy:              http.ProxyURL(proxyURL),
		TLSClientConfig:    &tls.Config{RootCAs: pool},
		DisableCompression: true,
	}}
}

func (h *harness) httpsURL(path string) string {
	return "https://registry.test:" + revproxytest.Port(h.origin.HTTPSAddr) + path
}

func (h *harness) httpURL(path string) string {
	return "http://files.test:" + revproxytest.Port(h.origin.HTTPAddr) + path
}

// get fetches url and returns the response, its body read in full.
func (h *harness) get(url string, hdr ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, body
}

func (h *harness) wantCache(resp *http.Response, cache, source string) {
	h.t.Helper()
	if got, gotSrc := resp.Header.Get("X-Cache"), resp.Header.Get("X-Cache-Source"); got != cache || gotSrc != source {
		h.t.Errorf("%s: X-Cache %q, X-Cache-Source %q; want %q, %q", resp.Request.URL, got, gotSrc, cache, source)
	}
}

func blobBytes(t *testing.T, name string, size int64) []byte {
	b, err := io.ReadAll(revproxytest.NewBlob(name, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stored reports whether the store holds an object for url.
func (h *harness) stored(url string) bool {
	_, ok, err := h.st.Stat(KeyFor(url))
	if err != nil {
		h.t.Fatal(err)
	}
	return ok
}

func TestHTTPSAndHTTP(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if err := h.origin.AddPackage("left-pad", "1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{
		h.httpsURL(revproxytest.TarballPath("left-pad", "1.0.0")),
		h.httpsURL("/blob/300000/a.bin"),
		h.httpURL("/blob/300000/b.bin"),
	} {
		path := strings.SplitN(strings.SplitN(u, "://", 2)[1], "/", 2)[1]
		path = "/" + path
		resp, first := h.get(u)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", u, resp.Status)
		}
		h.wantCache(resp, "miss", "origin")
		if !h.stored(u) {
			t.Errorf("%s not stored after a complete miss", u)
		}
		resp, second := h.get(u)
		h.wantCache(resp, "hit", "local")
		if !bytes.Equal(first, second) {
			t.Errorf("%s: hit differs from miss", u)
		}
		if resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Etag") == "" {
			t.Errorf("%s: hit lacks stored headers: %v", u, resp.Header)
		}
		if n := h.origin.Count(path); n != 1 {
			t.Errorf("%s: origin asked %d times, want 1", u, n)
		}
		// Range and conditional requests on the hit.
		resp, part := h.get(u, "Range", "bytes=100-199")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, first[100:200]) {
			t.Errorf("%s: range: %s, %d bytes", u, resp.Status, len(part))
		}
		h.wantCache(resp, "hit", "local")
		resp, _ = h.get(u, "If-None-Match", resp.Header.Get("Etag"))
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s: If-None-Match: %s, want 304", u, resp.Status)
		}
		if n := h.origin.Count(path); n != 1 {
			t.Errorf("%s: origin asked %d times after range and conditional hits, want 1", u, n)
		}
	}
	if s := h.proxy.Stats(); s.StoredDisk != 3 || s.HitsLocal != 9 || s.Intercepts == 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestMetadataInMemory(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if err := h.origin.AddPackage("tiny", "2.0.0", nil); err != nil {
		t.Fatal(err)
	}
	u := h.httpsURL("/tiny")
	resp, first := h.get(u)
	h.wantCache(resp, "miss", "origin")
	resp, second := h.get(u)
	h.wantCache(resp, "hit", "memory")
	if !bytes.Equal(first, second) || !bytes.Contains(first, []byte(`"tarball":"https://registry.test:`)) {
		t.Errorf("metadata %q, then %q", first, second)
	}
	// no-cache from the client goes to the origin.
	resp, _ = h.get(u, "Cache-Control", "no-cache")
	h.wantCache(resp, "miss", "origin")
	if n := h.origin.Count("/tiny"); n != 2 {
		t.Errorf("origin asked %d times, want 2", n)
	}
	if h.stored(u) {
		t.Errorf("short-lived response stored on disk")
	}
}

func TestNotCached(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, c := range []struct {
		path string
		hdr  []string
		code int
	}{
		{"/plain/a.txt", nil, 200},
		{"/nostore/a.tgz", nil, 200},
		{"/private/a.tgz", []string{"Authorization", "Bearer secret"}, 200},
		{"/status/404/a.tgz", nil, 404},
		{"/status/500/a.tgz", nil, 500},
		{"/blob/1000/q.tgz?x=1", nil, 200}, // immutable by its headers: cached
	} {
		u := h.httpsURL(c.path)
		for i := range 2 {
			resp, _ := h.get(u, c.hdr...)
			if resp.StatusCode != c.code {
				t.Errorf("%s: %s, want %d", c.path, resp.Status, c.code)
			}
			if strings.Contains(c.path, "?") {
				if i == 1 {
					h.wantCache(resp, "hit", "local")
				}
				continue
			}
			h.wantCache(resp, "miss", "origin")
		}
		path, _, _ := strings.Cut(c.path, "?")
		want := 2
		if strings.Contains(c.path, "?") {
			want = 1
		}
		if n := h.origin.Count(path); n != want {
			t.Errorf("%s: origin asked %d times, want %d", c.path, n, want)
		}
	}
}

func TestConcurrentMisses(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	u := h.httpsURL("/gate/one.tgz")
	arrived := h.origin.Arrival("/gate/one.tgz")
	want := blobBytes(t, "one.tgz", 1<<20)
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	caches := make([]string, n)
	first := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			if i > 0 {
				<-first
			}
			resp, err := h.client.Get(u)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && !bytes.Equal(body, want) {
				err = fmt.Errorf("body differs (%d bytes)", len(body))
			}
			errs[i], caches[i] = err, resp.Header.Get("X-Cache")
		})
	}
	go func() { <-arrived; close(first) }()
	// Wait until the other nine are waiting for the first one's fetch.
	waitForWaiters(h.proxy, n-1)
	h.origin.Release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if c := h.origin.Count("/gate/one.tgz"); c != 1 {
		t.Errorf("origin asked %d times for one URL, want 1", c)
	}
	misses := 0
	for _, c := range caches {
		if c == "miss" {
			misses++
		}
	}
	if misses != 1 {
		t.Errorf("X-Cache values %q: want one miss", caches)
	}
}

// waitForWaiters blocks until n requests have waited for another's
// fetch.
func waitForWaiters(p *Proxy, n int64) {
	for {
		p.mu.Lock()
		if p.stats.waits.Load() >= n {
			p.mu.Unlock()
			return
		}
		ch := make(chan struct{})
		p.testWaitCh = ch
		p.mu.Unlock()
		<-ch
	}
}

func TestLyingOrigin(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, u := range []string{h.httpsURL("/lie/100000/x.tgz"), h.httpURL("/lie/100000/y.tgz")} {
		for range 2 {
			resp, err := h.client.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("%s: the client read a short body without an error", u)
			}
		}
		if h.stored(u) {
			t.Errorf("%s: a short body was stored", u)
		}
	}
	if n := h.origin.CountPrefix("/lie/"); n != 4 {
		t.Errorf("origin asked %d times, want 4", n)
	}
	if s := h.proxy.Stats(); s.Aborted != 4 || s.StoredDisk != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestUpstreamErrors(t *testing.T) {
	h := newHarness(t, harnessOpts{timeout: 300 * time.Millisecond})
	resp, body := h.get(h.httpsURL("/stall/s.tgz"))
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "did not answer in time") {
		t.Errorf("stalled origin: %s %q, want 504", resp.Status, body)
	}
	// A port with nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := revproxytest.Port(ln.Addr().String())
	ln.Close()
	resp, body = h.get("http://files.test:" + port + "/a.tgz")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "origin failed") {
		t.Errorf("dead origin: %s %q, want 502", resp.Status, body)
	}
	resp, body = h.get("http://files.test:" + port + "/a.tgz")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("dead origin, again: %s %q, want 502 (errors are not cached)", resp.Status, body)
	}
}

// rawProxy sends req to the proxy on a new connection and returns the
// response.
func (h *harness) rawProxy(req string) (*http.Response, string) {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		h.t.Fatalf("%q: %v", req, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t, harnessOpts{noTunnel: true})
	for _, c := range []struct {
		req  string
		code int
		msg  string
	}{
		{"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n", 403, "tunnelling to other hosts is off"},
		{"GET http://other.test/a.tgz HTTP/1.1\r\nHost: other.test\r\n\r\n", 502, "not one of this proxy's targets"},
		{"CONNECT registry.test HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400, "CONNECT wants host:port"},
		{"CONNECT registry.test:0 HTTP/1.1\r\nHost: registry.test:0\r\n\r\n", 400, "CONNECT wants host:port"},
		{"CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n", 400, "CONNECT wants host:port"},
		{"GET ftp://registry.test/a.tgz HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400, "absolute form"},
		{"GET /a.tgz HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400, "absolute form"},
		{"GET http://registry.test/a.tgz HTTP/1.1\r\nHost: registry.test\r\nVia: 1.1 " + viaToken + "\r\n\r\n", 508, "loop"},
	} {
		resp, body := h.rawProxy(c.req)
		if resp.StatusCode != c.code || !strings.Contains(body, c.msg) {
			t.Errorf("%q: %s %q; want %d with %q", c.req, resp.Status, body, c.code, c.msg)
		}
	}

	// Not TLS after the CONNECT: the proxy drops the connection.
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\n\r\nGET / HTTP/1.1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	if _, err := io.ReadAll(br); err != nil && !errors.Is(err, io.EOF) {
		t.Logf("after garbage: %v", err)
	}

	// A server name other than the CONNECT's is refused.
	conn2, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	fmt.Fprintf(conn2, "CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\n\r\n")
	br2 := bufio.NewReader(conn2)
	if resp, err := http.ReadResponse(br2, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.ca.CertPEM)
	tc := tls.Client(&bufferedConn{Conn: conn2, r: br2}, &tls.Config{ServerName: "files.test", RootCAs: pool})
	if err := tc.Handshake(); err == nil {
		t.Errorf("TLS handshake for files.test inside a CONNECT to registry.test succeeded")
	}

	// A request for another host inside an intercepted connection.
	conn3, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close()
	fmt.Fprintf(conn3, "CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\n\r\n")
	br3 := bufio.NewReader(conn3)
	if resp, err := http.ReadResponse(br3, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	tc3 := tls.Client(&bufferedConn{Conn: conn3, r: br3}, &tls.Config{ServerName: "registry.test", RootCAs: pool})
	fmt.Fprintf(tc3, "GET /a.tgz HTTP/1.1\r\nHost: files.test\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(tc3), nil)
	if err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host other than the CONNECT's: %v, %v; want 421", resp, err)
	}

	if s := h.proxy.Stats(); s.Refused != 1 || s.StoredDisk != 0 {
		t.Errorf("stats %+v", s)
	}
	// Still serving.
	resp2, _ := h.get(h.httpsURL("/blob/10/ok.bin"))
	if resp2.StatusCode != 200 {
		t.Errorf("after bad requests: %s", resp2.Status)
	}
}

func TestTunnel(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// 127.0.0.1 is not a target: the client talks TLS with the origin
	// itself, through the tunnel.
	c := &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr}),
		TLSClientConfig: &tls.Config{RootCAs: h.origin.CAPool},
	}}
	resp, err := c.Get("https://" + h.origin.HTTPSAddr + "/plain/t.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "plain file t.txt") || resp.Header.Get("X-Cache") != "" {
		t.Errorf("tunnelled: %s %q %v", resp.Status, body, resp.Header)
	}
	if s := h.proxy.Stats(); s.Tunnels != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestClientAbort(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	const size = 64 << 20
	u := h.httpsURL(fmt.Sprintf("/blob/%d/abort.bin", size))
	resp, err := h.client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h.client.Transport.(*http.Transport).CloseIdleConnections()

	// The second client's request waits for the first fetch to end,
	// then fetches again: it never sees a partial entry.
	c2 := h.newClient()
	resp, err = c2.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	hsh := sha256.New()
	n, err := io.Copy(hsh, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("second client: %d bytes, %v", n, err)
	}
	h.wantCache(resp, "miss", "origin")
	want := sha256.New()
	io.Copy(want, revproxytest.NewBlob("abort.bin", size))
	if !bytes.Equal(hsh.Sum(nil), want.Sum(nil)) {
		t.Errorf("second client's body differs")
	}
	if s := h.proxy.Stats(); s.Aborted != 1 || s.StoredDisk != 1 {
		t.Errorf("stats %+v", s)
	}
	if tmp, err := store.TempFiles(h.st.Dir()); err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left: %q, %v", tmp, err)
	}
	resp, _ = h.get(u, "Range", "bytes=-10")
	h.wantCache(resp, "hit", "local")
}

func TestBucket(t *testing.T) {
	remote := memremote.New()
	h1 := newHarness(t, harnessOpts{remote: remote})
	u := h1.httpsURL("/blob/5000/shared.bin")
	resp, body := h1.get(u)
	h1.wantCache(resp, "miss", "origin")
	u2 := h1.httpsURL("/blob/6000/corrupt.bin")
	h1.get(u2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h1.st.Close(ctx); err != nil { // drains the uploads
		t.Fatal(err)
	}
	key := KeyFor(u)
	if _, ok := remote.Object(key.String()); !ok {
		t.Fatalf("%s not uploaded as %s; bucket has %d objects", u, key, remote.Len())
	}
	// Corrupt the second one in the bucket: one byte of its body.
	k2 := KeyFor(u2).String()
	b2, _ := remote.Object(k2)
	b2[10] ^= 1
	remote.Set(k2, b2)

	h2 := newHarness(t, harnessOpts{remote: remote, origin: h1.origin})
	resp, body2 := h2.get(u)
	h2.wantCache(resp, "hit", "bucket")
	if !bytes.Equal(body, body2) {
		t.Errorf("bucket hit differs")
	}
	resp, _ = h2.get(u)
	h2.wantCache(resp, "hit", "local")
	resp, body3 := h2.get(u2)
	h2.wantCache(resp, "miss", "origin")
	if !bytes.Equal(body3, blobBytes(t, "corrupt.bin", 6000)) {
		t.Errorf("corrupt bucket object served")
	}
	if n := h1.origin.Count("/blob/5000/shared.bin"); n != 1 {
		t.Errorf("origin asked %d times, want 1", n)
	}
	if st := h2.st.Stats(); st.CorruptRemote != 1 {
		t.Errorf("store stats %+v", st)
	}
}

func TestCloseCutsTunnelsAndFills(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// An intercepted session with a fill stalled at the origin, and an
	// idle tunnel.
	done := make(chan error, 1)
	arrived := h.origin.Arrival("/stall/x.tgz")
	go func() {
		resp, err := h.client.Get(h.httpsURL("/stall/x.tgz"))
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %s", resp.Status)
		}
		done <- err
	}()
	<-arrived
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n", h.origin.HTTPAddr)
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.proxy.Close(ctx); err == nil {
		t.Errorf("Close with a stalled fill reported nothing cut")
	}
	if _, err := br.ReadByte(); err == nil {
		t.Errorf("tunnel still open after Close")
	}
	<-done
	if s := h.proxy.Stats(); s.OpenTunnels != 0 {
		t.Errorf("stats %+v", s)
	}
}
