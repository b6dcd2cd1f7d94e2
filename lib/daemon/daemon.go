// Package daemon serves the cache-prog protocol to many clients at once:
// one long-lived process per host, one protocol session per connection.
//
// # Layout
//
// A [Server] accepts connections on one or more listeners (see [Listen] for
// the addresses it takes: a loopback TCP port or a Unix socket). Each
// connection is a session with its own [cacheprog.Server] and its own
// handler from [Server.NewHandler]; the handlers of all sessions normally
// share one store. A client's close request ends its own session only.
//
// On a Unix socket a client may hand its own standard input and output
// over to the daemon ([HandOver], SCM_RIGHTS) instead of streaming the
// protocol through the socket: "go-cache-plugin connect" does so with the
// pipes the go command gave it, so that the daemon reads the go command's
// requests and writes its responses directly, with no process copying in
// between. The daemon tells the two apart by the client's first message
// (a hand-over starts with a NUL byte, a request never does), after
// writing the capabilities line on the socket, which a stream client waits
// for. Over TCP every session is a stream.
//
// A client may ask things of its own session ([SessionOptions], such as
// the name of its build's manifest) with one line of JSON after a NUL
// byte and a fixed prefix, before anything else: after the marker of a
// hand-over, or as the first line of a stream ([WriteOptions]). Clients
// that ask nothing send nothing more, as before.
//
// With [Server.Admit] set, a client the policy does not serve (see
// [Policy]: by default, users other than the daemon's own and root) is
// sent one line in place of the capabilities, which [ReadGreeting] turns
// into a [RefusedError], and nothing it sends is read as a request.
//
// A bad client is dropped and never affects the others: a stream that
// cannot be framed (garbage JSON, a put cut off mid-body), a client that
// goes away without close, or one that leaves its responses unread for
// [Server.WriteTimeout]. A client that does not read costs bounded memory
// meanwhile: once the session's response queue and concurrency slots are
// full, the server stops reading its requests.
//
// [Server.Shutdown] stops accepting, lets the live sessions finish within a
// bound, then cuts the rest. Draining the shared store is the caller's job,
// once the sessions are done.
//
// # Log format
//
// Lines go to [Server.Logf] (always) and [Server.Verbosef] (if set), one
// per event, each starting with the session it concerns:
//
//	session 7: opened from pid 4242 uid 1000               (Verbosef; a TCP peer's address)
//	session 9: refused 127.0.0.1:41234 uid 1001: <reason>  (Logf)
//	session 7: serving the client's own stdin and stdout (handed over)   (Verbosef)
//	session 7: closed after 1.2s: 312 gets, 298 hits, 14 puts (Verbosef)
//	session 8: dropped after 0.3s: <reason> (N gets, M puts answered or abandoned)   (Logf)
//	shutdown: 2 live sessions; waiting up to 30s for them to finish   (Logf)
//	shutdown: cut 1 session still open: 8                     (Logf)
//
// With [Server.Debugf] set, every request and response is logged too, as
// "session N: request ..." and "session N: response ...".
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// DefaultWriteTimeout is the [Server.WriteTimeout] used if none is set.
const DefaultWriteTimeout = time.Minute

// cutWait bounds how long Shutdown waits for cut sessions to wind down
// (their handlers to return) before it gives up on them.
const cutWait = 5 * time.Second

// Reasons for dropping a session, as counted in [Stats.Dropped].
const (
	DropProtocol   = "protocol"    // the request stream could not be read
	DropNoClose    = "no_close"    // the client went away without a close request
	DropNotReading = "not_reading" // the client left its responses unread for WriteTimeout
	DropShutdown   = "shutdown"    // still open when the shutdown bound passed
	DropRefused    = "refused"     // not served: Server.Admit said no
)

// A Server serves cache-prog sessions on listeners. Set its fields before
// the first call to Serve and do not change them after.
type Server struct {
	// NewHandler returns the handler of a new session, given what the
	// client asked of it. It is required.
	NewHandler func(SessionOptions) cacheprog.Handler

	// MaxConcurrency bounds the requests of one session handled at once,
	// as [cacheprog.Server.MaxConcurrency].
	MaxConcurrency int

	// WriteTimeout is how long a response may wait to be written to a
	// client before the client is dropped as not reading; if zero,
	// DefaultWriteTimeout.
	WriteTimeout time.Duration

	// Admit, if set, decides whether a client is served, given what the
	// system tells of it ([PeerOf]; see [Policy]). A client it refuses is
	// sent the error's text in place of the capabilities (see
	// [ReadGreeting]) and is not read from: nothing it sends reaches a
	// handler. If Admit is nil, every client is served.
	Admit func(Peer) error

	// Logf receives session drops and shutdown reports; Verbosef session
	// opens and closes; Debugf every request and response. Each may be nil.
	Logf, Verbosef, Debugf func(format string, args ...any)

	mu        sync.Mutex
	listeners map[net.Listener]bool
	sessions  map[*session]bool
	shutdown  bool
	idle      chan struct{} // closed when shutdown is set and no session is live
	nextID    int64
	wg        sync.WaitGroup // accept loops

	stats   serverCounters
	dropMu  sync.Mutex
	dropped map[string]int64
}

// serverCounters are a Server's live counters, the twins of [Stats]'s
// int64 fields (see internal/counters).
type serverCounters struct {
	accepted, closed atomic.Int64
}

// ErrServerClosed is returned by [Server.Serve] after [Server.Shutdown].
var ErrServerClosed = errors.New("daemon: server closed")

// Stats is a snapshot of a server's sessions.
type Stats struct {
	Live     int              `json:"live"`     // sessions open now
	Accepted int64            `json:"accepted"` // sessions opened since start
	Closed   int64            `json:"closed"`   // sessions ended by the client's close request
	Dropped  map[string]int64 `json:"dropped"`  // sessions dropped, by reason (Drop* constants)
	Sessions []SessionInfo    `json:"sessions"` // the live sessions, oldest first
}

// SessionInfo describes a live session.
type SessionInfo struct {
	ID       int64     `json:"id"`
	Peer     string    `json:"peer"`
	Start    time.Time `json:"start"`
	Requests int64     `json:"requests"`
}

// Stats returns a snapshot of the server's sessions.
func (s *Server) Stats() Stats {
	st := counters.Snapshot[Stats](&s.stats)
	st.Dropped = map[string]int64{}
	st.Sessions = []SessionInfo{}
	s.dropMu.Lock()
	for k, v := range s.dropped {
		st.Dropped[k] = v
	}
	s.dropMu.Unlock()
	s.mu.Lock()
	for ss := range s.sessions {
		st.Sessions = append(st.Sessions, SessionInfo{
			ID: ss.id, Peer: ss.peer, Start: ss.start,
			Requests: ss.gets.Load() + ss.puts.Load(),
		})
	}
	s.mu.Unlock()
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].ID < st.Sessions[j].ID })
	st.Live = len(st.Sessions)
	return st
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) verbosef(format string, args ...any) {
	if s.Verbosef != nil {
		s.Verbosef(format, args...)
	}
}

// Serve accepts connections on l and serves a session on each until l
// fails or the server is shut down; then it returns ErrServerClosed. It
// closes l before returning. Sessions go on after Serve returns; see
// [Server.Shutdown].
func (s *Server) Serve(l net.Listener) error {
	if s.NewHandler == nil {
		return errors.New("daemon: no NewHandler")
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]bool)
	}
	s.listeners[l] = true
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()

	var backoff time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.isShutdown() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				// Out of file descriptors, say: wait and try again, as
				// net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logf("accept: %v; retrying in %v", err, backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("daemon: accept: %w", err)
		}
		backoff = 0
		if !s.start(conn) {
			conn.Close()
			return ErrServerClosed
		}
	}
}

// isTemporary reports errors that a later Accept may not repeat.
func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// start registers a session on conn and runs it, unless the server is
// shutting down.
func (s *Server) start(conn net.Conn) bool {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		cancel()
		return false
	}
	if s.sessions == nil {
		s.sessions = make(map[*session]bool)
	}
	s.nextID++
	ss := &session{
		srv: s, id: s.nextID, conn: conn, peer: peerName(conn),
		start: time.Now(), ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	s.sessions[ss] = true
	s.mu.Unlock()
	s.stats.accepted.Add(1)
	go ss.run()
	return true
}

// peerName names the other end of conn for logs: its address, or for a
// Unix socket the client's process ID where the system says.
func peerName(conn net.Conn) string {
	if a := conn.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	if uc, ok := conn.(*net.UnixConn); ok {
		if _, pid, err := unixPeerCred(uc); err == nil {
			return "pid " + strconv.Itoa(pid)
		}
	}
	if a := conn.LocalAddr(); a != nil {
		return a.Network() + ":" + a.String()
	}
	return "?"
}

func (s *Server) dropped1(reason string) {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	if s.dropped == nil {
		s.dropped = make(map[string]int64)
	}
	s.dropped[reason]++
}

// unregister removes a finished session and returns a function that
// signals its end to a waiting Shutdown.
func (s *Server) unregister(ss *session) (notify func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
	if s.shutdown && len(s.sessions) == 0 && s.idle != nil {
		idle := s.idle
		s.idle = nil
		return func() { close(idle) }
	}
	return func() {}
}

// A ShutdownReport says how [Server.Shutdown] went.
type ShutdownReport struct {
	Finished int // sessions that ended by themselves during the shutdown
	Cut      int // sessions cut when the bound passed
	Stuck    int // cut sessions whose handlers had not returned a while later
}

// Shutdown stops accepting connections (closing every listener) and waits
// for the live sessions to end by themselves until ctx is done. Sessions
// still open then are cut: their connections are closed and their
// contexts cancelled, and Shutdown waits a few seconds more for their
// handlers to return. The sessions are served as usual meanwhile.
func (s *Server) Shutdown(ctx context.Context) ShutdownReport {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	live := len(s.sessions)
	var idle chan struct{}
	if live > 0 {
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle = s.idle
	}
	s.mu.Unlock()
	s.wg.Wait() // accept loops: no session starts after this

	var rep ShutdownReport
	if live == 0 {
		return rep
	}
	bound := "until told to stop"
	if dl, ok := ctx.Deadline(); ok {
		bound = "up to " + time.Until(dl).Round(time.Millisecond).String()
	}
	s.logf("shutdown: %d live %s; waiting %s for %s to finish", live, plural(live, "session"), bound, them(live))
	select {
	case <-idle:
		rep.Finished = live
		return rep
	case <-ctx.Done():
	}

	s.mu.Lock()
	var cut []*session
	for ss := range s.sessions {
		cut = append(cut, ss)
	}
	s.mu.Unlock()
	sort.Slice(cut, func(i, j int) bool { return cut[i].id < cut[j].id })
	rep.Cut = len(cut)
	rep.Finished = live - rep.Cut
	for _, ss := range cut {
		ss.drop(DropShutdown, "still open at shutdown")
	}
	if len(cut) > 0 {
		s.logf("shutdown: cut %d %s still open: %s", len(cut), plural(len(cut), "session"), sessionIDs(cut))
	}
	timer := time.NewTimer(cutWait)
	defer timer.Stop()
	for _, ss := range cut {
		select {
		case <-ss.done:
		case <-timer.C:
			for _, ss := range cut {
				select {
				case <-ss.done:
				default:
					rep.Stuck++
				}
			}
			s.logf("shutdown: %d cut %s still busy after %v; leaving %s", rep.Stuck, plural(rep.Stuck, "session"), cutWait, them(rep.Stuck))
			return rep
		}
	}
	return rep
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func sessionIDs(ss []*session) string {
	var b []byte
	for i, s := range ss {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = fmt.Appendf(b, "%d", s.id)
	}
	return string(b)
}

// session is one connection.
type session struct {
	srv    *Server
	id     int64
	conn   net.Conn
	peer   string
	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	gets, hits, puts atomic.Int64

	mu      sync.Mutex
	reason  string      // why the daemon dropped the session, if it did
	kind    string      // its Drop* constant
	closers []io.Closer // files handed over by the client, closed with the session
}

// drop ends the session from the daemon's side: its connection is closed,
// so that Serve's reads and writes fail and it winds down. The first
// reason given is the one reported.
func (ss *session) drop(kind, reason string) {
	ss.mu.Lock()
	if ss.reason == "" {
		ss.kind, ss.reason = kind, reason
	}
	closers := ss.closers
	ss.mu.Unlock()
	ss.cancel()
	ss.conn.Close()
	for _, c := range closers {
		c.Close()
	}
}

// adopt registers files to close with the session. It reports false (and
// closes them) if the session has been dropped already.
func (ss *session) adopt(files ...io.Closer) bool {
	ss.mu.Lock()
	dropped := ss.reason != ""
	if !dropped {
		ss.closers = append(ss.closers, files...)
	}
	ss.mu.Unlock()
	if dropped {
		for _, f := range files {
			f.Close()
		}
	}
	return !dropped
}

// closeAll closes the session's connection and files.
func (ss *session) closeAll() {
	ss.conn.Close()
	ss.mu.Lock()
	closers := ss.closers
	ss.closers = nil
	ss.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
}

func (ss *session) dropReason() (kind, reason string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.kind, ss.reason
}

func (ss *session) run() {
	s := ss.srv
	timeout := s.WriteTimeout
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	var (
		in      io.Reader
		out     writeDeadliner
		mode    = "stream"
		opts    SessionOptions
		err     error
		refused error
	)
	peer := PeerOf(ss.conn)
	s.verbosef("session %d: opened from %s", ss.id, peer)
	if s.Admit != nil {
		refused = s.Admit(peer)
	}
	switch {
	case refused != nil:
		ss.mu.Lock()
		if ss.reason == "" {
			ss.kind, ss.reason = DropRefused, "refused "+peer.String()+": "+refused.Error()
		}
		ss.mu.Unlock()
		ss.refuse(refused.Error(), timeout)
		err = refused
	case ss.isUnix():
		in, out, mode, opts, err = ss.handshake(ss.conn.(*net.UnixConn), timeout)
	default:
		in, out, opts, err = ss.streamHandshake(ss.conn, timeout)
	}
	if err == nil {
		if mode != "stream" {
			s.verbosef("session %d: serving %s", ss.id, mode)
		}
		if opts != (SessionOptions{}) {
			s.verbosef("session %d: options %+v", ss.id, opts)
		}
		srv := &cacheprog.Server{
			Handler:        countRequests(s.NewHandler(opts), ss),
			MaxConcurrency: s.MaxConcurrency,
		}
		if s.Debugf != nil {
			srv.Logf = func(format string, args ...any) {
				s.Debugf("session %d: "+format, append([]any{ss.id}, args...)...)
			}
		}
		err = srv.Serve(ss.ctx, in, &deadlineWriter{ss: ss, w: out, timeout: timeout})
	}
	ss.closeAll()
	ss.cancel()

	age := time.Since(ss.start).Round(time.Millisecond)
	kind, reason := ss.dropReason()
	switch {
	case kind != "":
		// Dropped by the daemon; err is a consequence.
	case err == nil:
	case errors.Is(err, cacheprog.ErrNoClose):
		kind, reason = DropNoClose, "client went away without a close request"
	default:
		kind, reason = DropProtocol, err.Error()
	}
	// Count and unregister the session before logging its end, so that
	// whoever reads the line sees the stats agree; but signal the end only
	// after, so that a shutdown does not exit before the line is out.
	if kind == "" {
		s.stats.closed.Add(1)
	} else {
		s.dropped1(kind)
	}
	notify := s.unregister(ss)
	if kind == "" {
		s.verbosef("session %d: closed after %v: %d gets, %d hits, %d puts",
			ss.id, age, ss.gets.Load(), ss.hits.Load(), ss.puts.Load())
	} else if kind == DropRefused {
		s.logf("session %d: %s", ss.id, reason)
	} else {
		s.logf("session %d: dropped after %v: %s (%d gets, %d puts answered or abandoned)",
			ss.id, age, reason, ss.gets.Load(), ss.puts.Load())
	}
	notify()
	close(ss.done)
}

func (ss *session) isUnix() bool {
	_, ok := ss.conn.(*net.UnixConn)
	return ok
}

// Bounds on the wait for a refused client to hang up, and on what is read
// (and discarded) from it meanwhile.
const (
	refuseLinger   = 5 * time.Second
	maxRefusedRead = 1 << 20
)

// refuse tells the client that it is not served, and why, and ends the
// connection without reading a request: it writes the refusal line in
// place of the capabilities, closes its side for writing, then discards
// whatever the client sends until it hangs up (within bounds), so that
// closing on unread data does not reset the connection before the client
// has read the line.
func (ss *session) refuse(why string, timeout time.Duration) {
	ss.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := ss.conn.Write(refusalLine(why)); err != nil {
		return
	}
	if cw, ok := ss.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	ss.conn.SetReadDeadline(time.Now().Add(refuseLinger))
	io.CopyN(io.Discard, ss.conn, maxRefusedRead)
}

// deadlineWriter writes responses to a session's connection, dropping the
// session if a write does not complete within timeout. Other write errors
// mean the client has gone: its requests end too, and Serve reports that.
type deadlineWriter struct {
	ss      *session
	w       writeDeadliner
	timeout time.Duration
}

// A writeDeadliner is a connection or a pollable file.
type writeDeadliner interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.w.SetWriteDeadline(time.Now().Add(w.timeout))
	n, err := w.w.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		w.ss.drop(DropNotReading, fmt.Sprintf("client left its responses unread for %v", w.timeout))
	}
	return n, err
}

// countRequests wraps h to count a session's requests for its log lines,
// keeping h's fast path if it has one.
func countRequests(h cacheprog.Handler, ss *session) cacheprog.Handler {
	c := &countingHandler{h: h, ss: ss}
	if f, ok := h.(cacheprog.FastGetter); ok {
		return &countingFastGetter{c, f}
	}
	return c
}

// countingHandler counts a session's requests.
type countingHandler struct {
	h  cacheprog.Handler
	ss *session
}

type countingFastGetter struct {
	*countingHandler
	f cacheprog.FastGetter
}

func (c *countingFastGetter) GetFast(actionID []byte) (cacheprog.Entry, bool, bool) {
	e, found, answered := c.f.GetFast(actionID)
	if answered {
		c.ss.gets.Add(1)
		if found {
			c.ss.hits.Add(1)
		}
	}
	return e, found, answered
}

func (c *countingHandler) Get(ctx context.Context, actionID []byte) (cacheprog.Entry, bool, error) {
	c.ss.gets.Add(1)
	e, ok, err := c.h.Get(ctx, actionID)
	if ok {
		c.ss.hits.Add(1)
	}
	return e, ok, err
}

func (c *countingHandler) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	c.ss.puts.Add(1)
	return c.h.Put(ctx, req)
}

func (c *countingHandler) Close(ctx context.Context) error { return c.h.Close(ctx) }
