package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/internal/faultproxy"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// s3Bucket is the bucket of the S3 end-to-end tests; each test uses its
// own key prefix in it.
const s3Bucket = "e2e"

// s3Harness is what the S3 end-to-end tests share: a MinIO server, and a
// warm local cache directory whose objects were all uploaded under the
// prefix "base" by one cold build of baseMod.
type s3Harness struct {
	srv     *s3test.Server
	awsDir  string // holds no AWS configuration files
	baseDir string // the warm local cache directory; never written after setup
	baseMod string // the module built into it
}

// TestS3 runs the go command through the plugin with a bucket on a real
// MinIO server: warm builds from the bucket, the reference tool's bucket
// layout, faults between the plugin and the bucket, and bad settings.
//
// Only the setup compiles the standard library. The fault and setting
// tests start from a copy of its cache directory and build a module of
// their own, so that the module's packages, and only they, go to the
// bucket.
func TestS3(t *testing.T) {
	h := &s3Harness{srv: s3test.Start(t), awsDir: t.TempDir()}
	if err := h.srv.CreateBucket(t.Context(), s3Bucket); err != nil {
		t.Fatal(err)
	}

	// Worker 1: a cold build that fills the bucket.
	h.baseMod = t.TempDir()
	files := testModule("example.com/s3base", "hello from the bucket")
	delete(files, "lib/lib_test.go")
	writeFiles(t, h.baseMod, files)
	h.baseDir = t.TempDir()
	start := time.Now()
	out := runGo(t, h.baseMod, h.env(t, h.baseDir, h.srv.Endpoint, "base"), "build", "./...")
	t.Logf("cold build with the bucket: %v", time.Since(start).Round(time.Millisecond))
	m := parseMetrics(t, out)
	if m.get("uploads") == 0 || m.get("upload_errors") != 0 || m.get("uploads_dropped") != 0 {
		t.Fatalf("cold build did not upload everything: %s", m)
	}
	checkCacheDir(t, h.baseDir)

	t.Run("WarmBucket", h.testWarmBucket)
	t.Run("ReferenceLayout", h.testReferenceLayout)
	t.Run("Faults", h.testFaults)
	t.Run("BadConfig", h.testBadConfig)
	t.Run("ReadOnly", h.testReadOnly)
	t.Run("Prefetch", h.testPrefetch)
}

// env is the go command's environment for the plugin with cache directory
// dir and the test bucket at endpoint under prefix, with --metrics and -v.
func (h *s3Harness) env(t *testing.T, dir, endpoint, prefix string, extra ...string) []string {
	flags := append([]string{
		"--bucket=" + s3Bucket,
		"--s3-endpoint-url=" + endpoint,
		"--s3-path-style",
		"--prefix=" + prefix,
		"--metrics",
		"-v",
	}, extra...)
	return append(goEnv(t, dir, flags...), h.awsEnv()...)
}

// awsEnv makes the AWS SDK of a child process use the server's
// credentials and nothing of the machine's.
func (h *s3Harness) awsEnv() []string {
	return append(h.srv.Env(),
		"AWS_CONFIG_FILE="+filepath.Join(h.awsDir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(h.awsDir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_PROFILE=",
		"AWS_ENDPOINT_URL=",
		"AWS_ENDPOINT_URL_S3=",
	)
}

// metrics are the counters of the plugin's --metrics store line.
type metrics map[string]string

// parseMetrics finds the last --metrics store line in out.
func parseMetrics(t *testing.T, out string) metrics {
	t.Helper()
	m := parseMetricsLine(t, out, "go-cache-plugin: store ")
	if _, ok := m["remote_hits"]; !ok {
		t.Fatalf("metrics without a remote tier: %s", m)
	}
	return m
}

// parseMetricsLine parses the key=value pairs of the last line of out
// that starts with marker.
func parseMetricsLine(t *testing.T, out, marker string) metrics {
	t.Helper()
	i := strings.LastIndex(out, marker)
	if i < 0 {
		t.Fatalf("no %q line in the output:\n%s", marker, out)
	}
	line, _, _ := strings.Cut(out[i+len(marker):], "\n")
	m := metrics{}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func (m metrics) get(key string) int64 {
	n, err := strconv.ParseInt(m[key], 10, 64)
	if err != nil {
		panic(fmt.Sprintf("metric %s: %v", key, err))
	}
	return n
}

func (m metrics) String() string {
	var b strings.Builder
	for _, k := range []string{"remote_hits", "remote_misses", "remote_errors", "remote_skipped", "corrupt_remote",
		"uploads", "uploads_found", "upload_errors", "uploads_dropped", "breaker"} {
		fmt.Fprintf(&b, "%s=%s ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// copyCache returns a copy of the cache directory src, made of hard links
// where possible: objects are immutable (replaced by rename, never written
// in place), so the copies cannot affect each other.
func copyCache(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if filepath.Dir(rel) == "tmp" || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil // files being written are not objects
		}
		if os.Link(path, target) == nil {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// buildHello builds ./cmd/hello of the module in dir with -x, checks that
// the program prints want, and returns the go command's output and how
// long the build took.
func buildHello(t *testing.T, dir string, env []string, want string) (string, time.Duration) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hello")
	start := time.Now()
	out := runGo(t, dir, env, "build", "-x", "-o", bin, "./cmd/hello")
	d := time.Since(start)
	got, err := exec.Command(bin).Output()
	if err != nil || string(got) != want {
		t.Errorf("built program printed %q (%v), want %q", got, err, want)
	}
	return out, d
}

// newModule writes a small module named example.com/<name> that prints
// "<name> works" and returns its directory and the expected output.
func newModule(t *testing.T, name string) (dir, want string) {
	dir = t.TempDir()
	files := testModule("example.com/"+name, name+" works")
	delete(files, "lib/lib_test.go")
	writeFiles(t, dir, files)
	return dir, name + " works\n"
}

// testWarmBucket: a second worker, with an empty cache directory, builds
// from the bucket without compiling; so does the same worker after its
// directory is wiped.
func (h *s3Harness) testWarmBucket(t *testing.T) {
	dir := t.TempDir()
	for _, step := range []string{"empty directory", "wiped directory"} {
		start := time.Now()
		out := runGo(t, h.baseMod, h.env(t, dir, h.srv.Endpoint, "base"), "build", "-x", "./...")
		t.Logf("warm build, %s: %v", step, time.Since(start).Round(time.Millisecond))
		if n := len(compileRE.FindAllString(out, -1)); n != 0 {
			t.Errorf("%s: build ran the compiler %d times; want everything from the bucket", step, n)
		}
		m := parseMetrics(t, out)
		if m.get("remote_hits") == 0 || m.get("remote_errors") != 0 || m.get("corrupt_remote") != 0 {
			t.Errorf("%s: metrics %s; want remote hits and no errors", step, m)
		}
		checkCacheDir(t, dir)

		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// testReferenceLayout reads objects written in the reference tool's layout
// (a two-field action record, no size) by a hand-written protocol session.
func (h *s3Harness) testReferenceLayout(t *testing.T) {
	const prefix = "reference"
	content := []byte("an output written by the reference tool\n")
	outputID := sha256.Sum256(content)
	actionID := sha256.Sum256([]byte("a made-up action"))
	missingID := sha256.Sum256([]byte("an action nobody ran"))
	putTime := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

	cli := h.srv.Client()
	put := func(key string, data []byte) {
		t.Helper()
		if _, err := cli.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket: aws.String(s3Bucket), Key: aws.String(key), Body: bytes.NewReader(data),
		}); err != nil {
			t.Fatal(err)
		}
	}
	aHex, oHex := hex.EncodeToString(actionID[:]), hex.EncodeToString(outputID[:])
	put(prefix+"/action/"+aHex[:2]+"/"+aHex, fmt.Appendf(nil, "%s %d", oHex, putTime.UnixNano()))
	put(prefix+"/output/"+oHex[:2]+"/"+oHex, content)

	cacheDir := t.TempDir()
	cmd := exec.Command(pluginBin, "--cache-dir="+cacheDir, "--bucket="+s3Bucket, "--s3-endpoint-url="+h.srv.Endpoint,
		"--s3-path-style", "--prefix="+prefix)
	cmd.Env = append(os.Environ(), h.awsEnv()...)
	b64 := base64.StdEncoding.EncodeToString
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"ID":1,"Command":"get","ActionID":%q}`+"\n"+
		`{"ID":2,"Command":"get","ActionID":%q}`+"\n"+`{"ID":3,"Command":"close"}`+"\n",
		b64(actionID[:]), b64(missingID[:])))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plugin: %v\n%s", err, stderr.Bytes())
	}
	rsps := map[int64]cacheprog.Response{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var r cacheprog.Response
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("bad response in %s: %v", out, err)
		}
		rsps[r.ID] = r
	}
	if len(rsps) != 4 {
		t.Fatalf("got responses %s; want capabilities and three answers", out)
	}

	hit := rsps[1]
	if hit.Miss || hit.Err != "" {
		t.Fatalf("get of the reference action: %+v; want a hit\nstderr: %s", hit, stderr.Bytes())
	}
	if !bytes.Equal(hit.OutputID, outputID[:]) || hit.Size != int64(len(content)) || hit.Time == nil || !hit.Time.Equal(putTime) {
		t.Errorf("hit = OutputID %x, Size %d, Time %v; want %x, %d, %v", hit.OutputID, hit.Size, hit.Time, outputID, len(content), putTime)
	}
	if data, err := os.ReadFile(hit.DiskPath); err != nil || !bytes.Equal(data, content) {
		t.Errorf("DiskPath %s holds %q (%v), want %q", hit.DiskPath, data, err, content)
	}
	if !rsps[2].Miss {
		t.Errorf("get of an action not in the bucket: %+v; want a miss", rsps[2])
	}
	if rsps[3].Err != "" {
		t.Errorf("close: %+v", rsps[3])
	}
	checkCacheDir(t, cacheDir) // the record was completed with the size
}

// A faultCase is a fault between the plugin and the bucket, and what the
// build's metrics must show of it.
type faultCase struct {
	name  string
	fault func(prefix string) faultproxy.Fault
	check func(t *testing.T, m metrics, compiles int)
}

// testFaults: with a bucket that holds a module's objects, a build with an
// empty cache directory (for the module: the standard library is local)
// succeeds whatever the bucket does, and installs nothing corrupt.
func (h *s3Harness) testFaults(t *testing.T) {
	wantCompiles := func(t *testing.T, compiles int) {
		if compiles == 0 {
			t.Errorf("nothing was compiled, but the bucket was unusable")
		}
	}
	for _, fc := range []faultCase{{
		name:  "blackhole",
		fault: func(string) faultproxy.Fault { return faultproxy.Fault{Mode: faultproxy.Blackhole} },
		check: func(t *testing.T, m metrics, compiles int) {
			wantCompiles(t, compiles)
			// Every remote call would take the client's full timeouts:
			// the breaker must have stopped them, not each one timing out.
			if m["breaker"] != "open" && m.get("remote_skipped") == 0 {
				t.Errorf("breaker never opened: %s", m)
			}
			if n := m.get("remote_errors"); n > 10 {
				t.Errorf("%d remote errors: the breaker did not stop the calls", n)
			}
		},
	}, {
		name:  "slow",
		fault: func(string) faultproxy.Fault { return faultproxy.Fault{Mode: faultproxy.Slow, Delay: 2 * time.Second} },
		check: func(t *testing.T, m metrics, compiles int) {
			// Slow is not broken: everything comes from the bucket. (An
			// upload still running at the drain deadline is cancelled and
			// counted as an upload error: remote_errors counts both.)
			fetchErrors := m.get("remote_errors") - m.get("upload_errors")
			if compiles != 0 || m.get("remote_hits") == 0 || fetchErrors != 0 {
				t.Errorf("%d compiles, %d fetch errors, metrics %s; want everything from the bucket", compiles, fetchErrors, m)
			}
		},
	}, {
		name:  "status500",
		fault: func(string) faultproxy.Fault { return faultproxy.Fault{Mode: faultproxy.Status500} },
		check: func(t *testing.T, m metrics, compiles int) {
			wantCompiles(t, compiles)
			if m.get("remote_hits") != 0 || m.get("remote_errors")+m.get("remote_skipped") == 0 {
				t.Errorf("metrics %s; want remote errors or skips and no hits", m)
			}
		},
	}, {
		name:  "reset",
		fault: func(string) faultproxy.Fault { return faultproxy.Fault{Mode: faultproxy.Reset} },
		check: func(t *testing.T, m metrics, compiles int) {
			wantCompiles(t, compiles)
			if m.get("remote_hits") != 0 || m.get("remote_errors")+m.get("remote_skipped") == 0 {
				t.Errorf("metrics %s; want remote errors or skips and no hits", m)
			}
		},
	}, {
		name: "corrupt",
		fault: func(prefix string) faultproxy.Fault {
			return faultproxy.Fault{Mode: faultproxy.CorruptBody, Only: faultproxy.GetsOf(prefix+"/output/", prefix+"/pack/")}
		},
		check: func(t *testing.T, m metrics, compiles int) {
			wantCompiles(t, compiles)
			if m.get("corrupt_remote") == 0 {
				t.Errorf("metrics %s; want corrupt remote objects counted", m)
			}
		},
	}, {
		name: "truncate",
		fault: func(prefix string) faultproxy.Fault {
			return faultproxy.Fault{Mode: faultproxy.TruncateBody, Only: faultproxy.GetsOf(prefix+"/output/", prefix+"/pack/")}
		},
		check: func(t *testing.T, m metrics, compiles int) {
			wantCompiles(t, compiles)
			if m.get("remote_errors") == 0 {
				t.Errorf("metrics %s; want remote errors counted", m)
			}
		},
	}} {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			h.testFault(t, fc)
		})
	}
}

func (h *s3Harness) testFault(t *testing.T, fc faultCase) {
	mod, want := newModule(t, "fault-"+fc.name)
	prefix := "fault-" + fc.name
	p := faultproxy.Start(t, h.srv.Endpoint)

	// A build through the proxy, passing, puts the module in the bucket.
	out, _ := buildHello(t, mod, h.env(t, copyCache(t, h.baseDir), p.URL, prefix), want)
	if m := parseMetrics(t, out); m.get("uploads") == 0 || m.get("upload_errors") != 0 || m.get("uploads_dropped") != 0 {
		t.Fatalf("build through the passing proxy did not upload everything: %s", m)
	}

	p.Set(fc.fault(prefix))
	dir := copyCache(t, h.baseDir)
	out, d := buildHello(t, mod, h.env(t, dir, p.URL, prefix, "--drain-timeout=2s"), want)
	m := parseMetrics(t, out)
	if p.Faulted() == 0 {
		t.Fatalf("no request was faulted; metrics %s", m)
	}
	compiles := len(compileRE.FindAllString(out, -1))
	fc.check(t, m, compiles)
	checkCacheDir(t, dir)
	t.Logf("%s: build %v, %d compiles, %d requests faulted; %s", fc.name, d.Round(time.Millisecond), compiles, p.Faulted(), m)
	if t.Failed() {
		t.Logf("output of the build:\n%s", out)
	}

	if fc.name == "blackhole" {
		// For comparison: the same build without a bucket.
		_, local := buildHello(t, mod, goEnv(t, copyCache(t, h.baseDir)), want)
		t.Logf("blackhole: build %v; local only: %v", d.Round(time.Millisecond), local.Round(time.Millisecond))
	}
}

// testBadConfig: a bucket that cannot be used is named on stderr, and the
// build goes on with the local cache.
func (h *s3Harness) testBadConfig(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadEndpoint := "http://" + closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name     string
		env      func(t *testing.T, dir string) []string
		messages []string // all must appear in the output
	}{{
		name: "missing-bucket",
		env: func(t *testing.T, dir string) []string {
			env := h.env(t, dir, h.srv.Endpoint, "")
			return append(env, "GOCACHEPROG="+strings.Replace(envValue(env, "GOCACHEPROG"), "--bucket="+s3Bucket, "--bucket=no-such-bucket", 1))
		},
		messages: []string{`bucket "no-such-bucket" does not exist`},
	}, {
		name: "wrong-credentials",
		env: func(t *testing.T, dir string) []string {
			return append(h.env(t, dir, h.srv.Endpoint, "creds"), "AWS_ACCESS_KEY_ID=not-the-key")
		},
		messages: []string{"access denied", "credentials"},
	}, {
		name: "unreachable-endpoint",
		env: func(t *testing.T, dir string) []string {
			return h.env(t, dir, deadEndpoint, "dead")
		},
		messages: []string{strings.TrimPrefix(deadEndpoint, "http://"), "endpoint unreachable", "connection refused"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mod, want := newModule(t, tc.name)
			dir := copyCache(t, h.baseDir)
			out, _ := buildHello(t, mod, tc.env(t, dir), want)
			for _, msg := range tc.messages {
				if !strings.Contains(out, msg) {
					t.Errorf("output does not mention %q:\n%s", msg, out)
				}
			}
			if m := parseMetrics(t, out); m.get("remote_hits") != 0 || m.get("uploads") != 0 {
				t.Errorf("metrics %s; want no remote hits or uploads", m)
			}
			checkCacheDir(t, dir)
		})
	}
}

// envValue returns the last value of key in env.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
