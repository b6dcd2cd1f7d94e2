package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/internal/revproxytest"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
	"github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// The made-up target names of the tests; the daemon dials them at
// 127.0.0.1 (GOCACHE_REVPROXY_TEST_ONLY_DIAL, a setting of the tests' own
// build only: testhooks_on.go).
const (
	rpRegistry = "registry.test"
	rpFiles    = "files.test"
)

// revDaemon is a "go-cache-plugin serve --revproxy" subprocess.
type revDaemon struct {
	*daemonProc
	addr   string // host:port of the HTTP listener
	url    string // http://addr
	dir    string // cache dir
	origin *revproxytest.Origin
}

// revEnv is the environment of the daemon and its clients: nothing of
// the machine's GOCACHE_* or proxy settings.
func revEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS":
			continue
		}
		if strings.HasPrefix(k, "GOCACHE_") || strings.HasPrefix(strings.ToLower(k), "npm_config_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startRevDaemon starts a daemon on dir proxying for the test targets of
// origin, and waits until it listens. It is stopped when the test ends.
func startRevDaemon(t testing.TB, origin *revproxytest.Origin, dir string, env []string, flags ...string) *revDaemon {
	t.Helper()
	args := append([]string{"serve", "--cache-dir=" + dir, "--http=127.0.0.1:0", "-v", "--debug",
		"--revproxy=" + rpRegistry + "," + rpFiles}, flags...)
	d := &revDaemon{dir: dir, origin: origin}
	d.daemonProc = runDaemon(t, revEnv(append([]string{
		"SSL_CERT_FILE=" + origin.CAFile, // the daemon trusts the test origin's CA
		"GOCACHE_REVPROXY_TEST_ONLY_DIAL=127.0.0.1",
	}, env...)...), args)
	d.url = d.httpURL
	d.addr = strings.TrimPrefix(d.url, "http://")
	return d
}

// waitCount waits until n log lines match re and returns the submatches
// of the first.
func (d *daemonProc) waitCount(t testing.TB, re *regexp.Regexp, n int) []string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		d.mu.Lock()
		ch := d.changed
		var first []string
		count := 0
		for _, line := range d.lines {
			if m := re.FindStringSubmatch(line); m != nil {
				if first == nil {
					first = m
				}
				count++
			}
		}
		d.mu.Unlock()
		if count >= n {
			return first
		}
		select {
		case <-ch:
		case <-d.exited:
			if d.countLines(re) >= n {
				continue
			}
			t.Fatalf("daemon exited (%v) with %d lines matching %q, want %d; log:\n%s", d.waitErr, count, re, n, d.log())
		case <-timeout:
			t.Fatalf("daemon logged %d lines matching %q, want %d; log:\n%s", count, re, n, d.log())
		}
	}
}

func (d *daemonProc) countLines(re *regexp.Regexp) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, line := range d.lines {
		if re.MatchString(line) {
			n++
		}
	}
	return n
}

// caFile is the path of the daemon's CA certificate.
func (d *revDaemon) caFile() string { return filepath.Join(d.dir, "revproxy", "ca.pem") }

// client is a Go client using the daemon as its proxy and trusting its CA.
func (d *revDaemon) client(t testing.TB) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(d.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", d.caFile())
	}
	tr := &http.Transport{
		Proxy:              http.ProxyURL(&url.URL{Scheme: "http", Host: d.addr}),
		TLSClientConfig:    &tls.Config{RootCAs: pool},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get fetches u through c and returns the response and its body.
func rpGet(t *testing.T, c *http.Client, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, body
}

func wantXCache(t *testing.T, what string, h http.Header, cache, source string) {
	t.Helper()
	if got, src := h.Get("X-Cache"), h.Get("X-Cache-Source"); got != cache || src != source {
		t.Errorf("%s: X-Cache %q, X-Cache-Source %q; want %q, %q", what, got, src, cache, source)
	}
}

// startOrigin starts the test origin, with an npm registry of a few
// packages.
func startOrigin(t *testing.T) *revproxytest.Origin {
	t.Helper()
	o, err := revproxytest.Start(t.TempDir(), rpRegistry, rpFiles)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	for _, p := range []struct {
		name string
		deps map[string]string
	}{
		{"rp-leaf", nil},
		{"rp-mid", map[string]string{"rp-leaf": "1.0.0"}},
		{"rp-app-dep", map[string]string{"rp-mid": "^1.0.0", "rp-leaf": "1.0.0"}},
	} {
		if err := o.AddPackage(p.name, "1.0.0", p.deps); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func httpsURL(o *revproxytest.Origin, path string) string {
	return "https://" + rpRegistry + ":" + revproxytest.Port(o.HTTPSAddr) + path
}

func httpURL(o *revproxytest.Origin, path string) string {
	return "http://" + rpFiles + ":" + revproxytest.Port(o.HTTPAddr) + path
}

// npmInstall installs rp-app-dep into a new project with an empty npm
// cache, through the daemon, and checks that node can load it.
func npmInstall(t *testing.T, d *revDaemon, registry string, extraEnv ...string) {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"package.json": `{"name": "rp-project", "version": "1.0.0", "private": true, "dependencies": {"rp-app-dep": "1.0.0"}}`,
		".npmrc":       "",
	})
	home := t.TempDir()
	cmd := exec.Command("npm", "install", "--registry", registry, "--cache", filepath.Join(t.TempDir(), "npm-cache"),
		"--no-audit", "--no-fund", "--prefer-online", "--no-update-notifier", "--loglevel=warn", "--fetch-retries=0")
	cmd.Dir = dir
	// No npmrc of the machine's: a global "cafile" would replace the CAs
	// NODE_EXTRA_CA_CERTS adds to.
	env := revEnv("HOME="+home, "NPM_CONFIG_USERCONFIG="+filepath.Join(home, "npmrc"),
		"NPM_CONFIG_GLOBALCONFIG="+filepath.Join(home, "global-npmrc"))
	if d != nil {
		env = append(env, "HTTPS_PROXY="+d.url, "HTTP_PROXY="+d.url, "NODE_EXTRA_CA_CERTS="+d.caFile())
	}
	cmd.Env = append(env, extraEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install: %v\n%s", err, out)
	}
	node := exec.Command("node", "-e", `console.log(require("rp-app-dep"), require("rp-mid"), require("rp-leaf"))`)
	node.Dir = dir
	out, err := node.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rp-app-dep@1.0.0 rp-mid@1.0.0 rp-leaf@1.0.0") {
		t.Fatalf("node after npm install: %v\n%s", err, out)
	}
}

// curl runs curl through the daemon and returns the response headers
// and body.
func curl(t *testing.T, d *revDaemon, u string, args ...string) (http.Header, []byte) {
	t.Helper()
	dir := t.TempDir()
	hdrFile, bodyFile := filepath.Join(dir, "headers"), filepath.Join(dir, "body")
	cmd := exec.Command("curl", append([]string{"-sS", "--fail", "--proxy", d.url, "--cacert", d.caFile(),
		"-D", hdrFile, "-o", bodyFile, u}, args...)...)
	cmd.Env = revEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl %s: %v\n%s", u, err, out)
	}
	raw, err := os.ReadFile(hdrFile)
	if err != nil {
		t.Fatal(err)
	}
	// The headers of the last response (after a CONNECT's 200).
	blocks := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(raw), "\r\n", "\n")), "\n\n")
	h := http.Header{}
	for _, line := range strings.Split(blocks[len(blocks)-1], "\n")[1:] {
		if k, v, ok := strings.Cut(line, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		t.Fatal(err)
	}
	return h, body
}

// TestRevProxyClients runs real clients through the daemon: npm installs
// a package twice with empty npm caches, the second time without the
// origin's tarballs; curl and a Go client over HTTP and HTTPS; the CA
// download; ten concurrent requests for one URL.
func TestRevProxyClients(t *testing.T) {
	o := startOrigin(t)
	// The tunnel below goes to the origin's loopback address.
	d := startRevDaemon(t, o, t.TempDir(), nil, "--revproxy-allow-local=127.0.0.1:"+revproxytest.Port(o.HTTPSAddr))
	d.waitCount(t, regexp.MustCompile(`revproxy: created a CA: `), 1)

	// The CA: its key is private, and the listener serves the certificate.
	if fi, err := os.Stat(filepath.Join(d.dir, "revproxy", "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key: %v, %v; want mode 0600", fi, err)
	}
	resp, err := http.Get(d.url + "/revproxy/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	onDisk, _ := os.ReadFile(d.caFile())
	if resp.StatusCode != 200 || !bytes.Equal(served, onDisk) || !bytes.HasPrefix(onDisk, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("/revproxy/ca.pem: %s, %d bytes; the file has %d", resp.Status, len(served), len(onDisk))
	}

	t.Run("npm", func(t *testing.T) {
		registry := httpsURL(o, "/")
		npmInstall(t, d, registry)
		tarballs := o.CountPrefix("/rp-")
		for _, name := range []string{"rp-leaf", "rp-mid", "rp-app-dep"} {
			if n := o.Count(revproxytest.TarballPath(name, "1.0.0")); n != 1 {
				t.Errorf("first install: origin served %s's tarball %d times, want 1", name, n)
			}
		}
		hits := d.metric(t, "gocacheplugin_revproxy_hits_total", "source", "local")
		npmInstall(t, d, registry)
		for _, name := range []string{"rp-leaf", "rp-mid", "rp-app-dep"} {
			if n := o.Count(revproxytest.TarballPath(name, "1.0.0")); n != 1 {
				t.Errorf("second install: origin served %s's tarball %d times, want still 1", name, n)
			}
		}
		if after := d.metric(t, "gocacheplugin_revproxy_hits_total", "source", "local"); after < hits+3 {
			t.Errorf("local hits went from %v to %v over the second install, want 3 more", hits, after)
		}
		t.Logf("origin requests for /rp-*: %d after the first install, %d after the second", tarballs, o.CountPrefix("/rp-"))
	})

	t.Run("curl", func(t *testing.T) {
		for _, u := range []string{httpsURL(o, "/blob/200000/curl.bin"), httpURL(o, "/blob/200000/curl-http.bin")} {
			want, _ := io.ReadAll(revproxytest.NewBlob(filepath.Base(u), 200000))
			h, body := curl(t, d, u)
			wantXCache(t, "curl "+u, h, "miss", "origin")
			if !bytes.Equal(body, want) {
				t.Errorf("curl %s: body differs", u)
			}
			h, body = curl(t, d, u)
			wantXCache(t, "curl "+u, h, "hit", "local")
			if !bytes.Equal(body, want) {
				t.Errorf("curl %s: cached body differs", u)
			}
			h, body = curl(t, d, u, "-r", "1000-1999")
			wantXCache(t, "curl -r "+u, h, "hit", "local")
			if !bytes.Equal(body, want[1000:2000]) {
				t.Errorf("curl -r %s: %d bytes, not the range", u, len(body))
			}
		}
	})

	t.Run("tunnel", func(t *testing.T) {
		// 127.0.0.1 is not a target: curl talks TLS with the origin itself
		// through the tunnel, trusting the origin's CA, not the daemon's.
		cmd := exec.Command("curl", "-sS", "--fail", "-i", "--proxy", d.url, "--cacert", o.CAFile,
			"https://"+o.HTTPSAddr+"/plain/tunnelled.txt")
		cmd.Env = revEnv()
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "plain file tunnelled.txt") || strings.Contains(string(out), "X-Cache") {
			t.Errorf("curl through the tunnel: %v\n%s", err, out)
		}
		if v := d.metric(t, "gocacheplugin_revproxy_connects_total", "kind", "tunnel"); v != 1 {
			t.Errorf("tunnels: %v, want 1", v)
		}
	})

	t.Run("go", func(t *testing.T) {
		c := d.client(t)
		for _, u := range []string{httpsURL(o, "/blob/300000/go.bin"), httpURL(o, "/blob/300000/go-http.bin")} {
			resp, first := rpGet(t, c, u)
			wantXCache(t, "Go "+u, resp.Header, "miss", "origin")
			resp, second := rpGet(t, c, u)
			wantXCache(t, "Go "+u, resp.Header, "hit", "local")
			if len(first) != 300000 || !bytes.Equal(first, second) {
				t.Errorf("%s: %d then %d bytes", u, len(first), len(second))
			}
			resp, _ = rpGet(t, c, u, "If-None-Match", resp.Header.Get("Etag"))
			if resp.StatusCode != http.StatusNotModified {
				t.Errorf("%s If-None-Match: %s, want 304", u, resp.Status)
			}
		}
		// A short-lived response is kept in memory.
		u := httpsURL(o, "/short/s.txt")
		resp, _ := rpGet(t, c, u)
		wantXCache(t, "Go "+u, resp.Header, "miss", "origin")
		resp, _ = rpGet(t, c, u)
		wantXCache(t, "Go "+u, resp.Header, "hit", "memory")
		if n := o.Count("/short/s.txt"); n != 1 {
			t.Errorf("origin asked %d times for a short-lived file, want 1", n)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		const n = 10
		u := httpsURL(o, "/gate/ten.tgz")
		arrived := o.Arrival("/gate/ten.tgz")
		waitRE := regexp.MustCompile(`GET ` + regexp.QuoteMeta(u) + `: waiting for the fetch in progress`)
		want, _ := io.ReadAll(revproxytest.NewBlob("ten.tgz", 1<<20))
		c := d.client(t)
		var wg sync.WaitGroup
		errs := make([]error, n)
		first := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				if i > 0 {
					<-first
				}
				resp, err := c.Get(u)
				if err != nil {
					errs[i] = err
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && !bytes.Equal(body, want) {
					err = fmt.Errorf("body of %d bytes differs", len(body))
				}
				errs[i] = err
			})
		}
		<-arrived // the first request reached the origin, which holds it
		close(first)
		d.waitCount(t, waitRE, n-1) // the nine others wait for its fetch
		o.Release()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		}
		if c := o.Count("/gate/ten.tgz"); c != 1 {
			t.Errorf("origin asked %d times for one URL fetched by ten clients, want 1", c)
		}
	})
}

// rawRequest sends raw to the daemon's listener on a new connection and
// returns the status line and body of the response, or the error.
func (d *revDaemon) rawRequest(t *testing.T, raw string) (int, string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// objectPath is where the daemon's store keeps the response for u.
func (d *revDaemon) objectPath(u string) string {
	k := revproxy.KeyFor(u)
	return filepath.Join(d.dir, k.Kind, k.Name[:2], k.Name)
}

// TestRevProxyBadInput sends what a proxy must survive: CONNECTs it must
// refuse, requests for other hosts, malformed requests, and an origin
// that lies about Content-Length. Nothing is cached; the daemon serves on.
func TestRevProxyBadInput(t *testing.T) {
	o := startOrigin(t)
	d := startRevDaemon(t, o, t.TempDir(), nil, "--revproxy-tunnel=false", "--revproxy-timeout=2s")
	regPort, filesPort := revproxytest.Port(o.HTTPSAddr), revproxytest.Port(o.HTTPAddr)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := revproxytest.Port(ln.Addr().String())
	ln.Close()
	for _, c := range []struct {
		raw  string
		code int
		msg  string
	}{
		{"CONNECT elsewhere.test:443 HTTP/1.1\r\nHost: elsewhere.test:443\r\n\r\n", 403, "tunnelling to other hosts is off"},
		{"CONNECT " + o.HTTPSAddr + " HTTP/1.1\r\nHost: " + o.HTTPSAddr + "\r\n\r\n", 403, "not one of this proxy's targets"},
		{"GET http://elsewhere.test/x.tgz HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n", 502, "elsewhere.test is not one of this proxy's targets"},
		{"CONNECT registry.test HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400, "CONNECT wants host:port"},
		{"CONNECT registry.test:99999 HTTP/1.1\r\nHost: registry.test:99999\r\n\r\n", 400, "CONNECT wants host:port"},
		{"GET ftp://registry.test/x.tgz HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400, "absolute form"},
		// Other methods pass through, bodies and all.
		{"BREW http://files.test:" + filesPort + "/plain/brew HTTP/1.1\r\nHost: files.test\r\nContent-Length: 5\r\n\r\nhello", 200, "plain file brew"},
		// A target port where nothing listens: the origin fails.
		{"GET http://files.test:" + deadPort + "/x.tgz HTTP/1.1\r\nHost: files.test\r\n\r\n", 502, "the origin failed"},
		{"GARBAGE\r\n\r\n", 400, ""},
		{"GET http://registry.test:" + regPort + "/%zz HTTP/1.1\r\nHost: registry.test\r\n\r\n", 400, ""},
		{"GET http://registry.test:" + regPort + "/blob/1/x.bin HTTP/1.1\r\nHost: registry.test\r\nVia: 1.1 go-cache-plugin-revproxy\r\n\r\n", 508, "loop"},
	} {
		code, body, err := d.rawRequest(t, c.raw)
		if err != nil || code != c.code || !strings.Contains(body, c.msg) {
			t.Errorf("%q: %d %q (%v); want %d with %q", c.raw, code, body, err, c.code, c.msg)
		}
	}

	// Not TLS after a CONNECT to a target: the connection is dropped.
	conn, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "CONNECT registry.test:%s HTTP/1.1\r\nHost: registry.test\r\n\r\nthis is not a TLS client hello\r\n\r\n", regPort)
	rest, _ := io.ReadAll(conn)
	conn.Close()
	if !bytes.HasPrefix(rest, []byte("HTTP/1.1 200 ")) {
		t.Errorf("CONNECT then garbage: %q", rest)
	}

	// An origin that sends less than its Content-Length: the client
	// sees an error, and nothing is cached, twice over.
	for _, u := range []string{httpsURL(o, "/lie/200000/lie.tgz"), httpURL(o, "/lie/200000/lie.tgz")} {
		for range 2 {
			cmd := exec.Command("curl", "-sS", "--proxy", d.url, "--cacert", d.caFile(), "-o", os.DevNull, u)
			cmd.Env = revEnv()
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Errorf("curl %s succeeded on a short body:\n%s", u, out)
			}
		}
		if _, err := os.Stat(d.objectPath(u)); !os.IsNotExist(err) {
			t.Errorf("%s: cached after a short body: %v", u, err)
		}
	}
	if n := o.CountPrefix("/lie/"); n != 4 {
		t.Errorf("origin asked %d times for the lying URLs, want 4", n)
	}
	// Errors are passed on, never cached.
	c := d.client(t)
	for range 2 {
		resp, body := rpGet(t, c, httpsURL(o, "/stall/stall.tgz"))
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "did not answer in time") {
			t.Errorf("stalled origin: %s %q; want 504", resp.Status, body)
		}
		resp, _ = rpGet(t, c, httpsURL(o, "/status/500/err.tgz"))
		if resp.StatusCode != 500 {
			t.Errorf("origin error: %s; want 500 passed on", resp.Status)
		}
	}
	if n := o.Count("/status/500/err.tgz"); n != 2 {
		t.Errorf("origin asked %d times for an error, want 2 (not cached)", n)
	}
	if n := d.metric(t, "gocacheplugin_revproxy_fills_total", "result", "stored_disk"); n != 0 {
		t.Errorf("%v responses stored", n)
	}
	if tmp, err := store.TempFiles(d.dir); err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left: %q, %v", tmp, err)
	}

	// Still serving.
	resp, body := rpGet(t, c, httpsURL(o, "/blob/1000/after.bin"))
	if resp.StatusCode != 200 || len(body) != 1000 {
		t.Errorf("after the bad input: %s, %d bytes", resp.Status, len(body))
	}
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
}

// vmHWM returns the peak resident set of process pid, in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestRevProxyBigFile sends 1 GiB through the daemon: a client that gives
// up early leaves nothing cached, the next gets the whole file, and the
// daemon's memory stays bounded.
func TestRevProxyBigFile(t *testing.T) {
	const size = 1 << 30
	o := startOrigin(t)
	d := startRevDaemon(t, o, t.TempDir(), nil)
	u := httpURL(o, fmt.Sprintf("/blob/%d/big.bin", size))
	c := d.client(t)

	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 64<<20); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // mid-download
	c.Transport.(*http.Transport).CloseIdleConnections()
	d.waitCount(t, regexp.MustCompile(`not cached: the client went away`), 1)
	if _, err := os.Stat(d.objectPath(u)); !os.IsNotExist(err) {
		t.Errorf("an entry after the client went away: %v", err)
	}
	if tmp, err := store.TempFiles(d.dir); err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left after the abort: %q, %v", tmp, err)
	}

	resp, err = c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	wantXCache(t, "second client", resp.Header, "miss", "origin")
	n, err := compareStream(resp.Body, revproxytest.NewBlob("big.bin", size))
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("second client: %d bytes, %v", n, err)
	}
	d.waitCount(t, regexp.MustCompile(`stored 1073741824 bytes`), 1)
	fi, err := os.Stat(d.objectPath(u))
	if err != nil || fi.Size() <= size {
		t.Errorf("entry: %v, %v", fi, err)
	}
	resp, tail := rpGet(t, c, u, "Range", "bytes=-4096")
	wantXCache(t, "range of the big file", resp.Header, "hit", "local")
	want := make([]byte, 4096)
	b := revproxytest.NewBlob("big.bin", size)
	b.Seek(-4096, io.SeekEnd)
	io.ReadFull(b, want)
	if !bytes.Equal(tail, want) {
		t.Errorf("range of the big file differs")
	}
	hwm := vmHWM(t, d.cmd.Process.Pid)
	t.Logf("daemon peak RSS after 1 GiB + 64 MiB through it: %d MiB", hwm>>20)
	if hwm > 200<<20 {
		t.Errorf("daemon peak RSS %d MiB after a 1 GiB response; memory must not grow with response size", hwm>>20)
	}
	if v := d.metric(t, "gocacheplugin_revproxy_fills_total", "result", "aborted"); v != 1 {
		t.Errorf("aborted fills %v, want 1", v)
	}
}

// compareStream reads got and want to the end and reports how many bytes
// matched, or where they differ.
func compareStream(got, want io.Reader) (int64, error) {
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	var n int64
	for {
		k, err := io.ReadFull(got, a)
		if k > 0 {
			if _, werr := io.ReadFull(want, b[:k]); werr != nil {
				return n, fmt.Errorf("more bytes than expected")
			}
			if !bytes.Equal(a[:k], b[:k]) {
				return n, fmt.Errorf("bytes differ in the MiB at %d", n)
			}
			n += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if k2, _ := want.Read(b[:1]); k2 > 0 {
				return n, fmt.Errorf("short: %d bytes", n)
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// TestRevProxyRestart restarts the daemon on its cache dir (the CA and the
// entries survive) and starts another on an empty dir with the same bucket
// (the entries come from the bucket; a corrupt one is refused).
func TestRevProxyRestart(t *testing.T) {
	o := startOrigin(t)
	srv := s3test.Start(t)
	const bucket = "revproxy"
	if err := srv.CreateBucket(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	awsDir := t.TempDir()
	env := append(srv.Env(),
		"AWS_CONFIG_FILE="+filepath.Join(awsDir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(awsDir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
	)
	flags := []string{"--bucket=" + bucket, "--s3-endpoint-url=" + srv.Endpoint, "--s3-path-style", "--prefix=rp"}
	urls := []string{
		httpsURL(o, revproxytest.TarballPath("rp-leaf", "1.0.0")),
		httpURL(o, "/blob/100000/restart.bin"),
		httpsURL(o, "/blob/70000/corrupt.bin"),
	}
	paths := []string{revproxytest.TarballPath("rp-leaf", "1.0.0"), "/blob/100000/restart.bin", "/blob/70000/corrupt.bin"}
	bodies := map[string][]byte{}

	dir := t.TempDir()
	d := startRevDaemon(t, o, dir, env, flags...)
	c := d.client(t)
	for _, u := range urls {
		resp, body := rpGet(t, c, u)
		wantXCache(t, u, resp.Header, "miss", "origin")
		bodies[u] = body
	}
	ca1, _ := os.ReadFile(d.caFile())
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}

	// The bucket layout: <prefix>/revproxy/<xx>/<sha256(url)>.
	cli := srv.Client()
	for _, u := range urls {
		k := revproxy.KeyFor(u)
		if _, err := cli.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("rp/" + k.String())}); err != nil {
			t.Errorf("%s not in the bucket as rp/%s: %v", u, k, err)
		}
		if !strings.HasPrefix(k.String(), "revproxy/"+k.Name[:2]+"/") {
			t.Errorf("key %s", k)
		}
	}

	// Restart on the same dir: same CA, local hits.
	d = startRevDaemon(t, o, dir, env, flags...)
	d.waitCount(t, regexp.MustCompile(`revproxy: using the CA `), 1)
	if ca2, _ := os.ReadFile(d.caFile()); !bytes.Equal(ca1, ca2) {
		t.Errorf("the CA changed across a restart")
	}
	c = d.client(t)
	for _, u := range urls {
		resp, body := rpGet(t, c, u)
		wantXCache(t, u+" after a restart", resp.Header, "hit", "local")
		if !bytes.Equal(body, bodies[u]) {
			t.Errorf("%s: body differs after a restart", u)
		}
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}

	// Corrupt one object in the bucket: one byte of its body.
	corruptKey := "rp/" + revproxy.KeyFor(urls[2]).String()
	obj, err := cli.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(corruptKey)})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	data[100] ^= 0xff
	if _, err := cli.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(corruptKey), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}

	// Another worker, empty dir, same bucket.
	d2 := startRevDaemon(t, o, t.TempDir(), env, flags...)
	c2 := d2.client(t)
	for i, u := range urls {
		resp, body := rpGet(t, c2, u)
		if i == 2 {
			wantXCache(t, u+" (corrupt in the bucket)", resp.Header, "miss", "origin")
		} else {
			wantXCache(t, u+" from the bucket", resp.Header, "hit", "bucket")
		}
		if !bytes.Equal(body, bodies[u]) {
			t.Errorf("%s: body from the second worker differs", u)
		}
	}
	for i, p := range paths {
		want := 1
		if i == 2 {
			want = 2
		}
		if n := o.Count(p); n != want {
			t.Errorf("origin asked %d times for %s, want %d", n, p, want)
		}
	}
	if v := d2.metric(t, "gocacheplugin_store_corrupt_remote_total"); v != 1 {
		t.Errorf("corrupt remote objects: %v, want 1", v)
	}
}

// BenchmarkRevProxyCachedHTTPS fetches a cached 100 MiB file over HTTPS
// through the daemon, and reports the daemon's peak RSS.
func BenchmarkRevProxyCachedHTTPS(b *testing.B) {
	const size = 100 << 20
	o, err := revproxytest.Start(b.TempDir(), rpRegistry, rpFiles)
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	d := startRevDaemon(b, o, b.TempDir(), nil)
	c := d.client(b)
	u := httpsURL(o, fmt.Sprintf("/blob/%d/bench.bin", size))
	fetch := func(want string) {
		resp, err := c.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || resp.Header.Get("X-Cache") != want {
			b.Fatalf("GET: %d bytes, %v, X-Cache %q (want %q)", n, err, resp.Header.Get("X-Cache"), want)
		}
	}
	fetch("miss")
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		fetch("hit")
	}
	b.StopTimer()
	b.ReportMetric(float64(vmHWM(b, d.cmd.Process.Pid))/(1<<20), "daemon-peak-RSS-MiB")
}

// BenchmarkRevProxyNpm installs a project of npmBenchPackages packages with
// an empty npm cache, alternately from the local test origin directly and
// through the warm daemon, and reports the time of each and their ratio.
func BenchmarkRevProxyNpm(b *testing.B) {
	o, err := revproxytest.Start(b.TempDir(), rpRegistry, rpFiles)
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	deps := map[string]string{}
	for i := range npmBenchPackages {
		name := fmt.Sprintf("bench-pkg-%03d", i)
		var pd map[string]string
		if i%10 != 9 && i+1 < npmBenchPackages {
			pd = map[string]string{fmt.Sprintf("bench-pkg-%03d", i+1): "^1.0.0"}
		}
		if err := o.AddPackage(name, "1.0.0", pd); err != nil {
			b.Fatal(err)
		}
		deps[name] = "1.0.0"
	}
	d := startRevDaemon(b, o, b.TempDir(), nil)
	proxied := []string{"HTTPS_PROXY=" + d.url, "NODE_EXTRA_CA_CERTS=" + d.caFile()}
	direct := []string{"NODE_EXTRA_CA_CERTS=" + o.CAFile}
	viaProxy := httpsURL(o, "/")
	straight := "https://" + o.HTTPSAddr + "/"
	install := func(registry string, env []string) time.Duration {
		start := time.Now()
		npmInstallDeps(b, registry, deps, env)
		return time.Since(start)
	}
	install(viaProxy, proxied) // warm the cache
	tarballs := o.CountPrefix("/bench-pkg-")
	var tDirect, tProxy time.Duration
	b.ResetTimer()
	for b.Loop() {
		tDirect += install(straight, direct)
		tProxy += install(viaProxy, proxied)
	}
	b.StopTimer()
	b.ReportMetric(tDirect.Seconds()/float64(b.N), "direct-s/install")
	b.ReportMetric(tProxy.Seconds()/float64(b.N), "proxy-s/install")
	b.ReportMetric(tProxy.Seconds()/tDirect.Seconds(), "proxy/direct")
	b.Logf("%d packages; origin requests for them: %d while warming, %d in all", npmBenchPackages, tarballs, o.CountPrefix("/bench-pkg-"))
}

const npmBenchPackages = 300

// npmInstallDeps installs a project depending on deps from registry with
// an empty npm cache.
func npmInstallDeps(tb testing.TB, registry string, deps map[string]string, extraEnv []string) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "rp-npm-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(dir)
	pj, _ := json.Marshal(map[string]any{"name": "rp-bench", "version": "1.0.0", "private": true, "dependencies": deps})
	if err := os.WriteFile(filepath.Join(dir, "package.json"), pj, 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("npm", "install", "--registry", registry, "--cache", filepath.Join(dir, ".npm-cache"),
		"--no-audit", "--no-fund", "--prefer-online", "--no-update-notifier", "--loglevel=warn", "--fetch-retries=0")
	cmd.Dir = dir
	cmd.Env = append(revEnv("HOME="+dir, "NPM_CONFIG_USERCONFIG="+filepath.Join(dir, ".npmrc-user"),
		"NPM_CONFIG_GLOBALCONFIG="+filepath.Join(dir, ".npmrc-global")), extraEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("npm install: %v\n%s", err, out)
	}
}
