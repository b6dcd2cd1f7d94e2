//go:build unix

package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// TestRefused checks what a client the server does not admit gets, over
// a Unix socket and over TCP: the reason, as ReadGreeting reads it, then
// the end of the connection; and that nothing it sent (puts, sent without
// waiting, and on the socket a hand-over) reached a handler.
func TestRefused(t *testing.T) {
	var handlers atomic.Int64
	f := start(t, func(s *Server) {
		s.Admit = func(p Peer) error { return fmt.Errorf("uid %d is not on the list", p.UID) }
		s.NewHandler = func(SessionOptions) cacheprog.Handler {
			handlers.Add(1)
			return &memHandler{shared: &memStore{entries: map[string]cacheprog.Entry{}}}
		}
	})
	tl, err := Listen(Addr{Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	go f.srv.Serve(tl)
	want := fmt.Sprintf("uid %d is not on the list", os.Geteuid())

	for i, addr := range []Addr{f.addr, {Network: "tcp", Address: tl.Addr().String()}} {
		t.Run(addr.Network, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			conn, err := Dial(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(hangGuard))
			// A client that does not wait for the greeting.
			if _, err := io.WriteString(conn, putReq(1, id(1), id(2), []byte("poison"))+getReq(2, id(1))); err != nil {
				t.Fatal(err)
			}
			if uc, ok := conn.(*net.UnixConn); ok {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				defer w.Close()
				HandOver(uc, r, w, SessionOptions{}) // may fail: the daemon may be gone
			}
			br := bufio.NewReader(conn)
			line, err := ReadGreeting(br)
			var rerr *RefusedError
			if !errors.As(err, &rerr) || rerr.Reason != want || !errors.Is(err, ErrRefused) || line != nil {
				t.Fatalf("ReadGreeting = %q, %v; want a refusal saying %q", line, err, want)
			}
			if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
				t.Errorf("after the refusal the daemon sent %q (%v), want the end", rest, err)
			}
			conn.Close() // as connect does: the daemon stops waiting for us
			f.log.wait(t, fmt.Sprintf(`session %d: refused .*uid %d: %s$`, i+1, os.Geteuid(), regexp.QuoteMeta(want)))
		})
	}
	if n := handlers.Load(); n != 0 {
		t.Errorf("%d handlers made for refused clients", n)
	}
	if st := f.srv.Stats(); st.Dropped[DropRefused] != 2 || st.Live != 0 {
		t.Errorf("stats %+v, want 2 refused, none live", st)
	}
}

// TestReadGreeting checks the client's reading of the daemon's first line.
func TestReadGreeting(t *testing.T) {
	for _, tc := range []struct{ in, line, err string }{
		{capsText + "\n{\"ID\":1}\n", capsText + "\n", ""},
		{string(refusalLine("no")), "", "the go-cache-plugin daemon refused this client: no"},
		{refusalPrefix + "garbage\n", "", `refused this client: (malformed refusal "garbage")`},
		{"", "", "the daemon hung up before its first line: EOF"},
		{capsText, "", "is cut off: EOF"},
		{string(make([]byte, 2*maxGreeting+10)), "", fmt.Sprintf("longer than %d bytes", maxGreeting)},
	} {
		br := bufio.NewReader(bytesReader(tc.in))
		line, err := ReadGreeting(br)
		if string(line) != tc.line || (err == nil) != (tc.err == "") || err != nil && !regexp.MustCompile(regexp.QuoteMeta(tc.err)).MatchString(err.Error()) {
			t.Errorf("ReadGreeting(%.40q) = %q, %v; want %q, %q", tc.in, line, err, tc.line, tc.err)
		}
	}
	// What follows the line stays for the client to pass on.
	br := bufio.NewReader(bytesReader(capsText + "\nrest"))
	ReadGreeting(br)
	if rest, _ := io.ReadAll(br); string(rest) != "rest" {
		t.Errorf("after the greeting: %q, want %q", rest, "rest")
	}
}

func bytesReader(s string) io.Reader { return &onlyReader{s: s} }

// onlyReader returns s in small reads.
type onlyReader struct{ s string }

func (r *onlyReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], r.s)
	r.s = r.s[n:]
	return n, nil
}
