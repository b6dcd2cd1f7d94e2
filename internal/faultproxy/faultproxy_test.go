package faultproxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/faultproxy"
)

// content is the body the upstream serves for every GET.
var content = func() []byte {
	b := make([]byte, 10000)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// upstream serves content for GETs and reports what it received in
// headers: X-Host, the Host header, and X-Body-Len, the body's length.
func upstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Body-Len", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// client returns an HTTP client with its own connections.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(ctx context.Context, c *http.Client, url string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	rsp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(rsp.Body)
	return rsp, body, err
}

func TestPass(t *testing.T) {
	p := faultproxy.Start(t, upstream(t).URL)
	c := client(t)
	rsp, body, err := get(t.Context(), c, p.URL+"/bucket/output/ab/abcd")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, content) {
		t.Errorf("got %d bytes, want the upstream's %d", len(body), len(content))
	}
	if want := strings.TrimPrefix(p.URL, "http://"); rsp.Header.Get("X-Host") != want {
		t.Errorf("upstream saw Host %q, want the proxy's %q", rsp.Header.Get("X-Host"), want)
	}
	rsp, err = c.Post(p.URL+"/bucket/key", "application/octet-stream", strings.NewReader("twelve bytes"))
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	if got := rsp.Header.Get("X-Body-Len"); got != "12" {
		t.Errorf("upstream got a body of %s bytes, want 12", got)
	}
	if p.Requests() != 2 || p.Faulted() != 0 {
		t.Errorf("Requests, Faulted = %d, %d; want 2, 0", p.Requests(), p.Faulted())
	}
}

func TestStatus500(t *testing.T) {
	p := faultproxy.Start(t, upstream(t).URL)
	p.SetMode(faultproxy.Status500)
	rsp, body, err := get(t.Context(), client(t), p.URL+"/bucket/key")
	if err != nil {
		t.Fatal(err)
	}
	if rsp.StatusCode != http.StatusInternalServerError || !bytes.Contains(body, []byte("<Code>InternalError</Code>")) {
		t.Errorf("got %s %q, want 500 with an S3 InternalError", rsp.Status, body)
	}
	if p.Faulted() != 1 {
		t.Errorf("Faulted = %d, want 1", p.Faulted())
	}
}

func TestBlackhole(t *testing.T) {
	p, err := faultproxy.New(upstream(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetMode(faultproxy.Blackhole)
	c := client(t)

	// A client that gives up gets no answer.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := get(ctx, c, p.URL+"/bucket/key")
		done <- err
	}()
	if err := p.WaitRequests(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("blackholed request returned before the client gave up: %v", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("blackholed request: got %v, want context.Canceled", err)
	}

	// Close unblocks a request still waiting, and returns.
	go func() {
		_, _, err := get(t.Context(), c, p.URL+"/bucket/key")
		done <- err
	}()
	if err := p.WaitRequests(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := <-done; err == nil {
		t.Error("blackholed request succeeded after Close")
	}
	p.Close() // again: no effect
}

func TestSlow(t *testing.T) {
	p := faultproxy.Start(t, upstream(t).URL)
	c := client(t)

	p.Set(faultproxy.Fault{Mode: faultproxy.Slow, Delay: 20 * time.Millisecond})
	start := time.Now()
	_, body, err := get(t.Context(), c, p.URL+"/bucket/key")
	if err != nil || !bytes.Equal(body, content) {
		t.Fatalf("slow request: %d bytes, %v", len(body), err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("slow request took %v, less than its delay", d)
	}

	// A client that gives up during the delay is not kept waiting, with or
	// without a request body.
	p.Set(faultproxy.Fault{Mode: faultproxy.Slow, Delay: time.Hour})
	for i, body := range []string{"", "a request body"} {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, p.URL+"/bucket/key", strings.NewReader(body))
			rsp, err := c.Do(req)
			if err == nil {
				rsp.Body.Close()
			}
			done <- err
		}()
		if err := p.WaitRequests(t.Context(), int64(2+i)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled slow request: got %v, want context.Canceled", err)
		}
	}
}

func TestReset(t *testing.T) {
	p := faultproxy.Start(t, upstream(t).URL)
	p.SetMode(faultproxy.Reset)
	_, _, err := get(t.Context(), client(t), p.URL+"/bucket/key")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("got %v, want a connection reset", err)
	}
}

func TestCorruptBody(t *testing.T) {
	p := faultproxy.Start(t, upstream(t).URL)
	p.Set(faultproxy.Fault{Mode: faultproxy.CorruptBody, Only: faultproxy.GetsOf("output/")})
	c := client(t)

	rsp, body, err := get(t.Context(), c, p.URL+"/bucket/output/ab/abcd")
	if err != nil {
		t.Fatal(err)
	}
	if rsp.ContentLength != int64(len(content)) || len(body) != len(content) {
		t.Fatalf("corrupt body: %d bytes (Content-Length %d), want %d", len(body), rsp.ContentLength, len(content))
	}
	var diff []int
	for i := range body {
		if body[i] != content[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) != 3 || diff[0] != 0 || diff[1] != 4096 || diff[2] != 8192 {
		t.Errorf("bytes changed at %v, want [0 4096 8192]", diff)
	}

	// Requests the filter does not select pass.
	if _, body, err := get(t.Context(), c, p.URL+"/bucket/action/ab/abcd"); err != nil || !bytes.Equal(body, content) {
		t.Errorf("unselected GET: %d bytes, %v; want it intact", len(body), err)
	}
	if p.Requests() != 2 || p.Faulted() != 1 {
		t.Errorf("Requests, Faulted = %d, %d; want 2, 1", p.Requests(), p.Faulted())
	}
}

func TestTruncateBody(t *testing.T) {
	p := faultproxy.Start(t, upstream(t).URL)
	p.SetMode(faultproxy.TruncateBody)
	rsp, body, err := get(t.Context(), client(t), p.URL+"/bucket/output/ab/abcd")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading a truncated body: %v, want io.ErrUnexpectedEOF", err)
	}
	if rsp == nil || rsp.ContentLength != int64(len(content)) {
		t.Fatalf("response %v: want the true Content-Length %d", rsp, len(content))
	}
	if len(body) != len(content)/2 || !bytes.Equal(body, content[:len(body)]) {
		t.Errorf("got %d bytes, want the first %d", len(body), len(content)/2)
	}
}

func TestGetsOf(t *testing.T) {
	f := faultproxy.GetsOf("pre/output/")
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/bucket/pre/output/ab/abcd", true},
		{"GET", "/bucket/pre/action/ab/abcd", false},
		{"GET", "/bucket/output/ab/abcd", false},
		{"HEAD", "/bucket/pre/output/ab/abcd", false},
		{"PUT", "/bucket/pre/output/ab/abcd", false},
		{"GET", "/bucket", false},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if got := f(r); got != tc.want {
			t.Errorf("GetsOf(%q) on %s %s = %v, want %v", "pre/output/", tc.method, tc.path, got, tc.want)
		}
	}
}
