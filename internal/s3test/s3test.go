// Package s3test runs a real MinIO server on a loopback port so that tests
// can exercise S3 code paths against an actual S3 implementation rather than
// a fake.
//
// The MinIO binary is taken from the GOCACHE_PLUGIN_MINIO environment
// variable if it is set. Otherwise it is obtained by running
// scripts/install-minio.sh from the root of this repository, which builds a
// pinned version of github.com/minio/minio with "go install" (only the Go
// module proxy needs to be reachable) and caches the result, so only the first
// run pays for the build.
//
// Typical use in a test:
//
//	srv := s3test.Start(t)
//	if err := srv.CreateBucket(ctx, "test-bucket"); err != nil {
//		t.Fatal(err)
//	}
//	cli := srv.Client()
//	// ... use cli, or pass srv.Env() to a child process.
//
// For sharing one server between all the tests of a package, call
// [StartServer] from TestMain and [Server.Close] when the tests are done.
// A package whose tests call [Start] calls [Prepare] from TestMain, so that
// a first build of MinIO happens before the tests' clock starts.
//
// If the MinIO binary cannot be obtained or the server does not start, [Start]
// fails the test; it never skips.
package s3test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Fixed credentials and region used for every test server.
const (
	AccessKey = "s3test-root"
	SecretKey = "s3test-root-secret-key"
	Region    = "us-east-1"
)

// BinaryEnv is the environment variable that, if set, names the MinIO server
// binary to run instead of the one installed by scripts/install-minio.sh.
const BinaryEnv = "GOCACHE_PLUGIN_MINIO"

// installScript is the path of the install script relative to the repository
// root.
const installScript = "scripts/install-minio.sh"

// StartTimeout bounds how long [StartServer] waits for the server to become
// ready after launching it.
var StartTimeout = 60 * time.Second

// Server is a running MinIO server. Its exported fields are read-only.
type Server struct {
	// Endpoint is the base URL of the S3 API, "http://127.0.0.1:<port>".
	Endpoint string
	// AccessKey and SecretKey are the root credentials of the server.
	AccessKey, SecretKey string
	// Region is the region to use when signing requests.
	Region string
	// Dir is the directory holding the server's data and log.
	Dir string
	// LogFile is the path of the file receiving the server's output.
	LogFile string

	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	waitErr   error         // valid after done is closed
	closeOnce sync.Once
}

// Start starts a MinIO server whose data lives in a temporary directory for
// tb, and arranges for it to be closed when tb and its subtests complete. It
// calls tb.Fatal if the server cannot be started.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := StartServer(tb.TempDir())
	if err != nil {
		tb.Fatalf("s3test: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// StartServer starts a MinIO server storing its data and log under dir,
// which is created if necessary, and waits for it to become ready. The caller
// must call [Server.Close] when done with it; dir is not removed.
func StartServer(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// The ports are chosen before the server binds them, so another process
	// can occasionally grab one in between; retry a few times when that
	// happens.
	const attempts = 3
	for i := 1; ; i++ {
		s, err := startOnce(bin, dir)
		if err == nil {
			return s, nil
		}
		if i >= attempts || !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
}

var errAddrInUse = errors.New("address already in use")

func startOnce(bin, dir string) (*Server, error) {
	dataDir := filepath.Join(dir, "data")
	certsDir := filepath.Join(dir, "certs")
	for _, d := range []string{dataDir, certsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, fmt.Errorf("choose ports: %w", err)
	}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	consoleAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])

	logPath := filepath.Join(dir, "minio.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, "server",
		"--address", apiAddr,
		"--console-address", consoleAddr,
		// Keep the server away from ~/.minio, which could otherwise turn on
		// TLS if it holds certificates.
		"--certs-dir", certsDir,
		"--quiet",
		dataDir,
	)
	cmd.Dir = dir
	cmd.Env = append(filterEnv(os.Environ(), "MINIO_"),
		"MINIO_ROOT_USER="+AccessKey,
		"MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_SITE_REGION="+Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CALLHOME_ENABLE=off",
		// CI/CD mode lets the server use a drive that is on the root
		// filesystem and purges deleted data immediately.
		"MINIO_CI_CD=on",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}

	s := &Server{
		Endpoint:  "http://" + apiAddr,
		AccessKey: AccessKey,
		SecretKey: SecretKey,
		Region:    Region,
		Dir:       dir,
		LogFile:   logPath,
		cmd:       cmd,
		done:      make(chan struct{}),
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()

	if err := s.waitReady(StartTimeout); err != nil {
		s.Close()
		tail := logTail(logPath, 40)
		// MinIO reports "Specified port is already in use".
		if strings.Contains(tail, "already in use") {
			err = fmt.Errorf("%w (%w)", err, errAddrInUse)
		}
		return nil, fmt.Errorf("%w\n--- tail of %s ---\n%s", err, logPath, tail)
	}
	return s, nil
}

// waitReady polls the cluster health endpoint until it reports success, the
// process exits, or timeout elapses. Unlike /minio/health/live and
// /minio/health/ready, which answer 200 as soon as the HTTP listener is up,
// /minio/health/cluster answers 200 only once the object layer, bucket
// metadata and IAM subsystems are initialized, i.e. when S3 requests will
// succeed.
func (s *Server) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	hc := &http.Client{Timeout: 2 * time.Second}
	url := s.Endpoint + "/minio/health/cluster"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		rsp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, rsp.Body)
			rsp.Body.Close()
			if rsp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("GET %s: %s", url, rsp.Status)
		} else {
			last = err
		}

		select {
		case <-s.done:
			return fmt.Errorf("minio server exited before becoming ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("minio server not ready after %v: last error: %v", timeout, last)
		case <-tick.C:
		}
	}
}

// Close stops the server and waits for its process to exit. It is safe to
// call Close more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		select {
		case <-s.done:
			return // already exited
		default:
		}
		s.cmd.Process.Kill()
		<-s.done
	})
}

// Client returns a new S3 client for the server, authenticated with the
// server's root credentials and using path-style addressing.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
	})
}

// CreateBucket creates a bucket with the given name on the server.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket: aws.String(name),
	})
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", name, err)
	}
	return nil
}

// Env returns environment entries ("KEY=value") that make the AWS SDK default
// credential chain of a child process authenticate to the server. The
// endpoint itself is not included; pass [Server.Endpoint] to the child
// explicitly (and enable path-style addressing).
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_SESSION_TOKEN=", // do not pair a stale session token with these keys
		"AWS_REGION=" + s.Region,
	}
}

var binary struct {
	sync.Mutex
	path string
}

// Prepare makes sure the MinIO binary is there, building it if need be,
// and says so on stderr when it builds. Call it from TestMain before
// m.Run: the first build takes minutes (more on a loaded machine), which
// must not count against the timeout of the test that happens to need the
// server first. Packages that run at once share one build (the install
// script takes a lock); the others wait for it.
func Prepare() error {
	if _, err := Binary(); err != nil {
		return fmt.Errorf("s3test: prepare the MinIO server: %w", err)
	}
	return nil
}

// Binary returns the path of the MinIO server binary: the value of the
// GOCACHE_PLUGIN_MINIO environment variable if set, otherwise the path
// printed by scripts/install-minio.sh, which is run (and may build MinIO)
// the first time it is needed. A successful result is remembered for the
// life of the process.
func Binary() (string, error) {
	binary.Lock()
	defer binary.Unlock()
	if binary.path != "" {
		return binary.path, nil
	}
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", BinaryEnv, err)
		}
		binary.path = p
		return p, nil
	}
	p, err := installBinary()
	if err != nil {
		return "", err
	}
	binary.path = p
	return p, nil
}

func installBinary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, installScript)

	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Dir = root
	cmd.Stdout = &stdout
	// Show build progress (it can take minutes) and keep it for errors.
	cmd.Stderr = io.MultiWriter(os.Stderr, &stderr)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s failed: %w\n%s", installScript, err, lastLines(stderr.String(), 40))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	p := strings.TrimSpace(lines[len(lines)-1])
	if p == "" {
		return "", fmt.Errorf("%s printed no binary path", installScript)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w", installScript, err)
	}
	return p, nil
}

// repoRoot walks up from the working directory to the nearest directory
// holding both a go.mod file and the install script.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if isFile(filepath.Join(dir, "go.mod")) && isFile(filepath.Join(dir, installScript)) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod with %s found above %s (set %s to a minio binary)",
				installScript, wd, BinaryEnv)
		}
		dir = parent
	}
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// freePorts returns n distinct loopback TCP ports that were free at the time
// of the call.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Keep the listener open until all ports are chosen so that they are
		// distinct.
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// filterEnv returns env without the entries whose names start with prefix.
func filterEnv(env []string, prefix string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// logTail returns up to the last n lines of the file at path.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "(log is empty)"
	}
	return strings.Join(lines, "\n")
}

// lastLines returns up to the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
