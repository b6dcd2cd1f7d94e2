package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
	"github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// revProxyFlags are the serve flags of the reverse proxy (lib/revproxy).
type revProxyFlags struct {
	Hosts      string
	Tunnel     optBool // default: on for a loopback listener only
	AllowLocal string
	InstallCA  bool
	Rules      string
	Memory     byteSize
	Timeout    time.Duration

	rules      []revproxy.Rule     // parsed by check
	allowLocal []revproxy.AddrRule // parsed by check

	loopbackListener bool // set by runServe: the --http listener is loopback only
}

// tunnel reports whether CONNECTs to other hosts are tunnelled: as
// --revproxy-tunnel says, else only on a loopback listener.
func (m *revProxyFlags) tunnel() bool {
	if m.Tunnel.set {
		return m.Tunnel.v
	}
	return m.loopbackListener
}

// optBool is a boolean flag that knows whether it was set.
type optBool struct{ v, set bool }

func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) String() string {
	if b == nil || !b.set {
		return ""
	}
	return strconv.FormatBool(b.v)
}
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	b.v, b.set = v, true
	return nil
}

// revProxyEnv lists the environment variables of the reverse proxy flags.
var revProxyEnv = []envVar{
	{"revproxy", "GOCACHE_REVPROXY"},
	{"revproxy-tunnel", "GOCACHE_REVPROXY_TUNNEL"},
	{"revproxy-allow-local", "GOCACHE_REVPROXY_ALLOW_LOCAL"},
	{"revproxy-rules", "GOCACHE_REVPROXY_RULES"},
	{"revproxy-memory", "GOCACHE_REVPROXY_MEMORY"},
	{"revproxy-timeout", "GOCACHE_REVPROXY_TIMEOUT"},
	{"install-ca", "GOCACHE_INSTALL_CA"},
}

func (m *revProxyFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&m.Hosts, "revproxy", "", "with --http: be a caching HTTP(S) proxy for these hosts (comma-separated; *.example.com for subdomains)")
	fs.Var(&m.Tunnel, "revproxy-tunnel", "let CONNECTs to hosts other than the --revproxy targets through, uncached (false: refuse them with 403); default: true on a loopback --http listener, false on others")
	fs.StringVar(&m.AllowLocal, "revproxy-allow-local", "", "local destinations the proxy may connect to all the same (comma-separated IP addresses or prefixes, each with an optional port: 127.0.0.1:8080,10.0.0.5,[::1]:443); loopback, link-local and this host's own addresses are refused otherwise")
	fs.StringVar(&m.Rules, "revproxy-rules", "default", `path rules marking responses immutable (comma-separated globs; "default" for the built-in ones, "!" to exclude); see "help revproxy"`)
	m.Memory = revproxy.DefaultMemoryBytes
	fs.Var(&m.Memory, "revproxy-memory", "memory for short-lived responses (max-age under an hour); 0 for none")
	fs.DurationVar(&m.Timeout, "revproxy-timeout", revproxy.DefaultUpstreamTimeout, "how long to wait for an origin's response, and for each read of its body (then 504, or a cut response)")
	fs.BoolVar(&m.InstallCA, "install-ca", false, "with --revproxy: add the proxy's CA to the system trust store (Debian/Ubuntu; needs root) at startup")
}

func (m *revProxyFlags) enabled() bool { return m.Hosts != "" }

func (m *revProxyFlags) check() error {
	if !m.enabled() {
		if m.InstallCA {
			return errors.New("--install-ca needs --revproxy")
		}
		if m.AllowLocal != "" {
			return errors.New("--revproxy-allow-local needs --revproxy")
		}
		return nil
	}
	if err := revproxy.CheckTargets(splitList(m.Hosts)); err != nil {
		return fmt.Errorf("--revproxy: %v", err)
	}
	rules, err := revproxy.ParseRules(splitList(m.Rules))
	if err != nil {
		return fmt.Errorf("--revproxy-rules: %v", err)
	}
	m.rules = rules
	if m.allowLocal, err = revproxy.ParseAddrRules(splitList(m.AllowLocal)); err != nil {
		return fmt.Errorf("--revproxy-allow-local: %v", err)
	}
	if m.Timeout <= 0 {
		return errors.New("--revproxy-timeout must be positive")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// revProxyHelp is the "help revproxy" topic: setup, flags and behaviour.
const revProxyHelp = `The reverse proxy: a caching HTTP(S) proxy for other ecosystems' downloads.

   go-cache-plugin serve --http=localhost:5970 --revproxy=registry.example,files.example
   export HTTPS_PROXY=http://localhost:5970 HTTP_PROXY=http://localhost:5970

With --revproxy, the --http listener is also an HTTP proxy. Requests for the
named target hosts, in absolute form ("GET http://host/path") or through
CONNECT (HTTPS), go through a cache: TLS is terminated with a certificate
for the host signed by the daemon's own CA, and immutable responses are kept
in the cache directory and, with --bucket, in the shared bucket, so each
file crosses the internet once per fleet. Requests in absolute form for
other hosts get 502. CONNECTs to other hosts are tunnelled unchanged on a
loopback listener, refused (403) on one reachable beyond this host;
--revproxy-tunnel=true|false decides instead. The listener binds loopback
unless --http names a host.

The proxy never connects to loopback, link-local (cloud metadata) or this
host's own addresses, for tunnels and targets alike, unless
--revproxy-allow-local names them (IP addresses or prefixes, with an
optional port: --revproxy-allow-local=127.0.0.1:8081). It decides on the
address it dials, after name resolution, so a name that resolves to
127.0.0.1 is refused too (403). With --http-token-file, proxy clients must
send the token: HTTPS_PROXY=http://ci:<token>@host:5970.

The CA is made once, as <cache-dir>/revproxy/ca.pem and ca-key.pem (mode
0600), and reused. Clients must trust it: it is served at
http://localhost:5970/revproxy/ca.pem; --install-ca adds it to the system
trust store (Debian/Ubuntu, as root). At each start the daemon also writes
<cache-dir>/revproxy/bundle.pem, the system's CAs (from $SSL_CERT_FILE or
the distribution's bundle) and the proxy's CA in one file, served at
/revproxy/bundle.pem, for clients that take a single CA file. Per client:

   npm      NODE_EXTRA_CA_CERTS=<cache-dir>/revproxy/ca.pem; if npm has a
            cafile set, which makes it ignore NODE_EXTRA_CA_CERTS:
            npm_config_cafile=<cache-dir>/revproxy/bundle.pem
   pip      PIP_CERT=<bundle> or REQUESTS_CA_BUNDLE=<bundle>, or --install-ca
   apt      Acquire::http::Proxy "http://localhost:5970"; (plain HTTP mirrors
            need no CA)
   curl     --proxy http://localhost:5970 --cacert ca.pem, or HTTPS_PROXY
   Go       HTTPS_PROXY, and SSL_CERT_FILE=<bundle> or --install-ca

(<bundle> is <cache-dir>/revproxy/bundle.pem.)

What is cached: GET responses with status 200 that are immutable, either by
their headers (Cache-Control: immutable, or a max-age of 30 days or more) or
by their path (--revproxy-rules; the default rules cover npm tarballs
"**/-/*.tgz", Python wheels and sdists, Debian "pool/" packages, crates and
jars, and exclude Maven snapshots). They are kept forever (subject to
--max-size and --expiry), keyed by the full URL. Responses with a shorter
max-age are kept in memory (--revproxy-memory) for that long, at most an hour.
Never cached: no-store and private responses, responses setting cookies,
responses to requests with Authorization unless marked public, errors, and
responses cut short or whose length differs from their Content-Length.

A miss is streamed to the client and to the cache at once; concurrent
requests for the same URL wait for that one fetch. Hits support ranges and
conditional requests. Every response says X-Cache: hit or miss, and
X-Cache-Source: local, bucket, memory or origin. An origin that fails gets
502; one that does not answer within --revproxy-timeout, 504.

Rules are comma-separated globs over the URL path: "*" matches within a path
segment, "**" across segments, a leading "!" excludes; the first rule that
matches decides; "default" stands for the built-in rules:

   --revproxy-rules='default,**.nupkg'

Metrics: the "revproxy" front end on /metrics and the status page, and
gocacheplugin_revproxy_* counters (hits by source, fills, waits, tunnels).

The Go runtime's SSL_CERT_FILE and SSL_CERT_DIR set the CAs the proxy
trusts for origins.`

// startRevProxy mounts the reverse proxy on web and returns a function that
// stops it, finishing or cutting its fills by the time ctx ends.
func startRevProxy(ctx context.Context, cfg *config, m *revProxyFlags, st *store.Store, web *ops.Server, logf func(string, ...any)) (stop func(context.Context) error, err error) {
	if m.rules == nil {
		if err := m.check(); err != nil {
			return nil, err
		}
	}
	ca, err := revproxy.LoadOrCreateCA(filepath.Join(st.Dir(), "revproxy"))
	if err != nil {
		return nil, err
	}
	if ca.Created {
		logf("revproxy: created a CA: %s (clients must trust it; see \"help revproxy\")", ca.CertFile)
	} else {
		logf("revproxy: using the CA %s", ca.CertFile)
	}
	if m.InstallCA {
		msg, err := revproxy.DebianTrustStore.Install(ca)
		if err != nil {
			return nil, err
		}
		logf("revproxy: %s", msg)
	}
	mem := int64(m.Memory)
	if mem == 0 {
		mem = -1 // none
	}
	rc := revproxy.Config{
		Store:           st,
		CA:              ca,
		Targets:         splitList(m.Hosts),
		Tunnel:          m.tunnel(),
		Policy:          revproxy.DialPolicy{Allow: m.allowLocal},
		Rules:           m.rules,
		MemoryBytes:     mem,
		UpstreamTimeout: m.Timeout,
		Recorder:        web.NewFrontEnd("revproxy"),
		Logf:            logf,
		Verbosef:        logger(cfg.Verbose),
	}
	if cfg.Debug.has(debugRevProxy) {
		rc.Debugf = logf
	}
	applyRevProxyTestHooks(&rc, logf) // nothing, but in the tests' own build (testhooks_on.go)
	p, err := revproxy.New(rc)
	if err != nil {
		return nil, err
	}
	web.HandleProxy(p)
	web.Handle("GET /revproxy/ca.pem", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Header().Set("Content-Disposition", `attachment; filename="go-cache-plugin-revproxy-ca.pem"`)
		w.Write(ca.CertPEM)
	}))
	bundle, err := revproxy.WriteBundle(ca)
	if err != nil {
		logf("revproxy: no CA bundle at /revproxy/bundle.pem: %v", err)
	} else {
		logf("revproxy: CA bundle (the system's CAs from %s, and the proxy's): %s", strings.Join(bundle.Sources, ", "), bundle.File)
		web.Handle("GET /revproxy/bundle.pem", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			w.Header().Set("Content-Disposition", `attachment; filename="go-cache-plugin-revproxy-bundle.pem"`)
			w.Write(bundle.PEM)
		}))
	}
	web.WatchRevProxy(p)
	tunnel := "tunnelling other hosts"
	if !rc.Tunnel {
		tunnel = "refusing other hosts"
	}
	allowed := "none"
	if len(m.allowLocal) > 0 {
		var list []string
		for _, r := range m.allowLocal {
			list = append(list, r.String())
		}
		allowed = strings.Join(list, ", ")
	}
	logf("revproxy: caching for %s (%s; local destinations allowed: %s); CA at /revproxy/ca.pem", strings.Join(rc.Targets, ", "), tunnel, allowed)
	return func(ctx context.Context) error {
		err := p.Close(ctx)
		s := p.Stats()
		logf("revproxy: stopped: hits %d local, %d bucket, %d memory; %d misses, %d stored; %d tunnels",
			s.HitsLocal, s.HitsBucket, s.HitsMemory, s.Misses, s.StoredDisk+s.StoredMemory, s.Tunnels)
		return err
	}, nil
}
