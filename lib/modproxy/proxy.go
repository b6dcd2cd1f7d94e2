package modproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	inflight "github.com/go-cache-plugin/go-cache-plugin/internal/flight"
	"github.com/go-cache-plugin/go-cache-plugin/internal/memtier"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Size bounds of what the upstream may send (those of the go command).
const (
	maxZip  = 500 << 20
	maxMeta = 16 << 20 // .mod, .info, list, @latest, checksum database files
)

// Defaults of the Config fields.
const (
	DefaultTTL         = time.Minute
	DefaultNegativeTTL = 10 * time.Second
	DefaultTimeout     = 30 * time.Second
	DefaultZipTimeout  = 10 * time.Minute
)

// viaHeader marks the proxy's own upstream requests, so that a proxy that
// is (through some chain) its own upstream notices.
const viaHeader = "Go-Cache-Plugin-Modproxy"

// DefaultMemoryBytes is the default bound of the memory tier of mutable
// files; the remembered 404s and 410s get a sixteenth of it more.
const DefaultMemoryBytes = 64 << 20

// A Config configures a Proxy.
type Config struct {
	// Store holds the cached files. Required.
	Store *store.Store

	// Upstream is the base URL of the upstream module proxy
	// ("https://host/path"). Required. Its checksum databases are read
	// under <Upstream>/sumdb/<name>/.
	Upstream string

	// SumDBs are the checksum databases proxied at sumdb/<name>/, as
	// verifier keys ("<name>+<hash>+<key>", the GOSUMDB syntax without
	// a URL). Module files are verified against the first; with none,
	// nothing is verified.
	SumDBs []string

	// NoSumDB lists the module path patterns (the GONOSUMDB syntax,
	// comma-separated globs of path prefixes) whose files are not
	// verified.
	NoSumDB string

	// TTL is how long list, @latest, query .info, partial tiles and
	// the database's latest tree are served before they are asked of
	// the upstream again; DefaultTTL if zero.
	TTL time.Duration
	// NegativeTTL is how long a 404 or 410 of the upstream is
	// remembered; DefaultNegativeTTL if zero, none if negative.
	NegativeTTL time.Duration
	// Timeout bounds every upstream request but zips, and a zip's wait
	// for its response headers; DefaultTimeout if zero.
	Timeout time.Duration
	// ZipTimeout bounds the download of a zip; DefaultZipTimeout if zero.
	ZipTimeout time.Duration

	// MemoryBytes bounds the bytes of the mutable files kept in memory
	// (least recently used first out; a file of more than a quarter of
	// it is read from the store each time); DefaultMemoryBytes if not
	// positive.
	MemoryBytes int64

	// Client makes the upstream requests; if nil, a client with
	// Timeout for connections and response headers is used.
	Client *http.Client

	// Logf receives the failures that lose data or refuse a client
	// (refusals, files not stored, bad cached copies); Verbosef
	// decisions (fills, refreshes, stale answers) and failures that
	// cost no client anything; Debugf every request. Each may be nil.
	// See the package doc's Logs section.
	Logf, Verbosef, Debugf func(format string, args ...any)

	// Recorder, if set, counts each request served from the cache or the
	// upstream as a lookup (a hit if served from the store without asking
	// the upstream) and each file fetched from the upstream as a store (a
	// refusal wraps store.ErrMismatch).
	Recorder store.Recorder
}

// Stats counts a Proxy's requests.
type Stats struct {
	Requests     int64 `json:"requests"`      // requests received
	Hits         int64 `json:"hits"`          // served from the store (or memory) without the upstream
	Misses       int64 `json:"misses"`        // asked of the upstream
	Stale        int64 `json:"stale"`         // served stale because the upstream failed
	NotFound     int64 `json:"not_found"`     // 404 and 410, from the upstream or remembered
	BadRequests  int64 `json:"bad_requests"`  // invalid paths and methods
	Errors       int64 `json:"errors"`        // 5xx answers
	Refused      int64 `json:"refused"`       // files that failed verification
	Verified     int64 `json:"verified"`      // files checked against the checksum database
	Fills        int64 `json:"fills"`         // files fetched from the upstream and stored
	BytesServed  int64 `json:"bytes_served"`  // response bytes (bodies)
	BytesFetched int64 `json:"bytes_fetched"` // bytes read from the upstream
}

// stats are the proxy's live counters, the twins of [Stats]'s fields
// (see internal/counters).
type stats struct {
	requests, hits, misses, stale, notFound, badRequests, errors atomic.Int64
	refused, verified, fills, bytesServed, bytesFetched          atomic.Int64
}

// A Proxy is a caching, verifying module proxy. Create one with New; it is
// an http.Handler for paths relative to its mount point (use
// http.StripPrefix).
type Proxy struct {
	cfg      Config
	st       *store.Store
	upstream string // without a trailing slash
	client   *http.Client
	id       string // the viaHeader value of this proxy
	logf     func(string, ...any)
	verbosef func(string, ...any)
	debugf   func(string, ...any)

	sums    map[string]*sumDB // by name
	checker *sumDB            // the database module files are verified against, or nil

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	flights inflight.Group[string, result]
	mem     *memtier.Cache[memEntry] // mutable files
	neg     *memtier.Cache[negEntry] // 404s and 410s, until they expire
	wg      sync.WaitGroup           // fills and background writes
	bgSem   chan struct{}            // bounds background writes to the bucket

	stats stats
}

type memEntry struct {
	data    []byte
	fetched time.Time
}

type negEntry struct {
	code int
	msg  string
}

// New returns a proxy for cfg.
func New(cfg Config) (*Proxy, error) {
	if cfg.Store == nil {
		return nil, errors.New("modproxy: no store")
	}
	u, err := url.Parse(cfg.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("modproxy: upstream %q is not an http(s) URL", cfg.Upstream)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ZipTimeout <= 0 {
		cfg.ZipTimeout = DefaultZipTimeout
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	nop := func(string, ...any) {}
	p := &Proxy{
		cfg:      cfg,
		st:       cfg.Store,
		upstream: strings.TrimSuffix(cfg.Upstream, "/"),
		client:   cfg.Client,
		logf:     orNop(cfg.Logf, nop),
		verbosef: orNop(cfg.Verbosef, nop),
		debugf:   orNop(cfg.Debugf, nop),
		sums:     map[string]*sumDB{},
		mem:      memtier.New[memEntry](cfg.MemoryBytes, cfg.MemoryBytes/4),
		neg:      memtier.New[negEntry](cfg.MemoryBytes/16, 0),
		bgSem:    make(chan struct{}, 4),
	}
	if p.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = cfg.Timeout
		tr.DialContext = (&net.Dialer{Timeout: min(cfg.Timeout, 10*time.Second), KeepAlive: 30 * time.Second}).DialContext
		tr.MaxIdleConnsPerHost = 32
		p.client = &http.Client{Transport: tr}
	}
	var id [8]byte
	rand.Read(id[:])
	p.id = hex.EncodeToString(id[:])
	for i, vkey := range cfg.SumDBs {
		db, err := newSumDB(p, vkey)
		if err != nil {
			return nil, fmt.Errorf("modproxy: checksum database %q: %w", vkey, err)
		}
		if p.sums[db.name] != nil {
			return nil, fmt.Errorf("modproxy: checksum database %q listed twice", db.name)
		}
		p.sums[db.name] = db
		if i == 0 {
			p.checker = db
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	// Fills run on the proxy's context, owned by the proxy: Close waits
	// for them, and refuses new ones.
	p.flights.Context = func() context.Context { return p.ctx }
	p.flights.Go = func(work func()) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			return errClosed
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			work()
		}()
		return nil
	}
	return p, nil
}

func orNop(f, nop func(string, ...any)) func(string, ...any) {
	if f == nil {
		return nop
	}
	return f
}

// Stats returns a snapshot of the proxy's counts.
func (p *Proxy) Stats() Stats {
	return counters.Snapshot[Stats](&p.stats)
}

// Close stops the proxy: new fills are refused, and Close waits for those
// in progress (and the writes to the bucket behind them) until ctx ends;
// then it cuts them and reports it.
func (p *Proxy) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-ctx.Done():
	}
	p.cancel()
	<-done // every fill watches p.ctx
	return fmt.Errorf("modproxy: fills cut at shutdown: %w", context.Cause(ctx))
}

// errClosed is the error of a fill asked for after Close.
var errClosed = &httpError{http.StatusServiceUnavailable, "module proxy shutting down"}

// result is a fill's outcome: a file in the store (immutable files) or
// the bytes of a mutable file.
type result struct {
	obj   store.Object
	data  []byte
	isObj bool
	hit   bool // from the store or memory, not the upstream
	stale bool // the upstream failed; this copy is older than the TTL
	age   time.Duration
}

// do runs fill for name, once for every caller asking meanwhile, and waits
// for it until ctx ends. The fill itself runs on the proxy's context, so a
// client that goes away does not cut it short for the others.
func (p *Proxy) do(ctx context.Context, name string, fill func(ctx context.Context) (result, error)) (result, error) {
	res, err := p.flights.Do(ctx, name, fill)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Cause(ctx)) {
		return result{}, fmt.Errorf("waiting for %s: %w", name, err)
	}
	return res, err
}

// spawn runs f in a goroutine that Close waits for.
func (p *Proxy) spawn(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

// background runs f behind the request, owned by the proxy (Close waits
// for it), at most a few at a time.
func (p *Proxy) background(f func(ctx context.Context)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case p.bgSem <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		defer func() { <-p.bgSem }()
		f(p.ctx)
	}()
}

// ServeHTTP serves the GOPROXY protocol and the checksum databases for
// paths relative to the mount point.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p.stats.requests.Add(1)
	rw := &recorder{ResponseWriter: w}
	defer func() {
		p.debugf("modproxy: %s %s %d %s %d bytes %v", r.Method, r.URL.Path, rw.status(), rw.Header().Get("X-Cache"), rw.n, time.Since(start).Round(time.Microsecond))
	}()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		p.stats.badRequests.Add(1)
		rw.Header().Set("Allow", "GET, HEAD")
		p.writeError(rw, &httpError{http.StatusMethodNotAllowed, "method not allowed"})
		return
	}
	if r.Header.Get(viaHeader) == p.id {
		p.writeError(rw, &httpError{http.StatusLoopDetected, "module proxy loop: the upstream is this proxy"})
		return
	}
	req, err := parsePath(r.URL.Path, func(name string) bool { return p.sums[name] != nil })
	if err != nil {
		p.stats.badRequests.Add(1)
		p.writeError(rw, err)
		return
	}
	if req.kind == kindSupported {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Header().Set("Content-Length", "0")
		rw.WriteHeader(http.StatusOK)
		return
	}
	res, err := p.get(r.Context(), req)
	if p.cfg.Recorder != nil {
		size := res.obj.Size
		if !res.isObj {
			size = int64(len(res.data))
		}
		var herr *httpError
		lerr := err
		if errors.As(err, &herr) && (herr.code == http.StatusNotFound || herr.code == http.StatusGone) {
			lerr = nil // a miss, not an error
		}
		p.cfg.Recorder.Lookup(err == nil && res.hit, size, lerr, time.Since(start))
	}
	if err != nil {
		p.writeError(rw, err)
		return
	}
	p.serve(rw, r, req, res)
}

// get returns the file req asks for.
func (p *Proxy) get(ctx context.Context, req request) (result, error) {
	if req.immutable {
		return p.getImmutable(ctx, req)
	}
	return p.getMutable(ctx, req)
}

// getImmutable returns a file that never changes: from the local
// directory, else the bucket, else the upstream, verified before it is
// stored.
func (p *Proxy) getImmutable(ctx context.Context, req request) (result, error) {
	key := req.key()
	check := p.check(req)
	if obj, ok := p.st.GetLocal(key, check); ok {
		p.stats.hits.Add(1)
		return result{obj: obj, isObj: true, hit: true}, nil
	}
	if err := p.negative(req.name); err != nil {
		return result{}, err
	}
	return p.do(ctx, req.name, func(ctx context.Context) (result, error) {
		obj, ok, err := p.st.Get(ctx, key, check)
		if err != nil {
			return result{}, &httpError{http.StatusInternalServerError, fmt.Sprintf("reading the cache: %v", err)}
		}
		if ok {
			p.stats.hits.Add(1)
			return result{obj: obj, isObj: true, hit: true}, nil
		}
		return p.fillImmutable(ctx, req, key, check)
	})
}

// fillImmutable fetches req from the upstream and stores it.
func (p *Proxy) fillImmutable(ctx context.Context, req request, key store.Key, check store.Check) (result, error) {
	p.stats.misses.Add(1)
	start := time.Now()
	max, timeout := int64(maxMeta), p.cfg.Timeout
	if req.kind == kindZip {
		max, timeout = maxZip, p.cfg.ZipTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if check.Verify != nil {
		// Ask the checksum database while the file downloads: the
		// client keeps the answer for the check.
		p.spawn(func() { p.checker.lookup(req.module, req.version, req.kind == kindMod) })
	}
	body, err := p.fetch(ctx, req)
	if err != nil {
		return result{}, err
	}
	defer body.Close()
	lr := &countingReader{r: body}
	// The store refuses a file over the cap as it arrives, before it is
	// installed, and marks every refusal (the cap, the checksum
	// database's) with store.ErrMismatch.
	check.MaxSize = max
	obj, err := p.st.Write(ctx, key, lr, check)
	p.stats.bytesFetched.Add(lr.n)
	var verr error // a refusal, as opposed to a local or upstream fault
	if errors.Is(err, store.ErrMismatch) {
		if lr.n > max {
			err = refusal{fmt.Sprintf("%s: upstream sent more than %d bytes", req.name, max), err}
		}
		verr = err
	}
	if p.cfg.Recorder != nil {
		p.cfg.Recorder.Store(lr.n, err, time.Since(start))
	}
	switch {
	case verr != nil:
		p.stats.refused.Add(1)
		p.logf("modproxy: refused %s: %v", req.name, verr)
		return result{}, &httpError{http.StatusBadGateway, fmt.Sprintf("go-cache-plugin module proxy: refused %s: %v", req.name, verr)}
	case err != nil:
		if e := upstreamErr(ctx, req, err); e != nil {
			return result{}, e
		}
		return result{}, &httpError{http.StatusInternalServerError, fmt.Sprintf("storing %s: %v", req.name, err)}
	}
	p.stats.fills.Add(1)
	p.st.Upload(store.Upload{Key: key, Path: obj.Path})
	p.verbosef("modproxy: fill %s: %d bytes from the upstream in %v", req.name, obj.Size, time.Since(start).Round(time.Millisecond))
	return result{obj: obj, isObj: true}, nil
}

// upstreamErr turns a failure to read the upstream's body into the error
// served, or nil if ctx is still live (a local fault).
func upstreamErr(ctx context.Context, req request, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return &httpError{http.StatusGatewayTimeout, fmt.Sprintf("upstream: %s: timed out: %v", req.name, err)}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &httpError{http.StatusBadGateway, fmt.Sprintf("upstream: %s: %v", req.name, err)}
	}
	return nil
}

// check returns the store check of req's file: module files not exempt
// are verified against the checksum database, also when they come from
// the bucket.
func (p *Proxy) check(req request) store.Check {
	check := store.AnyContent
	if p.checker == nil || (req.kind != kindMod && req.kind != kindZip) {
		return check
	}
	if module.MatchPrefixPatterns(p.cfg.NoSumDB, req.module) {
		return check
	}
	mod, vers, isZip := req.module, req.version, req.kind == kindZip
	check.Verify = func(path string) error { return p.verify(mod, vers, isZip, path) }
	return check
}

// getMutable returns a file that changes (list, @latest, a query's .info,
// the database's latest tree, a partial tile): a copy younger than the
// TTL, else the upstream's, else, if the upstream fails, an older copy.
func (p *Proxy) getMutable(ctx context.Context, req request) (result, error) {
	e, ok := p.mem.Get(req.name, time.Now())
	if ok && time.Since(e.fetched) < p.cfg.TTL {
		p.stats.hits.Add(1)
		return result{data: e.data, hit: true, age: time.Since(e.fetched)}, nil
	}
	if err := p.negative(req.name); err != nil {
		return result{}, err
	}
	e0, have0 := e, ok
	return p.do(ctx, req.name, func(ctx context.Context) (result, error) {
		e, ok := e0, have0
		if !ok {
			// Not seen by this process: a copy in the store (this
			// directory's, or another daemon's in the bucket) may do.
			if e, ok = p.loadMutable(ctx, req); ok && time.Since(e.fetched) < p.cfg.TTL {
				p.stats.hits.Add(1)
				return result{data: e.data, hit: true, age: time.Since(e.fetched)}, nil
			}
		}
		res, err := p.fillMutable(ctx, req)
		if err == nil || !ok {
			return res, err
		}
		var herr *httpError
		if errors.As(err, &herr) && (herr.code == http.StatusNotFound || herr.code == http.StatusGone) {
			return res, err // an answer, not a failure
		}
		p.stats.stale.Add(1)
		age := time.Since(e.fetched)
		p.verbosef("modproxy: stale %s (%v old): %v", req.name, age.Round(time.Second), err)
		return result{data: e.data, hit: true, stale: true, age: age}, nil
	})
}

// stampLen is the length of the header of a mutable file in the store:
// the time it was fetched, in Unix nanoseconds, as 20 decimal digits and
// a newline.
const stampLen = 21

// loadMutable reads req's copy from the store, if any, into memory.
func (p *Proxy) loadMutable(ctx context.Context, req request) (memEntry, bool) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	key := req.key()
	obj, ok, err := p.st.Get(ctx, key, store.AnyContent)
	if err != nil || !ok {
		return memEntry{}, false
	}
	data, ok, err := p.st.ReadLocal(key, maxMeta+stampLen)
	if err != nil || !ok || len(data) < stampLen || data[stampLen-1] != '\n' {
		if ok {
			p.logf("modproxy: %s: bad cached copy %s: ignored", req.name, obj.Path)
		}
		return memEntry{}, false
	}
	ns, err := strconv.ParseInt(string(data[:stampLen-1]), 10, 64)
	if err != nil {
		return memEntry{}, false
	}
	e := memEntry{data: data[stampLen:], fetched: time.Unix(0, ns)}
	p.remember(req.name, e)
	return e, true
}

// remember keeps e, the copy of name, in memory. It never expires there:
// an old copy is served when the upstream fails.
func (p *Proxy) remember(name string, e memEntry) {
	p.mem.Put(name, e, int64(len(name)+len(e.data)), time.Time{})
}

// fillMutable fetches req from the upstream and keeps it in memory and
// the store (local at once, bucket behind).
func (p *Proxy) fillMutable(ctx context.Context, req request) (result, error) {
	p.stats.misses.Add(1)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	body, err := p.fetch(ctx, req)
	if err != nil {
		return result{}, err
	}
	data, err := io.ReadAll(io.LimitReader(body, maxMeta+1))
	body.Close()
	p.stats.bytesFetched.Add(int64(len(data)))
	if err != nil {
		if e := upstreamErr(ctx, req, err); e != nil {
			return result{}, e
		}
		return result{}, &httpError{http.StatusBadGateway, fmt.Sprintf("upstream: %s: %v", req.name, err)}
	}
	if len(data) > maxMeta {
		return result{}, &httpError{http.StatusBadGateway, fmt.Sprintf("upstream: %s: more than %d bytes", req.name, maxMeta)}
	}
	now := time.Now()
	p.remember(req.name, memEntry{data: data, fetched: now})
	stamped := make([]byte, 0, stampLen+len(data))
	stamped = fmt.Appendf(stamped, "%020d\n", now.UnixNano())
	stamped = append(stamped, data...)
	key := req.key()
	_, werr := p.st.Write(ctx, key, bytes.NewReader(stamped), store.Check{Size: int64(len(stamped))})
	if werr != nil {
		p.logf("modproxy: storing %s: %v", req.name, werr)
	}
	if p.cfg.Recorder != nil {
		p.cfg.Recorder.Store(int64(len(data)), werr, time.Since(start))
	}
	if p.st.HasRemote() && !p.st.ReadOnly() {
		// Upload skips objects already in the bucket: a newer copy is
		// written over the old one instead.
		p.background(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			defer cancel()
			if err := p.st.WriteRemoteRaw(ctx, key.String(), stamped); err != nil {
				p.verbosef("modproxy: writing %s to the bucket: %v", req.name, err)
			}
		})
	}
	p.verbosef("modproxy: refresh %s: %d bytes from the upstream in %v", req.name, len(data), time.Since(start).Round(time.Millisecond))
	return result{data: data}, nil
}

// negative returns the remembered 404 or 410 of name, if any.
func (p *Proxy) negative(name string) error {
	e, ok := p.neg.Get(name, time.Now())
	if !ok {
		return nil
	}
	p.stats.hits.Add(1)
	return &httpError{e.code, e.msg}
}

func (p *Proxy) rememberNegative(name string, code int, msg string) {
	if p.cfg.NegativeTTL < 0 {
		return
	}
	p.neg.Put(name, negEntry{code: code, msg: msg}, int64(len(name)+len(msg)), time.Now().Add(p.cfg.NegativeTTL))
}

// fetch asks the upstream for req and returns the body of a 200 response.
// A 404 or 410 is passed on (and remembered); any other status, or a
// failure, is a 502, a timeout a 504.
func (p *Proxy) fetch(ctx context.Context, req request) (io.ReadCloser, error) {
	u := p.upstream + "/" + req.name
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &httpError{http.StatusBadGateway, fmt.Sprintf("upstream request for %s: %v", req.name, err)}
	}
	hr.Header.Set(viaHeader, p.id)
	hr.Header.Set("User-Agent", "go-cache-plugin-modproxy")
	resp, err := p.client.Do(hr)
	if err != nil {
		if e := upstreamErr(ctx, req, err); e != nil {
			return nil, e
		}
		return nil, &httpError{http.StatusBadGateway, fmt.Sprintf("upstream: %s: %v", req.name, err)}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, nil
	case http.StatusNotFound, http.StatusGone:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		m := strings.TrimSpace(string(msg))
		if m == "" {
			m = http.StatusText(resp.StatusCode)
		}
		p.rememberNegative(req.name, resp.StatusCode, m)
		return nil, &httpError{resp.StatusCode, m}
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		code := http.StatusBadGateway
		if resp.StatusCode == http.StatusGatewayTimeout {
			code = http.StatusGatewayTimeout
		}
		return nil, &httpError{code, fmt.Sprintf("upstream: %s: %s: %s", req.name, resp.Status, strings.TrimSpace(string(msg)))}
	}
}

// Content types by kind.
func contentType(k kind) string {
	switch k {
	case kindInfo, kindLatest:
		return "application/json"
	case kindZip:
		return "application/zip"
	case kindSumTile:
		return "application/octet-stream"
	default:
		return "text/plain; charset=utf-8"
	}
}

// serve writes res.
func (p *Proxy) serve(w *recorder, r *http.Request, req request, res result) {
	h := w.Header()
	h.Set("Content-Type", contentType(req.kind))
	switch {
	case res.stale:
		h.Set("X-Cache", "stale")
		h.Set("Cache-Control", "no-cache")
		h.Set("Age", strconv.FormatInt(int64(res.age/time.Second), 10))
	case res.hit:
		h.Set("X-Cache", "hit")
	default:
		h.Set("X-Cache", "miss")
	}
	if !res.isObj {
		if !res.stale {
			h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(max(0, (p.cfg.TTL-res.age)/time.Second))))
		}
		h.Set("Content-Length", strconv.Itoa(len(res.data)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(res.data)
		}
		p.stats.bytesServed.Add(int64(len(res.data)))
		return
	}
	f, err := os.Open(res.obj.Path)
	if errors.Is(err, fs.ErrNotExist) {
		// Trimmed since it was found: fetch it again.
		res, err = p.getImmutable(r.Context(), req)
		if err == nil {
			f, err = os.Open(res.obj.Path)
		}
	}
	if err != nil {
		p.writeError(w, &httpError{http.StatusInternalServerError, fmt.Sprintf("reading the cache: %v", err)})
		return
	}
	defer f.Close()
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", res.obj.ModTime, f)
	p.stats.bytesServed.Add(w.n)
}

// writeError serves err: an *httpError with its status, anything else as
// a 500.
func (p *Proxy) writeError(w http.ResponseWriter, err error) {
	code, msg := http.StatusInternalServerError, err.Error()
	var herr *httpError
	if errors.As(err, &herr) {
		code, msg = herr.code, herr.msg
	} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		p.stats.notFound.Add(1)
	case code >= 500:
		p.stats.errors.Add(1)
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// recorder records a response's status and body size.
type recorder struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *recorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// ReadFrom lets http.ServeContent send a file with the connection's
// ReadFrom (sendfile on Linux), which a plain wrapper would hide.
func (w *recorder) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := io.Copy(w.ResponseWriter, r)
	w.n += n
	return n, err
}

func (w *recorder) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// refusal is a refused file's error, said in the proxy's words, wrapping
// the store's (which wraps store.ErrMismatch).
type refusal struct {
	msg string
	err error
}

func (r refusal) Error() string { return r.msg }
func (r refusal) Unwrap() error { return r.err }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
