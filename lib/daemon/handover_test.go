//go:build unix

package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// pipeClient is a client that hands the daemon two pipes, as connect does
// with the go command's, and talks to the daemon through their other ends.
type pipeClient struct {
	t    *testing.T
	conn *net.UnixConn
	req  *os.File // requests to the daemon
	rsp  *bufio.Reader
}

func (f *fixture) handOver(t *testing.T) *pipeClient {
	t.Helper()
	return f.handOverWith(t, SessionOptions{})
}

// handOverWith hands over two pipes with opts.
func (f *fixture) handOverWith(t *testing.T, opts SessionOptions) *pipeClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	conn, err := Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	reqR, reqW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	rspR, rspW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reqW.Close(); rspR.Close() })
	if !CanHandOver(reqR, rspW) {
		t.Fatal("CanHandOver is false for two pipes")
	}
	if err := HandOver(conn.(*net.UnixConn), reqR, rspW, opts); err != nil {
		t.Fatal(err)
	}
	reqR.Close()
	rspW.Close()
	c := &pipeClient{t: t, conn: conn.(*net.UnixConn), req: reqW, rsp: bufio.NewReader(rspR)}
	if line := c.line(); line != capsText {
		t.Fatalf("first line on the handed-over pipe %q, want %q", line, capsText)
	}
	return c
}

func (c *pipeClient) line() string {
	c.t.Helper()
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() { s, err := c.rsp.ReadString('\n'); ch <- result{s, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatalf("read response: %v", r.err)
		}
		return strings.TrimSuffix(r.s, "\n")
	case <-time.After(hangGuard):
		c.t.Fatal("no response")
	}
	return ""
}

func (c *pipeClient) call(req string) cacheprog.Response {
	c.t.Helper()
	if _, err := io.WriteString(c.req, req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	var rsp cacheprog.Response
	line := c.line()
	if err := json.Unmarshal([]byte(line), &rsp); err != nil {
		c.t.Fatalf("bad response %q: %v", line, err)
	}
	return rsp
}

// TestHandOver serves a session on pipes handed over through the socket:
// the socket carries nothing but the hand-over, and the daemon closes it
// when the session is over.
func TestHandOver(t *testing.T) {
	f := start(t, nil)
	c := f.handOver(t)
	if rsp := c.call(putReq(1, id(1), id(2), []byte("hello"))); rsp.Err != "" {
		t.Fatalf("put: %+v", rsp)
	}
	if rsp := c.call(getReq(2, id(1))); rsp.Miss || rsp.Size != 5 {
		t.Fatalf("get: %+v", rsp)
	}
	if rsp := c.call(closeReq(3)); rsp.ID != 3 || rsp.Err != "" {
		t.Fatalf("close: %+v", rsp)
	}
	c.conn.SetReadDeadline(time.Now().Add(hangGuard))
	rest, err := io.ReadAll(c.conn)
	if err != nil || string(rest) != capsText+"\n" {
		t.Errorf("the socket carried %q (%v), want only the capabilities", rest, err)
	}
	if n, err := c.rsp.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("response pipe after close: %d, %v; want EOF", n, err)
	}
	f.log.wait(t, `session 1: serving the client's own stdin and stdout`)
	f.log.wait(t, `session 1: closed after .*: 1 gets, 1 hits, 1 puts`)
}

// TestHandOverNotReading checks that a handed-over session whose client
// does not read is dropped all the same.
func TestHandOverNotReading(t *testing.T) {
	f := start(t, func(s *Server) { s.WriteTimeout = 200 * time.Millisecond })
	c := f.handOver(t)
	go func() {
		var b bytes.Buffer
		for n := int64(1); ; n++ {
			b.Reset()
			b.WriteString(getReq(n, id(byte(n))))
			if _, err := c.req.Write(b.Bytes()); err != nil {
				return // the daemon closed its end
			}
		}
	}()
	f.log.wait(t, `session 1: dropped after .*: client left its responses unread for 200ms`)
	c.conn.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := io.ReadAll(c.conn); err != nil {
		t.Errorf("socket after the drop: %v", err)
	}
}

// TestMalformedHandOver sends the hand-over marker without files.
func TestMalformedHandOver(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t)
	c.send(handOverMarker)
	c.eof()
	f.log.wait(t, `session 1: dropped after .*: malformed hand-over \(\d+ bytes, 0 files\)`)
}

// TestCapsLine checks that the line the daemon writes before a session
// starts is the one cacheprog.Server writes.
func TestCapsLine(t *testing.T) {
	var out bytes.Buffer
	srv := &cacheprog.Server{Handler: &memHandler{shared: &memStore{}}}
	srv.Serve(context.Background(), strings.NewReader(""), &out)
	first, _, _ := strings.Cut(out.String(), "\n")
	if first+"\n" != string(capsLine) {
		t.Errorf("cacheprog.Server writes %q first; the daemon writes %q", first, capsLine)
	}
}
