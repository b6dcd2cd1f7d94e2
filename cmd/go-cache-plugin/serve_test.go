package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// daemonProc is a "go-cache-plugin serve" subprocess.
type daemonProc struct {
	cmd     *exec.Cmd
	target  string // the argument of connect
	httpURL string // base URL of the HTTP listener

	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	exited  chan struct{}
	waitErr error
}

// shortTempDir is a temporary directory with a path short enough for
// Unix sockets.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// cleanEnv is the test's environment without GOCACHE_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOCACHE_") {
			env = append(env, kv)
		}
	}
	return env
}

var (
	statusVersionRE = regexp.MustCompile(`version <span id="version">(devel|v[0-9][^ <]*)( [0-9a-f]{12}(\+dirty|&#43;dirty)?)?</span>`)
	servingRE       = regexp.MustCompile(`serving the cache-prog protocol on .* connect (\S+)"$`)
	httpRE          = regexp.MustCompile(`serving HTTP on (http://\S+)/$`)
)

// startDaemon starts a daemon on cacheDir serving --plugin=plugin (a port,
// 0 for any, or a socket path) and HTTP on a free loopback port, and waits
// until it is listening. It is stopped (SIGTERM) when the test ends.
func startDaemon(t *testing.T, cacheDir, plugin string, flags ...string) *daemonProc {
	t.Helper()
	return startDaemonEnv(t, cleanEnv(), cacheDir, plugin, flags...)
}

// startDaemonEnv is startDaemon with the daemon's environment.
func startDaemonEnv(t *testing.T, env []string, cacheDir, plugin string, flags ...string) *daemonProc {
	t.Helper()
	return runDaemon(t, env, append([]string{"serve", "--cache-dir=" + cacheDir, "--plugin=" + plugin, "--http=127.0.0.1:0", "-v"}, flags...))
}

// runDaemon starts "go-cache-plugin <args>" (a serve command with --http)
// with environment env, and waits until it serves HTTP and, with --plugin,
// the cache-prog protocol. It is stopped (SIGTERM) when the test ends.
func runDaemon(t testing.TB, env, args []string) *daemonProc {
	t.Helper()
	d := &daemonProc{cmd: exec.Command(pluginBin, args...), changed: make(chan struct{}), exited: make(chan struct{})}
	d.cmd.Env = env
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log())
		}
	})
	for _, a := range args {
		if strings.HasPrefix(a, "--plugin=") {
			d.target = d.waitLine(t, servingRE)[1]
		}
	}
	d.httpURL = d.waitLine(t, httpRE)[1]
	return d
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// find returns the submatches of the first log line matching re.
func (d *daemonProc) find(re *regexp.Regexp) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, line := range d.lines {
		if m := re.FindStringSubmatch(line); m != nil {
			return m
		}
	}
	return nil
}

// waitLine waits for a log line matching re and returns its submatches.
func (d *daemonProc) waitLine(t testing.TB, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		d.mu.Lock()
		ch := d.changed
		d.mu.Unlock()
		if m := d.find(re); m != nil {
			return m
		}
		select {
		case <-ch:
		case <-d.exited:
			// Every line is in by now: one last look.
			if m := d.find(re); m != nil {
				return m
			}
			t.Fatalf("daemon exited (%v) without logging %q; log:\n%s", d.waitErr, re, d.log())
		case <-timeout:
			t.Fatalf("daemon did not log %q; log:\n%s", re, d.log())
		}
	}
}

// stop sends SIGTERM and returns the daemon's exit status.
func (d *daemonProc) stop(t testing.TB) error {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	return d.wait(t)
}

func (d *daemonProc) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-d.exited:
		return d.waitErr
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not exit; log:\n%s", d.log())
		return nil
	}
}

// goEnv is the environment of a go command using the daemon through
// connect.
func (d *daemonProc) goEnv(t *testing.T) []string {
	return progEnv(t, pluginBin+" connect "+d.target)
}

// progEnv is goEnv with GOCACHEPROG set to prog.
func progEnv(t *testing.T, prog string) []string {
	env := goEnv(t, "unused")
	for i, kv := range env {
		if strings.HasPrefix(kv, "GOCACHEPROG=") {
			env[i] = "GOCACHEPROG=" + prog
		}
	}
	return env
}

// httpGet returns the status and body of a GET of the daemon's path.
func (d *daemonProc) httpGet(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(d.httpURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// metric scrapes /metrics, checks that it parses as Prometheus text and
// returns the value of the sample of name with the given labels.
func (d *daemonProc) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	code, text := d.httpGet(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: status %d", code)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	for _, m := range mf.Metric {
		if hasLabels(m, labels) {
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("/metrics has no %s with labels %v", name, labels)
	return 0
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.Label {
			found = found || l.GetName() == kv[i] && l.GetValue() == kv[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

// buildHits is the daemon's build cache hit counter.
func (d *daemonProc) buildHits(t *testing.T) float64 {
	return d.metric(t, "gocacheplugin_lookups_total", "frontend", "build", "result", "hit")
}

// leanModule is testModule without its test, written to a new directory.
func leanModule(t *testing.T, name, greeting string) string {
	dir := t.TempDir()
	files := testModule(name, greeting)
	delete(files, "lib/lib_test.go")
	writeFiles(t, dir, files)
	return dir
}

// buildAndRun builds dir's hello command with env and checks what it
// prints.
func buildAndRun(dir string, env []string, want string) error {
	bin := filepath.Join(dir, "hello")
	if out, err := goOutput(dir, env, "build", "-o", bin, "./cmd/hello"); err != nil {
		return fmt.Errorf("build %s: %v\n%s", dir, err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil || string(out) != want+"\n" {
		return fmt.Errorf("%s printed %q (%v), want %q", bin, out, err, want)
	}
	return nil
}

// TestServeConnect runs real go commands through connect against one
// daemon, over TCP and over a Unix socket: a rebuild compiles nothing and
// counts hits in /metrics, eight builds at once all succeed, the status
// page and health check answer, and SIGTERM stops the daemon cleanly.
func TestServeConnect(t *testing.T) {
	for _, transport := range []string{"tcp", "unix"} {
		t.Run(transport, func(t *testing.T) {
			plugin := "0"
			if transport == "unix" {
				plugin = filepath.Join(shortTempDir(t), "gcp.sock")
			}
			d := startDaemon(t, sharedCache, plugin)
			if transport == "unix" {
				if fi, err := os.Stat(plugin); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
					t.Errorf("socket %s: %v, %v; want a socket with mode 0600", plugin, fi.Mode(), err)
				}
			}
			env := d.goEnv(t)
			dir := leanModule(t, "example.com/serve"+transport, "hello, daemon")
			runGo(t, dir, env, "build", "./...")
			hits := d.buildHits(t)
			out := runGo(t, dir, env, "build", "-x", "./...")
			if n := len(compileRE.FindAllString(out, -1)); n != 0 {
				t.Errorf("second build ran the compiler %d times:\n%s", n, out)
			}
			if after := d.buildHits(t); after <= hits {
				t.Errorf("hit counter went from %v to %v over a warm build", hits, after)
			}
			if transport == "unix" {
				// connect handed the go command's pipes over to the daemon.
				d.waitLine(t, regexp.MustCompile(`session \d+: serving the client's own stdin and stdout \(handed over\)`))
			}

			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				dir := leanModule(t, fmt.Sprintf("example.com/%s%d", transport, i), fmt.Sprintf("module %d", i))
				wg.Go(func() { errs[i] = buildAndRun(dir, env, fmt.Sprintf("module %d", i)) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if live := d.metric(t, "gocacheplugin_sessions_live"); live != 0 {
				t.Errorf("%v sessions live after the builds", live)
			}
			if n := d.metric(t, "gocacheplugin_sessions_closed_total"); n < 10 {
				t.Errorf("%v sessions closed normally, want at least 10", n)
			}

			code, page := d.httpGet(t, "/")
			if code != 200 {
				t.Errorf("status page: status %d", code)
			}
			for _, want := range []string{"<td>build</td>", "hit ratio", "bytes served", "up <span id=\"uptime\">",
				"Remote tier", "none: local cache only", "Sessions"} {
				if !strings.Contains(page, want) {
					t.Errorf("status page lacks %q", want)
				}
			}
			// "devel", or the module version the go command stamped from
			// git, with the commit if the version does not hold it.
			if !statusVersionRE.MatchString(page) {
				t.Errorf("status page has no version matching %s", statusVersionRE)
			}
			if code, body := d.httpGet(t, "/healthz"); code != 200 || body != "ok\n" {
				t.Errorf("/healthz: %d %q", code, body)
			}

			if err := d.stop(t); err != nil {
				t.Errorf("daemon exit after SIGTERM: %v", err)
			}
			d.waitLine(t, regexp.MustCompile(`shutdown complete: sessions: 0 finished, 0 cut`))
			if transport == "unix" {
				if _, err := os.Stat(plugin); !os.IsNotExist(err) {
					t.Errorf("socket file left after shutdown: %v", err)
				}
			}
		})
	}
}

// rawClient is a hand-driven protocol session with a daemon.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, socket string) *rawClient {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if line, err := c.r.ReadString('\n'); err != nil || !strings.Contains(line, "KnownCommands") {
		t.Fatalf("first line %q, %v", line, err)
	}
	return c
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *rawClient) response() map[string]any {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	var rsp map[string]any
	if err := json.Unmarshal([]byte(line), &rsp); err != nil {
		c.t.Fatalf("bad response %q: %v", line, err)
	}
	return rsp
}

// putMsg is a put of body for action, framed as the go command frames it.
func putMsg(id int, action string, body []byte) string {
	a := sha256.Sum256([]byte(action))
	o := sha256.Sum256(body)
	return fmt.Sprintf(`{"ID":%d,"Command":"put","ActionID":%q,"OutputID":%q,"BodySize":%d}`+"\n\n\"%s\"\n",
		id, base64.StdEncoding.EncodeToString(a[:]), base64.StdEncoding.EncodeToString(o[:]), len(body),
		base64.StdEncoding.EncodeToString(body))
}

func getMsg(id int, action string) string {
	a := sha256.Sum256([]byte(action))
	return fmt.Sprintf(`{"ID":%d,"Command":"get","ActionID":%q}`+"\n", id, base64.StdEncoding.EncodeToString(a[:]))
}

// putGet puts body under action and gets it back.
func (c *rawClient) putGet(id int, action string, body []byte) {
	c.t.Helper()
	c.send(putMsg(id, action, body))
	if rsp := c.response(); rsp["ID"] != float64(id) || rsp["Err"] != nil {
		c.t.Fatalf("put: %v", rsp)
	}
	c.send(getMsg(id+1, action))
	if rsp := c.response(); rsp["ID"] != float64(id+1) || rsp["Size"] != float64(len(body)) {
		c.t.Fatalf("get: %v", rsp)
	}
}

func (c *rawClient) close(id int) {
	c.t.Helper()
	c.send(fmt.Sprintf(`{"ID":%d,"Command":"close"}`+"\n", id))
	if rsp := c.response(); rsp["ID"] != float64(id) || rsp["Err"] != nil {
		c.t.Fatalf("close: %v", rsp)
	}
}

// vmRSS returns the resident set size of process pid in bytes, or -1 where
// /proc does not say.
func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// TestServeBadClients connects one bad client of each kind to a daemon
// while a real build goes on beside them: each is dropped with a log line,
// the build succeeds, and a client that never reads costs bounded memory.
func TestServeBadClients(t *testing.T) {
	socket := filepath.Join(shortTempDir(t), "gcp.sock")
	d := startDaemon(t, sharedCache, socket, "--write-timeout=2s")
	env := d.goEnv(t)
	dir := leanModule(t, "example.com/badclients", "still fine")
	runGo(t, dir, env, "build", "./...") // warm the daemon up
	rss0 := vmRSS(d.cmd.Process.Pid)

	garbage := dialRaw(t, socket)
	garbage.send("{this is not JSON\n")

	cut := dialRaw(t, socket)
	msg := putMsg(1, "cut", make([]byte, 1<<20))
	cut.send(msg[:len(msg)/2])
	cut.conn.(*net.UnixConn).CloseWrite()

	gone := dialRaw(t, socket)
	gone.send(getMsg(1, "gone"))
	gone.response()
	gone.conn.Close()

	// A client that sends requests and never reads the responses.
	deaf := dialRaw(t, socket)
	var sent int64
	var batch strings.Builder
	for id := 1; ; {
		batch.Reset()
		for range 1000 {
			batch.WriteString(getMsg(id, "deaf"))
			id++
		}
		deaf.conn.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := io.WriteString(deaf.conn, batch.String())
		sent += int64(n)
		if err != nil {
			break // blocked: the daemon stopped reading
		}
		if sent > 256<<20 {
			t.Fatalf("the daemon read %d bytes from a client that reads nothing", sent)
		}
	}
	rss1 := vmRSS(d.cmd.Process.Pid)
	t.Logf("non-reading client blocked after sending %d bytes; daemon RSS %d -> %d KiB", sent, rss0>>10, rss1>>10)
	if rss0 > 0 && rss1-rss0 > 32<<20 {
		t.Errorf("daemon RSS grew by %d KiB with a non-reading client", (rss1-rss0)>>10)
	}

	// The other sessions go on: a rebuild hits, and a fresh module builds.
	out := runGo(t, dir, env, "build", "-x", "./...")
	if n := len(compileRE.FindAllString(out, -1)); n != 0 {
		t.Errorf("rebuild beside bad clients ran the compiler %d times", n)
	}
	if err := buildAndRun(leanModule(t, "example.com/beside", "beside"), env, "beside"); err != nil {
		t.Error(err)
	}

	for _, re := range []string{
		`session \d+: dropped after .*: malformed request`,
		`session \d+: dropped after .*: .*input ended inside the body`,
		`session \d+: dropped after .*: client went away without a close request`,
		`session \d+: dropped after .*: client left its responses unread for 2s`,
	} {
		d.waitLine(t, regexp.MustCompile(re))
	}
	if n := d.metric(t, "gocacheplugin_sessions_dropped_total", "reason", "protocol"); n != 2 {
		t.Errorf("%v sessions dropped for protocol errors, want 2", n)
	}
	if tmp, err := store.TempFiles(sharedCache); err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left after the cut put: %q, %v", tmp, err)
	}
}

// TestServeShutdown sends SIGTERM while a go command and a hand-driven
// session are live: the daemon refuses new clients, serves both to their
// end and exits 0 with whole objects on disk. The go command is a go test
// whose test waits on a FIFO, so that its session is surely open when the
// signal comes and goes on for a while after it.
func TestServeShutdown(t *testing.T) {
	tmp := shortTempDir(t)
	socket := filepath.Join(tmp, "gcp.sock")
	fifo := filepath.Join(tmp, "release")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFO: %v", err)
	}
	d := startDaemon(t, sharedCache, socket, "--shutdown-timeout=60s")
	raw := dialRaw(t, socket)
	raw.putGet(1, "before", []byte("before the signal"))

	dir := t.TempDir()
	files := testModule("example.com/shutdown", "built through a shutdown")
	files["lib/wait_test.go"] = `package lib

import (
	"os"
	"testing"
)

func TestWaitForRelease(t *testing.T) {
	os.ReadFile(os.Getenv("GCP_TEST_RELEASE")) // blocks until the FIFO is written
}
`
	writeFiles(t, dir, files)
	env := append(d.goEnv(t), "GCP_TEST_RELEASE="+fifo)
	test := make(chan error, 1)
	go func() {
		out, err := goOutput(dir, env, "test", "./lib")
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, out)
		}
		test <- err
	}()
	d.waitLine(t, regexp.MustCompile(`session 2: opened`))
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitLine(t, regexp.MustCompile(`shutdown: 2 live sessions`))

	// No new sessions.
	cmd := exec.Command(pluginBin, "connect", socket)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no go-cache-plugin daemon") {
		t.Errorf("connect during shutdown: %v\n%s", err, out)
	}
	// The live ones are served to their end.
	raw.putGet(3, "after", []byte("after the signal"))
	raw.close(5)
	if err := os.WriteFile(fifo, []byte("go"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-test; err != nil {
		t.Errorf("go test during shutdown: %v", err)
	}
	if err := d.wait(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	d.waitLine(t, regexp.MustCompile(`shutdown complete: sessions: 2 finished, 0 cut`))
	checkCacheDir(t, sharedCache)
}

// TestServeShutdownCuts gives live sessions a short bound: a session in
// the middle of a put is cut, the daemon still exits 0 and reports it, and
// the cache holds no partial object.
func TestServeShutdownCuts(t *testing.T) {
	cacheDir := t.TempDir()
	socket := filepath.Join(shortTempDir(t), "gcp.sock")
	d := startDaemon(t, cacheDir, socket, "--shutdown-timeout=200ms")
	raw := dialRaw(t, socket)
	raw.putGet(1, "whole", []byte("a whole object"))
	msg := putMsg(3, "partial", make([]byte, 4<<20))
	raw.send(msg[:len(msg)/2])
	waitFor(t, "a temporary file in the cache directory", func() bool {
		tmp, _ := store.TempFiles(cacheDir)
		return len(tmp) > 0
	})
	start := time.Now()
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	t.Logf("daemon exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	d.waitLine(t, regexp.MustCompile(`shutdown: cut 1 session still open: 1`))
	d.waitLine(t, regexp.MustCompile(`shutdown complete: sessions: 0 finished, 1 cut`))
	checkCacheDir(t, cacheDir)
}

// TestServeSocketFile checks that a second daemon refuses a live socket
// and that a socket left by a killed daemon is replaced.
func TestServeSocketFile(t *testing.T) {
	cacheDir := t.TempDir()
	socket := filepath.Join(shortTempDir(t), "gcp.sock")
	d := startDaemon(t, cacheDir, socket)

	second := exec.Command(pluginBin, "serve", "--cache-dir="+cacheDir, "--plugin="+socket)
	second.Env = cleanEnv()
	out, err := second.CombinedOutput()
	var xerr *exec.ExitError
	if !errors.As(err, &xerr) || xerr.ExitCode() != 1 || !strings.Contains(string(out), "another daemon is listening on that socket") {
		t.Errorf("second daemon on a live socket: %v\n%s", err, out)
	}
	raw := dialRaw(t, socket) // the first one is unharmed
	raw.putGet(1, "first", []byte("first daemon"))
	raw.close(3)

	d.cmd.Process.Kill()
	d.wait(t)
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("killed daemon left no socket file to test with: %v", err)
	}
	startDaemon(t, cacheDir, socket)
	raw = dialRaw(t, socket)
	raw.putGet(1, "second", []byte("second daemon"))
	raw.close(3)
}

// TestConnectNoDaemon checks connect without a daemon: a clear error and a
// failed build, or with --fallback a build that succeeds in-process.
func TestConnectNoDaemon(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()

	cmd := exec.Command(pluginBin, "connect", port)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	var xerr *exec.ExitError
	if !errors.As(err, &xerr) || xerr.ExitCode() != 1 {
		t.Errorf("connect with no daemon: %v, want exit status 1", err)
	}
	for _, want := range []string{"no go-cache-plugin daemon listening on 127.0.0.1:" + port, "--fallback"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("connect with no daemon printed %q, want it to say %q", out, want)
		}
	}

	dir := leanModule(t, "example.com/nodaemon", "no daemon")
	if out, err := goOutput(dir, progEnv(t, pluginBin+" connect "+port), "build", "./..."); err == nil {
		t.Errorf("build through connect with no daemon succeeded:\n%s", out)
	}
	env := progEnv(t, pluginBin+" connect --fallback --cache-dir="+sharedCache+" "+port)
	if err := buildAndRun(dir, env, "no daemon"); err != nil {
		t.Errorf("build with --fallback: %v", err)
	}
	warm := runGo(t, dir, env, "build", "-x", "./...")
	if n := len(compileRE.FindAllString(warm, -1)); n != 0 {
		t.Errorf("second build with --fallback ran the compiler %d times", n)
	}
}
