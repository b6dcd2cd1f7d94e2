package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
)

// fleetFiles is a small module with two tested packages: data's test
// reads a testdata file, so its cached result is keyed on that file's
// modification time and size; calc's test opens nothing.
var fleetFiles = map[string]string{
	"go.mod": "module example.com/fleet\n\ngo 1.26\n",
	"data/data.go": `package data

// Vowels counts the vowels in b.
func Vowels(b []byte) (n int) {
	for _, c := range b {
		switch c {
		case 'a', 'e', 'i', 'o', 'u':
			n++
		}
	}
	return n
}
`,
	"data/data_test.go": `package data

import (
	"os"
	"testing"
)

func TestInput(t *testing.T) {
	b, err := os.ReadFile("testdata/input.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 16 || Vowels(b) == 0 {
		t.Fatalf("input %q", b)
	}
}
`,
	"data/testdata/input.txt": "some vowels here",
	"calc/calc.go":            "package calc\n\n// Double doubles n.\nfunc Double(n int) int { return 2 * n }\n",
	"calc/calc_test.go": `package calc

import "testing"

func TestDouble(t *testing.T) {
	if Double(2) != 4 {
		t.Fatal("Double(2) != 4")
	}
}
`,
}

// fleet is what the fleet tests share: a MinIO bucket, an upstream git
// repository of the module, and the one path every worker checks it out
// at (the go command's action IDs hold the package directory, so a fleet's
// workers share results only at one path, as CI runners have).
type fleet struct {
	srv      *s3test.Server
	upstream string
	work     string // every worker's checkout
	awsDir   string
	action   *actionFile
	summary  *actionFile
}

const fleetPrefix = "fleet"

func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkout makes a fresh shallow clone of the upstream at f.work,
// removing the previous worker's.
func (f *fleet) checkout(t *testing.T) string {
	t.Helper()
	if err := os.RemoveAll(f.work); err != nil {
		t.Fatal(err)
	}
	gitCmd(t, filepath.Dir(f.work), "clone", "-q", "--depth=1", "file://"+f.upstream, f.work)
	return f.work
}

// jobEnv is the environment of a CI job: the machine's, without the
// plugin's settings or AWS configuration, with a fresh GOCACHE, and with
// the bucket's credentials if creds.
func (f *fleet) jobEnv(t *testing.T, creds bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GOCACHE_") || strings.HasPrefix(k, "AWS_") || k == "GOCACHEPROG" || k == "GOFLAGS" || k == "GOCACHE" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local",
		"AWS_CONFIG_FILE="+filepath.Join(f.awsDir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(f.awsDir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true")
	if creds {
		env = append(env, f.srv.Env()...)
	}
	return env
}

// goTest runs go test ./... in the job's checkout with a fresh GOCACHE
// (the plugin is the cache) and returns its output.
func goTest(t *testing.T, r *actionRunner) string {
	t.Helper()
	r.base = append(r.base, "GOCACHE="+filepath.Join(t.TempDir(), "gocache"))
	out, err := r.run(r.workspace, "go", "test", "./...")
	if err != nil {
		t.Fatalf("go test: %v\n%s", err, out)
	}
	return out
}

var testResultRE = regexp.MustCompile(`(?m)^ok\s+(\S+)\s+(\(cached\)|[0-9.]+s)`)

// cachedPackages returns, for each package go test reported ok, whether
// its result was cached.
func cachedPackages(t *testing.T, out string) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, s := range testResultRE.FindAllStringSubmatch(out, -1) {
		m[s[1]] = s[2] == "(cached)"
	}
	if len(m) != 2 {
		t.Fatalf("go test reported %d packages ok; want 2:\n%s", len(m), out)
	}
	return m
}

// keys lists the bucket's keys under the fleet's prefix.
func (f *fleet) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(f.srv.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket), Prefix: aws.String(fleetPrefix + "/")})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, *o.Key)
		}
	}
	slices.Sort(keys)
	return keys
}

// summaryFigures runs the summary command on the job's metrics file and
// returns its key=value figures.
func summaryFigures(t *testing.T, r *actionRunner) metrics {
	t.Helper()
	file := r.getenv("GOCACHE_METRICS_FILE")
	out, err := exec.Command(pluginBin, "summary", file).CombinedOutput()
	if err != nil {
		t.Fatalf("summary %s: %v\n%s", file, err, out)
	}
	m := metrics{}
	for _, f := range strings.Fields(string(out)) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// withInputs are the action's inputs for the fleet's bucket.
func (f *fleet) withInputs() map[string]string {
	return map[string]string{
		"bucket":          s3Bucket,
		"prefix":          fleetPrefix,
		"region":          f.srv.Region,
		"s3-endpoint-url": f.srv.Endpoint,
		"s3-path-style":   "true",
	}
}

// TestFleet runs CI jobs as a fleet does: fresh clones at one path, fresh
// local directories, one bucket. The first job (a push) runs the GitHub
// Action's steps, then go test, then the summary action; the later ones
// check that test results are shared through canonical-mtimes, that a
// change to a test's data reruns it, and that pull requests from forks and
// jobs without credentials do not write to the bucket.
func TestFleet(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{srv: s3test.Start(t), awsDir: t.TempDir()}
	if err := f.srv.CreateBucket(t.Context(), s3Bucket); err != nil {
		t.Fatal(err)
	}
	f.action = loadAction(t, filepath.Join(root, "action.yml"))
	f.summary = loadAction(t, filepath.Join(root, "summary", "action.yml"))
	f.upstream = t.TempDir()
	writeFiles(t, f.upstream, fleetFiles)
	gitCmd(t, f.upstream, "init", "-q")
	gitCmd(t, f.upstream, "add", "-A")
	gitCmd(t, f.upstream, "commit", "-q", "-m", "one")
	f.work = filepath.Join(t.TempDir(), "work", "fleet")
	if err := os.MkdirAll(filepath.Dir(f.work), 0o755); err != nil {
		t.Fatal(err)
	}

	// Job 1: a push. Cold: everything is compiled and uploaded.
	r := newActionRunner(t, f.checkout(t), "push", `{"ref":"refs/heads/main"}`, f.jobEnv(t, true))
	start := time.Now()
	out := r.uses(f.action, f.withInputs())
	t.Logf("action steps: %v\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "canonical-mtimes: "+f.work+": 6 tracked files") {
		t.Errorf("action output does not report canonical-mtimes of the 6 files:\n%s", out)
	}
	wantEnv := map[string]string{
		"GOCACHEPROG":        filepath.Join(r.temp, "go-cache-plugin", "bin", "go-cache-plugin"),
		"GOCACHE_S3_BUCKET":  s3Bucket,
		"GOCACHE_KEY_PREFIX": fleetPrefix,
		"GOCACHE_READ_ONLY":  "false",
	}
	for k, v := range wantEnv {
		if got := r.getenv(k); got != v {
			t.Errorf("after the action, %s=%q; want %q", k, got, v)
		}
	}
	out = goTest(t, r)
	if c := cachedPackages(t, out); c["example.com/fleet/data"] || c["example.com/fleet/calc"] {
		t.Errorf("first job: cached results %v; want none", c)
	}
	r.uses(f.summary, nil)
	m := summaryFigures(t, r)
	keys := f.keys(t)
	t.Logf("job 1: %d objects in the bucket; summary %v", len(keys), map[string]string(m))
	if m.get("processes") != 1 || m.get("with_bucket") != 1 || m.get("read_only_processes") != 0 || m.get("bad_lines") != 0 {
		t.Errorf("job 1 summary: %v; want one go command with a writable bucket", map[string]string(m))
	}
	if m.get("hits") != 0 || m.get("misses") != m.get("gets") || m.get("gets") == 0 {
		t.Errorf("job 1 summary: %v; want only misses", map[string]string(m))
	}
	// The bucket was empty: each of its objects is an upload of this job.
	// Each put uploads at most its action record and its output (two
	// puts of one output, racing, may both upload it), and the build's
	// close a manifest and a pack.
	if up := m.get("uploads"); up < int64(len(keys)) || up > 2*m.get("puts")+2 || m.get("upload_errors") != 0 || m.get("bytes_up") == 0 {
		t.Errorf("job 1: %d uploads, %d errors, %d puts; the bucket holds %d objects", up, m.get("upload_errors"), m.get("puts"), len(keys))
	}
	md := r.summary()
	for _, want := range []string{
		"### go-cache-plugin",
		"| go commands | 1 |",
		"| bucket | read and write |",
		"| cache hits | 0 of " + m["gets"] + " lookups (0.0%) |",
		"| uploads | " + m["uploads"] + " objects, ",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("job 1 step summary lacks %q:\n%s", want, md)
		}
	}

	t.Run("ForkPR", func(t *testing.T) { f.testForkPR(t, keys) })
	t.Run("FreshClone", f.testFreshClone)
	t.Run("ChangedTestdata", f.testChangedTestdata)
	t.Run("NoCredentials", f.testNoCredentials)
	t.Run("Events", f.testEvents)
}

// testEvents: the configure step decides read-only from the event and the
// read-only input.
func (f *fleet) testEvents(t *testing.T) {
	samePR := `{"pull_request":{"head":{"repo":{"full_name":"owner/fleet","fork":false}},"base":{"repo":{"full_name":"owner/fleet"}}}}`
	gonePR := `{"pull_request":{"head":{"repo":null},"base":{"repo":{"full_name":"owner/fleet"}}}}`
	for _, c := range []struct {
		name, event, json, readOnly, want string
	}{
		{"push", "push", `{}`, "auto", "false"},
		{"same-repo PR", "pull_request", samePR, "auto", "false"},
		{"fork PR", "pull_request_target", forkEvent, "auto", "true"},
		{"head repository deleted", "pull_request", gonePR, "auto", "true"},
		{"fork PR, read-only: false", "pull_request", forkEvent, "false", "false"},
		{"push, read-only: true", "push", `{}`, "true", "true"},
	} {
		r := newActionRunner(t, f.work, c.event, c.json, f.jobEnv(t, true))
		with := f.withInputs()
		with["read-only"] = c.readOnly
		out := r.usesSteps(f.action, with, "Configure go-cache-plugin")
		if got := r.getenv("GOCACHE_READ_ONLY"); got != c.want {
			t.Errorf("%s: GOCACHE_READ_ONLY=%q; want %q\n%s", c.name, got, c.want, out)
		}
	}
}

// forkEvent is a pull_request event from a fork, as GitHub writes the
// parts the action reads.
const forkEvent = `{"action":"opened","number":7,"pull_request":{
 "head":{"ref":"patch-1","repo":{"full_name":"forker/fleet","fork":true}},
 "base":{"ref":"main","repo":{"full_name":"owner/fleet","fork":false}}}}`

// testForkPR: a pull request from a fork, with credentials (as
// pull_request_target has), on a fresh runner: the action makes the bucket
// read-only, every test result comes from the bucket (cached), and the
// bucket is as it was.
func (f *fleet) testForkPR(t *testing.T, before []string) {
	r := newActionRunner(t, f.checkout(t), "pull_request", forkEvent, f.jobEnv(t, true))
	out := r.uses(f.action, f.withInputs())
	if !strings.Contains(out, "read-only (a pull request from a fork)") {
		t.Errorf("action output does not say read-only for a fork:\n%s", out)
	}
	if got := r.getenv("GOCACHE_READ_ONLY"); got != "true" {
		t.Errorf("GOCACHE_READ_ONLY=%q; want true", got)
	}
	out = goTest(t, r)
	for pkg, cached := range cachedPackages(t, out) {
		if !cached {
			t.Errorf("fork PR on a fresh clone: %s not (cached):\n%s", pkg, out)
		}
	}
	r.uses(f.summary, nil)
	m := summaryFigures(t, r)
	t.Logf("fork PR summary: %v", map[string]string(m))
	if m.get("read_only_processes") != 1 || m.get("uploads") != 0 || m.get("hits") == 0 || m.get("remote_hits") == 0 || m.get("bytes_down") == 0 {
		t.Errorf("fork PR summary %v; want a read-only bucket, hits from it, no uploads", map[string]string(m))
	}
	if after := f.keys(t); !slices.Equal(after, before) {
		t.Errorf("the fork PR changed the bucket: %d objects before, %d after", len(before), len(after))
	}
	md := r.summary()
	for _, want := range []string{"| bucket | read-only |", "| uploads | 0 objects, 0 B;", "| from the bucket | " + m["remote_hits"] + " objects, "} {
		if !strings.Contains(md, want) {
			t.Errorf("fork PR step summary lacks %q:\n%s", want, md)
		}
	}
}

// directRunner is a worker without the action: the plugin set by hand,
// read-only so that it leaves the bucket to the other tests.
func (f *fleet) directRunner(t *testing.T) *actionRunner {
	r := newActionRunner(t, f.checkout(t), "push", "{}", f.jobEnv(t, true))
	r.base = append(r.base, "GOCACHEPROG="+pluginBin, "GOCACHE_DIR="+t.TempDir(), "GOCACHE_S3_BUCKET="+s3Bucket,
		"GOCACHE_KEY_PREFIX="+fleetPrefix, "GOCACHE_S3_ENDPOINT_URL="+f.srv.Endpoint, "GOCACHE_S3_PATH_STYLE=true",
		"GOCACHE_S3_REGION="+f.srv.Region, "GOCACHE_READ_ONLY=true")
	return r
}

func (f *fleet) canonicalMtimes(t *testing.T, r *actionRunner) {
	t.Helper()
	out, err := r.run(r.workspace, pluginBin, "canonical-mtimes")
	if err != nil || !strings.HasPrefix(out, "canonical-mtimes: "+f.work+": 6 tracked files and 4 directories") {
		t.Fatalf("canonical-mtimes: %v\n%s", err, out)
	}
}

// testFreshClone: on a fresh clone at the same path, with canonical-mtimes
// both test results are cached. Without it, with the files' times those of
// an earlier checkout (old enough to be cached), the test that reads
// testdata runs again; the other one is cached still.
func (f *fleet) testFreshClone(t *testing.T) {
	r := f.directRunner(t)
	f.canonicalMtimes(t, r)
	c := cachedPackages(t, goTest(t, r))
	if !c["example.com/fleet/data"] || !c["example.com/fleet/calc"] {
		t.Errorf("fresh clone after canonical-mtimes: cached %v; want both", c)
	}

	r = f.directRunner(t)
	earlier := time.Now().Add(-time.Hour)
	out := gitCmd(t, r.workspace, "ls-files", "-z")
	for name := range strings.SplitSeq(strings.TrimRight(out, "\x00"), "\x00") {
		if err := os.Chtimes(filepath.Join(r.workspace, name), time.Time{}, earlier); err != nil {
			t.Fatal(err)
		}
	}
	c = cachedPackages(t, goTest(t, r))
	if c["example.com/fleet/data"] || !c["example.com/fleet/calc"] {
		t.Errorf("fresh clone without canonical-mtimes: cached %v; want calc only", c)
	}
}

// testChangedTestdata: a new commit changes the testdata file to other
// bytes of the same size; on a fresh clone with canonical-mtimes, the test
// that reads it runs again and the other one is cached.
func (f *fleet) testChangedTestdata(t *testing.T) {
	old := fleetFiles["data/testdata/input.txt"]
	changed := "same size, vowel"
	if len(changed) != len(old) {
		t.Fatalf("the changed input has %d bytes; want %d", len(changed), len(old))
	}
	writeFiles(t, f.upstream, map[string]string{"data/testdata/input.txt": changed})
	gitCmd(t, f.upstream, "commit", "-q", "-a", "-m", "two")
	t.Cleanup(func() {
		writeFiles(t, f.upstream, map[string]string{"data/testdata/input.txt": old})
		gitCmd(t, f.upstream, "commit", "-q", "-a", "-m", "three")
	})
	r := f.directRunner(t)
	f.canonicalMtimes(t, r)
	c := cachedPackages(t, goTest(t, r))
	if c["example.com/fleet/data"] || !c["example.com/fleet/calc"] {
		t.Errorf("changed testdata: cached %v; want calc only", c)
	}
}

// testNoCredentials: a job without AWS credentials (a fork's pull request
// gets no secrets) is not failed by the action: it uses the local cache
// only, and the summary says so.
func (f *fleet) testNoCredentials(t *testing.T) {
	r := newActionRunner(t, f.checkout(t), "pull_request", forkEvent, f.jobEnv(t, false))
	out := r.uses(f.action, f.withInputs())
	if !strings.Contains(out, "no AWS credentials in this job") {
		t.Errorf("action output does not say why the bucket is left out:\n%s", out)
	}
	if got := r.getenv("GOCACHE_S3_BUCKET"); got != "" {
		t.Errorf("GOCACHE_S3_BUCKET=%q without credentials; want none", got)
	}
	// A go command that uses the cache, cheaply: a package without
	// imports.
	r.base = append(r.base, "GOCACHE="+filepath.Join(t.TempDir(), "gocache"))
	if out, err := r.run(r.workspace, "go", "build", "./calc"); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r.uses(f.summary, nil)
	m := summaryFigures(t, r)
	if m.get("processes") != 1 || m.get("with_bucket") != 0 {
		t.Errorf("summary %v; want one go command, no bucket", map[string]string(m))
	}
	if md := r.summary(); !strings.Contains(md, "| bucket | none (local cache only) |") {
		t.Errorf("step summary does not say local only:\n%s", md)
	}
}
