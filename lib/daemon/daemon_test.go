package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// hangGuard bounds every wait in these tests. It guards against hangs
// only: no test relies on it for synchronisation.
const hangGuard = 15 * time.Second

const capsText = `{"ID":0,"KnownCommands":["get","put","close"]}`

// memHandler is a session handler on a shared in-memory map.
type memHandler struct {
	shared *memStore
	closed atomic.Bool
}

type memStore struct {
	mu      sync.Mutex
	entries map[string]cacheprog.Entry
	closes  atomic.Int64
}

func (h *memHandler) Get(ctx context.Context, actionID []byte) (cacheprog.Entry, bool, error) {
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	e, ok := h.shared.entries[string(actionID)]
	return e, ok, nil
}

func (h *memHandler) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	n, err := io.Copy(io.Discard, req.Body)
	if err != nil {
		return "", err
	}
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	h.shared.entries[string(req.ActionID)] = cacheprog.Entry{OutputID: req.OutputID, Size: n, Time: time.Unix(1, 0), DiskPath: "/x/" + cacheprog.ShortID(req.OutputID)}
	return "/x/" + cacheprog.ShortID(req.OutputID), nil
}

func (h *memHandler) Close(context.Context) error {
	if h.closed.Swap(true) {
		panic("session handler closed twice")
	}
	h.shared.closes.Add(1)
	return nil
}

// logBuf collects log lines and lets a test wait for one.
type logBuf struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogBuf() *logBuf { return &logBuf{changed: make(chan struct{})} }

func (l *logBuf) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// wait waits for a line matching re and returns it.
func (l *logBuf) wait(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(hangGuard)
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			if rx.MatchString(line) {
				l.mu.Unlock()
				return line
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no log line matching %q; log:\n%s", re, l)
		}
	}
}

type fixture struct {
	srv   *Server
	store *memStore
	log   *logBuf
	addr  Addr
	done  chan error
}

func start(t *testing.T, configure func(*Server)) *fixture {
	t.Helper()
	f := &fixture{store: &memStore{entries: map[string]cacheprog.Entry{}}, log: newLogBuf(), done: make(chan error, 1)}
	f.srv = &Server{
		NewHandler: func(SessionOptions) cacheprog.Handler { return &memHandler{shared: f.store} },
		Logf:       f.log.logf,
		Verbosef:   f.log.logf,
	}
	if configure != nil {
		configure(f.srv)
	}
	f.addr = Addr{Network: "unix", Address: filepath.Join(shortTemp(t), "s")}
	l, err := Listen(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { f.done <- f.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		defer cancel()
		f.srv.Shutdown(ctx)
	})
	return f
}

// shortTemp is a temporary directory with a short path, for sockets.
func shortTemp(t *testing.T) string {
	dir, err := os.MkdirTemp("", "dmn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// client is a raw protocol client.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (f *fixture) dial(t *testing.T) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	conn, err := Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	if line := c.line(); line != capsText {
		t.Fatalf("first line %q, want %q", line, capsText)
	}
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(hangGuard))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read response: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func (c *client) response() cacheprog.Response {
	c.t.Helper()
	var rsp cacheprog.Response
	line := c.line()
	if err := json.Unmarshal([]byte(line), &rsp); err != nil {
		c.t.Fatalf("bad response %q: %v", line, err)
	}
	return rsp
}

// eof checks that the daemon closes the connection after at most a few
// more lines.
func (c *client) eof() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := io.Copy(io.Discard, c.r); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("waiting for the daemon to close: %v", err)
	}
}

func id(b byte) []byte { return bytes.Repeat([]byte{b}, cacheprog.IDSize) }

func getReq(n int64, action []byte) string {
	b, _ := json.Marshal(cacheprog.Request{ID: n, Command: cacheprog.CmdGet, ActionID: action})
	return string(b) + "\n"
}

func putReq(n int64, action, output, body []byte) string {
	b, _ := json.Marshal(cacheprog.Request{ID: n, Command: cacheprog.CmdPut, ActionID: action, OutputID: output, BodySize: int64(len(body))})
	return string(b) + "\n\n\"" + base64.StdEncoding.EncodeToString(body) + "\"\n"
}

func closeReq(n int64) string {
	b, _ := json.Marshal(cacheprog.Request{ID: n, Command: cacheprog.CmdClose})
	return string(b) + "\n"
}

// roundTrip does a put and a get of it on c, starting at request ID n.
func (c *client) roundTrip(n int64, key byte) {
	c.t.Helper()
	c.send(putReq(n, id(key), id(key+1), []byte("hello")))
	if rsp := c.response(); rsp.ID != n || rsp.Err != "" {
		c.t.Fatalf("put: %+v", rsp)
	}
	c.send(getReq(n+1, id(key)))
	if rsp := c.response(); rsp.ID != n+1 || rsp.Miss || rsp.Size != 5 {
		c.t.Fatalf("get: %+v", rsp)
	}
}

func (c *client) close(n int64) {
	c.t.Helper()
	c.send(closeReq(n))
	if rsp := c.response(); rsp.ID != n || rsp.Err != "" {
		c.t.Fatalf("close: %+v", rsp)
	}
	c.eof()
}

// TestSessionsShareStore runs interleaved sessions on one server: each
// sees what the others put, and a client's close ends its session only.
func TestSessionsShareStore(t *testing.T) {
	f := start(t, nil)
	a, b := f.dial(t), f.dial(t)
	if st := f.srv.Stats(); st.Live != 2 || runtime.GOOS == "linux" && st.Sessions[0].Peer != fmt.Sprintf("pid %d", os.Getpid()) {
		t.Errorf("stats %+v, want 2 live sessions with this process as their peer", st)
	}
	a.roundTrip(1, 10)
	b.send(getReq(1, id(10)))
	if rsp := b.response(); rsp.Miss || rsp.Size != 5 {
		t.Fatalf("b does not see a's put: %+v", rsp)
	}
	a.close(3)
	b.roundTrip(2, 20)
	c := f.dial(t)
	c.send(getReq(1, id(20)))
	if rsp := c.response(); rsp.Miss {
		t.Fatalf("c does not see b's put: %+v", rsp)
	}
	b.close(4)
	c.close(2)
	for i := 1; i <= 3; i++ {
		f.log.wait(t, fmt.Sprintf(`session %d: closed`, i))
	}

	st := f.srv.Stats()
	if st.Accepted != 3 || st.Closed != 3 || st.Live != 0 || len(st.Dropped) != 0 {
		t.Errorf("stats %+v, want 3 accepted and closed, none live or dropped", st)
	}
	if n := f.store.closes.Load(); n != 3 {
		t.Errorf("%d session handlers closed, want 3", n)
	}
}

// TestBadClientsDropped connects one client of each bad kind beside a good
// one: each bad one is dropped with a log line naming the problem, and the
// good session goes on as if nothing happened.
func TestBadClientsDropped(t *testing.T) {
	f := start(t, func(s *Server) { s.WriteTimeout = 300 * time.Millisecond; s.MaxConcurrency = 2 })
	good := f.dial(t)
	good.roundTrip(1, 1)

	garbage := f.dial(t)
	garbage.send("this is not JSON\n")
	garbage.eof()
	f.log.wait(t, `session 2: dropped after .*: malformed request`)

	cut := f.dial(t)
	body := bytes.Repeat([]byte("x"), 100<<10)
	msg := putReq(1, id(30), id(31), body)
	cut.send(msg[:len(msg)/2])
	cut.conn.(*net.UnixConn).CloseWrite()
	cut.eof()
	f.log.wait(t, `session 3: dropped after .*: .*input ended inside the body`)

	gone := f.dial(t)
	gone.send(getReq(1, id(1)))
	gone.response()
	gone.conn.Close()
	f.log.wait(t, `session 4: dropped after .*: client went away without a close request`)

	// A client that writes requests and never reads: the daemon stops
	// reading once its queue is full, and drops it after WriteTimeout.
	deaf := f.dial(t)
	written := flood(t, deaf.conn, 300*time.Millisecond)
	f.log.wait(t, `session 5: dropped after .*: client left its responses unread for 300ms`)
	t.Logf("the non-reading client got %d bytes of requests in before it was blocked", written)

	good.roundTrip(3, 2)
	good.close(5)
	f.log.wait(t, `session 1: closed`)

	st := f.srv.Stats()
	for _, r := range []string{DropProtocol, DropNoClose, DropNotReading} {
		want := int64(1)
		if r == DropProtocol {
			want = 2 // garbage and the cut put
		}
		if st.Dropped[r] != want {
			t.Errorf("dropped[%s] = %d, want %d (stats %+v)", r, st.Dropped[r], want, st)
		}
	}
	if st.Closed != 1 || st.Live != 0 {
		t.Errorf("stats %+v, want 1 closed, none live", st)
	}
}

// flood writes get requests to conn without reading until a write makes
// no progress for stall, and returns the bytes written.
func flood(t *testing.T, conn net.Conn, stall time.Duration) int64 {
	t.Helper()
	var written, n int64
	var batch bytes.Buffer
	deadline := time.Now().Add(hangGuard)
	for time.Now().Before(deadline) {
		batch.Reset()
		for range 1000 {
			n++
			batch.WriteString(getReq(n, id(byte(n))))
		}
		conn.SetWriteDeadline(time.Now().Add(stall))
		k, err := conn.Write(batch.Bytes())
		written += int64(k)
		if err != nil {
			return written
		}
	}
	t.Fatalf("wrote %d bytes of requests without being blocked", written)
	return 0
}

// TestNonReadingClientMemory checks that a client that never reads costs
// the daemon bounded memory: it is blocked after little input, and the
// heap does not grow with what it tries to send.
func TestNonReadingClientMemory(t *testing.T) {
	f := start(t, func(s *Server) { s.WriteTimeout = time.Hour })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	deaf := f.dial(t)
	written := flood(t, deaf.conn, 500*time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("client blocked after %d bytes; heap grew by %d bytes", written, growth)
	if written > 16<<20 {
		t.Errorf("the daemon read %d bytes from a client that reads nothing", written)
	}
	if growth > 8<<20 {
		t.Errorf("heap grew by %d bytes for one non-reading client", growth)
	}
	// Another session is served meanwhile.
	good := f.dial(t)
	good.roundTrip(1, 1)
	good.close(3)
}

// TestShutdown checks that a shutdown refuses new clients, serves the live
// sessions until they close, and cuts those still open at the bound.
func TestShutdown(t *testing.T) {
	f := start(t, nil)
	live, idle := f.dial(t), f.dial(t)
	live.roundTrip(1, 1)

	ctx, cancel := context.WithCancel(context.Background())
	report := make(chan ShutdownReport, 1)
	go func() { report <- f.srv.Shutdown(ctx) }()
	f.log.wait(t, `shutdown: 2 live sessions; waiting until told to stop`)
	select {
	case err := <-f.done:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Serve did not return")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), hangGuard)
	defer dcancel()
	if _, err := Dial(dctx, f.addr); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("dial during shutdown: %v, want ErrNoDaemon", err)
	}

	// Live sessions are still served.
	live.roundTrip(3, 2)
	live.close(5)
	f.log.wait(t, `session 1: closed`)

	cancel()
	var rep ShutdownReport
	select {
	case rep = <-report:
	case <-time.After(hangGuard):
		t.Fatal("Shutdown did not return")
	}
	if rep != (ShutdownReport{Finished: 1, Cut: 1}) {
		t.Errorf("report %+v, want 1 finished and 1 cut", rep)
	}
	idle.eof()
	f.log.wait(t, `shutdown: cut 1 session still open: 2`)
	f.log.wait(t, `session 2: dropped after .*: still open at shutdown`)
	if st := f.srv.Stats(); st.Dropped[DropShutdown] != 1 || st.Live != 0 {
		t.Errorf("stats %+v, want 1 dropped at shutdown, none live", st)
	}
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in, network, addr, err string
	}{
		{"5930", "tcp", "127.0.0.1:5930", ""},
		{"0", "tcp", "127.0.0.1:0", ""},
		{"70000", "", "", "out of range"},
		{"/run/gcp.sock", "unix", "/run/gcp.sock", ""},
		{"gcp.sock", "unix", "gcp.sock", ""},
		{"localhost:5930", "", "", "not a host"},
		{":5930", "", "", "not a host"},
		{"", "", "", "no address"},
		{"/" + strings.Repeat("x", 200), "", "", "longer than"},
	} {
		a, err := ParseAddr(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAddr(%q) = %v, %v; want error containing %q", tc.in, a, err, tc.err)
			}
			continue
		}
		if err != nil || a.Network != tc.network || a.Address != tc.addr {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %s %s", tc.in, a, err, tc.network, tc.addr)
		}
	}
}

// TestListenUnix checks the socket's mode and the handling of a file
// already at its path.
func TestListenUnix(t *testing.T) {
	dir := shortTemp(t)
	a := Addr{Network: "unix", Address: filepath.Join(dir, "s")}

	// A stale socket: bound, then its listener closed without unlinking.
	stale, err := net.Listen("unix", a.Address)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	l, err := Listen(a)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	fi, err := os.Stat(a.Address)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %v, want 0600", perm)
	}
	if _, err := Listen(a); err == nil || !strings.Contains(err.Error(), "another daemon is listening") {
		t.Errorf("listen on a live socket: %v, want an error naming the live daemon", err)
	}
	l.Close()
	if _, err := os.Stat(a.Address); !os.IsNotExist(err) {
		t.Errorf("socket file left after close: %v", err)
	}

	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("data"), 0o644)
	if _, err := Listen(Addr{Network: "unix", Address: regular}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a regular file: %v, want an error", err)
	}
	if data, _ := os.ReadFile(regular); string(data) != "data" {
		t.Errorf("regular file clobbered")
	}
}

func TestDialNoDaemon(t *testing.T) {
	ctx := context.Background()
	if _, err := Dial(ctx, Addr{Network: "unix", Address: filepath.Join(shortTemp(t), "none")}); !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("dial a missing socket: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := Dial(ctx, Addr{Network: "tcp", Address: addr}); !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), addr) {
		t.Errorf("dial a closed port: %v", err)
	}
}

// fastHandler answers every get on the fast path.
type fastHandler struct{ memHandler }

func (h *fastHandler) GetFast(actionID []byte) (cacheprog.Entry, bool, bool) {
	return cacheprog.Entry{Size: 1}, actionID[0] == 1, true
}

// TestFastPathKept checks that the daemon's counting keeps a handler's
// fast path.
func TestFastPathKept(t *testing.T) {
	ss := &session{}
	h, ok := countRequests(&fastHandler{}, ss).(cacheprog.FastGetter)
	if !ok {
		t.Fatal("the counting wrapper hides the handler's fast path")
	}
	h.GetFast(id(1))
	h.GetFast(id(2))
	if ss.gets.Load() != 2 || ss.hits.Load() != 1 {
		t.Errorf("counted %d gets, %d hits; want 2, 1", ss.gets.Load(), ss.hits.Load())
	}
	if _, ok := countRequests(&memHandler{}, ss).(cacheprog.FastGetter); ok {
		t.Error("the counting wrapper claims a fast path the handler lacks")
	}
}
