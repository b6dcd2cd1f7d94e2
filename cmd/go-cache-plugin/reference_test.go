package main

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/modproxytest"
)

// TestReferenceServeForms runs a daemon configured as the reference tool's
// users configure it: --sumdb by names (one keyed by GOSUMDB, one compiled
// in), GOCACHE_DEBUG=2 (module proxy requests only), -c 0 and -u 0. The
// real go command downloads through its module proxy, which verifies
// against the database named; dot segments under /mod/ get a 400, from
// curl --path-as-is and from Go's HTTP client.
func TestReferenceServeForms(t *testing.T) {
	up := modproxytest.Start(t, modproxytest.ExampleModules()...)
	env := append(cleanEnv(), "GOSUMDB="+up.VerifierKey, "GOCACHE_DEBUG=2", "GOFLAGS=", "GOTOOLCHAIN=local")
	sock := filepath.Join(shortTempDir(t), "plugin.sock")
	d := startDaemonEnv(t, env, t.TempDir(), sock, "-c", "0", "-u", "0",
		"--modproxy", "--modproxy-upstream="+up.URL, "--modproxy-nosumdb=",
		"--sumdb="+modproxytest.DBName+",sum.golang.org")
	d.waitLine(t, regexp.MustCompile(`module proxy at /mod/: .*verifying against `+regexp.QuoteMeta(modproxytest.DBName)+`; also proxying sum\.golang\.org`))

	for path, want := range map[string]int{
		"/mod/sumdb/" + modproxytest.DBName + "/supported": 200,
		"/mod/sumdb/sum.golang.org/supported":              200,
		"/mod/sumdb/other.example/supported":               404,
	} {
		if code, body := d.httpGet(t, path); code != want {
			t.Errorf("GET %s: %d %q, want %d", path, code, body, want)
		}
	}

	// The go command verifies go.sum through the proxy, which verified
	// the files against the database it took by name.
	app := t.TempDir()
	writeFiles(t, app, map[string]string{
		"go.mod": "module example.com/app\n\ngo 1.21\n\nrequire example.com/b v0.1.0\n",
		"app.go": "package app\n\nimport _ \"example.com/b\"\n",
	})
	goenv := modGoEnv(t, d.httpURL+"/mod", up.VerifierKey)
	runGo(t, app, goenv, "mod", "download", "example.com/b")
	d.waitLine(t, regexp.MustCompile(`modproxy: GET /example.com/b/@v/v0.1.0.zip 200 `))
	if n := d.metric(t, "gocacheplugin_modproxy_verified_total"); n < 2 {
		t.Errorf("%v module files verified, want the .mod and the .zip at least", n)
	}

	// GOCACHE_DEBUG=2 is the module proxy alone: a build session's
	// requests are not logged.
	c := dialRaw(t, sock)
	c.putGet(1, "reference forms", []byte("an output"))
	c.close(3)
	if m := d.find(regexp.MustCompile(`session \d+: request`)); m != nil {
		t.Errorf("with GOCACHE_DEBUG=2 the daemon logged a build request: %q", m[0])
	}

	// Dot segments, plain or percent-encoded, are a 400 that says why,
	// never a redirect.
	curlBin, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	bad := []string{
		"/mod/../../etc/passwd",
		"/mod/%2e%2e/%2e%2e/etc/passwd",
		"/mod/example.com/a/@v/../../../../metrics",
		"/mod/./example.com/a/@v/list",
		"/mod/example.com/a/@v/%2E%2E/list",
		"/mod/sumdb/" + modproxytest.DBName + "/../" + modproxytest.DBName + "/latest",
	}
	for _, path := range bad {
		out, err := exec.Command(curlBin, "-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", d.httpURL+path).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", path, err)
		}
		i := strings.LastIndex(string(out), "\n") // -w puts the status on a line of its own
		body, code := string(out[:max(i, 0)]), string(out[i+1:])
		if code != "400" || !strings.Contains(body, "dot segments are not allowed") {
			t.Errorf("curl --path-as-is %s: %s %q, want 400 naming the dot segment", path, code, body)
		}

		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get(d.httpURL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "dot segments are not allowed") {
			t.Errorf("Go client GET %s: %d %q, want 400", path, resp.StatusCode, b)
		}
	}
	if code, body := d.httpGet(t, "/mod/example.com/a/@v/list"); code != 200 || !strings.Contains(body, "v1.1.0") {
		t.Errorf("a clean path after the bad ones: %d %q", code, body)
	}
}

// TestReferenceLocalDir builds on a local directory in the reference
// tool's layout (action/<xx>/<id> holding "<output-id> <size>", the time in
// the file's mtime; output/<xx>/<id>): the go build hits, compiling
// nothing, and the records it used are rewritten in this tool's form.
func TestReferenceLocalDir(t *testing.T) {
	mod := t.TempDir()
	writeFiles(t, mod, map[string]string{
		"go.mod":  "module example.com/refdir\n\ngo 1.21\n",
		"main.go": "package main\n\nfunc main() { println(\"built from the reference layout\") }\n",
	})
	// Fill the shared cache with what this build needs (warm already if
	// another test built the runtime), then lay it out as the reference
	// tool does in a directory of its own.
	runGo(t, mod, goEnv(t, sharedCache), "build", "-o", filepath.Join(mod, "hello"), ".")
	ref := t.TempDir()
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	n := writeReferenceDir(t, sharedCache, ref, mtime)
	if n == 0 {
		t.Fatal("no action records in the shared cache")
	}

	out := runGo(t, mod, goEnv(t, ref), "build", "-x", "-o", filepath.Join(mod, "hello2"), ".")
	if m := compileRE.FindAllString(out, -1); len(m) > 0 {
		t.Errorf("the build on the reference layout compiled %d packages:\n%s", len(m), out)
	}
	if got, err := exec.Command(filepath.Join(mod, "hello2")).CombinedOutput(); err != nil || !strings.Contains(string(got), "built from the reference layout") {
		t.Errorf("hello2: %q, %v", got, err)
	}

	// The records the build used are in the local form now, with the
	// time the reference tool gave them.
	rewritten := 0
	filepath.WalkDir(filepath.Join(ref, "action"), func(path string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// (Records of this build's own puts have their time too.)
		if f := strings.Fields(string(data)); len(f) == 3 && f[1] == strconv.FormatInt(mtime.UnixNano(), 10) {
			rewritten++
		}
		return nil
	})
	if rewritten == 0 {
		t.Errorf("no record of the %d was rewritten in the local form", n)
	}
}

// writeReferenceDir lays the actions and outputs of the cache directory
// src out in dst as the reference tool writes them, each record's file
// with modification time mtime, and returns the number of records.
// Outputs are hard links where the file system allows.
func writeReferenceDir(t *testing.T, src, dst string, mtime time.Time) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(src, "action"), func(path string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() || strings.HasPrefix(de.Name(), ".") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f := strings.Fields(string(data))
		if len(f) != 3 || len(f[0]) != 64 {
			return nil // a temporary file, or damaged: the reference would not have it
		}
		opath := filepath.Join(src, "output", f[0][:2], f[0])
		fi, err := os.Stat(opath)
		if err != nil || strconv.FormatInt(fi.Size(), 10) != f[2] {
			return nil
		}
		id := de.Name()
		apath := filepath.Join(dst, "action", id[:2], id)
		odst := filepath.Join(dst, "output", f[0][:2], f[0])
		for _, p := range []string{apath, odst} {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(apath, fmt.Appendf(nil, "%s %s\n", f[0], f[2]), 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(apath, time.Time{}, mtime); err != nil {
			return err
		}
		if _, err := os.Stat(odst); err != nil {
			if err := os.Link(opath, odst); err != nil {
				body, err := os.ReadFile(opath)
				if err != nil {
					return err
				}
				if err := os.WriteFile(odst, body, 0o644); err != nil {
					return err
				}
			}
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestModProxyWithoutGo starts the module proxy on a host without the go
// command: with the upstream given and GOSUMDB unset, it verifies against
// the go command's default database with the key compiled in, and a name
// in --sumdb takes its key from the daemon's GOSUMDB.
func TestModProxyWithoutGo(t *testing.T) {
	up := modproxytest.Start(t, modproxytest.ExampleModules()...)
	var env []string
	for _, kv := range cleanEnv() {
		if k, _, _ := strings.Cut(kv, "="); k != "PATH" && k != "GOSUMDB" && k != "GONOSUMDB" && k != "GOPRIVATE" {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+filepath.Dir(pluginBin)) // no go command
	flags := []string{"serve", "--cache-dir=" + t.TempDir(), "--http=127.0.0.1:0", "--modproxy", "--modproxy-upstream=" + up.URL}

	d := runDaemon(t, env, flags)
	d.waitLine(t, regexp.MustCompile(`module proxy: go env: .*: using GOSUMDB="" GONOSUMDB="" GOPRIVATE="" from the environment`))
	d.waitLine(t, regexp.MustCompile(`module proxy at /mod/: upstream \S+, verifying against sum\.golang\.org;`))

	d2 := runDaemon(t, append(env, "GOSUMDB="+up.VerifierKey), append(flags, "--sumdb="+modproxytest.DBName, "--modproxy-nosumdb="))
	d2.waitLine(t, regexp.MustCompile(`module proxy at /mod/: upstream \S+, verifying against `+regexp.QuoteMeta(modproxytest.DBName)+`;`))
	runGo(t, t.TempDir(), modGoEnv(t, d2.httpURL+"/mod", up.VerifierKey), "mod", "download", "-json", "example.com/a@v1.1.0")
	if n := d2.metric(t, "gocacheplugin_modproxy_verified_total"); n < 2 {
		t.Errorf("%v module files verified, want the .mod and the .zip", n)
	}
}
