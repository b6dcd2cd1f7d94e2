package gobuild_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// genBlock is the period of genReader's base pattern.
const genBlock = 64 << 10

var genBase = func() []byte {
	b := make([]byte, genBlock)
	rand.NewChaCha8([32]byte{'g', 'o', 'b', 'u', 'i', 'l', 'd'}).Read(b)
	return b
}()

// genReader yields n deterministic bytes cheaply: a fixed random 64 KiB
// block, repeated, with the block number in the first 8 bytes of each copy
// so that no two blocks are alike.
type genReader struct {
	off, n int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && g.off < g.n {
		in := int(g.off % genBlock)
		k := min(len(p), genBlock-in, int(min(g.n-g.off, genBlock)))
		copy(p[:k], genBase[in:in+k])
		if in < 8 {
			var stamp [8]byte
			binary.LittleEndian.PutUint64(stamp[:], uint64(g.off/genBlock))
			copy(p[:min(k, 8-in)], stamp[in:])
		}
		p = p[k:]
		g.off += int64(k)
		total += k
	}
	return total, nil
}

// writeRequest writes req in the go command's framing (JSON line, blank
// line, and for a put with a body "\"<base64>\"\n"), streaming body.
func writeRequest(bw *bufio.Writer, req cacheprog.Request, body io.Reader) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	bw.Write(data)
	bw.WriteString("\n\n")
	if req.BodySize > 0 {
		bw.WriteByte('"')
		enc := base64.NewEncoder(base64.StdEncoding, bw)
		n, err := io.Copy(enc, body)
		if err != nil {
			return err
		}
		if n != req.BodySize {
			return fmt.Errorf("body is %d bytes, want %d", n, req.BodySize)
		}
		if err := enc.Close(); err != nil {
			return err
		}
		bw.WriteString("\"\n")
	}
	return nil
}

// Environment of the child process of TestPutHugeObjectRSS.
const (
	rssChildDir  = "GOBUILD_TEST_RSS_CHILD_DIR"
	rssChildSize = "GOBUILD_TEST_RSS_CHILD_SIZE"
	rssMarker    = "RSS-CHILD-RESULT "
)

// rssReport is what the child reports on stdout.
type rssReport struct {
	MaxRSSKiB   int64
	ServeErr    string
	Put, Get    cacheprog.Response
	HashSeconds float64
	PutSeconds  float64
}

func TestPutHugeObjectRSS(t *testing.T) {
	if dir := os.Getenv(rssChildDir); dir != "" {
		rssChild(t, dir)
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is read from getrusage, in KiB on Linux")
	}
	const maxRSS = 64 << 20
	race := false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			race = race || s.Key == "-race" && s.Value == "true"
		}
	}
	size := int64(1 << 30)
	switch {
	case race:
		size = 32 << 20 // the race detector streams at about 8 MB/s
	case testing.Short():
		size = 256 << 20
	}

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPutHugeObjectRSS$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), rssChildDir+"="+dir, rssChildSize+"="+strconv.FormatInt(size, 10))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("child: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	var rep rssReport
	found := false
	for _, line := range strings.Split(stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, rssMarker); ok {
			if err := json.Unmarshal([]byte(rest), &rep); err != nil {
				t.Fatalf("child report %q: %v", rest, err)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("child reported nothing:\n%s", stdout.Bytes())
	}
	t.Logf("race detector: %v; %d MiB put: peak RSS %.1f MiB; hash pass %.2fs, put %.2fs (%.0f MB/s), child total %.2fs",
		race, size>>20, float64(rep.MaxRSSKiB)/1024, rep.HashSeconds, rep.PutSeconds, float64(size)/1e6/rep.PutSeconds, elapsed.Seconds())

	if rep.ServeErr != "" {
		t.Errorf("Serve = %s", rep.ServeErr)
	}
	if rep.Put.Err != "" || rep.Put.DiskPath == "" {
		t.Fatalf("put response = %+v", rep.Put)
	}
	if rel, err := filepath.Rel(dir, rep.Put.DiskPath); err != nil || strings.HasPrefix(rel, "..") {
		t.Errorf("DiskPath %s is not in the store %s", rep.Put.DiskPath, dir)
	}
	fi, err := os.Stat(rep.Put.DiskPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Errorf("%s is %d bytes, want %d", rep.Put.DiskPath, fi.Size(), size)
	}
	if rep.Get.Miss || rep.Get.Err != "" || rep.Get.Size != size || rep.Get.DiskPath != rep.Put.DiskPath {
		t.Errorf("get after put = %+v", rep.Get)
	}
	if rss := rep.MaxRSSKiB << 10; rss >= maxRSS {
		if race {
			t.Logf("peak RSS %d MiB over %d MiB, not checked under the race detector", rss>>20, maxRSS>>20)
		} else {
			t.Errorf("peak RSS %.1f MiB, want < %d MiB", float64(rss)/(1<<20), maxRSS>>20)
		}
	}
}

// rssChild puts one huge object through a real server and cache, then
// reports its peak RSS.
func rssChild(t *testing.T, dir string) {
	size, err := strconv.ParseInt(os.Getenv(rssChildSize), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// One request at a time, so that the get sees the finished put.
	srv := &cacheprog.Server{Handler: &gobuild.Cache{Store: st}, MaxConcurrency: 1}

	var rep rssReport
	start := time.Now()
	h := sha256.New()
	if _, err := io.Copy(h, &genReader{n: size}); err != nil {
		t.Fatal(err)
	}
	oid := h.Sum(nil)
	aid := sha256.Sum256([]byte("TestPutHugeObjectRSS"))
	rep.HashSeconds = time.Since(start).Seconds()

	start = time.Now()
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		err := writeRequest(bw, cacheprog.Request{ID: 1, Command: cacheprog.CmdPut, ActionID: aid[:], OutputID: oid, BodySize: size}, &genReader{n: size})
		if err == nil {
			err = writeRequest(bw, cacheprog.Request{ID: 2, Command: cacheprog.CmdGet, ActionID: aid[:]}, nil)
		}
		if err == nil {
			err = writeRequest(bw, cacheprog.Request{ID: 3, Command: cacheprog.CmdClose}, nil)
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	var out bytes.Buffer
	if err := srv.Serve(context.Background(), pr, &out); err != nil {
		rep.ServeErr = err.Error()
	}
	pr.Close()
	rep.PutSeconds = time.Since(start).Seconds()

	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rsp cacheprog.Response
		if err := json.Unmarshal([]byte(line), &rsp); err != nil {
			t.Fatalf("response %q: %v", line, err)
		}
		switch rsp.ID {
		case 1:
			rep.Put = rsp
		case 2:
			rep.Get = rsp
		}
	}

	// The peak of this process image (VmHWM), not getrusage's ru_maxrss:
	// that one keeps the peak from before exec, which for a forked test
	// binary is its parent's RSS at the fork.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			rep.MaxRSSKiB = kib
		}
	}
	if rep.MaxRSSKiB == 0 {
		t.Fatalf("no VmHWM in /proc/self/status")
	}
	data, _ := json.Marshal(rep)
	fmt.Printf("%s%s\n", rssMarker, data)
}

// benchSession is a server session driven through pipes.
type benchSession struct {
	in   *io.PipeWriter
	out  *bufio.Reader
	done chan error
}

func startSession(b *testing.B) *benchSession {
	st, err := store.Open(store.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	srv := &cacheprog.Server{Handler: &gobuild.Cache{Store: st}}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &benchSession{in: inW, out: bufio.NewReaderSize(outR, 64<<10), done: make(chan error, 1)}
	go func() {
		err := srv.Serve(context.Background(), inR, outW)
		outW.Close()
		inR.Close()
		s.done <- err
	}()
	b.Cleanup(func() { inW.Close(); outR.Close() })
	if line := s.line(b); string(line) != `{"ID":0,"KnownCommands":["get","put","close"]}`+"\n" {
		b.Fatalf("first line %q", line)
	}
	return s
}

// line returns the next response line; it is valid until the next call.
func (s *benchSession) line(b *testing.B) []byte {
	line, err := s.out.ReadSlice('\n')
	if err != nil {
		b.Fatalf("reading responses: %v", err)
	}
	return line
}

// finish reads the close response and waits for Serve.
func (s *benchSession) finish(b *testing.B, closeID int64) {
	if line := s.line(b); string(line) != fmt.Sprintf(`{"ID":%d}`+"\n", closeID) {
		b.Fatalf("close response %q", line)
	}
	if err := <-s.done; err != nil {
		b.Fatalf("Serve = %v", err)
	}
}

func BenchmarkGetHit(b *testing.B) {
	s := startSession(b)
	body, _ := io.ReadAll(&genReader{n: 4 << 10})
	oid := sha256.Sum256(body)
	aid := sha256.Sum256([]byte("BenchmarkGetHit"))
	go func() {
		bw := bufio.NewWriter(s.in)
		err := writeRequest(bw, cacheprog.Request{ID: 1, Command: cacheprog.CmdPut, ActionID: aid[:], OutputID: oid[:], BodySize: int64(len(body))}, bytes.NewReader(body))
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			s.in.CloseWithError(err)
		}
	}()
	var put cacheprog.Response
	if err := json.Unmarshal(s.line(b), &put); err != nil || put.ID != 1 || put.Err != "" || put.DiskPath == "" {
		b.Fatalf("put response %+v (%v)", put, err)
	}

	// Get requests differ only in their IDs.
	prefix := []byte(`{"ID":`)
	suffix := []byte(`,"Command":"get","ActionID":"` + base64.StdEncoding.EncodeToString(aid[:]) + `"}` + "\n\n")
	b.ResetTimer()
	go func() {
		bw := bufio.NewWriterSize(s.in, 64<<10)
		var num []byte
		for i := range b.N {
			bw.Write(prefix)
			num = strconv.AppendInt(num[:0], int64(i+2), 10)
			bw.Write(num)
			bw.Write(suffix)
		}
		err := writeRequest(bw, cacheprog.Request{ID: int64(b.N + 2), Command: cacheprog.CmdClose}, nil)
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			s.in.CloseWithError(err)
		}
	}()
	for range b.N {
		line := s.line(b)
		if !bytes.Contains(line, []byte(`"DiskPath"`)) || bytes.Contains(line, []byte(`"Err"`)) {
			b.Fatalf("get response %q, want a hit", line)
		}
	}
	b.StopTimer()
	s.finish(b, int64(b.N+2))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkGetHitLatency sends one get at a time and waits for its answer,
// as the go command does along a chain of dependencies: it measures the
// round trip, where BenchmarkGetHit measures pipelined throughput.
func BenchmarkGetHitLatency(b *testing.B) {
	s := startSession(b)
	body, _ := io.ReadAll(&genReader{n: 4 << 10})
	oid := sha256.Sum256(body)
	aid := sha256.Sum256([]byte("BenchmarkGetHitLatency"))
	// One writer, since io.Pipe blocks a write until it has all been read
	// and the server reads a request's last newline only with the next.
	type request struct {
		req  cacheprog.Request
		body io.Reader
	}
	reqs := make(chan request)
	defer close(reqs)
	go func() {
		bw := bufio.NewWriter(s.in)
		for r := range reqs {
			err := writeRequest(bw, r.req, r.body)
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				s.in.CloseWithError(err)
			}
		}
	}()
	send := func(req cacheprog.Request, body io.Reader) { reqs <- request{req, body} }
	send(cacheprog.Request{ID: 1, Command: cacheprog.CmdPut, ActionID: aid[:], OutputID: oid[:], BodySize: int64(len(body))}, bytes.NewReader(body))
	if line := s.line(b); !bytes.Contains(line, []byte(`"DiskPath"`)) {
		b.Fatalf("put response %q", line)
	}
	b.ResetTimer()
	for i := range b.N {
		send(cacheprog.Request{ID: int64(i + 2), Command: cacheprog.CmdGet, ActionID: aid[:]}, nil)
		if line := s.line(b); !bytes.Contains(line, []byte(`"DiskPath"`)) {
			b.Fatalf("get response %q, want a hit", line)
		}
	}
	b.StopTimer()
	send(cacheprog.Request{ID: int64(b.N + 2), Command: cacheprog.CmdClose}, nil)
	s.finish(b, int64(b.N+2))
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/get")
}

func BenchmarkPut1MiB(b *testing.B) {
	const size = 1 << 20
	s := startSession(b)
	// Object i is a 1 MiB pattern with i in its first 8 bytes.
	base, _ := io.ReadAll(&genReader{n: size})
	object := func(buf []byte, i int) []byte {
		copy(buf, base)
		binary.LittleEndian.PutUint64(buf, uint64(i)^0x5555555555555555)
		return buf
	}
	oids := make([][]byte, b.N)
	buf := make([]byte, size)
	for i := range b.N {
		sum := sha256.Sum256(object(buf, i))
		oids[i] = sum[:]
	}
	b.SetBytes(size)
	b.ResetTimer()
	go func() {
		bw := bufio.NewWriterSize(s.in, 64<<10)
		buf := make([]byte, size)
		var err error
		for i := 0; i < b.N && err == nil; i++ {
			aid := sha256.Sum256(binary.LittleEndian.AppendUint64([]byte("BenchmarkPut1MiB"), uint64(i)))
			err = writeRequest(bw, cacheprog.Request{ID: int64(i + 1), Command: cacheprog.CmdPut, ActionID: aid[:], OutputID: oids[i], BodySize: size},
				bytes.NewReader(object(buf, i)))
		}
		if err == nil {
			err = writeRequest(bw, cacheprog.Request{ID: int64(b.N + 1), Command: cacheprog.CmdClose}, nil)
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			s.in.CloseWithError(err)
		}
	}()
	for range b.N {
		line := s.line(b)
		if !bytes.Contains(line, []byte(`"DiskPath"`)) || bytes.Contains(line, []byte(`"Err"`)) {
			b.Fatalf("put response %q", line)
		}
	}
	b.StopTimer()
	s.finish(b, int64(b.N+1))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}
