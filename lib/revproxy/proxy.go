package revproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	inflight "github.com/go-cache-plugin/go-cache-plugin/internal/flight"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Kind is the store kind of the proxy's objects.
const Kind = "revproxy"

// Defaults of the Config fields left zero.
const (
	DefaultLongMaxAge      = 30 * 24 * time.Hour
	DefaultMemoryBytes     = 64 << 20
	DefaultMemoryMaxAge    = time.Hour
	DefaultUpstreamTimeout = time.Minute
	DefaultClientTimeout   = time.Minute
)

// Config configures a [Proxy].
type Config struct {
	// Store keeps the cached responses (kind "revproxy"). Required.
	Store *store.Store
	// CA signs the certificates of the targets. Required.
	CA *CA
	// Targets are the host names cached for ("*.example.com" for a
	// domain's subdomains). Required.
	Targets []string
	// Tunnel lets CONNECT requests for other hosts through, unchanged.
	// Without it they are refused (403).
	Tunnel bool
	// Policy decides which addresses the proxy connects to, for tunnels
	// and targets alike; the zero value refuses local addresses (see
	// [DialPolicy]). Refused tunnels get 403, refused requests 403.
	Policy DialPolicy
	// Rules are the path rules marking responses as immutable; nil means
	// DefaultRules. See [Rule].
	Rules []Rule

	// LongMaxAge is the max-age from which a response is immutable
	// enough to be kept on disk; DefaultLongMaxAge if zero.
	LongMaxAge time.Duration
	// MemoryBytes bounds the memory tier of short-lived responses;
	// DefaultMemoryBytes if zero, none if negative. A response larger
	// than an eighth of it is not kept there.
	MemoryBytes int64
	// MemoryMaxAge is the longest a response stays in the memory tier;
	// DefaultMemoryMaxAge if zero.
	MemoryMaxAge time.Duration
	// UpstreamTimeout bounds the wait for an origin's response headers
	// and for each read of its body (then: 504, or a cut response);
	// DefaultUpstreamTimeout if zero.
	UpstreamTimeout time.Duration
	// ClientTimeout bounds each write to a client that stops reading;
	// DefaultClientTimeout if zero.
	ClientTimeout time.Duration

	// Recorder, if set, counts lookups and stores.
	Recorder store.Recorder
	// Logf, if set, receives the failures that lose data or refuse a
	// client (one line each); Verbosef decisions, and failures that cost
	// no client anything. See the package doc's log format.
	Logf, Verbosef func(format string, args ...any)
	// Debugf, if set, receives a line per request.
	Debugf func(format string, args ...any)

	// RootCAs, if set, replaces the system's roots for verifying origins
	// (without it, Go's SSL_CERT_FILE and SSL_CERT_DIR apply as usual).
	RootCAs *x509.CertPool
	// Dial, if set, makes the connections to the targets' origins in
	// place of the proxy's own dialer; Policy does not apply to them, Dial
	// decides. Tunnels are not affected. Tests use it to reach local
	// servers under made-up host names.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Proxy is a caching HTTP(S) proxy for a set of target hosts. It is an
// [http.Handler] for proxy requests: CONNECT and absolute-form requests.
type Proxy struct {
	cfg        Config
	st         *store.Store
	targets    targets
	rules      []Rule
	longMaxAge time.Duration
	memMaxAge  time.Duration
	mem        *memCache
	leaves     *leafCerts
	transport  *http.Transport
	dialer     *net.Dialer // applies cfg.Policy
	logf       func(string, ...any)
	verbosef   func(string, ...any)
	debugf     func(string, ...any)

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	inner     *http.Server // serves the requests inside intercepted TLS
	innerLn   *chanListener
	innerDone chan struct{}

	mu      sync.Mutex
	closing bool
	flights inflight.Group[string, fillResult]
	tunnels map[net.Conn]struct{}
	reqs    sync.WaitGroup // handlers in progress, with their fills and tunnels

	testWaitCh chan struct{} // closed when a request waits for a fetch (tests)

	stats proxyCounters
}

// proxyCounters are the proxy's live metrics, the twins of [Stats]'s
// counters (see internal/counters).
type proxyCounters struct {
	hitsLocal, hitsBucket, hitsMemory              atomic.Int64
	misses, bypassed, waits                        atomic.Int64
	storedDisk, storedMemory, uncacheable, aborted atomic.Int64
	storeErrors, upstreamErrors, badRequests       atomic.Int64
	intercepts, tunnels, refused, tlsErrors        atomic.Int64
	refusedLocal                                   atomic.Int64
	bytesServed, bytesFetched                      atomic.Int64

	openTunnels atomic.Int64 // a gauge: added to on open, taken from on close
}

// Stats is a snapshot of the proxy's metrics.
type Stats struct {
	HitsLocal      int64 `json:"hits_local"`      // responses served from the local dir
	HitsBucket     int64 `json:"hits_bucket"`     // responses faulted in from the bucket, then served
	HitsMemory     int64 `json:"hits_memory"`     // responses served from the memory tier
	Misses         int64 `json:"misses"`          // cacheable requests fetched from the origin
	Bypassed       int64 `json:"bypassed"`        // requests passed through: not GET, ranges, no-cache, ...
	Waits          int64 `json:"waits"`           // requests that waited for another's fetch of their URL
	StoredDisk     int64 `json:"stored_disk"`     // responses committed to the store
	StoredMemory   int64 `json:"stored_memory"`   // responses kept in the memory tier
	Uncacheable    int64 `json:"uncacheable"`     // fetched responses that were not cacheable
	Aborted        int64 `json:"aborted"`         // fills abandoned: origin or client failed mid-body
	StoreErrors    int64 `json:"store_errors"`    // complete responses the store failed to commit
	UpstreamErrors int64 `json:"upstream_errors"` // requests answered 502 or 504
	BadRequests    int64 `json:"bad_requests"`    // malformed or refused proxy requests
	Intercepts     int64 `json:"intercepts"`      // CONNECTs to targets, TLS terminated
	Tunnels        int64 `json:"tunnels"`         // CONNECTs to other hosts, tunnelled
	Refused        int64 `json:"refused"`         // CONNECTs to other hosts refused (tunnelling off)
	RefusedLocal   int64 `json:"refused_local"`   // connections the DialPolicy refused (tunnels and requests)
	TLSErrors      int64 `json:"tls_errors"`      // failed TLS handshakes with clients
	OpenTunnels    int64 `json:"open_tunnels"`    // tunnels open now
	BytesServed    int64 `json:"bytes_served"`    // body bytes of hits
	BytesFetched   int64 `json:"bytes_fetched"`   // body bytes read from origins
	MemoryEntries  int64 `json:"memory_entries"`  // responses in the memory tier
	MemoryBytes    int64 `json:"memory_bytes"`    // their bytes
}

// Stats returns a snapshot of the proxy's metrics.
func (p *Proxy) Stats() Stats {
	s := counters.Snapshot[Stats](&p.stats)
	if p.mem != nil {
		s.MemoryEntries, s.MemoryBytes = p.mem.usage()
	}
	return s
}

// New returns a proxy configured by cfg. Call [Proxy.Close] when done.
func New(cfg Config) (*Proxy, error) {
	if cfg.Store == nil || cfg.CA == nil {
		return nil, errors.New("revproxy: Config needs a Store and a CA")
	}
	tg, err := parseTargets(cfg.Targets)
	if err != nil {
		return nil, fmt.Errorf("revproxy: %w", err)
	}
	rules := cfg.Rules
	if rules == nil {
		if rules, err = ParseRules(DefaultRules); err != nil {
			return nil, fmt.Errorf("revproxy: %w", err)
		}
	}
	leaves, err := newLeafCerts(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("revproxy: %w", err)
	}
	orDur := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	nop := func(string, ...any) {}
	p := &Proxy{
		cfg:        cfg,
		st:         cfg.Store,
		targets:    tg,
		rules:      rules,
		longMaxAge: orDur(cfg.LongMaxAge, DefaultLongMaxAge),
		memMaxAge:  orDur(cfg.MemoryMaxAge, DefaultMemoryMaxAge),
		leaves:     leaves,
		logf:       cfg.Logf,
		verbosef:   cfg.Verbosef,
		debugf:     cfg.Debugf,
		tunnels:    map[net.Conn]struct{}{},
	}
	p.cfg.UpstreamTimeout = orDur(cfg.UpstreamTimeout, DefaultUpstreamTimeout)
	p.cfg.ClientTimeout = orDur(cfg.ClientTimeout, DefaultClientTimeout)
	if p.logf == nil {
		p.logf = nop
	}
	if p.verbosef == nil {
		p.verbosef = nop
	}
	if p.debugf == nil {
		p.debugf = nop
	}
	switch {
	case cfg.MemoryBytes == 0:
		p.mem = newMemCache(DefaultMemoryBytes)
	case cfg.MemoryBytes > 0:
		p.mem = newMemCache(cfg.MemoryBytes)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())

	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	p.dialer = p.cfg.Policy.Dialer(dialer)
	p.transport = &http.Transport{
		Proxy: nil, // never the environment's proxy: that may be this one
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if p.cfg.Dial != nil {
				return p.cfg.Dial(ctx, network, addr)
			}
			return p.dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs},
		ForceAttemptHTTP2:     true,
		DisableCompression:    true, // pass the client's Accept-Encoding and the origin's coding through
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: p.cfg.UpstreamTimeout,
		ExpectContinueTimeout: time.Second,
	}

	p.innerLn = newChanListener()
	p.innerDone = make(chan struct{})
	p.inner = &http.Server{
		Handler:           http.HandlerFunc(p.serveIntercepted),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if ic, ok := c.(*interceptedConn); ok {
				ctx = context.WithValue(ctx, authorityKey{}, ic.authority)
			}
			return ctx
		},
		ErrorLog: newErrorLog(p.logf),
	}
	go func() {
		defer close(p.innerDone)
		p.inner.Serve(p.innerLn) // returns when the listener is closed
	}()
	return p, nil
}

// IsTarget reports whether host (without a port) is one of the targets.
func (p *Proxy) IsTarget(host string) bool { return p.targets.match(host) }

// ServeHTTP serves a proxy request: CONNECT, or a request in absolute
// form ("GET http://host/path").
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.begin() {
		http.Error(w, "go-cache-plugin revproxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer p.reqs.Done()
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r)
		return
	}
	u := r.URL
	if !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		p.stats.badRequests.Add(1)
		http.Error(w, "go-cache-plugin revproxy: want a request in absolute form for an http or https URL, or CONNECT", http.StatusBadRequest)
		return
	}
	if isLoop(r) {
		p.stats.badRequests.Add(1)
		http.Error(w, "go-cache-plugin revproxy: request loop (the target leads back to this proxy)", http.StatusLoopDetected)
		return
	}
	if !p.targets.match(u.Hostname()) {
		p.stats.badRequests.Add(1)
		p.debugf("revproxy: %s %s: refused: not a target", r.Method, u.Redacted())
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: %s is not one of this proxy's targets (--revproxy); it forwards only requests for its targets", u.Hostname()), http.StatusBadGateway)
		return
	}
	target := *u
	target.User = nil
	target.Fragment = ""
	p.serveTarget(w, r, normalize(&target))
}

// normalize lower-cases the URL's scheme and host and drops a default
// port, so that one resource has one key.
func normalize(u *url.URL) *url.URL {
	u.Scheme = strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" || u.Scheme == "http" && port == "80" || u.Scheme == "https" && port == "443" {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		u.Host = host
	} else {
		u.Host = net.JoinHostPort(host, port)
	}
	return u
}

// begin registers a request; false once the proxy is closing.
func (p *Proxy) begin() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.reqs.Add(1)
	return true
}

// viaToken marks requests this proxy forwarded, to detect loops.
const viaToken = "go-cache-plugin-revproxy"

func isLoop(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		if strings.Contains(v, viaToken) {
			return true
		}
	}
	return false
}

// Close stops the proxy: it refuses new requests, closes the tunnels and
// the idle TLS sessions at once, lets requests and fills in progress
// finish until ctx ends, then cuts them, and waits for everything it
// started to return.
func (p *Proxy) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for c := range p.tunnels {
		c.Close()
	}
	p.mu.Unlock()

	p.innerLn.Close()
	var err error
	if shutErr := p.inner.Shutdown(ctx); shutErr != nil { // closes idle sessions, waits for active ones
		err = fmt.Errorf("revproxy: TLS sessions cut at shutdown: %w", shutErr)
		p.inner.Close()
	}
	done := make(chan struct{})
	go func() {
		p.reqs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("revproxy: requests cut at shutdown: %w", ctx.Err())
		}
	}
	// Cut the fills still going (their requests then end), and wait.
	p.cancel()
	<-done
	<-p.innerDone
	p.transport.CloseIdleConnections()
	return err
}
