//go:build unix

package daemon

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// recordOptions configures a server to pass the options of each session
// to the returned channel (its sessions share a store of their own).
func recordOptions() (func(*Server), chan SessionOptions) {
	ch := make(chan SessionOptions, 10)
	st := &memStore{entries: map[string]cacheprog.Entry{}}
	return func(s *Server) {
		s.NewHandler = func(opts SessionOptions) cacheprog.Handler {
			ch <- opts
			return &memHandler{shared: st}
		}
	}, ch
}

func wantOptions(t *testing.T, ch chan SessionOptions, want SessionOptions) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Errorf("session options %+v, want %+v", got, want)
		}
	case <-time.After(hangGuard):
		t.Fatal("no session started")
	}
}

var testOptions = SessionOptions{Manifest: "example.com_m@linux-amd64", DerivedManifest: "derived"}

// TestOptionsStream: a stream client on the Unix socket sends its options
// first; the session gets them and then serves the requests that follow
// in the same write. A client that sends none gets the zero options.
func TestOptionsStream(t *testing.T) {
	configure, ch := recordOptions()
	f := start(t, configure)

	c := f.dial(t)
	line, err := EncodeOptions(testOptions)
	if err != nil {
		t.Fatal(err)
	}
	c.send(string(line) + putReq(1, id(1), id(2), []byte("hello")))
	wantOptions(t, ch, testOptions)
	if rsp := c.response(); rsp.ID != 1 || rsp.Err != "" {
		t.Fatalf("put after the options: %+v", rsp)
	}
	c.close(2)

	plain := f.dial(t)
	plain.roundTrip(1, 3)
	wantOptions(t, ch, SessionOptions{})
	plain.close(3)
}

// TestOptionsTCP: over TCP too the daemon writes the capabilities first,
// then reads the client's options.
func TestOptionsTCP(t *testing.T) {
	f := &fixture{log: newLogBuf()}
	configure, ch := recordOptions()
	f.srv = &Server{Logf: f.log.logf}
	configure(f.srv)
	l, err := Listen(Addr{Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 0)
		defer cancel()
		f.srv.Shutdown(ctx)
	})
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	if line := c.line(); line != capsText {
		t.Fatalf("first line %q, want %q", line, capsText)
	}
	if err := WriteOptions(conn, testOptions); err != nil {
		t.Fatal(err)
	}
	wantOptions(t, ch, testOptions)
	c.roundTrip(1, 5)
	c.close(3)
}

// TestOptionsHandOver: options ride with the hand-over message.
func TestOptionsHandOver(t *testing.T) {
	configure, ch := recordOptions()
	f := start(t, configure)
	c := f.handOverWith(t, testOptions)
	wantOptions(t, ch, testOptions)
	if rsp := c.call(putReq(1, id(7), id(8), []byte("hi"))); rsp.ID != 1 || rsp.Err != "" {
		t.Fatalf("put: %+v", rsp)
	}
	c.call(closeReq(2))
}

// TestMalformedOptions: options that do not parse, or run on without end,
// drop the session with a reason and start no handler.
func TestMalformedOptions(t *testing.T) {
	configure, ch := recordOptions()
	f := start(t, configure)

	c := f.dial(t)
	c.send(optionsPrefix + "{not json\n")
	c.eof()
	f.log.wait(t, `session 1: dropped after .*: malformed session options`)

	c = f.dial(t)
	long := make([]byte, 2*maxOptionsLine)
	for i := range long {
		long[i] = 'x'
	}
	c.send(optionsPrefix + string(long))
	c.eof()
	f.log.wait(t, `session 2: dropped after .*: session options longer than`)

	c = f.dial(t)
	c.send("\x00something else\n")
	c.eof()
	f.log.wait(t, `session 3: dropped after .*: malformed`)
	select {
	case opts := <-ch:
		t.Errorf("a handler was started for a malformed session (options %+v)", opts)
	default:
	}
}

func TestEncodeOptions(t *testing.T) {
	if line, err := EncodeOptions(SessionOptions{}); line != nil || err != nil {
		t.Errorf("EncodeOptions of no options = %q, %v; want nothing", line, err)
	}
	line, err := EncodeOptions(testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := parseOptions(line); err != nil || got != testOptions {
		t.Errorf("parseOptions(EncodeOptions(%+v)) = %+v, %v", testOptions, got, err)
	}
	if _, err := EncodeOptions(SessionOptions{Manifest: string(make([]byte, maxOptionsLine))}); err == nil {
		t.Errorf("EncodeOptions of over-long options succeeded")
	}
}
