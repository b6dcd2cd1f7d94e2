package revproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	inflight "github.com/go-cache-plugin/go-cache-plugin/internal/flight"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// KeyFor returns the store key of the response for rawURL, the full
// origin URL: the hex SHA-256 of the URL.
func KeyFor(rawURL string) store.Key {
	sum := sha256.Sum256([]byte(rawURL))
	return store.Key{Kind: Kind, Name: hex.EncodeToString(sum[:])}
}

// A flight is a fetch of one URL in progress; requests for the same URL
// wait for it rather than fetch again. The project's single-flight, led
// inline (Join and Land): the leader is the first request's handler, which
// streams the fetch to its own client as it fills the cache, and may land
// early (a response not cached) to let the others go to the origin.
type flight = inflight.Call[fillResult]

type fillResult int

const (
	fillAborted     fillResult = iota // nothing stored: try again
	fillStored                        // stored: look in the cache
	fillUncacheable                   // not cacheable: go to the origin
)

// join returns the flight for key, and whether the caller leads it.
func (p *Proxy) join(key string) (*flight, bool) {
	f, leader := p.flights.Join(key)
	if !leader {
		p.stats.waits.Add(1)
		p.mu.Lock()
		if p.testWaitCh != nil {
			close(p.testWaitCh)
			p.testWaitCh = nil
		}
		p.mu.Unlock()
	}
	return f, leader
}

// land ends the flight f for key with res; only the first call counts.
func (p *Proxy) land(key string, f *flight, res fillResult) {
	p.flights.Land(key, f, res, nil)
}

// Errors ending an upstream fetch early.
var (
	errIdle     = errors.New("the origin sent nothing for too long")
	errShutdown = errors.New("the proxy is shutting down")
)

// serveTarget serves r, a request for u on a target host.
func (p *Proxy) serveTarget(w http.ResponseWriter, r *http.Request, u *url.URL) {
	cw := newClientWriter(w, p.cfg.ClientTimeout)
	defer cw.reset()
	rawURL := u.String()
	start := time.Now()
	if r.Method != http.MethodGet && r.Method != http.MethodHead || r.ContentLength != 0 {
		p.stats.bypassed.Add(1)
		p.forward(cw, r, u, "bypass: "+r.Method)
		return
	}
	key := KeyFor(rawURL)
	// HEAD and range requests are served from the cache, but do not
	// fill it.
	hitsOnly := r.Method == http.MethodHead || r.Header.Get("Range") != ""
	for attempt := 0; attempt < 3; attempt++ {
		if p.serveMemory(cw, r, rawURL, start) {
			return
		}
		obj, ok := p.st.GetLocal(key, store.Check{Size: -1})
		if ok {
			switch p.serveObject(cw, r, key, obj.Path, "local", rawURL, start) {
			case served:
				return
			case notServable:
				p.stats.bypassed.Add(1)
				p.forward(cw, r, u, "bypass: stored response varies")
				return
			}
		}
		if hitsOnly {
			if p.st.HasRemote() && p.serveBucket(cw, r, u, key, rawURL, start) {
				return
			}
			p.stats.bypassed.Add(1)
			p.forward(cw, r, u, "bypass: a HEAD or range request, not in the cache")
			return
		}
		f, leader := p.join(rawURL)
		if leader {
			p.lead(cw, r, u, rawURL, key, f, start)
			return
		}
		p.debugf("revproxy: GET %s: waiting for the fetch in progress", rawURL)
		res, err := f.Wait(r.Context())
		if err != nil {
			return
		}
		if res == fillUncacheable {
			break
		}
	}
	p.forward(cw, r, u, "miss")
}

// serveState is the outcome of serving a stored response.
type serveState int

const (
	served      serveState = iota
	notFound               // absent or corrupt (and removed)
	notServable            // present, but not for this request
)

// serveMemory serves r from the memory tier, if it holds a response.
func (p *Proxy) serveMemory(w *clientWriter, r *http.Request, rawURL string, start time.Time) bool {
	if p.mem == nil || requestNoCache(r) {
		return false
	}
	e, ok := p.mem.get(rawURL, time.Now())
	if !ok || !servable(e.meta, r) {
		return false
	}
	p.stats.hitsMemory.Add(1)
	p.serveStored(w, r, e.meta, bytes.NewReader(e.body), "memory", start)
	return true
}

func requestNoCache(r *http.Request) bool {
	for _, v := range r.Header.Values("Cache-Control") {
		if strings.Contains(strings.ToLower(v), "no-cache") {
			return true
		}
	}
	return strings.Contains(strings.ToLower(r.Header.Get("Pragma")), "no-cache")
}

// serveBucket serves r from the bucket, faulting the object in.
func (p *Proxy) serveBucket(w *clientWriter, r *http.Request, u *url.URL, key store.Key, rawURL string, start time.Time) bool {
	ctx, stop := p.requestContext(r.Context())
	defer stop(nil)
	obj, ok, err := p.st.Get(ctx, key, store.Check{Size: -1, Verify: VerifyObject})
	if err != nil {
		p.logf("revproxy: GET %s: %v", rawURL, err)
		return false
	}
	if !ok {
		return false
	}
	switch p.serveObject(w, r, key, obj.Path, "bucket", rawURL, start) {
	case served:
		return true
	case notServable:
		p.stats.bypassed.Add(1)
		p.forward(w, r, u, "bypass: stored response varies")
		return true
	}
	return false
}

// serveObject serves r from the stored object at path.
func (p *Proxy) serveObject(w *clientWriter, r *http.Request, key store.Key, path, source, rawURL string, start time.Time) serveState {
	f, err := os.Open(path)
	if err != nil {
		return notFound // trimmed meanwhile
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return notFound
	}
	m, err := ParseObject(f, fi.Size())
	if err == nil && m.URL != rawURL {
		err = fmt.Errorf("%w: it holds %s", errCorrupt, m.URL)
	}
	if err != nil {
		p.logf("revproxy: GET %s: stored object %s: %v: removing it", rawURL, key, err)
		p.st.Remove(key)
		return notFound
	}
	if !servable(m, r) {
		return notServable
	}
	if source == "local" {
		p.stats.hitsLocal.Add(1)
	} else {
		p.stats.hitsBucket.Add(1)
	}
	p.serveStored(w, r, m, io.NewSectionReader(f, 0, m.Size), source, start)
	return served
}

// serveStored serves a stored response, with range and conditional
// request support.
func (p *Proxy) serveStored(w *clientWriter, r *http.Request, m *Meta, body io.ReadSeeker, source string, start time.Time) {
	h := w.Header()
	for k, v := range m.Header {
		h.Set(k, v)
	}
	if _, ok := m.Header["Content-Type"]; !ok {
		h["Content-Type"] = nil // do not sniff
	}
	h.Set("X-Cache", "hit")
	h.Set("X-Cache-Source", source)
	var modtime time.Time
	if lm := m.Header["Last-Modified"]; lm != "" {
		modtime, _ = http.ParseTime(lm)
	}
	before := w.n
	http.ServeContent(w, r, "", modtime, body)
	n := w.n - before
	p.stats.bytesServed.Add(n)
	p.record(true, n, nil, start)
	p.debugf("revproxy: %s %s: hit (%s), %d bytes in %v", r.Method, m.URL, source, n, time.Since(start).Round(time.Microsecond))
}

func (p *Proxy) record(hit bool, n int64, err error, start time.Time) {
	if p.cfg.Recorder != nil {
		p.cfg.Recorder.Lookup(hit, n, err, time.Since(start))
	}
}

// requestContext is ctx, also cancelled when the proxy gives up on its
// requests at shutdown. Call stop when done.
func (p *Proxy) requestContext(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(p.ctx, func() { cancel(errShutdown) })
	return ctx, func(err error) { unhook(); cancel(err) }
}

// lead fetches u for every request waiting on f: it looks in the bucket,
// then asks the origin, streaming the response to the client and, if it
// is cacheable, to the store or the memory tier at once.
func (p *Proxy) lead(w *clientWriter, r *http.Request, u *url.URL, rawURL string, key store.Key, f *flight, start time.Time) {
	res := fillAborted
	defer func() { p.land(rawURL, f, res) }()
	if p.st.HasRemote() && p.serveBucket(w, r, u, key, rawURL, start) {
		res = fillStored
		return
	}
	res = p.fill(w, r, u, rawURL, key, f, start)
}

// fill is lead's fetch from the origin.
func (p *Proxy) fill(w *clientWriter, r *http.Request, u *url.URL, rawURL string, key store.Key, f *flight, start time.Time) fillResult {
	ctx, stop := p.requestContext(r.Context())
	defer stop(nil)
	resp, err := p.transport.RoundTrip(p.upstreamRequest(ctx, r, u, true))
	if err != nil {
		p.upstreamError(w, r, rawURL, context.Cause(ctx), err)
		return fillUncacheable
	}
	defer resp.Body.Close()

	where, ttl, why := p.decide(r, u.Path, u.RawQuery != "", resp)
	if where == storeMemory && resp.ContentLength > p.mem.maxEntry {
		where, why = storeNone, "too large for the memory tier"
	}
	if where == storeNone {
		// Let the waiters go to the origin themselves now.
		p.land(rawURL, f, fillUncacheable)
		p.stats.uncacheable.Add(1)
		p.record(false, 0, nil, start)
		p.respond(w, r, ctx, stop, rawURL, resp, "miss, not cached: "+why, start)
		return fillUncacheable
	}
	p.stats.misses.Add(1)
	p.record(false, 0, nil, start)

	meta := &Meta{URL: rawURL, Status: http.StatusOK, Header: map[string]string{}, Stored: time.Now().UTC()}
	for _, name := range keptHeaders {
		if v := strings.Join(resp.Header.Values(name), ", "); v != "" && len(v) <= maxHeader {
			meta.Header[name] = v
		}
	}
	for _, name := range varyNames(resp.Header) {
		if meta.Vary == nil {
			meta.Vary = map[string]string{}
		}
		meta.Vary[name] = strings.Join(r.Header.Values(name), ", ")
	}

	copyHeader(w.Header(), resp.Header)
	w.Header().Set("X-Cache", "miss")
	w.Header().Set("X-Cache-Source", "origin")
	if resp.ContentLength >= 0 {
		w.Header().Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	w.WriteHeader(resp.StatusCode)

	var (
		h      hash.Hash
		sw     *store.Writer // the object being written, for storeDisk
		swErr  error         // why it could not be
		sinkOK = true
		mem    *bytes.Buffer
	)
	switch where {
	case storeDisk:
		h = sha256.New()
		// The client going away ends the fill, not the write: what is
		// written is then aborted below.
		sw, swErr = p.st.Create(context.WithoutCancel(ctx), key, store.Check{Size: -1, Verify: verifyFraming})
		if swErr != nil {
			sinkOK = false
		} else {
			defer sw.Abort() // nothing, once committed
		}
	case storeMemory:
		mem = new(bytes.Buffer)
	}
	sink := func(b []byte) {
		switch {
		case !sinkOK:
		case sw != nil:
			h.Write(b)
			if _, err := sw.Write(b); err != nil {
				sinkOK, swErr = false, err
			}
		case mem != nil:
			if int64(mem.Len()+len(b)) > p.mem.maxEntry {
				sinkOK, mem = false, nil
				return
			}
			mem.Write(b)
		}
	}
	n, tail, upErr, clientErr := p.copyBody(w, resp.Body, sink, resp.ContentLength, ctx, stop)
	// The last chunk goes to the client once the response is committed
	// (or failed to be).
	defer func() {
		if tail != nil {
			w.Write(tail)
		}
	}()
	if upErr == nil && clientErr == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		upErr = fmt.Errorf("the origin sent %d bytes of the %d it declared", n, resp.ContentLength)
	}
	p.stats.bytesFetched.Add(n)

	// abandon drops what was written to the store.
	abandon := func() {
		if sw != nil {
			sw.Abort()
		}
		p.stats.aborted.Add(1)
	}
	switch {
	case upErr != nil:
		abandon()
		p.logf("revproxy: GET %s: not cached: %v after %d bytes", rawURL, upErr, n)
		p.land(rawURL, f, fillAborted)
		// Cut the client's response short, so that it sees a failure
		// rather than a complete, short body.
		panic(http.ErrAbortHandler)
	case clientErr != nil:
		abandon()
		p.verbosef("revproxy: GET %s: not cached: the client went away after %d bytes: %v", rawURL, n, clientErr)
		return fillAborted
	}

	meta.Size = n
	switch {
	case where == storeMemory && sinkOK:
		p.mem.put(&memEntry{key: rawURL, meta: meta, body: mem.Bytes(), expires: time.Now().Add(ttl)})
		p.stats.storedMemory.Add(1)
		p.debugf("revproxy: GET %s: miss, kept in memory for %v (%s), %d bytes in %v", rawURL, ttl, why, n, time.Since(start).Round(time.Microsecond))
		return fillStored
	case where == storeMemory:
		p.debugf("revproxy: GET %s: miss, too large for the memory tier, %d bytes in %v", rawURL, n, time.Since(start).Round(time.Microsecond))
		return fillUncacheable
	}

	storeStart := time.Now()
	meta.SHA256 = hex.EncodeToString(h.Sum(nil))
	var obj store.Object
	err = swErr
	if err == nil {
		var trailer []byte
		if trailer, err = encodeTrailer(meta); err == nil {
			if _, err = sw.Write(trailer); err == nil {
				obj, err = sw.Commit()
			}
		}
	}
	if p.cfg.Recorder != nil {
		p.cfg.Recorder.Store(n, err, time.Since(storeStart))
	}
	if err != nil {
		p.stats.storeErrors.Add(1)
		p.logf("revproxy: GET %s: served, but not stored: %v", rawURL, err)
		return fillUncacheable
	}
	p.st.Upload(store.Upload{Key: key, Path: obj.Path})
	p.stats.storedDisk.Add(1)
	p.verbosef("revproxy: GET %s: stored %d bytes as %s (%s) in %v", rawURL, n, key, why, time.Since(start).Round(time.Millisecond))
	return fillStored
}

// forward passes r to the origin and the response back, caching nothing.
func (p *Proxy) forward(w *clientWriter, r *http.Request, u *url.URL, why string) {
	start := time.Now()
	ctx, stop := p.requestContext(r.Context())
	defer stop(nil)
	resp, err := p.transport.RoundTrip(p.upstreamRequest(ctx, r, u, false))
	if err != nil {
		p.upstreamError(w, r, u.String(), context.Cause(ctx), err)
		return
	}
	defer resp.Body.Close()
	p.respond(w, r, ctx, stop, u.String(), resp, why, start)
}

// respond streams resp to the client, caching nothing.
func (p *Proxy) respond(w *clientWriter, r *http.Request, ctx context.Context, stop context.CancelCauseFunc, rawURL string, resp *http.Response, why string, start time.Time) {
	copyHeader(w.Header(), resp.Header)
	w.Header().Set("X-Cache", "miss")
	w.Header().Set("X-Cache-Source", "origin")
	if resp.ContentLength >= 0 && r.Method != http.MethodHead {
		w.Header().Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	w.WriteHeader(resp.StatusCode)
	n, _, upErr, clientErr := p.copyBody(w, resp.Body, nil, -1, ctx, stop)
	p.stats.bytesFetched.Add(n)
	if upErr == nil && clientErr == nil && r.Method != http.MethodHead && resp.ContentLength >= 0 && n != resp.ContentLength {
		upErr = fmt.Errorf("the origin sent %d bytes of the %d it declared", n, resp.ContentLength)
	}
	p.debugf("revproxy: %s %s: %d, %s, %d bytes in %v", r.Method, rawURL, resp.StatusCode, why, n, time.Since(start).Round(time.Microsecond))
	if upErr != nil {
		p.logf("revproxy: %s %s: %v after %d bytes", r.Method, rawURL, upErr, n)
		panic(http.ErrAbortHandler)
	}
}

// upstreamError answers a request the origin did not: 504 for a timeout,
// 502 otherwise.
func (p *Proxy) upstreamError(w *clientWriter, r *http.Request, rawURL string, cause, err error) {
	if re, ok := refusedAddr(err); ok {
		p.stats.refusedLocal.Add(1)
		p.logf("revproxy: %s %s: 403: %v", r.Method, rawURL, re)
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: %s %s: %v", r.Method, rawURL, re), http.StatusForbidden)
		return
	}
	p.stats.upstreamErrors.Add(1)
	code, what := http.StatusBadGateway, "the origin failed"
	var ne net.Error
	switch {
	case errors.Is(cause, errShutdown):
		code, what = http.StatusServiceUnavailable, "the proxy is shutting down"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		code, what = http.StatusGatewayTimeout, "the origin did not answer in time"
	}
	p.logf("revproxy: %s %s: %d: %v", r.Method, rawURL, code, err)
	w.Header().Set("X-Cache", "miss")
	http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: %s %s: %s: %v", r.Method, rawURL, what, err), code)
}

// hopHeaders are the hop-by-hop headers, never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// copyHeader copies the end-to-end headers of src to dst.
func copyHeader(dst, src http.Header) {
	var conn []string
	for _, v := range src.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			conn = append(conn, http.CanonicalHeaderKey(strings.TrimSpace(name)))
		}
	}
	for k, vv := range src {
		if isHop(k, conn) {
			continue
		}
		dst[k] = append([]string(nil), vv...)
	}
	dst.Del("Content-Length") // set from the response itself
}

func isHop(k string, conn []string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	for _, h := range conn {
		if k == h {
			return true
		}
	}
	return false
}

// upstreamRequest makes the request to the origin for r. A fill asks for
// the whole response: no range, no conditions.
func (p *Proxy) upstreamRequest(ctx context.Context, r *http.Request, u *url.URL, fill bool) *http.Request {
	out := &http.Request{
		Method:     r.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		Host:       u.Host,
	}
	copyHeader(out.Header, r.Header)
	if r.ContentLength != 0 {
		out.Body, out.ContentLength = r.Body, r.ContentLength
	}
	if fill {
		for _, h := range []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"} {
			out.Header.Del(h)
		}
	}
	out.Header.Add("Via", "1.1 "+viaToken)
	return out.WithContext(ctx)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copyBody streams body to the client and to sink (if not nil), which
// sees every chunk before the client does. A read from the origin that
// waits longer than the upstream timeout fails. With hold at or above
// zero (the declared length of a response being cached), the chunk that
// completes hold bytes is not written to the client but returned, for the
// caller to write once the response is committed: a client that has the
// whole response finds it in the cache. It returns the bytes copied, and
// the error of the origin or of the client that ended it.
func (p *Proxy) copyBody(w *clientWriter, body io.Reader, sink func([]byte), hold int64, ctx context.Context, stop context.CancelCauseFunc) (n int64, tail []byte, upErr, clientErr error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	idle := time.AfterFunc(p.cfg.UpstreamTimeout, func() { stop(errIdle) })
	defer idle.Stop()
	for {
		k, err := body.Read(buf)
		idle.Reset(p.cfg.UpstreamTimeout)
		if k > 0 {
			if tail != nil {
				// More than declared: the transport should not allow it.
				return n, nil, errors.New("the origin sent more than it declared"), nil
			}
			if sink != nil {
				sink(buf[:k])
			}
			if hold >= 0 && n+int64(k) == hold {
				tail = append([]byte(nil), buf[:k]...)
			} else if _, werr := w.Write(buf[:k]); werr != nil {
				return n, nil, nil, werr
			}
			n += int64(k)
		}
		if err == io.EOF {
			return n, tail, nil, nil
		}
		if err != nil {
			cause := context.Cause(ctx)
			if cause == context.Canceled {
				// The client's request ended (it went away): the
				// read from the origin was cut for that, and may
				// fail before a write to the client does.
				return n, nil, nil, err
			}
			if cause != nil {
				err = fmt.Errorf("%w (%v)", cause, err)
			}
			return n, nil, err, nil
		}
	}
}

// clientWriter is the client's ResponseWriter, with a deadline on each
// write so that a client that stops reading is dropped, and a count of
// the body bytes written.
type clientWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	n       int64
}

func newClientWriter(w http.ResponseWriter, timeout time.Duration) *clientWriter {
	return &clientWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
}

func (c *clientWriter) Write(b []byte) (int, error) {
	c.rc.SetWriteDeadline(time.Now().Add(c.timeout))
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// reset clears the write deadline, which would otherwise outlive the
// request on a kept-alive connection.
func (c *clientWriter) reset() { c.rc.SetWriteDeadline(time.Time{}) }

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *clientWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
