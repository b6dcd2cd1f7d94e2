package mtimes_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/mtimes"
)

// gitEnv keeps the machine's git configuration out of the tests.
func gitEnv(t *testing.T) {
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_AUTHOR_NAME", "test")
	t.Setenv("GIT_AUTHOR_EMAIL", "test@example.com")
	t.Setenv("GIT_COMMITTER_NAME", "test")
	t.Setenv("GIT_COMMITTER_EMAIL", "test@example.com")
}

func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// newRepo makes a repository with a few files, a symbolic link, and
// returns its path.
func newRepo(t *testing.T) string {
	t.Helper()
	gitEnv(t)
	dir := t.TempDir()
	runGit(t, dir, "init", "-q")
	write(t, dir, map[string]string{
		"go.mod":                "module example.com/m\n",
		"a/a.go":                "package a\n",
		"a/testdata/input.txt":  "aaaa",
		"a/testdata/other.txt":  "same bytes",
		"b/deep/er/file.txt":    "deep",
		"same/copy-of-other.go": "same bytes",
	})
	if err := os.Symlink("a/a.go", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	runGit(t, dir, "add", "-A")
	runGit(t, dir, "commit", "-q", "-m", "one")
	return dir
}

// clone makes a fresh shallow clone of repo.
func clone(t *testing.T, repo string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clone")
	runGit(t, repo, "clone", "-q", "--depth=1", "file://"+repo, dir)
	return dir
}

func set(t *testing.T, dir string) mtimes.Result {
	t.Helper()
	res, err := mtimes.Set(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	return res
}

func mtime(t *testing.T, p string) time.Time {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// paths are the tracked regular files and the directories of newRepo.
var paths = []string{".", "go.mod", "a", "a/a.go", "a/testdata", "a/testdata/input.txt", "a/testdata/other.txt",
	"b", "b/deep", "b/deep/er", "b/deep/er/file.txt", "same", "same/copy-of-other.go"}

// TestTwoClones: two fresh clones, made at different times, get the same
// times for every tracked file and directory, times well in the past.
func TestTwoClones(t *testing.T) {
	repo := newRepo(t)
	c1 := clone(t, repo)
	res := set(t, c1)
	if !res.Git || res.Files != 6 || res.Dirs != 7 || res.Skipped != 1 || res.Hashed != 0 {
		t.Errorf("result %+v; want 6 files and 7 directories from the index, the link skipped", res)
	}
	c2 := clone(t, repo)
	// The second clone's files are new: make sure they are not already
	// equal to the first's.
	if a, b := mtime(t, filepath.Join(c1, "go.mod")), mtime(t, filepath.Join(c2, "go.mod")); a.Equal(b) {
		t.Fatalf("clones start with equal times %v", a)
	}
	set(t, c2)
	latest := time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range paths {
		a, b := mtime(t, filepath.Join(c1, p)), mtime(t, filepath.Join(c2, p))
		if !a.Equal(b) {
			t.Errorf("%s: times %v and %v in two clones; want equal", p, a, b)
		}
		if a.Before(mtimes.Epoch) || !a.Before(latest) {
			t.Errorf("%s: time %v; want between %v and %v", p, a, mtimes.Epoch, latest)
		}
	}
	// Same bytes, same time, whatever the name.
	if a, b := mtime(t, filepath.Join(c1, "a/testdata/other.txt")), mtime(t, filepath.Join(c1, "same/copy-of-other.go")); !a.Equal(b) {
		t.Errorf("files with the same bytes: times %v and %v; want equal", a, b)
	}
	// Directories with different entries differ.
	if a, b := mtime(t, filepath.Join(c1, "a")), mtime(t, filepath.Join(c1, "b")); a.Equal(b) {
		t.Errorf("directories a and b both have time %v", a)
	}
	// Content is untouched, and git sees no change in it.
	if data, err := os.ReadFile(filepath.Join(c2, "a/testdata/input.txt")); err != nil || string(data) != "aaaa" {
		t.Errorf("input.txt holds %q, %v", data, err)
	}
	if out := runGit(t, c2, "status", "--porcelain"); out != "" {
		t.Errorf("git status after Set:\n%s", out)
	}
	// A second run in the same checkout gives the same times; the index's
	// stat information is stale now, so it hashes the files itself.
	before := mtime(t, filepath.Join(c1, "a/testdata/input.txt"))
	res = set(t, c1)
	if res.Files != 6 {
		t.Errorf("second run: %+v", res)
	}
	if after := mtime(t, filepath.Join(c1, "a/testdata/input.txt")); !after.Equal(before) {
		t.Errorf("second run changed input.txt's time from %v to %v", before, after)
	}
}

// TestChangedBytes: a file changed in a new commit, to other bytes of the
// same size, gets another time, and so do the directories holding it; the
// other files keep theirs. A file changed in the work tree only gets the
// time the commit of those bytes gives.
func TestChangedBytes(t *testing.T) {
	repo := newRepo(t)
	old := clone(t, repo)
	set(t, old)

	// Modified in the work tree, not committed.
	dirty := clone(t, repo)
	write(t, dirty, map[string]string{"a/testdata/input.txt": "abab"})
	if res := set(t, dirty); res.Hashed == 0 {
		t.Errorf("result %+v: the modified file was not hashed", res)
	}

	write(t, repo, map[string]string{"a/testdata/input.txt": "abab"})
	runGit(t, repo, "commit", "-q", "-a", "-m", "two")
	cur := clone(t, repo)
	set(t, cur)
	for _, p := range paths {
		a, b := mtime(t, filepath.Join(old, p)), mtime(t, filepath.Join(cur, p))
		changed := p == "a/testdata/input.txt" || p == "a/testdata" || p == "a" || p == "."
		if changed == a.Equal(b) {
			t.Errorf("%s: time %v before the commit and %v after; want them equal: %v", p, a, b, !changed)
		}
		if d := mtime(t, filepath.Join(dirty, p)); !d.Equal(b) {
			t.Errorf("%s: time %v modified in the work tree, %v committed; want equal", p, d, b)
		}
	}
}

// TestLeftAlone: symbolic links, untracked and ignored files keep their
// times; a subdirectory argument sets only what is below it.
func TestLeftAlone(t *testing.T) {
	repo := newRepo(t)
	c := clone(t, repo)
	write(t, c, map[string]string{"untracked.txt": "u", "a/testdata/new.txt": "n"})
	link := filepath.Join(c, "link")
	keep := map[string]time.Time{}
	for _, p := range []string{"link", "untracked.txt", "a/testdata/new.txt", "go.mod", "b/deep/er/file.txt", "."} {
		keep[p] = mtime(t, filepath.Join(c, p))
	}
	res := set(t, filepath.Join(c, "a"))
	if res.Files != 3 || res.Dirs != 2 {
		t.Errorf("result %+v; want the 3 files and 2 directories of a", res)
	}
	for p, want := range keep {
		if got := mtime(t, filepath.Join(c, p)); !got.Equal(want) {
			t.Errorf("%s: time changed from %v to %v", p, want, got)
		}
	}
	if got := mtime(t, filepath.Join(c, "a/a.go")); got.Equal(mtime(t, link)) || got.After(time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("a/a.go: time %v; want a derived one", got)
	}
	// A tracked file removed from the work tree is skipped, not an error.
	if err := os.Remove(filepath.Join(c, "go.mod")); err != nil {
		t.Fatal(err)
	}
	if res := set(t, c); res.Files != 5 || res.Skipped != 2 {
		t.Errorf("result %+v; want 5 files, the link and the missing go.mod skipped", res)
	}
}

// TestOutsideGit: outside a work tree, every regular file is hashed and
// gets the time a git checkout of the same bytes gets (so does a
// directory with the same entries); .git is left out.
func TestOutsideGit(t *testing.T) {
	repo := newRepo(t)
	c := clone(t, repo)
	set(t, c)

	plain := t.TempDir()
	write(t, plain, map[string]string{
		"go.mod":               "module example.com/m\n",
		"a/a.go":               "package a\n",
		"a/testdata/input.txt": "aaaa",
		"a/testdata/other.txt": "same bytes",
		".git/config":          "not a repository",
	})
	gitFile := filepath.Join(plain, ".git/config")
	before := mtime(t, gitFile)
	res := set(t, plain)
	if res.Git || res.Files != 4 || res.Hashed != 4 {
		t.Errorf("result %+v; want 4 files hashed, not from git", res)
	}
	for _, p := range []string{"go.mod", "a/a.go", "a/testdata/input.txt", "a/testdata"} {
		if a, b := mtime(t, filepath.Join(plain, p)), mtime(t, filepath.Join(c, p)); !a.Equal(b) {
			t.Errorf("%s: time %v outside git, %v in a clone; want equal", p, a, b)
		}
	}
	if got := mtime(t, gitFile); !got.Equal(before) {
		t.Errorf(".git/config: time changed to %v", got)
	}
}

func TestErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing-here")
	_, err := mtimes.Set(t.Context(), missing)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Set of a missing directory: %v; want an error naming it", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	write(t, filepath.Dir(f), map[string]string{"file": "x"})
	if _, err := mtimes.Set(t.Context(), f); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Set of a file: %v; want an error saying it is not a directory", err)
	}
}

func TestTimeOf(t *testing.T) {
	for _, sum := range [][]byte{make([]byte, 20), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		got := mtimes.TimeOf(sum)
		if got.Before(mtimes.Epoch) || !got.Before(mtimes.Epoch.Add(mtimes.Span)) {
			t.Errorf("TimeOf(%x) = %v, outside the range", sum, got)
		}
	}
	a := mtimes.TimeOf([]byte{0, 0, 0, 0, 0, 0, 0, 1})
	b := mtimes.TimeOf([]byte{0, 0, 0, 0, 0, 0, 0, 2})
	if b.Sub(a) != time.Nanosecond {
		t.Errorf("adjacent hashes %v apart; want 1ns", b.Sub(a))
	}
}
