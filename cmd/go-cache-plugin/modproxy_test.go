package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/modproxytest"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
)

// modGoEnv is the environment of a go command using the module proxy at
// proxyURL and the test database through it, with a fresh module cache
// and GOPATH, and nothing of the machine's module settings.
func modGoEnv(t *testing.T, proxyURL, vkey string) []string {
	gopath := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "GOCACHE_"), k == "GOCACHEPROG", k == "GOFLAGS", k == "GOPROXY", k == "GOSUMDB",
			k == "GONOSUMDB", k == "GOPRIVATE", k == "GONOPROXY", k == "GOINSECURE", k == "GOPATH", k == "GOMODCACHE",
			k == "GOTOOLCHAIN", k == "GOWORK", k == "GO111MODULE", k == "GONOSUMCHECK", k == "GOVCS":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"GOPROXY="+proxyURL,
		"GOSUMDB="+vkey,
		"GONOSUMDB=", "GOPRIVATE=", "GONOPROXY=", "GOINSECURE=",
		"GOFLAGS=-modcacherw",
		"GOPATH="+gopath,
		"GOMODCACHE="+filepath.Join(gopath, "pkg", "mod"),
		"GOTOOLCHAIN=local",
		"GOWORK=off",
		"GO111MODULE=on",
	)
}

// modObject is the local path of the module proxy's object for the
// request path name.
func modObject(cacheDir, name string) string {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	return filepath.Join(cacheDir, "module", h[:2], h)
}

func httpGetHeader(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// TestModProxy runs the real go command against the daemon's module proxy,
// itself in front of a hermetic upstream and checksum database, with a
// MinIO bucket: downloads and builds, go.sum, tampered files, bad paths,
// the upstream stopped, and a second daemon on an empty directory.
func TestModProxy(t *testing.T) {
	up := modproxytest.Start(t, modproxytest.ExampleModules()...)
	if err := up.Tamper("example.com/a", "v1.0.0", ".zip"); err != nil {
		t.Fatal(err)
	}
	if err := up.Tamper("example.com/c", "v1.0.0", ".mod"); err != nil {
		t.Fatal(err)
	}
	srv := s3test.Start(t)
	if err := srv.CreateBucket(t.Context(), "modproxy"); err != nil {
		t.Fatal(err)
	}
	// The daemons get the bucket's credentials from the environment.
	awsDir := t.TempDir()
	for _, kv := range append(srv.Env(),
		"AWS_CONFIG_FILE="+filepath.Join(awsDir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(awsDir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=", "AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_S3=") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	flags := []string{
		"--modproxy", "--modproxy-upstream=" + up.URL, "--sumdb=" + up.VerifierKey, "--modproxy-nosumdb=",
		"--modproxy-ttl=1ms", "--debug",
		"--bucket=modproxy", "--s3-endpoint-url=" + srv.Endpoint, "--s3-path-style", "--prefix=mp",
	}
	caches := t.TempDir() // holds the daemons' cache directories, and nothing else
	dir1 := filepath.Join(caches, "one")
	d1 := startDaemon(t, dir1, "0", flags...)
	proxy := d1.httpURL + "/mod"

	app := t.TempDir()
	writeFiles(t, app, map[string]string{
		"go.mod":  "module example.com/app\n\ngo 1.21\n\nrequire example.com/b v0.1.0\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/b\"\n)\n\nfunc main() { fmt.Println(b.V) }\n",
	})

	// Through the proxy: tidy (go.sum from the database, through the
	// proxy), download, build, run.
	env := modGoEnv(t, proxy, up.VerifierKey)
	runGo(t, app, env, "mod", "tidy")
	sum, err := os.ReadFile(filepath.Join(app, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	wantSum := up.GoSum("example.com/a", "v1.1.0") + up.GoSum("example.com/b", "v0.1.0")
	if string(sum) != wantSum {
		t.Fatalf("go.sum:\n%s\nwant:\n%s", sum, wantSum)
	}
	runGo(t, app, env, "mod", "download")
	if out := runGo(t, app, env, "run", "."); !strings.Contains(out, "b with a v1.1.0") {
		t.Fatalf("go run: %q", out)
	}
	if out := runGo(t, app, env, "list", "-m", "-versions", "example.com/a"); !strings.Contains(out, "example.com/a v1.0.0 v1.1.0") {
		t.Fatalf("go list -m -versions: %q", out)
	}
	if out := runGo(t, app, env, "mod", "download", "-json", "example.com/Upper@v1.0.0"); !strings.Contains(out, `"Version": "v1.0.0"`) {
		t.Fatalf("download of a module with upper case: %s", out)
	}
	for _, name := range []string{"example.com/b/@v/v0.1.0.zip", "example.com/a/@v/v1.1.0.mod", "example.com/!upper/@v/v1.0.0.zip"} {
		if _, err := os.Stat(modObject(dir1, name)); err != nil {
			t.Errorf("%s not cached: %v", name, err)
		}
	}

	// Tampered files are refused, not cached, and the go command says so.
	for _, tc := range []struct{ target, name string }{
		{"example.com/a@v1.0.0", "example.com/a/@v/v1.0.0.zip"},
		{"example.com/c@v1.0.0", "example.com/c/@v/v1.0.0.mod"},
	} {
		out, err := goOutput(app, modGoEnv(t, proxy, up.VerifierKey), "mod", "download", tc.target)
		if err == nil {
			t.Fatalf("go mod download %s (tampered) succeeded:\n%s", tc.target, out)
		}
		if !strings.Contains(out, "502 Bad Gateway") || !strings.Contains(out, "SECURITY ERROR") {
			t.Errorf("go mod download %s (tampered): the failure does not say why:\n%s", tc.target, out)
		}
		if _, err := os.Stat(modObject(dir1, tc.name)); err == nil {
			t.Errorf("%s (tampered) was cached", tc.name)
		}
		before := up.Count("/" + tc.name)
		if code, _, _ := httpGetHeader(t, proxy+"/"+tc.name); code != http.StatusBadGateway {
			t.Errorf("GET %s (tampered): %d, want 502", tc.name, code)
		}
		if up.Count("/"+tc.name) != before+1 {
			t.Errorf("GET %s (tampered) again did not ask the upstream: it was cached", tc.name)
		}
	}

	// Bad paths: 4xx, nothing fetched, nothing written outside the cache.
	total := up.Total()
	for _, p := range []string{
		"/example.com/a/@v/..%2f..%2f..%2fescape.zip", "/example.com/A/@v/list", "/example.com/a/@v/v1.zip",
		"/../../../../tmp/x/@v/list", "/example.com/" + strings.Repeat("long/", 300) + "@v/list",
		"/sumdb/other.example/supported", "/example.com/a/@v/v1.0.0-bad..info",
	} {
		code, body, _ := httpGetHeader(t, proxy+p)
		if code < 400 || code >= 500 {
			t.Errorf("GET /mod%s: %d %q, want 4xx", p, code, body)
		}
	}
	if up.Total() != total {
		t.Errorf("bad paths reached the upstream: %v", up.Paths())
	}

	// The upstream stops: a fresh module cache still gets everything,
	// and list is served stale.
	up.Close()
	env = modGoEnv(t, proxy, up.VerifierKey)
	runGo(t, app, env, "mod", "download")
	runGo(t, app, env, "build", "./...")
	if out := runGo(t, app, env, "list", "-m", "-versions", "example.com/a"); !strings.Contains(out, "example.com/a v1.0.0 v1.1.0") {
		t.Fatalf("go list -m -versions, upstream down: %q", out)
	}
	if code, body, h := httpGetHeader(t, proxy+"/example.com/a/@v/list"); code != 200 || h.Get("X-Cache") != "stale" || body != "v1.0.0\nv1.1.0\n" {
		t.Errorf("list, upstream down: %d X-Cache=%q %q, want 200 stale", code, h.Get("X-Cache"), body)
	}
	if n := d1.metric(t, "gocacheplugin_modproxy_stale_total"); n == 0 {
		t.Errorf("no stale answers counted")
	}
	if n := d1.metric(t, "gocacheplugin_lookups_total", "frontend", "modproxy", "result", "hit"); n == 0 {
		t.Errorf("no modproxy hits counted")
	}
	if err := d1.stop(t); err != nil { // drains the uploads
		t.Fatalf("daemon: %v", err)
	}

	// A second daemon on an empty directory and the same bucket, the
	// upstream still down: the same downloads, verified again.
	dir2 := filepath.Join(caches, "two")
	d2 := startDaemon(t, dir2, "0", flags...)
	env = modGoEnv(t, d2.httpURL+"/mod", up.VerifierKey)
	runGo(t, app, env, "mod", "download")
	runGo(t, app, env, "build", "./...")
	if out := runGo(t, app, env, "list", "-m", "-versions", "example.com/a"); !strings.Contains(out, "example.com/a v1.0.0 v1.1.0") {
		t.Fatalf("go list -m -versions, second daemon: %q", out)
	}
	if n := d2.metric(t, "gocacheplugin_modproxy_verified_total"); n < 4 {
		t.Errorf("second daemon verified %v files from the bucket, want 4 (.mod and .zip of a and b)", n)
	}
	if _, err := os.Stat(modObject(dir2, "example.com/b/@v/v0.1.0.zip")); err != nil {
		t.Errorf("second daemon did not install the zip from the bucket: %v", err)
	}

	// Nothing but the two cache directories was written.
	entries, err := os.ReadDir(caches)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "one two" {
		t.Errorf("files beside the cache directories: %v", names)
	}
	if d1.find(regexp.MustCompile(`modproxy: refused example.com/a/@v/v1.0.0.zip: .*SECURITY ERROR`)) == nil {
		t.Errorf("the refusal of the tampered zip was not logged")
	}
}

// TestModProxyConfig checks the settings: help, and a clear failure when
// the go command's settings give no upstream.
func TestModProxyConfig(t *testing.T) {
	out, err := exec.Command(pluginBin, "help", "modproxy").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--modproxy-upstream") || !strings.Contains(string(out), "X-Cache: stale") {
		t.Errorf("help modproxy: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"GOPROXY=off", "GOSUMDB=off"}, nil, "set --modproxy-upstream"},
		{[]string{"GOPROXY=direct"}, []string{"--sumdb=off"}, "set --modproxy-upstream"},
		{[]string{"GOPROXY=http://127.0.0.1:1/mod"}, []string{"--sumdb=bad"}, "--sumdb"},
		{nil, []string{"--modproxy-upstream=ftp://x"}, "--modproxy-upstream"},
		{[]string{"GOPROXY=http://127.0.0.1:1/mod", "GOSUMDB=nokey.example"}, nil, "in --sumdb (GOCACHE_SUMDB) or GOSUMDB"},
	} {
		args := append([]string{"serve", "--cache-dir=" + t.TempDir(), "--http=127.0.0.1:0", "--modproxy"}, tc.args...)
		cmd := exec.Command(pluginBin, args...)
		cmd.Env = append(cleanEnv(), "GOFLAGS=", "GOTOOLCHAIN=local")
		cmd.Env = append(cmd.Env, tc.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("serve %v with %v: %v, want a failure mentioning %q:\n%s", tc.args, tc.env, err, tc.want, out)
		}
	}
}

func TestDefaultUpstream(t *testing.T) {
	for _, tc := range []struct{ goproxy, self, want string }{
		{"http://localhost:5970/mod,https://mirror.example/go,direct", "127.0.0.1:5970", "https://mirror.example/go"},
		{"http://127.0.0.1:5970/mod|http://other.example:5970", "127.0.0.1:5970", "http://other.example:5970"},
		{"http://localhost:5971/mod,direct", "127.0.0.1:5970", "http://localhost:5971/mod"},
		{"direct", "127.0.0.1:5970", ""},
		{"off", "", ""},
		{"file:///srv/mods,https://mirror.example", "", "https://mirror.example"},
	} {
		got, ok := defaultUpstream(tc.goproxy, tc.self)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("defaultUpstream(%q, %q) = %q, %v; want %q", tc.goproxy, tc.self, got, ok, tc.want)
		}
	}
}
