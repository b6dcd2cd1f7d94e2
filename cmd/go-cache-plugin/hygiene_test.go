package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// cacheObjects returns the objects (outputs and action records) in the
// cache directory dir: path relative to dir -> size.
func cacheObjects(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	objs := map[string]int64{}
	for _, kind := range []string{"action", "output"} {
		err := filepath.WalkDir(filepath.Join(dir, kind), func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			objs[rel] = fi.Size()
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	return objs
}

func totalSize(objs map[string]int64) (n int64) {
	for _, size := range objs {
		n += size
	}
	return n
}

// copyCacheBytes copies the cache directory src to a new directory, byte
// by byte: its objects' times may then be changed without changing src's.
func copyCacheBytes(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for rel := range cacheObjects(t, src) {
		data, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dst, rel)
		os.MkdirAll(filepath.Dir(target), 0o755)
		if err := os.WriteFile(target, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// backdate sets the time of every object in dir to age ago: as if last
// used then.
func backdate(t *testing.T, dir string, age time.Duration) {
	t.Helper()
	when := time.Now().Add(-age)
	for rel := range cacheObjects(t, dir) {
		if err := os.Chtimes(filepath.Join(dir, rel), when, when); err != nil {
			t.Fatal(err)
		}
	}
}

// compiledRE finds the package of each compiler invocation in "go build -x"
// output.
var compiledRE = regexp.MustCompile(`(?m)pkg/tool/[^/\s]+/compile\s.*?\s-p\s(\S+)`)

// TestBoundedBuild: a build into a directory bounded well below the build's
// size succeeds and leaves the directory within the bound; the next build
// recompiles only what was evicted, and succeeds.
func TestBoundedBuild(t *testing.T) {
	mod := t.TempDir()
	files := testModule("example.com/bounded", "bounded and fine")
	delete(files, "lib/lib_test.go")
	writeFiles(t, mod, files)
	runGo(t, mod, goEnv(t, sharedCache), "build", "./...") // the standard library, once per run

	// A copy of the shared cache, everything in it last used two days
	// ago; a build then records the use of what it needs.
	dir := copyCacheBytes(t, sharedCache)
	backdate(t, dir, 48*time.Hour)
	runGo(t, mod, goEnv(t, dir), "build", "./...")
	var buildSize int64
	recent := time.Now().Add(-time.Hour)
	for rel, size := range cacheObjects(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err == nil && fi.ModTime().After(recent) && strings.HasPrefix(rel, "output") {
			buildSize += size
		}
	}
	bound := buildSize / 3
	t.Logf("the build uses %s of outputs; bound %s", formatBytes(buildSize), formatBytes(bound))

	// The bounded build: a warm one, trimmed at close.
	env := goEnv(t, dir, "--max-size="+fmt.Sprint(bound), "--metrics")
	bin := filepath.Join(t.TempDir(), "hello")
	out := runGo(t, mod, env, "build", "-o", bin, "./cmd/hello")
	before := cacheObjects(t, dir)
	if got := totalSize(before); got > bound {
		t.Fatalf("directory holds %s after the bounded build, bound %s\n%s", formatBytes(got), formatBytes(bound), out)
	}
	if got, err := exec.Command(bin).Output(); err != nil || string(got) != "bounded and fine\n" {
		t.Errorf("program printed %q (%v)", got, err)
	}

	// The next build recompiles some packages, not all, and only ones
	// whose outputs went.
	out = runGo(t, mod, env, "build", "-x", "-o", bin, "./cmd/hello")
	compiled := compiledRE.FindAllStringSubmatch(out, -1)
	deps := strings.Fields(runGo(t, mod, goEnv(t, dir), "list", "-deps", "./cmd/hello"))
	after := cacheObjects(t, dir)
	var newOutputs int
	for rel := range after {
		if _, ok := before[rel]; !ok && strings.HasPrefix(rel, "output") {
			newOutputs++
		}
	}
	t.Logf("second build: %d of %d packages compiled, %d new outputs", len(compiled), len(deps), newOutputs)
	if len(compiled) == 0 || len(compiled) >= len(deps) {
		t.Errorf("second build compiled %d of %d packages; want some, not all", len(compiled), len(deps))
	}
	// Every recompiled package wrote its outputs again: had its outputs
	// been there, it would not have been compiled.
	if newOutputs < len(compiled) {
		t.Errorf("%d packages compiled but only %d outputs written: some were compiled though cached", len(compiled), newOutputs)
	}
	if got, err := exec.Command(bin).Output(); err != nil || string(got) != "bounded and fine\n" {
		t.Errorf("program printed %q (%v)", got, err)
	}
	if got := totalSize(after); got > bound {
		t.Errorf("directory holds %s after the second build, bound %s", formatBytes(got), formatBytes(bound))
	}
	checkCacheDir(t, dir)
}

// TestTrimWhileBuilding runs two builds and a loop of prunes on one
// directory at once: no build fails, no object is half-written, and an
// action record whose output has gone is a clean miss.
func TestTrimWhileBuilding(t *testing.T) {
	var mods []string
	for i := range 2 {
		mod := t.TempDir()
		files := testModule(fmt.Sprintf("example.com/busy%d", i), fmt.Sprintf("busy %d", i))
		delete(files, "lib/lib_test.go")
		writeFiles(t, mod, files)
		mods = append(mods, mod)
	}
	runGo(t, mods[0], goEnv(t, sharedCache), "build", "./...")

	// Everything was last used two hours ago: fair game for any trim.
	dir := copyCacheBytes(t, sharedCache)
	backdate(t, dir, 2*time.Hour)
	// A bound a little under the directory's size: a prune takes out a
	// few of the objects the builds need (they recompile them) while
	// they run, and then what they write.
	bound := totalSize(cacheObjects(t, dir)) * 85 / 100

	var (
		wg    sync.WaitGroup
		done  atomic.Int32
		errs  = make([]error, len(mods))
		runs  atomic.Int32
		perr  error
		prune = []string{"prune", "--cache-dir=" + dir, "--max-size=" + fmt.Sprint(bound), "--json"}
	)
	for i, mod := range mods {
		env := goEnv(t, dir, "--max-size="+fmt.Sprint(bound))
		bin := filepath.Join(t.TempDir(), "hello")
		wg.Go(func() {
			defer done.Add(1)
			if out, err := goOutput(mod, env, "build", "-o", bin, "./cmd/hello"); err != nil {
				errs[i] = fmt.Errorf("build %d: %v\n%s", i, err, out)
				return
			}
			want := fmt.Sprintf("busy %d\n", i)
			if got, err := exec.Command(bin).Output(); err != nil || string(got) != want {
				errs[i] = fmt.Errorf("program %d printed %q (%v), want %q", i, got, err, want)
			}
		})
	}
	var removed, inUse int64
	for done.Load() < int32(len(mods)) {
		out, err := exec.Command(pluginBin, prune...).Output()
		if err != nil {
			perr = fmt.Errorf("prune: %v\n%s", err, out)
			break
		}
		var rep pruneReport
		if err := json.Unmarshal(out, &rep); err != nil {
			perr = fmt.Errorf("prune printed %s: %v", out, err)
			break
		}
		runs.Add(1)
		removed += rep.Report.Removed().Objects
		inUse += rep.Report.InUse
	}
	wg.Wait()
	t.Logf("%d prunes during the builds removed %d objects, and kept %d used meanwhile", runs.Load(), removed, inUse)
	for _, err := range append(errs, perr) {
		if err != nil {
			t.Error(err)
		}
	}
	if removed == 0 {
		t.Error("the prunes removed nothing while the builds ran")
	}

	// No half-written object; every record that names a missing output
	// is a miss.
	var dangling []string
	for rel := range cacheObjects(t, dir) {
		if !strings.HasPrefix(rel, "action") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		oid := strings.Fields(string(data))[0]
		if _, err := os.Stat(filepath.Join(dir, "output", oid[:2], oid)); err != nil {
			dangling = append(dangling, filepath.Base(rel))
		}
	}
	t.Logf("%d action records name a missing output", len(dangling))
	for _, aid := range dangling {
		if rsp := getOnce(t, dir, aid); !rsp.Miss || rsp.Err != "" {
			t.Errorf("get of action %s with its output gone: %+v; want a miss", aid, rsp)
		}
	}
	exec.Command(pluginBin, "prune", "--cache-dir="+dir, "--max-size=1TiB").Run() // removes them
	checkCacheDir(t, dir)
}

// getOnce asks a fresh plugin on dir for the action whose ID is hex aid.
func getOnce(t *testing.T, dir, aid string) cacheprog.Response {
	t.Helper()
	id, err := hex.DecodeString(aid)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pluginBin, "--cache-dir="+dir)
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"ID":1,"Command":"get","ActionID":%q}`+"\n"+`{"ID":2,"Command":"close"}`+"\n",
		base64.StdEncoding.EncodeToString(id)))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plugin: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var r cacheprog.Response
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("no answer to the get in %s: %v", out, err)
		}
		if r.ID == 1 {
			return r
		}
	}
}
