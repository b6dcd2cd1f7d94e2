package revproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const handshakeTimeout = 15 * time.Second

// serveConnect serves a CONNECT request: for a target, TLS is terminated
// here and the requests inside served through the cache; other hosts are
// tunnelled or refused.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	authority := r.Host
	host, port, err := net.SplitHostPort(authority)
	if err != nil || host == "" || !validPort(port) || strings.ContainsAny(host, "/@ ") {
		p.stats.badRequests.Add(1)
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: CONNECT wants host:port, got %q", authority), http.StatusBadRequest)
		return
	}
	switch {
	case p.targets.match(host):
		p.intercept(w, r, host, authority)
	case p.cfg.Tunnel:
		p.tunnel(w, r, authority)
	default:
		p.stats.refused.Add(1)
		p.debugf("revproxy: CONNECT %s: refused: not a target and tunnelling is off", authority)
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: %s is not one of this proxy's targets and tunnelling to other hosts is off (--revproxy-tunnel=false)", host), http.StatusForbidden)
	}
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536 && s[0] != '+' && s[0] != '0'
}

// hijack takes the client's connection over after answering the CONNECT
// with 200. Bytes the client sent ahead are kept.
func hijack(w http.ResponseWriter) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("take the connection over: %w", err)
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("answer CONNECT: %w", err)
	}
	if n := brw.Reader.Buffered(); n > 0 {
		return &bufferedConn{Conn: conn, r: io.MultiReader(io.LimitReader(brw.Reader, int64(n)), conn)}, nil
	}
	return conn, nil
}

// bufferedConn is a connection with bytes read ahead of it.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// tunnel connects the client to authority, unchanged.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, authority string) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	up, err := p.dialer.DialContext(ctx, "tcp", authority)
	cancel()
	if re, ok := refusedAddr(err); ok {
		p.stats.refusedLocal.Add(1)
		p.logf("revproxy: CONNECT %s: %v", authority, re)
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: CONNECT %s: %v", authority, re), http.StatusForbidden)
		return
	}
	if err != nil {
		p.stats.upstreamErrors.Add(1)
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: tunnel to %s: %v", authority, err), http.StatusBadGateway)
		return
	}
	down, err := hijack(w)
	if err != nil {
		up.Close()
		p.logf("revproxy: CONNECT %s: %v", authority, err)
		return
	}
	if !p.track(down, up) {
		down.Close()
		up.Close()
		return
	}
	defer p.untrack(down, up)
	p.stats.tunnels.Add(1)
	p.debugf("revproxy: CONNECT %s: tunnel", authority)
	var wg sync.WaitGroup
	wg.Go(func() { pipe(up, down) })
	pipe(down, up)
	wg.Wait()
}

// pipe copies from src to dst until src ends, then passes the end on.
func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	src.Close()
}

// track registers tunnel connections, which Close closes; false if the
// proxy is closing.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	for _, c := range conns {
		p.tunnels[c] = struct{}{}
	}
	p.stats.openTunnels.Add(1)
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(p.tunnels, c)
	}
	p.stats.openTunnels.Add(-1)
}

// intercept terminates TLS for a target with a leaf certificate of the
// CA and hands the connection to the inner server, which serves its
// requests through the cache.
func (p *Proxy) intercept(w http.ResponseWriter, r *http.Request, host, authority string) {
	conn, err := hijack(w)
	if err != nil {
		p.logf("revproxy: CONNECT %s: %v", authority, err)
		return
	}
	cfg := &tls.Config{
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" {
				name = host
			}
			if !strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(host, ".")) {
				return nil, fmt.Errorf("server name %q is not the CONNECT host %q", name, host)
			}
			return p.leaves.get(strings.TrimSuffix(host, "."))
		},
	}
	tc := tls.Server(conn, cfg)
	ctx, cancel := context.WithTimeout(r.Context(), handshakeTimeout)
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		p.stats.tlsErrors.Add(1)
		p.logf("revproxy: CONNECT %s: TLS handshake with the client failed (does it trust the proxy's CA?): %v", authority, err)
		tc.Close()
		return
	}
	p.stats.intercepts.Add(1)
	p.debugf("revproxy: CONNECT %s: TLS terminated", authority)
	if !p.innerLn.push(&interceptedConn{Conn: tc, authority: authority}) {
		tc.Close()
	}
}

// interceptedConn is a client's TLS connection for a target.
type interceptedConn struct {
	*tls.Conn
	authority string // host:port of the CONNECT
}

type authorityKey struct{}

// serveIntercepted serves a request from inside an intercepted TLS
// connection.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	if !p.begin() {
		w.Header().Set("Connection", "close")
		http.Error(w, "go-cache-plugin revproxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer p.reqs.Done()
	authority, _ := r.Context().Value(authorityKey{}).(string)
	host, _, _ := net.SplitHostPort(authority)
	reqHost := r.Host
	if h, _, err := net.SplitHostPort(reqHost); err == nil {
		reqHost = h
	}
	if !strings.EqualFold(strings.TrimSuffix(reqHost, "."), strings.TrimSuffix(host, ".")) {
		p.stats.badRequests.Add(1)
		http.Error(w, fmt.Sprintf("go-cache-plugin revproxy: request for host %q on a connection to %q", r.Host, authority), http.StatusMisdirectedRequest)
		return
	}
	if r.Method == http.MethodConnect {
		p.stats.badRequests.Add(1)
		http.Error(w, "go-cache-plugin revproxy: CONNECT inside CONNECT", http.StatusBadRequest)
		return
	}
	if isLoop(r) {
		p.stats.badRequests.Add(1)
		http.Error(w, "go-cache-plugin revproxy: request loop (the target leads back to this proxy)", http.StatusLoopDetected)
		return
	}
	u := *r.URL
	u.Scheme, u.Host, u.User, u.Fragment = "https", authority, nil, ""
	p.serveTarget(w, r, normalize(&u))
}

// chanListener is a net.Listener of connections pushed to it.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server; false if the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return pseudoAddr{} }

type pseudoAddr struct{}

func (pseudoAddr) Network() string { return "revproxy" }
func (pseudoAddr) String() string  { return "intercepted" }

// newErrorLog returns a logger for the inner server's own errors (bad
// requests on intercepted connections, say).
func newErrorLog(logf func(string, ...any)) *log.Logger {
	return log.New(logWriter(logf), "", 0)
}

type logWriter func(string, ...any)

func (f logWriter) Write(b []byte) (int, error) {
	f("revproxy: intercepted connection: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
