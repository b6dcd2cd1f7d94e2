package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
	"github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	"github.com/prometheus/client_golang/prometheus"
)

// revProxyFlags are the serve flags of the reverse proxy (lib/revproxy).
type revProxyFlags struct {
	Hosts     string
	Tunnel    bool
	InstallCA bool
	Rules     string
	Memory    byteSize
	Timeout   time.Duration

	rules []revproxy.Rule // parsed by check
}

// revProxyEnv lists the environment variables of the reverse proxy flags.
var revProxyEnv = []envVar{
	{"revproxy", "GOCACHE_REVPROXY"},
	{"revproxy-tunnel", "GOCACHE_REVPROXY_TUNNEL"},
	{"revproxy-rules", "GOCACHE_REVPROXY_RULES"},
	{"revproxy-memory", "GOCACHE_REVPROXY_MEMORY"},
	{"revproxy-timeout", "GOCACHE_REVPROXY_TIMEOUT"},
	{"install-ca", "GOCACHE_INSTALL_CA"},
}

// revProxyTestDialEnv is a test-only setting: every connection to an
// origin goes to this IP address (keeping the port), so that tests can
// use made-up host names for local servers. Never set it in production.
const revProxyTestDialEnv = "GOCACHE_REVPROXY_TEST_ONLY_DIAL"

func (m *revProxyFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&m.Hosts, "revproxy", "", "with --http: be a caching HTTP(S) proxy for these hosts (comma-separated; *.example.com for subdomains)")
	fs.BoolVar(&m.Tunnel, "revproxy-tunnel", true, "let CONNECTs to hosts other than the --revproxy targets through, uncached (false: refuse them with 403)")
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
file crosses the internet once per fleet. CONNECTs to other hosts are
tunnelled unchanged (--revproxy-tunnel=false refuses them with 403);
requests in absolute form for other hosts get 502. The listener binds
loopback unless --http names a host: the daemon is not an open relay.

The CA is made once, as <cache-dir>/revproxy/ca.pem and ca-key.pem (mode
0600), and reused. Clients must trust it: it is served at
http://localhost:5970/revproxy/ca.pem; --install-ca adds it to the system
trust store (Debian/Ubuntu, as root). Per client:

   npm      NODE_EXTRA_CA_CERTS=<cache-dir>/revproxy/ca.pem
   pip      PIP_CERT=<bundle> or REQUESTS_CA_BUNDLE=<bundle> (a bundle holding
            the system CAs and ca.pem), or --install-ca
   apt      Acquire::http::Proxy "http://localhost:5970"; (plain HTTP mirrors
            need no CA)
   curl     --proxy http://localhost:5970 --cacert ca.pem, or HTTPS_PROXY
   Go       HTTPS_PROXY, and SSL_CERT_FILE=<bundle> or --install-ca

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

For tests only: GOCACHE_REVPROXY_TEST_ONLY_DIAL=127.0.0.1 sends every
connection to an origin to that address (keeping the port), and the Go
runtime's SSL_CERT_FILE sets the CAs trusted for origins.`

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
		Tunnel:          m.Tunnel,
		Rules:           m.rules,
		MemoryBytes:     mem,
		UpstreamTimeout: m.Timeout,
		Recorder:        web.NewFrontEnd("revproxy"),
		Logf:            logger(cfg.Verbose),
	}
	if cfg.Debug.has(debugRevProxy) {
		rc.Debugf = logf
	}
	if addr := os.Getenv(revProxyTestDialEnv); addr != "" {
		rc.TestDialAddr = addr
		logf("revproxy: TEST ONLY: every origin connection goes to %s (%s is set)", addr, revProxyTestDialEnv)
	}
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
	web.Registry().MustRegister(revProxyCollector{p})
	tunnel := "tunnelling other hosts"
	if !m.Tunnel {
		tunnel = "refusing other hosts"
	}
	logf("revproxy: caching for %s (%s); CA at /revproxy/ca.pem", strings.Join(rc.Targets, ", "), tunnel)
	return func(ctx context.Context) error {
		err := p.Close(ctx)
		s := p.Stats()
		logf("revproxy: stopped: hits %d local, %d bucket, %d memory; %d misses, %d stored; %d tunnels",
			s.HitsLocal, s.HitsBucket, s.HitsMemory, s.Misses, s.StoredDisk+s.StoredMemory, s.Tunnels)
		return err
	}, nil
}

// revProxyCollector reports the proxy's counters on /metrics.
type revProxyCollector struct{ p *revproxy.Proxy }

var (
	rpHits      = prometheus.NewDesc("gocacheplugin_revproxy_hits_total", "Reverse proxy responses served from the cache, by where they were found.", []string{"source"}, nil)
	rpMisses    = prometheus.NewDesc("gocacheplugin_revproxy_misses_total", "Reverse proxy requests fetched from the origin to be cached.", nil, nil)
	rpBypassed  = prometheus.NewDesc("gocacheplugin_revproxy_bypassed_total", "Reverse proxy requests passed through (not GET, ranges not cached, ...).", nil, nil)
	rpWaits     = prometheus.NewDesc("gocacheplugin_revproxy_waits_total", "Reverse proxy requests that waited for another's fetch of their URL.", nil, nil)
	rpFills     = prometheus.NewDesc("gocacheplugin_revproxy_fills_total", "Reverse proxy fetches from origins, by outcome.", []string{"result"}, nil)
	rpErrors    = prometheus.NewDesc("gocacheplugin_revproxy_upstream_errors_total", "Reverse proxy requests answered 502 or 504.", nil, nil)
	rpBad       = prometheus.NewDesc("gocacheplugin_revproxy_bad_requests_total", "Malformed or refused reverse proxy requests.", nil, nil)
	rpConnects  = prometheus.NewDesc("gocacheplugin_revproxy_connects_total", "CONNECT requests, by what was done with them.", []string{"kind"}, nil)
	rpTLSErrors = prometheus.NewDesc("gocacheplugin_revproxy_tls_errors_total", "Failed TLS handshakes with clients.", nil, nil)
	rpTunnels   = prometheus.NewDesc("gocacheplugin_revproxy_open_tunnels", "Tunnels open now.", nil, nil)
	rpBytes     = prometheus.NewDesc("gocacheplugin_revproxy_bytes_total", "Body bytes, by direction: served from the cache, fetched from origins.", []string{"direction"}, nil)
	rpMemory    = prometheus.NewDesc("gocacheplugin_revproxy_memory_bytes", "Bytes of the responses held in the memory tier.", nil, nil)
	rpMemoryN   = prometheus.NewDesc("gocacheplugin_revproxy_memory_entries", "Responses held in the memory tier.", nil, nil)
)

func (c revProxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{rpHits, rpMisses, rpBypassed, rpWaits, rpFills, rpErrors, rpBad, rpConnects, rpTLSErrors, rpTunnels, rpBytes, rpMemory, rpMemoryN} {
		ch <- d
	}
}

func (c revProxyCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(rpHits, s.HitsLocal, "local")
	counter(rpHits, s.HitsBucket, "bucket")
	counter(rpHits, s.HitsMemory, "memory")
	counter(rpMisses, s.Misses)
	counter(rpBypassed, s.Bypassed)
	counter(rpWaits, s.Waits)
	counter(rpFills, s.StoredDisk, "stored_disk")
	counter(rpFills, s.StoredMemory, "stored_memory")
	counter(rpFills, s.Uncacheable, "uncacheable")
	counter(rpFills, s.Aborted, "aborted")
	counter(rpFills, s.StoreErrors, "store_error")
	counter(rpErrors, s.UpstreamErrors)
	counter(rpBad, s.BadRequests)
	counter(rpConnects, s.Intercepts, "intercept")
	counter(rpConnects, s.Tunnels, "tunnel")
	counter(rpConnects, s.Refused, "refused")
	counter(rpTLSErrors, s.TLSErrors)
	gauge(rpTunnels, s.OpenTunnels)
	counter(rpBytes, s.BytesServed, "served")
	counter(rpBytes, s.BytesFetched, "fetched")
	gauge(rpMemory, s.MemoryBytes)
	gauge(rpMemoryN, s.MemoryEntries)
}
