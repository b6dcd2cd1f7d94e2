package revproxy

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/revproxytest"
)

func TestDialPolicyCheck(t *testing.T) {
	local := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	def := &DialPolicy{LocalAddrs: local}
	allow, err := ParseAddrRules([]string{"127.0.0.1:8080", "169.254.0.0/16", "[::1]:443", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	allowing := &DialPolicy{Allow: allow, LocalAddrs: local}
	for _, c := range []struct {
		addr     string
		policy   *DialPolicy
		reason   string // "" if allowed
		allowing bool   // allowed by the rules above
	}{
		{"127.0.0.1:80", def, "loopback", false},
		{"127.0.0.1:8080", def, "loopback", true},
		{"127.9.9.9:8080", def, "loopback", false},
		{"[::1]:443", def, "loopback", true},
		{"[::1]:80", def, "loopback", false},
		{"[::ffff:127.0.0.1]:8080", def, "loopback", true}, // IPv4-mapped: still loopback
		{"169.254.169.254:80", def, "link-local", true},
		{"[fe80::1%eth0]:80", def, "link-local", false},
		{"0.0.0.0:80", def, "unspecified", false},
		{"[::]:80", def, "unspecified", false},
		{"224.0.0.1:80", def, "multicast", false},
		{"[ff02::1]:80", def, "multicast", false},
		{"255.255.255.255:80", def, "broadcast", false},
		{"[fd00:ec2::254]:80", def, "metadata", false},
		{"10.1.2.3:80", def, "an address of this host", true},
		{"[2001:db8::7]:80", def, "an address of this host", false},
		{"10.9.9.9:80", def, "", true},          // the internal network: fine
		{"192.168.1.1:443", def, "", true},      // likewise
		{"[2001:db8::8]:443", def, "", true},    // not this host's
		{"93.184.215.14:443", def, "", true},    // the internet
		{"[2606:4700::1]:443", def, "", true},   // likewise
		{"100.100.100.200:80", def, "", true},   // not refused by default
		{"172.17.0.1:80", def, "", true},        // not in LocalAddrs
		{"10.1.2.4:80", allowing, "", true},     // the rules do not refuse
		{"127.0.0.1:8081", allowing, "", false}, // the port differs
	} {
		ap := netip.MustParseAddrPort(c.addr)
		err := c.policy.Check(ap)
		switch {
		case c.reason == "" && err != nil && c.policy == def:
			t.Errorf("%s: refused by default: %v", c.addr, err)
		case c.reason != "" && c.policy == def:
			var re *RefusedAddrError
			if !errors.As(err, &re) || !strings.Contains(re.Reason, c.reason) || !strings.Contains(err.Error(), "--revproxy-allow-local") {
				t.Errorf("%s: %v; want refused as %q", c.addr, err, c.reason)
			}
		}
		if err := allowing.Check(ap); (err == nil) != c.allowing {
			t.Errorf("%s with rules %v: %v; want allowed %v", c.addr, allow, err, c.allowing)
		}
	}

	// Not knowing the host's addresses, refuse what could be one.
	unknown := &DialPolicy{LocalAddrs: func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }}
	if err := unknown.Check(netip.MustParseAddrPort("10.0.0.1:80")); err == nil || !strings.Contains(err.Error(), "no netlink") {
		t.Errorf("unknown local addresses: %v", err)
	}

	// The real interface list: loopback is among them, and refused.
	real := &DialPolicy{}
	addrs, err := InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if err := real.Check(netip.AddrPortFrom(a, 443)); err == nil {
			t.Errorf("this host's address %s allowed", a)
		}
	}
}

func TestParseAddrRules(t *testing.T) {
	rules, err := ParseAddrRules([]string{" 127.0.0.1 ", "127.0.0.1:9000", "::1", "[::1]:9000", "169.254.0.0/16", "[fe80::/10]:80", "10.0.0.9/8", "", "::ffff:127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rules {
		got = append(got, r.String())
	}
	want := "127.0.0.1 127.0.0.1:9000 ::1 [::1]:9000 169.254.0.0/16 [fe80::/10]:80 10.0.0.0/8 127.0.0.2"
	if strings.Join(got, " ") != want {
		t.Errorf("parsed %q, want %q", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"localhost", "localhost:80", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "[::1", "[::1]80", "[::1]:", "10.0.0.0/33", "http://127.0.0.1/", "::ffff:127.0.0.0/104"} {
		if _, err := ParseAddrRules([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseAddrRules(%q): %v; want an error naming it", bad, err)
		}
	}
}

// TestProxyRefusesLocal runs the proxy on the real dial path (no test
// dial address): a target whose name resolves to loopback, a tunnel to a
// loopback address and one to a name resolving to it are all refused
// with 403, and nothing reaches the origin; allowed by a rule, they work.
func TestProxyRefusesLocal(t *testing.T) {
	origin, err := revproxytest.Start(t.TempDir(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(origin.Close)
	port := revproxytest.Port(origin.HTTPAddr)
	rules, err := ParseAddrRules([]string{"127.0.0.1:" + port})
	if err != nil {
		t.Fatal(err)
	}
	// A request through a tunnel, which the origin answers and then
	// closes: the CONNECT's response "body" is the origin's response.
	inner := "GET /plain/t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
	for _, c := range []struct {
		target string   // the proxy's target
		reqs   []string // refused by default, allowed by the rule
		want   string   // in the allowed responses
	}{
		// A target whose name resolves to loopback.
		{"localhost", []string{"GET http://localhost:" + port + "/plain/a HTTP/1.1\r\nHost: localhost\r\n\r\n"}, "plain file a"},
		// Tunnels to loopback, by address and by name.
		{"registry.test", []string{
			"CONNECT 127.0.0.1:" + port + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + inner,
			"CONNECT localhost:" + port + " HTTP/1.1\r\nHost: localhost\r\n\r\n" + inner,
			"CONNECT [::ffff:127.0.0.1]:" + port + " HTTP/1.1\r\nHost: x\r\n\r\n" + inner,
		}, "plain file t"},
	} {
		before := origin.CountPrefix("/")
		h := newHarness(t, harnessOpts{origin: origin, targets: []string{c.target}, realDial: true, policy: &DialPolicy{}})
		for _, req := range c.reqs {
			resp, body := h.rawProxy(req)
			if resp.StatusCode != 403 || !strings.Contains(body, "a loopback address") || !strings.Contains(body, "--revproxy-allow-local") {
				t.Errorf("%q: %s %q; want 403, refused as loopback", req, resp.Status, body)
			}
		}
		if n := origin.CountPrefix("/") - before; n != 0 {
			t.Errorf("origin reached %d times", n)
		}
		if s := h.proxy.Stats(); s.RefusedLocal != int64(len(c.reqs)) || s.Tunnels != 0 {
			t.Errorf("stats: %d refused as local, %d tunnels; want %d, 0", s.RefusedLocal, s.Tunnels, len(c.reqs))
		}

		h = newHarness(t, harnessOpts{origin: origin, targets: []string{c.target}, realDial: true, policy: &DialPolicy{Allow: rules}})
		for _, req := range c.reqs {
			resp, body := h.rawProxy(req)
			if resp.StatusCode != 200 || !strings.Contains(body, c.want) {
				t.Errorf("allowed: %q: %s %q", req, resp.Status, body)
			}
		}
		if s := h.proxy.Stats(); s.RefusedLocal != 0 {
			t.Errorf("stats: %d refused as local with the rule", s.RefusedLocal)
		}
	}
}

func TestWriteBundle(t *testing.T) {
	origin, err := revproxytest.Start(t.TempDir(), "registry.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(origin.Close)
	t.Setenv("SSL_CERT_FILE", origin.CAFile) // the "system" roots
	t.Setenv("SSL_CERT_DIR", "")
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := WriteBundle(ca)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(b.File)
	if err != nil || !bytes.Equal(onDisk, b.PEM) || filepath.Dir(b.File) != filepath.Dir(ca.CertFile) {
		t.Fatalf("bundle %s: %v; %d bytes on disk, %d in memory", b.File, err, len(onDisk), len(b.PEM))
	}
	if fi, err := os.Stat(b.File); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("bundle mode: %v %v", fi, err)
	}
	var subjects []string
	for rest := onDisk; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, c.Subject.String())
	}
	roots, _ := os.ReadFile(origin.CAFile)
	rc, _ := pem.Decode(roots)
	rcert, _ := x509.ParseCertificate(rc.Bytes)
	if len(subjects) != 2 || subjects[0] != rcert.Subject.String() || subjects[1] != ca.Cert.Subject.String() {
		t.Errorf("bundle holds %q; want the system's root %q and the CA %q", subjects, rcert.Subject, ca.Cert.Subject)
	}
	if len(b.Sources) != 1 || b.Sources[0] != origin.CAFile {
		t.Errorf("sources %q", b.Sources)
	}

	t.Setenv("SSL_CERT_FILE", filepath.Join(t.TempDir(), "missing.pem"))
	if _, err := WriteBundle(ca); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("missing roots: %v", err)
	}
}
