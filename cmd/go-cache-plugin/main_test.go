package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
	"github.com/rogpeppe/go-internal/testscript"
)

// The binary under test, built once by TestMain, and a cache directory the
// tests that do not need a cold cache share, so that the standard library
// is compiled once per run rather than once per test.
var (
	pluginBin   string
	sharedCache string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// The S3 tests need a MinIO server, built from its Go module the first
	// time (minutes on a busy machine): build it before m.Run starts the
	// tests' clock, not inside the first test that needs it.
	if err := s3test.Prepare(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "go-cache-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	pluginBin = filepath.Join(tmp, "bin", "go-cache-plugin")
	// -tags testhooks: the test-only settings of testhooks_on.go, which a
	// shipped binary lacks.
	build := exec.Command("go", "build", "-tags", "testhooks", "-o", pluginBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build go-cache-plugin: %v\n%s", err, out)
		return 1
	}
	sharedCache = filepath.Join(tmp, "shared-cache")
	return m.Run()
}

// TestScripts runs the command-line scenarios in testdata/script.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", filepath.Dir(pluginBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("XDG_CACHE_HOME", filepath.Join(env.WorkDir, ".cache"))
			env.Setenv("SHARED_CACHE", sharedCache) // the warm cache dir of the tests that need no cold one
			for _, v := range globalEnv {
				env.Setenv(v.Env, "")
			}
			return nil
		},
		Cmds: map[string]func(*testscript.TestScript, bool, []string){
			"status": cmdStatus,
		},
	})
}

// cmdStatus runs a program and checks its exit status:
//
//	status <code> <program> [args...]
//
// Its stdout and stderr are available to later stdout/stderr checks.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status <code> <program> [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: bad code %q", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var xerr *exec.ExitError
	if errors.As(err, &xerr) {
		got = xerr.ExitCode()
	} else if err != nil {
		ts.Fatalf("status: %v", err)
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

// goEnv is the environment for a go command using the plugin with the
// given cache directory. The go command's own cache directory is private to
// the test, so nothing leaks in from the machine's cache.
func goEnv(t *testing.T, cacheDir string, extraFlags ...string) []string {
	prog := pluginBin + " --cache-dir=" + cacheDir
	if len(extraFlags) > 0 {
		prog += " " + strings.Join(extraFlags, " ")
	}
	env := []string{
		"GOCACHEPROG=" + prog,
		"GOCACHE=" + filepath.Join(t.TempDir(), "gocache"),
		"GOFLAGS=-mod=mod",
		"GOPROXY=off",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"GO111MODULE=on",
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GOCACHE_") || k == "GOFLAGS" || k == "GOCACHEPROG" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// runGo runs the go command in dir with env and returns its combined
// output, failing the test if it fails.
func runGo(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	out, err := goOutput(dir, env, args...)
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func goOutput(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	return buf.String(), err
}

// compileRE matches a compiler invocation in the output of "go build -x".
var compileRE = regexp.MustCompile(`(?m)pkg/tool/[^/\s]+/compile\s`)

// writeFiles writes files (name -> content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
