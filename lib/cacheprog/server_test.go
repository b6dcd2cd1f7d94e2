package cacheprog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// hangGuard bounds every wait in these tests. It is a guard against hangs
// only: no test relies on it for synchronisation.
const hangGuard = 10 * time.Second

// capsLine is the first line of every session.
const capsLine = `{"ID":0,"KnownCommands":["get","put","close"]}`

// id32 returns a 32-byte ID filled with b.
func id32(b byte) []byte { return bytes.Repeat([]byte{b}, IDSize) }

// reqLine returns req framed as the go command writes it: the JSON object
// on a line of its own, then a blank line (cmd/go/internal/cache.ProgCache
// writes the '\n' after every request, body or not).
func reqLine(req Request) string {
	var b strings.Builder
	if err := json.NewEncoder(&b).Encode(req); err != nil {
		panic(err)
	}
	b.WriteByte('\n')
	return b.String()
}

func getReq(id int64, action []byte) string {
	return reqLine(Request{ID: id, Command: CmdGet, ActionID: action})
}

func closeReq(id int64) string { return reqLine(Request{ID: id, Command: CmdClose}) }

// putReq returns a put in the go command's exact framing: request line,
// blank line and, for a non-empty body, "\"<base64>\"\n".
func putReq(id int64, action, output, body []byte) string {
	s := reqLine(Request{ID: id, Command: CmdPut, ActionID: action, OutputID: output, BodySize: int64(len(body))})
	if len(body) > 0 {
		s += `"` + base64.StdEncoding.EncodeToString(body) + "\"\n"
	}
	return s
}

// rawPut returns a put declaring size, followed by body verbatim.
func rawPut(id int64, action, output []byte, size int64, body string) string {
	return reqLine(Request{ID: id, Command: CmdPut, ActionID: action, OutputID: output, BodySize: size}) + body
}

// putRecord is what the test handler saw of one Put call.
type putRecord struct {
	ActionID, OutputID []byte
	Size               int64
	Body               []byte
	ReadErr            error
}

func (p putRecord) String() string {
	return fmt.Sprintf("{action %s output %s size %d: read %d bytes, err %v}", ShortID(p.ActionID), ShortID(p.OutputID), p.Size, len(p.Body), p.ReadErr)
}

// putFor returns the put the handler saw for action.
func (h *testHandler) putFor(action []byte) (putRecord, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.puts {
		if bytes.Equal(p.ActionID, action) {
			return p, true
		}
	}
	return putRecord{}, false
}

// testHandler is an in-memory Handler. Hooks are set before Serve starts.
type testHandler struct {
	// getHook, if set, runs at the start of Get; an error fails the get.
	getHook func(ctx context.Context, actionID []byte) error
	// putHook, if set, replaces the default Put.
	putHook func(ctx context.Context, req PutRequest) (string, error)
	// closeErr is returned by Close.
	closeErr error

	closes atomic.Int32

	mu      sync.Mutex
	entries map[string]Entry // by hex action ID
	gets    [][]byte         // action IDs of every Get call
	puts    []putRecord      // every default Put call, whatever its outcome
	stored  []putRecord      // the default Puts that succeeded
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)

func newHandler() *testHandler { return &testHandler{entries: make(map[string]Entry)} }

// add stores an entry for action as if it had been put.
func (h *testHandler) add(action []byte, body []byte) Entry {
	sum := sha256.Sum256(body)
	e := Entry{OutputID: sum[:], Size: int64(len(body)), Time: testTime, DiskPath: "/mem/" + hex.EncodeToString(sum[:])}
	h.mu.Lock()
	h.entries[hex.EncodeToString(action)] = e
	h.mu.Unlock()
	return e
}

func (h *testHandler) Get(ctx context.Context, actionID []byte) (Entry, bool, error) {
	h.mu.Lock()
	h.gets = append(h.gets, bytes.Clone(actionID))
	h.mu.Unlock()
	if h.getHook != nil {
		if err := h.getHook(ctx, actionID); err != nil {
			return Entry{}, false, err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.entries[hex.EncodeToString(actionID)]
	return e, ok, nil
}

func (h *testHandler) Put(ctx context.Context, req PutRequest) (string, error) {
	if h.putHook != nil {
		return h.putHook(ctx, req)
	}
	data, err := io.ReadAll(req.Body)
	rec := putRecord{ActionID: bytes.Clone(req.ActionID), OutputID: bytes.Clone(req.OutputID), Size: req.Size, Body: data, ReadErr: err}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.puts = append(h.puts, rec)
	if err != nil {
		return "", err
	}
	path := "/mem/" + hex.EncodeToString(req.OutputID)
	h.entries[hex.EncodeToString(req.ActionID)] = Entry{OutputID: rec.OutputID, Size: int64(len(data)), Time: testTime, DiskPath: path}
	h.stored = append(h.stored, rec)
	return path, nil
}

func (h *testHandler) Close(ctx context.Context) error {
	h.closes.Add(1)
	return h.closeErr
}

// result is the outcome of one Serve call.
type result struct {
	err   error
	lines []string   // response lines, without newlines
	rsps  []Response // the same, decoded
}

// byID returns the responses by ID, failing on a duplicate.
func (r result) byID(t *testing.T) map[int64]Response {
	t.Helper()
	m := make(map[int64]Response)
	for _, rsp := range r.rsps {
		if _, dup := m[rsp.ID]; dup {
			t.Fatalf("two responses with ID %d:\n%s", rsp.ID, strings.Join(r.lines, "\n"))
		}
		m[rsp.ID] = rsp
	}
	return m
}

// parseResponses decodes a session's output strictly and checks that it
// starts with the capabilities line.
func parseResponses(t *testing.T, out string) ([]string, []Response) {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != capsLine {
		t.Fatalf("first line = %s, want %s", lines[0], capsLine)
	}
	var rsps []Response
	for _, line := range lines {
		rsps = append(rsps, decodeResponse(t, line))
	}
	return lines, rsps
}

func decodeResponse(t *testing.T, line string) Response {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	var rsp Response
	if err := dec.Decode(&rsp); err != nil {
		t.Fatalf("response %q: %v", line, err)
	}
	if dec.More() {
		t.Fatalf("response %q: more than one JSON value on the line", line)
	}
	return rsp
}

// serve runs a session over in and returns its outcome.
func serve(t *testing.T, srv *Server, in io.Reader) result {
	t.Helper()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), in, &out) }()
	var r result
	select {
	case r.err = <-done:
	case <-time.After(hangGuard):
		t.Fatalf("Serve did not return within %v", hangGuard)
	}
	r.lines, r.rsps = parseResponses(t, out.String())
	return r
}

func serveString(t *testing.T, h Handler, in string) result {
	t.Helper()
	return serve(t, &Server{Handler: h, MaxConcurrency: 4}, strings.NewReader(in))
}

// serveSerial serves in one request at a time, so that a get following a
// put of the same action is a hit.
func serveSerial(t *testing.T, h Handler, in string) result {
	t.Helper()
	return serve(t, &Server{Handler: h, MaxConcurrency: 1}, strings.NewReader(in))
}

func checkClosedOnce(t *testing.T, h *testHandler) {
	t.Helper()
	if n := h.closes.Load(); n != 1 {
		t.Errorf("handler closed %d times, want 1", n)
	}
}

// checkHit checks that rsp reports e.
func checkHit(t *testing.T, rsp Response, e Entry) {
	t.Helper()
	if rsp.Err != "" || rsp.Miss || !bytes.Equal(rsp.OutputID, e.OutputID) || rsp.Size != e.Size ||
		rsp.DiskPath != e.DiskPath || rsp.Time == nil || !rsp.Time.Equal(e.Time) {
		t.Errorf("response %d = %+v, want a hit for %+v", rsp.ID, rsp, e)
	}
}

func TestCapabilitiesFirst(t *testing.T) {
	t.Run("empty input", func(t *testing.T) {
		h := newHandler()
		r := serveString(t, h, "")
		if !errors.Is(r.err, ErrNoClose) {
			t.Errorf("Serve = %v, want ErrNoClose", r.err)
		}
		if len(r.lines) != 1 {
			t.Errorf("output = %q, want only the capabilities", r.lines)
		}
		checkClosedOnce(t, h)
	})
	t.Run("close", func(t *testing.T) {
		h := newHandler()
		r := serveString(t, h, closeReq(1))
		if r.err != nil {
			t.Errorf("Serve = %v", r.err)
		}
		want := []string{capsLine, `{"ID":1}`}
		if strings.Join(r.lines, "\n") != strings.Join(want, "\n") {
			t.Errorf("output = %q, want %q", r.lines, want)
		}
		checkClosedOnce(t, h)
	})
	t.Run("written before input", func(t *testing.T) {
		// The capabilities are written before the server reads anything.
		h := newHandler()
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- (&Server{Handler: h}).Serve(context.Background(), inR, outW); outW.Close() }()
		lr := newLineReader(outR)
		if got := lr.next(t); got != capsLine {
			t.Fatalf("first line = %s, want %s", got, capsLine)
		}
		inW.Close()
		lr.eof(t)
		if err := waitErr(t, done); !errors.Is(err, ErrNoClose) {
			t.Errorf("Serve = %v, want ErrNoClose", err)
		}
		checkClosedOnce(t, h)
	})
}

func TestGetHitMiss(t *testing.T) {
	h := newHandler()
	hit := h.add(id32(1), []byte("hello"))
	r := serveString(t, h, getReq(1, id32(1))+getReq(2, id32(2))+closeReq(3))
	if r.err != nil {
		t.Fatalf("Serve = %v", r.err)
	}
	m := r.byID(t)
	checkHit(t, m[1], hit)
	if got := m[2]; !got.Miss || got.Err != "" || got.OutputID != nil || got.DiskPath != "" || got.Time != nil {
		t.Errorf("response 2 = %+v, want a bare miss", got)
	}
	if len(r.rsps) != 4 || r.lines[3] != `{"ID":3}` {
		t.Errorf("output = %q, want 3 responses with close last", r.lines)
	}
	if len(h.gets) != 2 || !bytes.Equal(h.gets[0], id32(1)) && !bytes.Equal(h.gets[1], id32(1)) {
		t.Errorf("handler saw gets %x", h.gets)
	}
	checkClosedOnce(t, h)
}

func TestGetHandlerError(t *testing.T) {
	h := newHandler()
	h.getHook = func(context.Context, []byte) error { return errors.New("disk on fire") }
	r := serveString(t, h, getReq(7, id32(1))+closeReq(8))
	if r.err != nil {
		t.Fatalf("Serve = %v", r.err)
	}
	rsp := r.byID(t)[7]
	if !strings.Contains(rsp.Err, "disk on fire") || !strings.Contains(rsp.Err, ShortID(id32(1))) || rsp.Miss {
		t.Errorf("response 7 = %+v, want the handler's error", rsp)
	}
}

func TestPut(t *testing.T) {
	body := []byte("the quick brown fox jumps over the lazy dog\x00\xff")
	sum := sha256.Sum256(body)
	h := newHandler()
	in := putReq(1, id32(1), sum[:], body) +
		putReq(2, id32(2), id32(0xee), nil) + // BodySize 0: no body follows
		getReq(3, id32(1)) +
		closeReq(4)
	// The exact framing the go command uses.
	wantIn := `{"ID":1,"Command":"put","ActionID":"` + base64.StdEncoding.EncodeToString(id32(1)) +
		`","OutputID":"` + base64.StdEncoding.EncodeToString(sum[:]) + `","BodySize":` + fmt.Sprint(len(body)) + "}\n\n" +
		`"` + base64.StdEncoding.EncodeToString(body) + "\"\n"
	if !strings.HasPrefix(in, wantIn) {
		t.Fatalf("test framing is off:\n got %q\nwant %q", in[:len(wantIn)], wantIn)
	}

	r := serveSerial(t, h, in)
	if r.err != nil {
		t.Fatalf("Serve = %v", r.err)
	}
	m := r.byID(t)
	if got, want := m[1], "/mem/"+hex.EncodeToString(sum[:]); got.Err != "" || got.DiskPath != want {
		t.Errorf("response 1 = %+v, want DiskPath %s", got, want)
	}
	if got := m[2]; got.Err != "" || got.DiskPath != "/mem/"+hex.EncodeToString(id32(0xee)) {
		t.Errorf("response 2 = %+v", got)
	}
	checkHit(t, m[3], Entry{OutputID: sum[:], Size: int64(len(body)), Time: testTime, DiskPath: "/mem/" + hex.EncodeToString(sum[:])})
	if r.lines[len(r.lines)-1] != `{"ID":4}` {
		t.Errorf("last line = %s, want the close response", r.lines[len(r.lines)-1])
	}

	if len(h.stored) != 2 {
		t.Fatalf("handler stored %d puts, want 2", len(h.stored))
	}
	for _, p := range h.stored {
		switch {
		case bytes.Equal(p.ActionID, id32(1)):
			if !bytes.Equal(p.Body, body) || p.Size != int64(len(body)) || !bytes.Equal(p.OutputID, sum[:]) {
				t.Errorf("put 1: handler saw %+v", p)
			}
		case bytes.Equal(p.ActionID, id32(2)):
			if len(p.Body) != 0 || p.Size != 0 || !bytes.Equal(p.OutputID, id32(0xee)) {
				t.Errorf("put 2: handler saw %+v", p)
			}
		default:
			t.Errorf("unexpected put %+v", p)
		}
	}
	checkClosedOnce(t, h)
}

func TestPutBodyFramingVariants(t *testing.T) {
	// Framings other than the go command's that still delimit the body.
	body := []byte("hello")
	quoted := `"` + base64.StdEncoding.EncodeToString(body) + `"`
	line := reqLine(Request{ID: 1, Command: CmdPut, ActionID: id32(1), OutputID: id32(2), BodySize: 5})
	line = strings.TrimSuffix(line, "\n") // the request line with its newline, no blank line
	get := getReq(2, id32(1))
	cases := []struct {
		name    string
		in      string
		wantErr error
	}{
		{"no blank line", line + quoted + "\n" + get + closeReq(3), nil},
		{"whitespace and CRLF", strings.TrimSuffix(line, "\n") + "\r\n \t\r\n\r\n  " + quoted + "\r\n\r\n" + get + closeReq(3), nil},
		{"next request on the body's line", line + "\n" + quoted + get + closeReq(3), nil},
		{"input ends after the closing quote", line + "\n" + quoted, ErrNoClose},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler()
			r := serveSerial(t, h, tc.in)
			if !errors.Is(r.err, tc.wantErr) {
				t.Fatalf("Serve = %v, want %v", r.err, tc.wantErr)
			}
			m := r.byID(t)
			if rsp := m[1]; rsp.Err != "" || rsp.DiskPath == "" {
				t.Errorf("put 1 = %+v", rsp)
			}
			if tc.wantErr == nil && m[2].Size != 5 {
				t.Errorf("get 2 = %+v, want a hit of 5 bytes", m[2])
			}
			if len(h.stored) != 1 || !bytes.Equal(h.stored[0].Body, body) {
				t.Errorf("handler stored %v", h.stored)
			}
			checkClosedOnce(t, h)
		})
	}
}

func TestCloseAnsweredLast(t *testing.T) {
	h := newHandler()
	h.add(id32(1), []byte("x"))
	var in strings.Builder
	for i := range 50 {
		in.WriteString(getReq(int64(i+1), id32(byte(i%3))))
	}
	in.WriteString(closeReq(51))
	in.WriteString(getReq(52, id32(1))) // after close: never read
	r := serveString(t, h, in.String())
	if r.err != nil {
		t.Fatalf("Serve = %v", r.err)
	}
	if len(r.rsps) != 52 {
		t.Fatalf("got %d responses, want 52 (caps, 50 gets, close)", len(r.rsps))
	}
	if r.lines[51] != `{"ID":51}` {
		t.Errorf("last line = %s, want the close response", r.lines[51])
	}
	m := r.byID(t)
	for i := int64(1); i <= 50; i++ {
		if _, ok := m[i]; !ok {
			t.Errorf("no response to get %d", i)
		}
	}
	if len(h.gets) != 50 {
		t.Errorf("handler saw %d gets, want 50", len(h.gets))
	}
	checkClosedOnce(t, h)
}

func TestCloseError(t *testing.T) {
	h := newHandler()
	h.closeErr = errors.New("flush failed")
	r := serveString(t, h, closeReq(5))
	if r.err == nil || !strings.Contains(r.err.Error(), "flush failed") {
		t.Errorf("Serve = %v, want the close error", r.err)
	}
	if rsp := r.byID(t)[5]; rsp.Err != "flush failed" {
		t.Errorf("close response = %+v, want Err %q", rsp, "flush failed")
	}
	checkClosedOnce(t, h)
}

func TestEOFWithoutClose(t *testing.T) {
	h := newHandler()
	h.add(id32(1), []byte("x"))
	r := serveString(t, h, getReq(1, id32(1))+putReq(2, id32(2), id32(3), []byte("abc"))+getReq(3, id32(4)))
	if !errors.Is(r.err, ErrNoClose) {
		t.Errorf("Serve = %v, want ErrNoClose", r.err)
	}
	m := r.byID(t)
	if len(m) != 4 || m[1].Miss || m[2].Err != "" || !m[3].Miss {
		t.Errorf("responses = %q", r.lines)
	}
	checkClosedOnce(t, h)
}

// lineReader reads lines from r on a goroutine so that a test can wait for
// them with a hang guard.
type lineReader struct{ ch chan string }

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{ch: make(chan string)}
	go func() {
		defer close(lr.ch)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				lr.ch <- line
			}
			if err != nil {
				return
			}
		}
	}()
	return lr
}

// next returns the next line, without its newline.
func (lr *lineReader) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-lr.ch:
		if !ok {
			t.Fatal("output ended early")
		}
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("unterminated output line %q", line)
		}
		return strings.TrimSuffix(line, "\n")
	case <-time.After(hangGuard):
		t.Fatalf("no response within %v", hangGuard)
	}
	panic("unreachable")
}

func (lr *lineReader) eof(t *testing.T) {
	t.Helper()
	select {
	case line, ok := <-lr.ch:
		if ok {
			t.Fatalf("unexpected output %q", line)
		}
	case <-time.After(hangGuard):
		t.Fatalf("output not closed within %v", hangGuard)
	}
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(hangGuard):
		t.Fatalf("Serve did not return within %v", hangGuard)
	}
	panic("unreachable")
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatalf("%s: not within %v", what, hangGuard)
	}
}

// write writes s to w, failing the test if it does not complete.
func write(t *testing.T, w io.Writer, s string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := io.WriteString(w, s); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatalf("input not consumed within %v", hangGuard)
	}
}

func TestOutOfOrderResponses(t *testing.T) {
	h := newHandler()
	e1 := h.add(id32(1), []byte("one"))
	e2 := h.add(id32(2), []byte("two"))
	started1 := make(chan struct{})
	release1 := make(chan struct{})
	h.getHook = func(ctx context.Context, action []byte) error {
		if bytes.Equal(action, id32(1)) {
			close(started1)
			select {
			case <-release1:
			case <-time.After(hangGuard):
				return errors.New("never released")
			}
		}
		return nil
	}

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Handler: h, MaxConcurrency: 4}).Serve(context.Background(), inR, outW)
		outW.Close()
	}()
	lr := newLineReader(outR)

	if got := lr.next(t); got != capsLine {
		t.Fatalf("first line = %s", got)
	}
	write(t, inW, getReq(1, id32(1)))
	waitFor(t, started1, "get 1 started")
	write(t, inW, getReq(2, id32(2)))

	// Request 1 is still blocked, so the next response must be 2's.
	rsp := decodeResponse(t, lr.next(t))
	if rsp.ID != 2 {
		t.Fatalf("first response is for %d, want 2", rsp.ID)
	}
	checkHit(t, rsp, e2)

	close(release1)
	rsp = decodeResponse(t, lr.next(t))
	if rsp.ID != 1 {
		t.Fatalf("second response is for %d, want 1", rsp.ID)
	}
	checkHit(t, rsp, e1)

	write(t, inW, closeReq(3))
	if got := lr.next(t); got != `{"ID":3}` {
		t.Errorf("close response = %s", got)
	}
	lr.eof(t)
	if err := waitErr(t, done); err != nil {
		t.Errorf("Serve = %v", err)
	}
	checkClosedOnce(t, h)
}

func TestConcurrencyLimit(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		t.Run(fmt.Sprint("N=", n), func(t *testing.T) {
			// synctest lets the test observe that the server is blocked
			// (and so has not started request N+1) without sleeping.
			synctest.Test(t, func(t *testing.T) {
				var running, maxRunning, started, finished atomic.Int32
				var mu sync.Mutex
				var finishedAtStart []int32 // finished count seen by each handler as it started
				release := make(chan struct{})
				releaseAll := sync.OnceFunc(func() { close(release) })
				defer releaseAll()

				h := newHandler()
				e := h.add(id32(1), []byte("x"))
				h.getHook = func(context.Context, []byte) error {
					mu.Lock()
					finishedAtStart = append(finishedAtStart, finished.Load())
					mu.Unlock()
					started.Add(1)
					cur := running.Add(1)
					for {
						m := maxRunning.Load()
						if cur <= m || maxRunning.CompareAndSwap(m, cur) {
							break
						}
					}
					<-release
					running.Add(-1)
					finished.Add(1)
					return nil
				}

				total := 3*n + 1
				var in strings.Builder
				for i := range total {
					in.WriteString(getReq(int64(i+1), id32(1)))
				}
				in.WriteString(closeReq(int64(total + 1)))

				var out bytes.Buffer
				done := make(chan error, 1)
				go func() {
					done <- (&Server{Handler: h, MaxConcurrency: n}).Serve(context.Background(), strings.NewReader(in.String()), &out)
				}()

				synctest.Wait() // every goroutine is blocked
				if s, r := started.Load(), running.Load(); s != int32(n) || r != int32(n) {
					t.Fatalf("with all handlers blocked: %d started, %d running; want %d", s, r, n)
				}

				release <- struct{}{} // let exactly one handler finish
				synctest.Wait()
				if s, f, r := started.Load(), finished.Load(), running.Load(); s != int32(n+1) || f != 1 || r != int32(n) {
					t.Fatalf("after one finished: %d started, %d finished, %d running; want %d, 1, %d", s, f, r, n+1, n)
				}

				releaseAll()
				if err := <-done; err != nil {
					t.Fatalf("Serve = %v", err)
				}
				if m := maxRunning.Load(); m != int32(n) {
					t.Errorf("max concurrent handlers = %d, want %d", m, n)
				}
				if s := started.Load(); s != int32(total) {
					t.Errorf("%d handlers started, want %d", s, total)
				}
				for k, f := range finishedAtStart {
					if k >= n && f < int32(k-n+1) {
						t.Errorf("handler %d started when only %d had finished", k+1, f)
					}
				}
				lines, rsps := parseResponses(t, out.String())
				if len(rsps) != total+2 {
					t.Fatalf("got %d responses, want %d", len(rsps), total+2)
				}
				for _, rsp := range rsps[1 : total+1] {
					checkHit(t, rsp, e)
				}
				if lines[total+1] != fmt.Sprintf(`{"ID":%d}`, total+1) {
					t.Errorf("last line = %s", lines[total+1])
				}
				checkClosedOnce(t, h)
			})
		})
	}
}

func TestDuplicateInFlightID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		releaseAll := sync.OnceFunc(func() { close(release) })
		defer releaseAll()
		h := newHandler()
		e := h.add(id32(1), []byte("x"))
		h.getHook = func(context.Context, []byte) error { <-release; return nil }

		in := getReq(1, id32(1)) + getReq(1, id32(1)) + getReq(2, id32(1)) + closeReq(3)
		var out bytes.Buffer
		done := make(chan error, 1)
		go func() {
			done <- (&Server{Handler: h, MaxConcurrency: 4}).Serve(context.Background(), strings.NewReader(in), &out)
		}()
		synctest.Wait() // request 1 is blocked in its handler; the server has read on
		h.mu.Lock()
		gets := len(h.gets)
		h.mu.Unlock()
		if gets != 1 {
			t.Errorf("handler saw %d gets, want 1: the duplicate must not be dispatched", gets)
		}
		releaseAll()
		err := <-done
		if err == nil || errors.Is(err, ErrNoClose) || !strings.Contains(err.Error(), "request 1") || !strings.Contains(err.Error(), "in flight") {
			t.Fatalf("Serve = %v, want a fatal error naming request 1", err)
		}
		lines, rsps := parseResponses(t, out.String())
		if len(rsps) != 2 {
			t.Fatalf("responses = %q, want caps and request 1 only", lines)
		}
		checkHit(t, rsps[1], e)
		checkClosedOnce(t, h)
	})
}

// b64Body returns the base64 text of n deterministic bytes and the bytes.
func b64Body(n int, seed uint64) (string, []byte) {
	data := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(data)
	return base64.StdEncoding.EncodeToString(data), data
}

func TestMalformedRequestAnswered(t *testing.T) {
	// Each input is well framed but wrong: request 2 gets an error response
	// naming it, and the session goes on.
	bigText, _ := b64Body(100<<10, 1) // several chunks, more than the read buffer
	// A body whose base64 text fills one chunk exactly and ends in padding.
	paddedText, _ := b64Body(chunkSize/4*3-1, 2)
	if len(paddedText) != chunkSize || !strings.HasSuffix(paddedText, "=") {
		t.Fatalf("padded body text is %d bytes ending %q", len(paddedText), paddedText[len(paddedText)-1:])
	}
	corrupt := bigText[:40000] + "!" + bigText[40001:] // an invalid character in the second chunk

	cases := []struct {
		name   string
		in     string
		errMsg string
		noPut  bool // the handler must not have been asked to put
	}{
		{"body shorter than BodySize", rawPut(2, id32(1), id32(2), 10, `"aGVsbG8="`+"\n"), "body is 5 bytes, BodySize says 10", false},
		{"body longer than BodySize", rawPut(2, id32(1), id32(2), 3, `"aGVsbG8="`+"\n"), "longer than its BodySize 3", false},
		{"body much longer than BodySize", rawPut(2, id32(1), id32(2), 10, `"`+bigText+"\"\n"), "longer than its BodySize 10", false},
		{"body empty string", rawPut(2, id32(1), id32(2), 10, `""`+"\n"), "body is 0 bytes, BodySize says 10", false},
		{"invalid base64", rawPut(2, id32(1), id32(2), 3, `"!!!!"`+"\n"), "not valid base64", false},
		{"invalid base64 in a later chunk", rawPut(2, id32(1), id32(2), 100<<10, `"`+corrupt+"\"\n"), "not valid base64", false},
		{"base64 without padding", rawPut(2, id32(1), id32(2), 5, `"aGVsbG8"`+"\n"), "not valid base64", false},
		{"data after padding", rawPut(2, id32(1), id32(2), 4, `"aGk=aGk="`+"\n"), "not valid base64", false},
		{"data after padding at a chunk boundary", rawPut(2, id32(1), id32(2), chunkSize/4*3-1+3, `"`+paddedText+"AAAA\"\n"), "data after padding", false},
		{"URL-safe base64", rawPut(2, id32(1), id32(2), 3, `"-_-_"`+"\n"), "not valid base64", false},
		{"unknown command", reqLine(Request{ID: 2, Command: "frob", ActionID: id32(1)}), `unknown command "frob"`, true},
		{"empty command", `{"ID":2}` + "\n", `unknown command ""`, true},
		{"unknown command with body", reqLine(Request{ID: 2, Command: "frob", BodySize: 5}) + `"aGVsbG8="` + "\n", `unknown command "frob"`, true},
		{"unknown command with long body", reqLine(Request{ID: 2, Command: "frob", BodySize: 100 << 10}) + `"` + bigText + "\"\n", `unknown command "frob"`, true},
		{"unknown command with bad body", reqLine(Request{ID: 2, Command: "frob", BodySize: 5}) + `"!!"` + "\n", `unknown command "frob"`, true},
		{"get without ActionID", getReq(2, nil), "missing ActionID", true},
		{"get with 31-byte ActionID", getReq(2, id32(1)[:31]), "ActionID is 31 bytes, want 32", true},
		{"get with 33-byte ActionID", getReq(2, append(id32(1), 1)), "ActionID is 33 bytes, want 32", true},
		{"put without ActionID", putReq(2, nil, id32(2), nil), "missing ActionID", true},
		{"put without ActionID with body", putReq(2, nil, id32(2), []byte("hello")), "missing ActionID", true},
		{"put without OutputID with body", putReq(2, id32(1), nil, []byte("hello")), "missing OutputID", true},
		{"put with 31-byte ActionID", putReq(2, id32(1)[:31], id32(2), []byte("hello")), "ActionID is 31 bytes, want 32", true},
		{"put with 33-byte ActionID", putReq(2, append(id32(1), 1), id32(2), []byte("hello")), "ActionID is 33 bytes, want 32", true},
		{"put with 31-byte OutputID", putReq(2, id32(1), id32(2)[:31], []byte("hello")), "OutputID is 31 bytes, want 32", true},
		{"put with 33-byte OutputID", putReq(2, id32(1), append(id32(2), 2), []byte("hello")), "OutputID is 33 bytes, want 32", true},
		{"put with 33-byte OutputID and long body", rawPut(2, id32(1), append(id32(2), 2), 100<<10, `"`+bigText+"\"\n"), "OutputID is 33 bytes, want 32", true},
		{"negative BodySize", rawPut(2, id32(1), id32(2), -1, ""), "negative BodySize -1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler()
			good := h.add(id32(9), []byte("good"))
			in := getReq(1, id32(9)) + tc.in + getReq(3, id32(9)) + putReq(4, id32(8), id32(7), []byte("after")) + closeReq(5)
			r := serveString(t, h, in)
			if r.err != nil {
				t.Fatalf("Serve = %v", r.err)
			}
			m := r.byID(t)
			if len(m) != 6 {
				t.Errorf("responses = %q, want 5 and the capabilities", r.lines)
			}
			rsp := m[2]
			if !strings.Contains(rsp.Err, tc.errMsg) || !strings.Contains(rsp.Err, "request 2") {
				t.Errorf("response 2 = %+v, want an error naming request 2 and containing %q", rsp, tc.errMsg)
			}
			if rsp.DiskPath != "" || rsp.Miss || rsp.OutputID != nil {
				t.Errorf("error response 2 carries more: %+v", rsp)
			}
			checkHit(t, m[1], good)
			checkHit(t, m[3], good)
			if m[4].Err != "" || m[4].DiskPath == "" {
				t.Errorf("put 4 after the bad request = %+v", m[4])
			}
			if r.lines[len(r.lines)-1] != `{"ID":5}` {
				t.Errorf("last line = %s, want the close response", r.lines[len(r.lines)-1])
			}
			for _, p := range h.stored {
				if !bytes.Equal(p.ActionID, id32(8)) {
					t.Errorf("handler stored a put for %x", p.ActionID)
				}
			}
			if tc.noPut && len(h.puts) != 1 {
				t.Errorf("handler saw %d puts, want only request 4's", len(h.puts))
			}
			if !tc.noPut {
				if p, ok := h.putFor(id32(1)); len(h.puts) != 2 || !ok || p.ReadErr == nil || !strings.Contains(p.ReadErr.Error(), "request 2") {
					t.Errorf("handler saw puts %v, want request 2's body read to fail", h.puts)
				}
			}
			checkClosedOnce(t, h)
		})
	}
}

func TestMalformedRequestFatal(t *testing.T) {
	// Each input leaves the stream out of step: Serve fails naming the
	// request, the requests that follow are not read, and the handler is
	// closed once.
	tail := getReq(10, id32(9)) + closeReq(11)
	bigText, _ := b64Body(100<<10, 4)
	longLine := `{"ID":3,"Command":"get","ActionID":"` + strings.Repeat("A", MaxRequestLine) + "\"}\n"
	cases := []struct {
		name   string
		in     string
		errMsg []string
		putErr bool // the handler's body read for request 3 must fail
	}{
		{"bad JSON line", `{"ID":3,"Command":` + "\n" + tail, []string{"after request 2"}, false},
		{"not JSON", "hello\n" + tail, []string{"after request 2"}, false},
		{"JSON string line", `"aGVsbG8="` + "\n" + tail, []string{"after request 2"}, false},
		{"line longer than MaxRequestLine", longLine + tail, []string{"after request 2", "longer than"}, false},
		{"ID 0", `{"ID":0,"Command":"get"}` + "\n" + tail, []string{"request 0", "positive"}, false},
		{"negative ID", getReq(-4, id32(9)) + tail, []string{"request -4", "positive"}, false},
		{"missing ID", `{"Command":"close"}` + "\n" + tail, []string{"request 0", "positive"}, false},
		{"body missing", rawPut(3, id32(1), id32(2), 5, "") + tail, []string{"request 3", "expected the body as a JSON string"}, true},
		{"body not a JSON string", rawPut(3, id32(1), id32(2), 5, "aGVsbG8=\n") + tail, []string{"request 3", "expected the body as a JSON string"}, true},
		{"body as a JSON number", rawPut(3, id32(1), id32(2), 5, "12345\n") + tail, []string{"request 3", "expected the body as a JSON string"}, true},
		{"body not terminated on its line", rawPut(3, id32(1), id32(2), 5, `"aGVsbG8=`+"\n") + tail, []string{"request 3", "not terminated"}, true},
		{"input ends before body", rawPut(3, id32(1), id32(2), 5, "\n"), []string{"request 3", "input ended before"}, true},
		{"input ends mid-body", rawPut(3, id32(1), id32(2), 5, `"aGVs`), []string{"request 3", "input ended inside the body"}, true},
		{"input ends after the body text", rawPut(3, id32(1), id32(2), 5, `"aGVsbG8=`), []string{"request 3", "input ended inside the body"}, true},
		{"bad body after a bad ID", rawPut(3, id32(1)[:31], id32(2), 5, "aGVsbG8=\n") + tail, []string{"request 3", "expected the body as a JSON string"}, false},
		{"unknown command with unterminated body", reqLine(Request{ID: 3, Command: "frob", BodySize: 5}) + `"aGVsbG8=`, []string{"request 3", "input ended"}, false},
		{"bad body not terminated on its line", rawPut(3, id32(1), id32(2), 5, `"!!!!`+"\n") + tail, []string{"request 3", "not terminated"}, true},
		// The error is found in the first chunk; skipping to the closing
		// quote must stop at the end of the line.
		{"bad long body not terminated on its line", rawPut(3, id32(1), id32(2), 100<<10, `"!`+bigText[1:]+"\n") + tail, []string{"request 3", "not terminated"}, true},
		{"long body longer than BodySize not terminated on its line", rawPut(3, id32(1), id32(2), 10, `"`+bigText+"\n") + tail, []string{"request 3", "not terminated"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler()
			good := h.add(id32(9), []byte("good"))
			in := getReq(1, id32(9)) + putReq(2, id32(5), id32(6), []byte("fine")) + tc.in
			r := serveString(t, h, in)
			if r.err == nil || errors.Is(r.err, ErrNoClose) {
				t.Fatalf("Serve = %v, want a fatal error", r.err)
			}
			for _, s := range tc.errMsg {
				if !strings.Contains(r.err.Error(), s) {
					t.Errorf("Serve = %v, want it to mention %q", r.err, s)
				}
			}
			m := r.byID(t)
			checkHit(t, m[1], good)
			if m[2].Err != "" {
				t.Errorf("put 2 = %+v", m[2])
			}
			for _, id := range []int64{10, 11} {
				if rsp, ok := m[id]; ok {
					t.Errorf("request %d after the fatal error was answered: %+v", id, rsp)
				}
			}
			for _, p := range h.stored {
				if !bytes.Equal(p.ActionID, id32(5)) {
					t.Errorf("handler stored a put for %x", p.ActionID)
				}
			}
			if tc.putErr {
				p, ok := h.putFor(id32(1))
				if len(h.puts) != 2 || !ok || p.ReadErr == nil {
					t.Fatalf("handler saw puts %v, want request 3's body read to fail", h.puts)
				}
				if !strings.Contains(p.ReadErr.Error(), "request 3") {
					t.Errorf("body read error = %v, want it to name request 3", p.ReadErr)
				}
				if rsp, ok := m[3]; !ok || !strings.Contains(rsp.Err, "request 3") {
					t.Errorf("response 3 = %+v (present %v), want an error", rsp, ok)
				}
			} else if len(h.puts) != 1 {
				t.Errorf("handler saw %d puts, want 1", len(h.puts))
			}
			checkClosedOnce(t, h)
		})
	}
}

func TestHandlerSkipsBody(t *testing.T) {
	bigText, _ := b64Body(100<<10, 3)
	h := newHandler()
	good := h.add(id32(9), []byte("good"))
	h.putHook = func(ctx context.Context, req PutRequest) (string, error) {
		return "/early/" + ShortID(req.ActionID), nil // returns without reading
	}
	in := rawPut(1, id32(1), id32(2), 100<<10, "\n\""+bigText+"\"\n") +
		getReq(2, id32(9)) +
		rawPut(3, id32(3), id32(2), 100<<10, "\n\""+bigText+"\"\n") +
		closeReq(4)
	r := serveString(t, h, in)
	if r.err != nil {
		t.Fatalf("Serve = %v", r.err)
	}
	m := r.byID(t)
	if m[1].Err != "" || m[1].DiskPath != "/early/"+ShortID(id32(1)) {
		t.Errorf("put 1 = %+v", m[1])
	}
	checkHit(t, m[2], good)
	if m[3].Err != "" || m[3].DiskPath != "/early/"+ShortID(id32(3)) {
		t.Errorf("put 3 = %+v", m[3])
	}
	if r.lines[len(r.lines)-1] != `{"ID":4}` {
		t.Errorf("last line = %s", r.lines[len(r.lines)-1])
	}
	checkClosedOnce(t, h)
}

func TestMalformedBodyOverridesHandlerSuccess(t *testing.T) {
	for _, read := range []bool{true, false} {
		t.Run(fmt.Sprint("read=", read), func(t *testing.T) {
			h := newHandler()
			var readErr error
			h.putHook = func(ctx context.Context, req PutRequest) (string, error) {
				if read {
					_, readErr = io.Copy(io.Discard, req.Body) // error ignored
				}
				return "/claimed", nil
			}
			in := rawPut(1, id32(1), id32(2), 3, `"!!!!"`+"\n") +
				rawPut(2, id32(1), id32(2), 9, `"aGVsbG8="`+"\n") +
				getReq(3, id32(1)) + closeReq(4)
			r := serveString(t, h, in)
			if r.err != nil {
				t.Fatalf("Serve = %v", r.err)
			}
			m := r.byID(t)
			for _, id := range []int64{1, 2} {
				if rsp := m[id]; rsp.Err == "" || rsp.DiskPath != "" || !strings.Contains(rsp.Err, fmt.Sprintf("request %d", id)) {
					t.Errorf("response %d = %+v, want an error despite the handler's success", id, rsp)
				}
			}
			if read && readErr == nil {
				t.Error("handler's read of a malformed body succeeded")
			}
			if !m[3].Miss {
				t.Errorf("get 3 = %+v, want a miss", m[3])
			}
			checkClosedOnce(t, h)
		})
	}
}

// genReader yields n deterministic pseudo-random bytes.
type genReader struct {
	r *rand.ChaCha8
	n int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.n)]
	g.r.Read(p)
	g.n -= int64(len(p))
	return len(p), nil
}

func TestLargeBodyStreamed(t *testing.T) {
	const size = 64 << 20
	h := newHandler()
	type got struct {
		sum   []byte
		n     int64
		err   error
		reads int
		max   int
	}
	gotc := make(chan got, 1)
	h.putHook = func(ctx context.Context, req PutRequest) (string, error) {
		var g got
		sh := sha256.New()
		buf := make([]byte, 1<<20)
		for {
			n, err := req.Body.Read(buf)
			sh.Write(buf[:n])
			g.n += int64(n)
			g.reads++
			g.max = max(g.max, n)
			if err == io.EOF {
				break
			} else if err != nil {
				g.err = err
				break
			}
		}
		g.sum = sh.Sum(nil)
		gotc <- g
		if g.err != nil {
			return "", g.err
		}
		return "/big", nil
	}

	pr, pw := io.Pipe()
	t.Cleanup(func() { pr.Close() })
	wantSum := make(chan []byte, 1)
	go func() {
		bw := bufio.NewWriter(pw)
		bw.WriteString(reqLine(Request{ID: 1, Command: CmdPut, ActionID: id32(1), OutputID: id32(2), BodySize: size}))
		bw.WriteByte('"')
		sh := sha256.New()
		enc := base64.NewEncoder(base64.StdEncoding, bw)
		_, err := io.Copy(io.MultiWriter(enc, sh), &genReader{r: rand.NewChaCha8([32]byte{42}), n: size})
		if err == nil {
			err = enc.Close()
		}
		bw.WriteString("\"\n")
		bw.WriteString(getReq(2, id32(3)))
		bw.WriteString(closeReq(3))
		if err == nil {
			err = bw.Flush()
		}
		wantSum <- sh.Sum(nil)
		pw.CloseWithError(err)
	}()

	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- (&Server{Handler: h}).Serve(context.Background(), pr, &out) }()
	err := waitErr(t, done)
	if err != nil {
		t.Fatalf("Serve = %v", err)
	}
	g := <-gotc
	want := <-wantSum
	if g.err != nil || g.n != size || !bytes.Equal(g.sum, want) {
		t.Errorf("handler read %d bytes, SHA-256 %x, err %v; want %d bytes, SHA-256 %x", g.n, g.sum, g.err, size, want)
	}
	if g.max > chunkSize {
		t.Errorf("a single read returned %d bytes: the body is not decoded in chunks", g.max)
	}
	lines, rsps := parseResponses(t, out.String())
	if len(rsps) != 4 || rsps[1].ID == 0 {
		t.Fatalf("responses = %q", lines)
	}
	m := result{lines: lines, rsps: rsps}.byID(t)
	if m[1].Err != "" || m[1].DiskPath != "/big" || !m[2].Miss {
		t.Errorf("responses = %q", lines)
	}
	checkClosedOnce(t, h)
}

func TestBodyReaderChunkBoundaries(t *testing.T) {
	// Bodies whose base64 text ends at, just before and just after chunk
	// boundaries (with and without padding) decode exactly.
	var sizes []int
	for _, k := range []int{1, 2, 3} {
		base := chunkSize / 4 * 3 * k
		for d := -4; d <= 4; d++ {
			sizes = append(sizes, base+d)
		}
	}
	sizes = append(sizes, 1, 2, 3, 4)
	var in strings.Builder
	bodies := make(map[string][]byte)
	for i, n := range sizes {
		_, data := b64Body(n, uint64(i))
		var action [IDSize]byte
		binary.BigEndian.PutUint64(action[:], uint64(i+1))
		bodies[hex.EncodeToString(action[:])] = data
		in.WriteString(putReq(int64(i+1), action[:], id32(1), data))
	}
	in.WriteString(closeReq(int64(len(sizes) + 1)))
	h := newHandler()
	r := serveString(t, h, in.String())
	if r.err != nil {
		t.Fatalf("Serve = %v", r.err)
	}
	for _, rsp := range r.rsps {
		if rsp.Err != "" {
			t.Errorf("response %d: %s", rsp.ID, rsp.Err)
		}
	}
	if len(h.stored) != len(sizes) {
		t.Fatalf("stored %d puts, want %d", len(h.stored), len(sizes))
	}
	for _, p := range h.stored {
		if want := bodies[hex.EncodeToString(p.ActionID)]; !bytes.Equal(p.Body, want) {
			t.Errorf("put of %d bytes: handler got %d bytes, not the body", len(want), len(p.Body))
		}
	}
}

// fastHandler is a testHandler that answers gets for known actions, and
// misses for actions it is told are absent, through GetFast.
type fastHandler struct {
	*testHandler
	absent   map[string]bool
	fastHits atomic.Int32
}

func (h *fastHandler) GetFast(actionID []byte) (Entry, bool, bool) {
	if h.absent[hex.EncodeToString(actionID)] {
		return Entry{}, false, true
	}
	h.mu.Lock()
	e, ok := h.entries[hex.EncodeToString(actionID)]
	h.mu.Unlock()
	if ok {
		h.fastHits.Add(1)
	}
	return e, ok, ok
}

// A FastGetter answers hits and definite misses without Get; the rest go
// to Get; and while any request is being handled, gets are not answered
// inline (so one never overtakes a put it may depend on, with
// MaxConcurrency 1).
func TestFastGetter(t *testing.T) {
	h := &fastHandler{testHandler: newHandler(), absent: map[string]bool{hex.EncodeToString(id32(3)): true}}
	known := h.add(id32(1), []byte("known"))

	// A put that blocks until released, then a get of the same action.
	release := make(chan struct{})
	h.putHook = func(ctx context.Context, req PutRequest) (string, error) {
		io.ReadAll(req.Body)
		<-release
		h.add(req.ActionID, []byte("late"))
		return "/mem/late", nil
	}
	sawGet4 := make(chan struct{})
	h.getHook = func(ctx context.Context, actionID []byte) error {
		if bytes.Equal(actionID, id32(4)) {
			close(sawGet4)
		}
		return nil
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	srv := &Server{Handler: h, MaxConcurrency: 4}
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), pr, &out) }()

	write(t, pw, getReq(1, id32(1))+getReq(3, id32(3))+getReq(2, id32(2)))
	write(t, pw, putReq(4, id32(4), id32(9), []byte("late"))+getReq(5, id32(4)))
	waitFor(t, sawGet4, "the get read during the put to reach Get")
	close(release)
	write(t, pw, closeReq(6))
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	_, rsps := parseResponses(t, out.String())
	byID := map[int64]Response{}
	for _, r := range rsps {
		byID[r.ID] = r
	}
	checkHit(t, byID[1], known)
	if !byID[2].Miss || !byID[3].Miss {
		t.Errorf("gets of unknown actions: %+v, %+v; want misses", byID[2], byID[3])
	}
	if byID[4].DiskPath != "/mem/late" || byID[5].ID != 5 {
		t.Errorf("put, get = %+v, %+v", byID[4], byID[5])
	}
	if n := h.fastHits.Load(); n != 1 {
		t.Errorf("GetFast answered %d hits, want 1", n)
	}
	// Get saw only the action GetFast could not answer (2) and the one
	// read while the put was running (4).
	h.mu.Lock()
	gets := h.gets
	h.mu.Unlock()
	slices.SortFunc(gets, bytes.Compare)
	if len(gets) != 2 || !bytes.Equal(gets[0], id32(2)) || !bytes.Equal(gets[1], id32(4)) {
		t.Errorf("Get called for %x, want actions 02.. and 04..", gets)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and a later reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
