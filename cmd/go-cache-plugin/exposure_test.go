package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/revproxytest"
)

// onAllInterfaces points the test's clients of a daemon listening on all
// interfaces at 127.0.0.1.
func (d *revDaemon) onAllInterfaces(t *testing.T) {
	t.Helper()
	u := strings.TrimPrefix(d.url, "http://")
	_, port, err := net.SplitHostPort(u)
	if err != nil {
		t.Fatalf("listener %q: %v", d.url, err)
	}
	host, _, _ := net.SplitHostPort(u)
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		t.Fatalf("listener %s is not on all interfaces", d.url)
	}
	d.addr = "127.0.0.1:" + port
	d.url = "http://" + d.addr
	d.httpURL = d.url
}

// curlCode runs curl through proxy for u and returns the status of the
// CONNECT (with -p or for https), or of the response, and curl's output.
func curlCode(t *testing.T, proxy, u string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--proxy", proxy, "-o", os.DevNull, "-w", "%{http_connect} %{http_code}", u}, args...)...)
	cmd.Env = revEnv()
	out, _ := cmd.CombinedOutput()
	s := string(out)
	codes := s
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		codes = s[i+1:]
	}
	connect, code, _ := strings.Cut(strings.TrimSpace(codes), " ")
	if connect != "000" {
		return connect, s
	}
	return code, s
}

// hostAddr returns an IPv4 address of one of this host's non-loopback
// interfaces, or "".
func hostAddr(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip.Unmap().String()
			}
		}
	}
	return ""
}

// TestRevProxyExposure runs daemons on all interfaces (--http=0.0.0.0:0):
// with tunnels on, nothing is relayed to loopback (by address or by a
// name that resolves to it) nor to this host's own address, while the
// targets and a loopback destination named by --revproxy-allow-local
// work; the token is enforced on the proxy and the listener (407 and 401
// without it, Bearer and Basic forms with it, /healthz open); pprof is
// off unless --http-pprof; tunnels are off by default; npm with a cafile
// installs through the proxy with the CA bundle.
func TestRevProxyExposure(t *testing.T) {
	o := startOrigin(t)
	httpPort, httpsPort := revproxytest.Port(o.HTTPAddr), revproxytest.Port(o.HTTPSAddr)
	const token = "t0ken-for-the-test"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startRevDaemon(t, o, t.TempDir(), nil, "--http=0.0.0.0:0", "--http-token-file="+tokenFile,
		"--revproxy-tunnel=true", "--revproxy-allow-local=127.0.0.1:"+httpsPort)
	d.waitCount(t, regexp.MustCompile(`/debug/pprof/ is off \(--http-pprof\)`), 1)
	d.onAllInterfaces(t)
	bare := d.url
	// Credentials in the URLs: Go's client and curl send them as Basic
	// Authorization, or Proxy-Authorization for a proxy URL.
	d.url = "http://ci:" + token + "@" + d.addr
	d.httpURL = d.url

	t.Run("token", func(t *testing.T) {
		blob := httpsURL(o, "/blob/5000/token.bin")
		if code, out := curlCode(t, bare, blob, "--cacert", d.caFile()); code != "407" {
			t.Errorf("CONNECT without a token: %s, want 407\n%s", code, out)
		}
		if code, out := curlCode(t, "http://ci:wrong@"+d.addr, httpURL(o, "/blob/5000/token.bin")); code != "407" {
			t.Errorf("plain request with a wrong token: %s, want 407\n%s", code, out)
		}
		if code, out := curlCode(t, bare, blob, "--cacert", d.caFile(), "--proxy-header", "Proxy-Authorization: Bearer "+token); code != "200" {
			t.Errorf("CONNECT with a Bearer token: %s, want 200\n%s", code, out)
		}
		for _, c := range []struct {
			path string
			args []string
			code string
		}{
			{"/healthz", nil, "200"},
			{"/metrics", nil, "401"},
			{"/", nil, "401"},
			{"/metrics", []string{"-H", "Authorization: Bearer nope"}, "401"},
			{"/metrics", []string{"-H", "Authorization: Bearer " + token}, "200"},
			{"/metrics", []string{"-u", "ci:" + token}, "200"},
			{"/revproxy/ca.pem", []string{"-u", "ci:" + token}, "200"},
			{"/debug/pprof/", []string{"-u", "ci:" + token}, "404"},
			{"/debug/pprof/cmdline", []string{"-u", "ci:" + token}, "404"},
		} {
			args := append([]string{"-sS", "-o", os.DevNull, "-w", "%{http_code}", "http://" + d.addr + c.path}, c.args...)
			cmd := exec.Command("curl", args...)
			cmd.Env = revEnv()
			out, _ := cmd.CombinedOutput()
			if string(out) != c.code {
				t.Errorf("curl %s %q: %s, want %s", c.path, c.args, out, c.code)
			}
		}
	})

	t.Run("targets", func(t *testing.T) {
		// Through the proxy URL with the token as password (Basic).
		for _, u := range []string{httpsURL(o, "/blob/100000/target.bin"), httpURL(o, "/blob/100000/target-http.bin")} {
			want, _ := io.ReadAll(revproxytest.NewBlob(filepath.Base(u), 100000))
			h, body := curl(t, d, u)
			wantXCache(t, "curl "+u, h, "miss", "origin")
			if !bytes.Equal(body, want) {
				t.Errorf("curl %s: body differs", u)
			}
		}
	})

	t.Run("local", func(t *testing.T) {
		refused := []string{"127.0.0.1:" + httpPort, "localhost:" + httpPort, "[::ffff:127.0.0.1]:" + httpPort}
		if a := hostAddr(t); a != "" {
			refused = append(refused, a+":"+httpPort)
		} else {
			t.Logf("no non-loopback interface address: the host's own address is not tried")
		}
		for _, hp := range refused {
			code, out := curlCode(t, d.url, "http://"+hp+"/plain/local.txt", "-p")
			if code != "403" {
				t.Errorf("CONNECT %s: %s, want 403\n%s", hp, code, out)
			}
		}
		reasons := regexp.MustCompile(`revproxy: CONNECT (\S+): refused to connect to \S+: (a loopback address|an address of this host)`)
		d.waitCount(t, reasons, len(refused))
		if n := o.Count("/plain/local.txt"); n != 0 {
			t.Errorf("the origin was reached %d times through refused tunnels", n)
		}
		if v := d.metric(t, "gocacheplugin_revproxy_refused_local_total"); v != float64(len(refused)) {
			t.Errorf("refused_local_total %v, want %d", v, len(refused))
		}

		// Named by --revproxy-allow-local: tunnelled, the client talking
		// TLS with the origin itself.
		cmd := exec.Command("curl", "-sS", "--fail", "-i", "--proxy", d.url, "--cacert", o.CAFile,
			"https://127.0.0.1:"+httpsPort+"/plain/allowed.txt")
		cmd.Env = revEnv()
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "plain file allowed.txt") || strings.Contains(string(out), "X-Cache") {
			t.Errorf("curl through an allowed tunnel: %v\n%s", err, out)
		}
		if v := d.metric(t, "gocacheplugin_revproxy_connects_total", "kind", "tunnel"); v != 1 {
			t.Errorf("tunnels: %v, want 1", v)
		}
	})

	t.Run("npm-cafile", func(t *testing.T) {
		bundle := filepath.Join(d.dir, "revproxy", "bundle.pem")
		onDisk, err := os.ReadFile(bundle)
		if err != nil {
			t.Fatal(err)
		}
		ca, _ := os.ReadFile(d.caFile())
		roots, _ := os.ReadFile(o.CAFile) // the daemon's SSL_CERT_FILE: its "system" roots
		if !bytes.HasSuffix(onDisk, ca) || !bytes.Contains(onDisk, bytes.TrimSpace(roots)) {
			t.Errorf("%s does not hold the system's roots and the CA", bundle)
		}
		resp, err := http.Get(d.httpURL + "/revproxy/bundle.pem")
		if err != nil {
			t.Fatal(err)
		}
		served, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(served, onDisk) {
			t.Errorf("/revproxy/bundle.pem: %s, %d bytes; the file has %d", resp.Status, len(served), len(onDisk))
		}
		// npm with a cafile ignores NODE_EXTRA_CA_CERTS: the bundle is
		// what it trusts, and the proxy URL carries the token.
		npmInstall(t, d, httpsURL(o, "/"), "NODE_EXTRA_CA_CERTS=", "npm_config_cafile="+bundle)
		if n := o.Count(revproxytest.TarballPath("rp-leaf", "1.0.0")); n != 1 {
			t.Errorf("origin served rp-leaf's tarball %d times, want 1 (through the proxy)", n)
		}
	})

	// No token, --http-pprof, tunnels left at their default (off on this
	// listener).
	d2 := startRevDaemon(t, o, t.TempDir(), nil, "--http=0.0.0.0:0", "--http-pprof")
	d2.waitCount(t, regexp.MustCompile(`reachable beyond this host without a token`), 1)
	d2.onAllInterfaces(t)
	if code, body := d2.httpGet(t, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ with --http-pprof: %d", code)
	}
	if code, out := curlCode(t, d2.url, "https://127.0.0.1:"+httpsPort+"/plain/t.txt", "--cacert", o.CAFile); code != "403" {
		t.Errorf("CONNECT to a non-target with tunnels at their default on 0.0.0.0: %s, want 403\n%s", code, out)
	}
	d2.waitCount(t, regexp.MustCompile(`CONNECT 127\.0\.0\.1:\d+: refused: not a target and tunnelling is off`), 1)
}
