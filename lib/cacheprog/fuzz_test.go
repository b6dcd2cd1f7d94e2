package cacheprog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fuzzHandler never blocks. What it does depends on the first byte of the
// action ID, so the fuzzer can steer it: gets hit, miss or fail; puts read
// the body, return without reading, read part of it or fail after reading.
type fuzzHandler struct {
	closes  atomic.Int32
	badRead atomic.Value // string: a body that broke its contract
}

func (h *fuzzHandler) Get(ctx context.Context, actionID []byte) (Entry, bool, error) {
	switch actionID[0] % 3 {
	case 0:
		return Entry{OutputID: actionID, Size: 1, Time: testTime, DiskPath: "/hit"}, true, nil
	case 1:
		return Entry{}, false, nil
	}
	return Entry{}, false, errors.New("get failed")
}

func (h *fuzzHandler) Put(ctx context.Context, req PutRequest) (string, error) {
	switch req.ActionID[0] % 4 {
	case 1:
		return "/unread", nil
	case 2:
		io.CopyN(io.Discard, req.Body, 3)
		return "/partial", nil
	}
	sh := sha256.New()
	n, err := io.Copy(sh, req.Body)
	if err == nil && n != req.Size {
		h.badRead.Store("body yielded " + strconv.FormatInt(n, 10) + " bytes without error, Size " + strconv.FormatInt(req.Size, 10))
	}
	if err == nil && req.ActionID[0]%4 == 3 {
		return "", errors.New("put failed")
	}
	if err != nil {
		// A second read must report the same failure, not EOF.
		if _, err2 := req.Body.Read(make([]byte, 1)); err2 == nil || err2 == io.EOF {
			h.badRead.Store("body read failed with " + err.Error() + ", then returned " + strconv.Quote(errString(err2)))
		}
		return "", err
	}
	return "/stored", nil
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func (h *fuzzHandler) Close(ctx context.Context) error {
	h.closes.Add(1)
	return nil
}

func FuzzServe(f *testing.F) {
	a := id32(0)                             // get hits, put reads the body
	b := id32(1)                             // get misses, put does not read
	c := id32(2)                             // get fails, put reads part
	d := id32(3)                             // get hits, put fails after reading
	big, _ := b64Body(chunkSize/4*3-1, 7)    // base64 text of exactly one chunk, padded
	long, _ := b64Body(chunkSize/4*3*2+5, 8) // over two chunks
	seeds := []string{
		"",
		closeReq(1),
		getReq(1, a) + getReq(2, b) + getReq(3, c) + closeReq(4),
		putReq(1, a, d, []byte("hello")) + putReq(2, b, d, []byte("world")) + putReq(3, c, d, []byte("partial")) + putReq(4, d, d, []byte("x")) + closeReq(5),
		putReq(1, a, d, nil) + getReq(2, a) + closeReq(3),
		putReq(1, a, d, []byte("hello")) + getReq(2, a), // no close
		rawPut(1, a, d, 10, `"aGVsbG8="`+"\n") + closeReq(2),
		rawPut(1, a, d, 3, `"aGVsbG8="`+"\n") + closeReq(2),
		rawPut(1, b, d, 3, `"!!!!"`+"\n") + closeReq(2),
		rawPut(1, a, d, 4, `"aGk=aGk="`+"\n") + closeReq(2),
		rawPut(1, a, d, int64(chunkSize/4*3+2), `"`+big+"AAAA\"\n") + getReq(2, a) + closeReq(3),
		rawPut(1, a, d, int64(chunkSize/4*3*2+5), `"`+long+"\"\n") + closeReq(2),
		rawPut(1, a, d, 5, `"!`+long[1:]+"\n") + closeReq(2),
		rawPut(1, a, d, 5, "aGVsbG8=\n") + closeReq(2),
		rawPut(1, a, d, 5, `"aGVs`),
		rawPut(1, a, d, 5, "\n"),
		rawPut(1, a, d, -1, "") + closeReq(2),
		reqLine(Request{ID: 1, Command: "frob", BodySize: 5}) + `"aGVsbG8="` + "\n" + closeReq(2),
		getReq(1, nil) + getReq(2, a[:31]) + getReq(3, append(a, 0)) + putReq(4, a, d[:31], []byte("x")) + closeReq(5),
		getReq(1, a) + getReq(1, a) + closeReq(2),
		getReq(0, a) + closeReq(1),
		getReq(-1, a),
		`{"ID":1,"Command":` + "\n" + closeReq(2),
		`{"ID":1,"id":2,"Command":"get","ActionID":"` + strings.Repeat("A", 43) + `="}` + "\n" + closeReq(3),
		getReq(1, a) + strings.Repeat("x", MaxRequestLine+1) + "\n",
		"null\n" + closeReq(1),
		`"" ` + "\n",
		"\n\n \r\n" + closeReq(9),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h := &fuzzHandler{}
		var out bytes.Buffer
		done := make(chan error, 1)
		go func() {
			done <- (&Server{Handler: h, MaxConcurrency: 2}).Serve(context.Background(), bytes.NewReader(in), &out)
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Serve did not return within 10s")
		}

		if n := h.closes.Load(); n != 1 {
			t.Errorf("handler closed %d times", n)
		}
		if msg, _ := h.badRead.Load().(string); msg != "" {
			t.Error(msg)
		}
		text := out.String()
		if !strings.HasSuffix(text, "\n") {
			t.Fatalf("output does not end in a newline: %q", text)
		}
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		if lines[0] != capsLine {
			t.Fatalf("first line = %q", lines[0])
		}
		seen := make(map[int64]int)
		bare := 0 // responses with nothing but an ID: only close answers so
		for _, line := range lines[1:] {
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			var rsp Response
			if derr := dec.Decode(&rsp); derr != nil || dec.More() {
				t.Fatalf("response %q is not one JSON object: %v", line, derr)
			}
			if rsp.ID <= 0 {
				t.Fatalf("response %q: ID %d", line, rsp.ID)
			}
			if rsp.KnownCommands != nil {
				t.Errorf("response %q repeats the capabilities", line)
			}
			seen[rsp.ID]++
			// Each request that gets a response has the ID's digits in its
			// own line, so an ID cannot be answered more often than its
			// digits occur in the input.
			if limit := bytes.Count(in, []byte(strconv.FormatInt(rsp.ID, 10))); seen[rsp.ID] > limit {
				t.Fatalf("ID %d answered %d times but appears %d times in the input:\n%s", rsp.ID, seen[rsp.ID], limit, text)
			}
			if line == `{"ID":`+strconv.FormatInt(rsp.ID, 10)+`}` {
				bare++
			}
		}
		switch {
		case err == nil:
			// Answered close, last.
			if last := lines[len(lines)-1]; bare != 1 || !strings.HasPrefix(last, `{"ID":`) || strings.Contains(last, ",") {
				t.Errorf("Serve = nil, but the close response is not the last and only bare one:\n%s", text)
			}
		default:
			if bare != 0 {
				t.Errorf("Serve = %v, but a close was answered:\n%s", err, text)
			}
		}
	})
}
