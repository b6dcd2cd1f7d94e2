// Package faultproxy is an HTTP reverse proxy for tests that puts faults
// between an S3 client and an S3 server (or any HTTP server): it listens on
// a loopback port, forwards requests to a target URL, and on demand answers
// some of them wrongly.
//
// The fault in force is switched at run time with [Proxy.Set] or
// [Proxy.SetMode], safely while requests are in flight; each request takes
// the fault in force when it arrives. The faults are
//
//   - [Pass]: forward the request untouched.
//   - [Blackhole]: read the request, never answer. The handler returns when
//     the client gives up (closes the connection) or the proxy is closed.
//   - [Slow]: wait [Fault.Delay] before forwarding; a client that gives up
//     during the wait is noticed at once.
//   - [Status500]: answer 500 with an S3-style XML error body.
//   - [Reset]: close the connection abruptly, with SO_LINGER 0 so that the
//     client sees a TCP RST ("connection reset by peer").
//   - [CorruptBody]: forward, but flip bytes of a successful GET's body
//     (keeping its length), as a bad disk or a buggy server would.
//   - [TruncateBody]: forward a successful GET's headers, including the true
//     Content-Length, then only half the body, then close the connection.
//
// A [Fault.Only] filter restricts a fault to some requests; the others are
// passed. [GetsOf] is the usual filter for S3: GETs of objects under a key
// prefix. The proxy keeps the request's Host header, so AWS signatures made
// for the proxy's address stay valid at the target.
//
// Typical use:
//
//	p := faultproxy.Start(t, srv.Endpoint)
//	// ... point the client at p.URL; it works as usual ...
//	p.Set(faultproxy.Fault{Mode: faultproxy.CorruptBody, Only: faultproxy.GetsOf("output/")})
//
// The proxy is for tests on loopback addresses only.
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mode is a kind of fault.
type Mode int32

// The modes; see the package documentation.
const (
	Pass Mode = iota
	Blackhole
	Slow
	Status500
	Reset
	CorruptBody
	TruncateBody
)

var modeNames = [...]string{"pass", "blackhole", "slow", "status500", "reset", "corrupt-body", "truncate-body"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// A Filter selects the requests a fault applies to.
type Filter func(*http.Request) bool

// GetsOf returns a filter selecting GET requests for objects whose key
// starts with one of keyPrefixes. It assumes path-style requests, "/<bucket>/<key>".
func GetsOf(keyPrefixes ...string) Filter {
	return func(r *http.Request) bool {
		if r.Method != http.MethodGet {
			return false
		}
		_, key, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		for _, p := range keyPrefixes {
			if ok && strings.HasPrefix(key, p) {
				return true
			}
		}
		return false
	}
}

// A Fault is what the proxy does to requests.
type Fault struct {
	Mode  Mode
	Delay time.Duration // for Slow: how long each request waits
	Only  Filter        // if set, the fault applies only to requests it selects
}

// Proxy is a running fault-injecting proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	// URL is the proxy's base URL, "http://127.0.0.1:<port>".
	URL string

	target *url.URL
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	tr     *http.Transport

	fault    atomic.Pointer[Fault]
	requests atomic.Int64 // requests seen
	faulted  atomic.Int64 // requests a fault was applied to

	mu       sync.Mutex
	closed   bool
	closing  chan struct{} // closed by Close
	handlers sync.WaitGroup
	serving  sync.WaitGroup
	seen     chan struct{} // closed and replaced at every request
}

// errTruncated ends a truncated body.
var errTruncated = errors.New("faultproxy: body truncated")

// maxSlowBuffer bounds the request body that Slow reads before its wait
// (so that a client giving up is noticed); larger bodies are streamed.
const maxSlowBuffer = 32 << 20

// New starts a proxy on a loopback port forwarding to target, a base URL
// such as "http://127.0.0.1:9000". It starts in [Pass] mode.
func New(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad target %q", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	quiet := log.New(io.Discard, "", 0)
	p := &Proxy{
		URL:     "http://" + ln.Addr().String(),
		target:  u,
		ln:      ln,
		closing: make(chan struct{}),
		seen:    make(chan struct{}),
		tr: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
	p.fault.Store(&Fault{Mode: Pass})
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.target)
			pr.Out.Host = pr.In.Host // the client signed the request for it
		},
		Transport:      p.tr,
		FlushInterval:  -1, // so a truncated body reaches the client before the cut
		ModifyResponse: p.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			writeS3Error(w, r, http.StatusBadGateway, "BadGateway", "faultproxy: "+err.Error())
		},
		ErrorLog: quiet,
	}
	p.srv = &http.Server{Handler: p, ErrorLog: quiet, ReadHeaderTimeout: 30 * time.Second}
	p.serving.Go(func() { p.srv.Serve(ln) })
	return p, nil
}

// Start is [New] for a test: it fails tb if the proxy cannot start and
// closes the proxy when tb ends.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := New(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Set makes f the fault in force for requests that arrive from now on.
func (p *Proxy) Set(f Fault) { p.fault.Store(&f) }

// SetMode is Set(Fault{Mode: m}).
func (p *Proxy) SetMode(m Mode) { p.Set(Fault{Mode: m}) }

// Fault returns the fault in force.
func (p *Proxy) Fault() Fault { return *p.fault.Load() }

// Requests returns the number of requests the proxy has seen.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Faulted returns the number of requests a fault (other than Pass) was
// applied to.
func (p *Proxy) Faulted() int64 { return p.faulted.Load() }

// WaitRequests waits until the proxy has seen at least n requests or ctx
// ends.
func (p *Proxy) WaitRequests(ctx context.Context, n int64) error {
	for {
		p.mu.Lock()
		seen := p.seen
		p.mu.Unlock()
		if p.requests.Load() >= n {
			return nil
		}
		select {
		case <-seen:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops the proxy: it closes the listener and every connection,
// unblocks requests held by Blackhole or Slow, and waits for all its
// goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.closing)
	p.mu.Unlock()

	p.srv.Close()
	p.serving.Wait()
	p.handlers.Wait()
	p.tr.CloseIdleConnections()
}

// faultKey carries the mode applied to a request to modifyResponse.
type faultKey struct{}

// ServeHTTP implements [http.Handler].
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		abort(w)
		return
	}
	p.handlers.Add(1)
	p.requests.Add(1)
	close(p.seen)
	p.seen = make(chan struct{})
	p.mu.Unlock()
	defer p.handlers.Done()

	f := p.fault.Load()
	mode := f.Mode
	if f.Only != nil && !f.Only(r) {
		mode = Pass
	}
	if mode == CorruptBody || mode == TruncateBody {
		if r.Method != http.MethodGet {
			mode = Pass // only GET responses have a body to damage
		}
	}
	if mode != Pass {
		p.faulted.Add(1)
	}

	switch mode {
	case Blackhole:
		// Read the request, so that the server notices when the client
		// hangs up, and never answer.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-p.closing:
		}
		abort(w) // returning would send an empty 200
		return
	case Slow:
		if !p.bufferBody(r) {
			abort(w)
			return
		}
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			abort(w)
			return
		case <-p.closing:
			abort(w)
			return
		}
	case Status500:
		io.Copy(io.Discard, r.Body)
		writeS3Error(w, r, http.StatusInternalServerError, "InternalError",
			"We encountered an internal error, please try again. (faultproxy)")
		return
	case Reset:
		reset(w)
		return
	case CorruptBody, TruncateBody:
		r = r.WithContext(context.WithValue(r.Context(), faultKey{}, mode))
	}
	p.rp.ServeHTTP(w, r)
}

// bufferBody reads a request body of known, moderate size into memory, so
// that the server watches the connection for the client hanging up. It
// reports false if the body could not be read.
func (p *Proxy) bufferBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength < 0 || r.ContentLength > maxSlowBuffer {
		return true
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	return true
}

// modifyResponse damages the body of a successful GET if the request was
// marked for it.
func (p *Proxy) modifyResponse(rsp *http.Response) error {
	mode, _ := rsp.Request.Context().Value(faultKey{}).(Mode)
	if rsp.StatusCode != http.StatusOK && rsp.StatusCode != http.StatusPartialContent {
		return nil
	}
	switch mode {
	case CorruptBody:
		rsp.Body = &corruptReader{rc: rsp.Body}
	case TruncateBody:
		if rsp.ContentLength != 0 { // an empty body cannot be cut short
			rsp.Body = &truncReader{rc: rsp.Body, left: max(rsp.ContentLength/2, 0)}
		}
	}
	return nil
}

// corruptReader inverts every byte at an offset that is a multiple of
// corruptStride, the first byte included.
type corruptReader struct {
	rc  io.ReadCloser
	off int64
}

const corruptStride = 4096

func (c *corruptReader) Read(b []byte) (int, error) {
	n, err := c.rc.Read(b)
	for i := range n {
		if (c.off+int64(i))%corruptStride == 0 {
			b[i] ^= 0xff
		}
	}
	c.off += int64(n)
	return n, err
}

func (c *corruptReader) Close() error { return c.rc.Close() }

// truncReader yields left bytes, then fails, which makes the reverse proxy
// abort the connection after sending them.
type truncReader struct {
	rc   io.ReadCloser
	left int64
}

func (t *truncReader) Read(b []byte) (int, error) {
	if t.left <= 0 {
		return 0, errTruncated
	}
	if int64(len(b)) > t.left {
		b = b[:t.left]
	}
	n, err := t.rc.Read(b)
	t.left -= int64(n)
	if err == io.EOF {
		err = errTruncated
	}
	return n, err
}

func (t *truncReader) Close() error { return t.rc.Close() }

// writeS3Error answers with an S3 error document.
func writeS3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`,
		code, xmlEscape(msg), xmlEscape(r.URL.Path))
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Header().Set("X-Amz-Request-Id", "faultproxy")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// reset closes the client's connection with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// abort drops the client's connection without an answer.
func abort(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
		return
	}
	panic(http.ErrAbortHandler)
}
