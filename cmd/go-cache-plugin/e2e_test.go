package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// testModule is a small module with the features that exercise the cache
// in different ways: generics, an embedded file, a test and a main package.
// It imports little of the standard library, to keep cold builds short.
func testModule(name, greeting string) map[string]string {
	return map[string]string{
		"go.mod": "module " + name + "\n\ngo 1.26\n",
		"lib/gen.go": `package lib

// Max returns the larger of a and b.
func Max[T int | string](a, b T) T {
	if a > b {
		return a
	}
	return b
}
`,
		"lib/embed.go": `package lib

import _ "embed"

//go:embed greeting.txt
var Greeting string
`,
		"lib/greeting.txt": greeting,
		"lib/lib_test.go": `package lib

import "testing"

func TestMax(t *testing.T) {
	if Max(2, 3) != 3 || Max("a", "b") != "b" {
		t.Fatal("Max is wrong")
	}
	if Greeting == "" {
		t.Fatal("no greeting embedded")
	}
}
`,
		"cmd/hello/main.go": `package main

import (
	"os"

	"` + name + `/lib"
)

func main() {
	os.Stdout.WriteString(lib.Greeting + "\n")
}
`,
	}
}

// TestBuildAndTestThroughPlugin drives a real go command through the
// plugin: a rebuild compiles nothing, a rerun of tests is cached until
// "go clean -testcache", and "go run" works.
func TestBuildAndTestThroughPlugin(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, testModule("example.com/hello", "hello, cache"))
	env := goEnv(t, sharedCache)

	runGo(t, dir, env, "build", "./...")
	out := runGo(t, dir, env, "build", "-x", "./...")
	if n := len(compileRE.FindAllString(out, -1)); n != 0 {
		t.Errorf("second build ran the compiler %d times:\n%s", n, out)
	}

	out = runGo(t, dir, env, "test", "./...")
	if strings.Contains(out, "(cached)") {
		t.Errorf("first test run was cached:\n%s", out)
	}
	out = runGo(t, dir, env, "test", "./...")
	if !strings.Contains(out, "ok  \texample.com/hello/lib\t(cached)") {
		t.Errorf("second test run was not cached:\n%s", out)
	}
	runGo(t, dir, env, "clean", "-testcache")
	out = runGo(t, dir, env, "test", "./...")
	if strings.Contains(out, "(cached)") {
		t.Errorf("test run after go clean -testcache was cached:\n%s", out)
	}

	out = runGo(t, dir, env, "run", "./cmd/hello")
	if out != "hello, cache\n" {
		t.Errorf("go run printed %q, want %q", out, "hello, cache\n")
	}
}

// TestConcurrentBuildsShareDir runs four go commands at once on different
// modules, each with its own plugin process on one cold cache directory.
func TestConcurrentBuildsShareDir(t *testing.T) {
	cacheDir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		dir := t.TempDir()
		name := fmt.Sprintf("example.com/m%d", i)
		files := testModule(name, fmt.Sprintf("module %d", i))
		delete(files, "lib/lib_test.go")
		writeFiles(t, dir, files)
		env := goEnv(t, cacheDir)
		wg.Go(func() {
			if out, err := goOutput(dir, env, "build", "-o", filepath.Join(dir, "hello"), "./cmd/hello"); err != nil {
				errs[i] = fmt.Errorf("build %s: %v\n%s", name, err, out)
				return
			}
			out, err := exec.Command(filepath.Join(dir, "hello")).Output()
			if want := fmt.Sprintf("module %d\n", i); err != nil || string(out) != want {
				errs[i] = fmt.Errorf("%s printed %q (%v), want %q", name, out, err, want)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	checkCacheDir(t, cacheDir)
}

// checkCacheDir checks that every output in dir hashes to its name, that
// every action record names an output present with the recorded size, and
// that no temporary file is left behind.
func checkCacheDir(t *testing.T, dir string) {
	t.Helper()
	outputs := 0
	err := filepath.WalkDir(filepath.Join(dir, "output"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		outputs++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != d.Name() {
			t.Errorf("output %s hashes to %x", d.Name(), sum)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	actions := 0
	err = filepath.WalkDir(filepath.Join(dir, "action"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		actions++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f := strings.Fields(string(data))
		if len(f) != 3 {
			t.Errorf("action %s: record %q has %d fields", d.Name(), data, len(f))
			return nil
		}
		fi, err := os.Stat(filepath.Join(dir, "output", f[0][:2], f[0]))
		if err != nil {
			t.Errorf("action %s: %v", d.Name(), err)
		} else if size, _ := strconv.ParseInt(f[2], 10, 64); fi.Size() != size {
			t.Errorf("action %s: output is %d bytes, record says %d", d.Name(), fi.Size(), size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if outputs == 0 || actions == 0 {
		t.Errorf("cache holds %d outputs and %d actions; want some of each", outputs, actions)
	}
	if tmp, err := store.TempFiles(dir); err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left in the cache directory: %q, %v", tmp, err)
	}
}

// TestCorruptCacheRebuilds damages every object in a cache directory and
// checks that the next build notices, rebuilds and repairs the cache.
func TestCorruptCacheRebuilds(t *testing.T) {
	cacheDir := t.TempDir()
	dir := t.TempDir()
	files := testModule("example.com/corrupt", "still here")
	delete(files, "lib/lib_test.go")
	writeFiles(t, dir, files)
	env := goEnv(t, cacheDir)
	runGo(t, dir, env, "build", "./...")

	// Truncate every output by one byte.
	n := 0
	filepath.WalkDir(filepath.Join(cacheDir, "output"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, _ := d.Info(); fi != nil && fi.Size() > 0 {
				os.Truncate(path, fi.Size()-1)
				n++
			}
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no outputs to corrupt")
	}
	out := runGo(t, dir, env, "build", "-x", "-o", filepath.Join(dir, "hello"), "./cmd/hello")
	if len(compileRE.FindAllString(out, -1)) == 0 {
		t.Errorf("build after corruption compiled nothing: corrupt objects were used")
	}
	got, err := exec.Command(filepath.Join(dir, "hello")).Output()
	if err != nil || string(got) != "still here\n" {
		t.Errorf("rebuilt program printed %q (%v)", got, err)
	}
	checkCacheDir(t, cacheDir)
}

// TestKillDuringPut kills the plugin with SIGKILL in the middle of a put
// and checks that nothing is visible under the object's final name, and
// that a new plugin on the same directory reports a miss.
func TestKillDuringPut(t *testing.T) {
	cacheDir := t.TempDir()
	body := make([]byte, 4<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	sum := sha256.Sum256(body)
	actionID := sha256.Sum256([]byte("action"))

	cmd := exec.Command(pluginBin, "--cache-dir="+cacheDir)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("read capabilities: %v", err)
	}

	// Send the request and half the body, then wait until the plugin is
	// writing it to a temporary file.
	fmt.Fprintf(stdin, `{"ID":1,"Command":"put","ActionID":%q,"OutputID":%q,"BodySize":%d}`+"\n\n\"",
		base64.StdEncoding.EncodeToString(actionID[:]), base64.StdEncoding.EncodeToString(sum[:]), len(body))
	enc := base64.StdEncoding.EncodeToString(body)
	io.WriteString(stdin, enc[:len(enc)/2])
	waitFor(t, "a temporary file in the cache directory", func() bool {
		tmp, _ := store.TempFiles(cacheDir)
		return len(tmp) > 0
	})
	cmd.Process.Kill()
	cmd.Wait()

	objPath := filepath.Join(cacheDir, "output", hex.EncodeToString(sum[:1]), hex.EncodeToString(sum[:]))
	if _, err := os.Stat(objPath); !os.IsNotExist(err) {
		t.Errorf("object visible under its final name after SIGKILL: %v", err)
	}
	actPath := filepath.Join(cacheDir, "action", hex.EncodeToString(actionID[:1]), hex.EncodeToString(actionID[:]))
	if _, err := os.Stat(actPath); !os.IsNotExist(err) {
		t.Errorf("action record written after SIGKILL: %v", err)
	}

	// A new plugin on the same directory answers a miss.
	session := fmt.Sprintf(`{"ID":1,"Command":"get","ActionID":%q}`+"\n"+`{"ID":2,"Command":"close"}`+"\n",
		base64.StdEncoding.EncodeToString(actionID[:]))
	get := exec.Command(pluginBin, "--cache-dir="+cacheDir)
	get.Stdin = strings.NewReader(session)
	out, err := get.Output()
	if err != nil {
		t.Fatalf("second plugin: %v", err)
	}
	var responses []map[string]any
	for line := range strings.Lines(string(out)) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad response line %q: %v", line, err)
		}
		responses = append(responses, r)
	}
	if len(responses) != 3 || responses[1]["ID"] != 1.0 || responses[1]["Miss"] != true || responses[2]["ID"] != 2.0 {
		t.Errorf("second plugin answered %s, want capabilities, a miss and the close", out)
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
// It is for conditions observable only from outside a process.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
