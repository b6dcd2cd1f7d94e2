package revproxy

import (
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultRules(t *testing.T) {
	rules, err := ParseRules([]string{"default"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/left-pad/-/left-pad-1.3.0.tgz":                            true,
		"/@scope/pkg/-/pkg-1.0.0.tgz":                               true,
		"/left-pad":                                                 false,
		"/left-pad/-/sub/left-pad-1.3.0.tgz":                        false,
		"/packages/ab/cd/ef/requests-2.31.0-py3-none-any.whl":       true,
		"/packages/source/r/requests/requests-2.31.0.tar.gz":        true,
		"/simple/requests/":                                         false,
		"/debian/pool/main/h/hello/hello_2.10-3_amd64.deb":          true,
		"/debian/dists/stable/InRelease":                            false,
		"/debian/dists/stable/main/binary-amd64/Packages.gz":        false,
		"/crates/serde/serde-1.0.0.crate":                           true,
		"/api/v1/crates/serde/1.0.0/download":                       true,
		"/maven2/org/example/lib/1.0/lib-1.0.jar":                   true,
		"/maven2/org/example/lib/1.0-SNAPSHOT/lib-1.0-SNAPSHOT.jar": false,
		"/maven2/org/example/lib/maven-metadata.xml":                false,
		"/index.html": false,
	} {
		if got, rule := matchRules(rules, path); got != want {
			t.Errorf("%s: cache %v (rule %q), want %v", path, got, rule, want)
		}
	}
}

func TestParseRules(t *testing.T) {
	rules, err := ParseRules([]string{" /a/*.bin ", "", "!/a/x*", "default", "**.nupkg"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/a/b.bin":       true,
		"/a/b/c.bin":     false,
		"/a/x.bin":       true, // the first matching rule decides
		"/z/p.1.0.nupkg": true,
		"/a/.bin":        true,
		"/a(b)/[c].bin":  false,
		"/pkg/-/p-1.tgz": true,
	} {
		if got, _ := matchRules(rules, path); got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	for _, bad := range []string{"a.tgz", "!", "!x"} {
		if _, err := ParseRules([]string{bad}); err == nil {
			t.Errorf("ParseRules(%q) succeeded", bad)
		}
	}
	// Regular expression syntax in a pattern is literal.
	rules, _ = ParseRules([]string{"/a(b)/[c].bin"})
	if ok, _ := matchRules(rules, "/a(b)/[c].bin"); !ok {
		t.Errorf("literal pattern does not match itself")
	}
}

func TestTargets(t *testing.T) {
	tg, err := parseTargets([]string{"Registry.Test", " files.test. ", "*.mirror.test"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"registry.test": true, "REGISTRY.test.": true, "files.test": true,
		"a.mirror.test": true, "a.b.mirror.test": true, "mirror.test": false,
		"other.test": false, "registry.test.evil": false, "": false,
	} {
		if got := tg.match(host); got != want {
			t.Errorf("match(%q) = %v, want %v", host, got, want)
		}
	}
	for _, bad := range [][]string{nil, {""}, {"https://x.test"}, {"x.test:443"}, {"a.*.test"}, {"*."}} {
		if err := CheckTargets(bad); err == nil {
			t.Errorf("CheckTargets(%q) succeeded", bad)
		}
	}
}

func TestDecide(t *testing.T) {
	rules, _ := ParseRules(DefaultRules)
	p := &Proxy{rules: rules, longMaxAge: DefaultLongMaxAge, memMaxAge: time.Hour, mem: newMemCache(1 << 20)}
	for _, c := range []struct {
		path   string
		query  bool
		status int
		reqHdr []string
		hdr    []string
		want   storage
		ttl    time.Duration
	}{
		{"/x.bin", false, 200, nil, []string{"Cache-Control", "public, max-age=31536000, immutable"}, storeDisk, 0},
		{"/x.bin", false, 200, nil, []string{"Cache-Control", "max-age=2592000"}, storeDisk, 0},
		{"/x.bin", false, 200, nil, []string{"Cache-Control", "max-age=2592000", "Age", "10"}, storeMemory, time.Hour},
		{"/p/-/p-1.tgz", false, 200, nil, nil, storeDisk, 0},
		{"/p/-/p-1.tgz", true, 200, nil, nil, storeNone, 0},
		{"/p/-/p-1.tgz", false, 200, nil, []string{"Cache-Control", "no-store"}, storeNone, 0},
		{"/p/-/p-1.tgz", false, 200, nil, []string{"Cache-Control", "private, max-age=99999999"}, storeNone, 0},
		{"/p/-/p-1.tgz", false, 200, nil, []string{"Set-Cookie", "a=b"}, storeNone, 0},
		{"/p/-/p-1.tgz", false, 200, nil, []string{"Vary", "*"}, storeNone, 0},
		{"/p/-/p-1.tgz", false, 404, nil, nil, storeNone, 0},
		{"/p/-/p-1.tgz", false, 206, nil, nil, storeNone, 0},
		{"/p/-/p-1.tgz", false, 200, []string{"Authorization", "Bearer x"}, nil, storeNone, 0},
		{"/p/-/p-1.tgz", false, 200, []string{"Authorization", "Bearer x"}, []string{"Cache-Control", "public"}, storeDisk, 0},
		{"/p", false, 200, nil, []string{"Cache-Control", "public, max-age=300"}, storeMemory, 300 * time.Second},
		{"/p", false, 200, nil, []string{"Cache-Control", "public, max-age=300", "Age", "100"}, storeMemory, 200 * time.Second},
		{"/p", false, 200, nil, []string{"Cache-Control", "s-maxage=20, max-age=300"}, storeMemory, 20 * time.Second},
		{"/p", false, 200, nil, []string{"Cache-Control", "max-age=300, no-cache"}, storeNone, 0},
		{"/p", false, 200, nil, []string{"Cache-Control", "max-age=0"}, storeNone, 0},
		{"/p", false, 200, nil, []string{"Cache-Control", "max-age=junk"}, storeNone, 0},
		{"/p", false, 200, nil, []string{"Cache-Control", "max-age=99999999999999999999999"}, storeDisk, 0},
		{"/p", false, 200, nil, nil, storeNone, 0},
	} {
		req, _ := http.NewRequest("GET", "https://registry.test"+c.path, nil)
		for i := 0; i+1 < len(c.reqHdr); i += 2 {
			req.Header.Set(c.reqHdr[i], c.reqHdr[i+1])
		}
		resp := &http.Response{StatusCode: c.status, Header: http.Header{}}
		for i := 0; i+1 < len(c.hdr); i += 2 {
			resp.Header.Add(c.hdr[i], c.hdr[i+1])
		}
		got, ttl, why := p.decide(req, c.path, c.query, resp)
		if got != c.want || ttl != c.ttl {
			t.Errorf("%s %v %d %q: %v %v (%s), want %v %v", c.path, c.reqHdr, c.status, c.hdr, got, ttl, why, c.want, c.ttl)
		}
	}
}

func TestServable(t *testing.T) {
	m := &Meta{Header: map[string]string{"Content-Encoding": "gzip"}, Vary: map[string]string{"Accept": "application/json"}}
	req := func(hdr ...string) *http.Request {
		r, _ := http.NewRequest("GET", "https://registry.test/", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	for _, c := range []struct {
		r    *http.Request
		want bool
	}{
		{req("Accept", "application/json", "Accept-Encoding", "gzip, br"), true},
		{req("Accept", "application/json", "Accept-Encoding", "*"), true},
		{req("Accept", "application/json", "Accept-Encoding", "br"), false},
		{req("Accept", "application/json", "Accept-Encoding", "gzip;q=0"), false},
		{req("Accept", "application/json"), false},
		{req("Accept", "text/html", "Accept-Encoding", "gzip"), false},
	} {
		if got := servable(m, c.r); got != c.want {
			t.Errorf("servable(%v) = %v, want %v", c.r.Header, got, c.want)
		}
	}
}

func TestMemCacheBounded(t *testing.T) {
	c := newMemCache(800) // entries up to 100 bytes
	now := time.Now()
	for i := range 20 {
		c.put(&memEntry{key: string(rune('a' + i)), body: make([]byte, 100), expires: now.Add(time.Minute)})
	}
	if n, b := c.usage(); n != 8 || b != 800 {
		t.Errorf("usage %d entries, %d bytes; want 8, 800", n, b)
	}
	if _, ok := c.get("a", now); ok {
		t.Errorf("the oldest entry was not evicted")
	}
	if _, ok := c.get("t", now); !ok {
		t.Errorf("the newest entry is missing")
	}
	if _, ok := c.get("t", now.Add(time.Minute)); ok {
		t.Errorf("an expired entry was served")
	}
	c.put(&memEntry{key: "big", body: make([]byte, 101), expires: now.Add(time.Minute)})
	if _, ok := c.get("big", now); ok {
		t.Errorf("an entry over the per-entry bound was kept")
	}
}

func TestCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "revproxy")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Created || !ca.Cert.IsCA {
		t.Errorf("new CA: created %v, IsCA %v", ca.Created, ca.Cert.IsCA)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || !again.Cert.Equal(ca.Cert) {
		t.Errorf("second load made a new CA")
	}
	// A leaf verifies against the CA for its name only.
	leaves, err := newLeafCerts(again)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := leaves.get("registry.test")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "registry.test", Roots: pool}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: pool}); err == nil {
		t.Errorf("leaf verifies for another name")
	}
	if same, _ := leaves.get("registry.test"); same != leaf {
		t.Errorf("leaf not kept")
	}
	ip, err := leaves.get("127.0.0.1")
	if err != nil || len(ip.Leaf.IPAddresses) != 1 {
		t.Errorf("IP leaf: %v, %v", ip, err)
	}

	// A key others can read is made private; a lone key is an error.
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o644)
	if _, err := LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, CAKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v after load, want 0600", fi.Mode().Perm())
	}
	os.Remove(filepath.Join(dir, CACertFile))
	if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "remove") {
		t.Errorf("key without certificate: %v", err)
	}
	os.WriteFile(filepath.Join(dir, CACertFile), []byte("junk"), 0o644)
	if _, err := LoadOrCreateCA(dir); err == nil {
		t.Errorf("junk certificate accepted")
	}
}

func TestInstallCA(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	trust := t.TempDir()
	ts := TrustStore{Dir: trust, Name: "test-ca.crt", Command: []string{"true"}, Geteuid: func() int { return 1000 }}
	if _, err := ts.Install(ca); err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("as a user: %v, want an error saying it needs root", err)
	}
	ts.Geteuid = func() int { return 0 }
	msg, err := ts.Install(ca)
	if err != nil || !strings.Contains(msg, "wrote "+filepath.Join(trust, "test-ca.crt")) {
		t.Errorf("install: %q, %v", msg, err)
	}
	if b, _ := os.ReadFile(filepath.Join(trust, "test-ca.crt")); string(b) != string(ca.CertPEM) {
		t.Errorf("installed file differs from the CA")
	}
	if msg, err := ts.Install(ca); err != nil || !strings.Contains(msg, "already") {
		t.Errorf("second install: %q, %v", msg, err)
	}
	ts.Dir = filepath.Join(trust, "missing")
	if _, err := ts.Install(ca); err == nil || !strings.Contains(err.Error(), "Debian/Ubuntu") {
		t.Errorf("no trust store dir: %v", err)
	}
	ts.Dir, ts.Name, ts.Command = trust, "other.crt", []string{"false"}
	if _, err := ts.Install(ca); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("failing update command: %v", err)
	}
}
