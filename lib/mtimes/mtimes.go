// Package mtimes sets the modification times of a work tree's files to
// times derived from their content.
//
// The go command keys cached test results on the modification times and
// sizes of the files a test opens (testdata, fixtures). A fresh CI checkout
// gives every file the time of the checkout, so a test result cached by one
// worker never matches on another, even for the same commit. [Set] gives
// each file a time that is a function of its bytes alone: the same bytes get
// the same time on every machine, and other bytes (even of the same size)
// get another time, at nanosecond resolution, so a real change is not
// hidden. Every time lies between 2001 and 2010, far outside the go
// command's "modified too recently to cache" window.
//
// Directories get a time derived from the names, kinds and times of the
// entries Set considered in them, so adding, removing or renaming a file
// changes its directory's time too.
//
// In a git work tree, Set considers the files git tracks. Their content
// hashes are the blob hashes of the index (git ls-files --stage), so files
// need not be read; only files whose work-tree copy differs from the index
// (git diff-files) are hashed, the same way git hashes a blob, so that the
// time does not depend on whether git or Set hashed the file (except under
// git's content filters, such as CRLF conversion, where the index holds
// the hash of a file's clean form and Set hashes the bytes). No history is
// needed: shallow clones work. Symbolic links, submodules and files git does
// not track are left alone. Outside git, every regular file below the
// directory is hashed, .git directories left out.
//
// Set changes modification times only, never content. Tools that decide
// by modification time whether a file changed (make, rsync -u, editors'
// reload checks) see the derived times; the index's stat information no
// longer matches, so the next git status rereads the files once.
package mtimes

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Epoch is the earliest time Set gives; every time lies in
// [Epoch, Epoch+Span).
var Epoch = time.Date(2001, time.January, 1, 0, 0, 0, 0, time.UTC)

// Span is the width of the range of times, about 9.1 years (2^58 ns).
const Span = time.Duration(1 << 58)

// TimeOf returns the time for a content hash: Epoch plus the first 8
// bytes of sum, as a big-endian number, modulo Span. sum must hold at
// least 8 bytes.
func TimeOf(sum []byte) time.Time {
	n := binary.BigEndian.Uint64(sum[:8]) % uint64(Span)
	return Epoch.Add(time.Duration(n))
}

// Result says what Set did.
type Result struct {
	Root    string // the directory, absolute
	Git     bool   // whether the files were those git tracks
	Files   int    // files given a time
	Dirs    int    // directories given a time (Root included)
	Hashed  int    // files whose content Set read (outside git: all of them)
	Skipped int    // tracked paths left alone: symbolic links, submodules, missing or not regular files
}

// String is the one-line summary of the command.
func (r Result) String() string {
	what := "files"
	if r.Git {
		what = "tracked files"
	}
	return fmt.Sprintf("canonical-mtimes: %s: %d %s and %d directories set from their content (%d hashed, %d skipped)",
		r.Root, r.Files, what, r.Dirs, r.Hashed, r.Skipped)
}

// file is one file to give a time to.
type file struct {
	rel     string      // slash-separated path below the root
	sum     []byte      // content hash; nil until known
	indexed bool        // whether sum is the index's blob hash
	mode    fs.FileMode // if not 0, the path is not a regular file: skipped
}

// Set gives every file below dir, and dir and every directory holding
// those files, the time derived from its content (see the package
// documentation). If dir is in a git work tree, the files are those git
// tracks below dir; otherwise every regular file below dir.
func Set(ctx context.Context, dir string) (Result, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return Result{}, fmt.Errorf("canonical-mtimes: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return Result{}, fmt.Errorf("canonical-mtimes: %w", err)
	}
	if !fi.IsDir() {
		return Result{}, fmt.Errorf("canonical-mtimes: %s is not a directory", root)
	}
	res := Result{Root: root}
	var files []*file
	var newHash func() hash.Hash
	top, err := gitTop(ctx, root)
	switch {
	case err != nil:
		return res, err
	case top != "":
		res.Git = true
		files, newHash, err = gitFiles(ctx, top, root, &res)
	default:
		newHash = sha1.New
		files, err = walkFiles(root, &res)
	}
	if err != nil {
		return res, err
	}
	if err := hashFiles(ctx, root, files, newHash, &res); err != nil {
		return res, err
	}
	if err := setTimes(root, files, &res); err != nil {
		return res, err
	}
	return res, nil
}

// WorkTree returns the top of the git work tree holding dir, or "" if dir
// is in none.
func WorkTree(dir string) (string, error) {
	return gitTop(context.Background(), dir)
}

// gitTop returns the top of the git work tree holding dir, or "" if dir
// is in none (or git is not installed).
func gitTop(ctx context.Context, dir string) (string, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return "", nil
	}
	out, err := git(ctx, dir, "rev-parse", "--is-inside-work-tree", "--show-toplevel")
	if err != nil {
		if strings.Contains(err.Error(), "not a git repository") {
			return "", nil // walk it as plain files
		}
		// A repository git refuses (dubious ownership, a broken .git):
		// walking it as plain files would take in what git does not track.
		return "", fmt.Errorf("canonical-mtimes: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] != "true" {
		return "", nil
	}
	top, err := filepath.EvalSymlinks(lines[1])
	if err != nil {
		return "", fmt.Errorf("canonical-mtimes: work tree of %s: %w", dir, err)
	}
	return top, nil
}

// git runs git in dir and returns its standard output.
func git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"--literal-pathspecs", "-c", "core.quotePath=false"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C") // messages are matched: see gitTop
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// gitFiles lists the regular files git tracks below root (in the work
// tree at top), with the index's blob hash for those whose work-tree copy
// matches the index and no hash for the others.
func gitFiles(ctx context.Context, top, root string, res *Result) ([]*file, func() hash.Hash, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, nil, fmt.Errorf("canonical-mtimes: %w", err)
	}
	below, err := filepath.Rel(top, realRoot)
	if err != nil {
		return nil, nil, fmt.Errorf("canonical-mtimes: %s below %s: %w", realRoot, top, err)
	}
	below = filepath.ToSlash(below)
	spec := []string{"--", below}
	prefix := below + "/"
	if below == "." {
		prefix = ""
	}

	newHash := sha1.New
	out, err := git(ctx, top, "rev-parse", "--show-object-format")
	if err != nil {
		return nil, nil, fmt.Errorf("canonical-mtimes: %w", err)
	}
	switch f := strings.TrimSpace(string(out)); f {
	case "sha1":
	case "sha256":
		newHash = sha256.New
	default:
		return nil, nil, fmt.Errorf("canonical-mtimes: repository at %s uses object format %q; want sha1 or sha256", top, f)
	}

	// Files whose stat information differs from the index, or that are
	// racily clean and differ in content: git diff-files does not refresh
	// the index, so it lists a file that only has a new time, too. They are
	// hashed from the work tree.
	out, err = git(ctx, top, append([]string{"diff-files", "-z", "--name-only", "--no-renames"}, spec...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("canonical-mtimes: %w", err)
	}
	dirty := make(map[string]bool)
	for name := range strings.SplitSeq(string(out), "\x00") {
		if name != "" {
			dirty[name] = true
		}
	}

	out, err = git(ctx, top, append([]string{"ls-files", "--stage", "-z", "--full-name"}, spec...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("canonical-mtimes: %w", err)
	}
	var files []*file
	seen := make(map[string]bool)
	for entry := range strings.SplitSeq(string(out), "\x00") {
		if entry == "" {
			continue
		}
		// <mode> SP <object> SP <stage> TAB <path>
		meta, name, ok := strings.Cut(entry, "\t")
		fields := strings.Fields(meta)
		if !ok || len(fields) != 3 {
			return nil, nil, fmt.Errorf("canonical-mtimes: unexpected line %q from git ls-files in %s", entry, top)
		}
		if seen[name] {
			continue // an unmerged path: one entry per stage
		}
		seen[name] = true
		rel, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return nil, nil, fmt.Errorf("canonical-mtimes: git ls-files listed %q, not below %q", name, prefix)
		}
		switch fields[0] {
		case "100644", "100755":
		default: // 120000 symbolic link, 160000 submodule
			res.Skipped++
			continue
		}
		f := &file{rel: rel}
		if !dirty[name] && fields[2] == "0" {
			sum, err := hex.DecodeString(fields[1])
			if err != nil || len(sum) < 8 {
				return nil, nil, fmt.Errorf("canonical-mtimes: bad object name in %q from git ls-files in %s", entry, top)
			}
			f.sum, f.indexed = sum, true
		}
		files = append(files, f)
	}
	return files, newHash, nil
}

// walkFiles lists the regular files below root, leaving out .git.
func walkFiles(root string, res *Result) ([]*file, error) {
	var files []*file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("canonical-mtimes: %w", err)
		}
		if d.IsDir() {
			if d.Name() == ".git" && p != root {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == ".git" {
			return nil // a worktree's or submodule's .git file
		}
		if !d.Type().IsRegular() {
			res.Skipped++
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("canonical-mtimes: %w", err)
		}
		files = append(files, &file{rel: filepath.ToSlash(rel)})
		return nil
	})
	return files, err
}

// hashFiles computes the hash of each file without one, as git hashes a
// blob: the hash of "blob <size>\x00" and the content. Files that are not
// regular in the work tree (missing, or of another kind) are dropped.
func hashFiles(ctx context.Context, root string, files []*file, newHash func() hash.Hash, res *Result) error {
	work := make(chan *file)
	var (
		mu       sync.Mutex
		firstErr error
	)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, 128<<10)
			for f := range work {
				err := hashFile(filepath.Join(root, filepath.FromSlash(f.rel)), f, newHash(), buf)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	var hashed int
	for _, f := range files {
		if f.sum != nil {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		hashed++
		work <- f
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("canonical-mtimes: %w", err)
	}
	res.Hashed += hashed
	return nil
}

// hashFile sets f.sum, or f.mode to a non-regular mode if the path is not
// a regular file.
func hashFile(p string, f *file, h hash.Hash, buf []byte) error {
	fd, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		f.mode = fs.ModeIrregular
		return nil
	} else if err != nil {
		return fmt.Errorf("canonical-mtimes: %w", err)
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return fmt.Errorf("canonical-mtimes: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.mode = fi.Mode()
		return nil
	}
	fmt.Fprintf(h, "blob %d\x00", fi.Size())
	n, err := io.CopyBuffer(h, fd, buf)
	if err != nil {
		return fmt.Errorf("canonical-mtimes: read %s: %w", p, err)
	}
	if n != fi.Size() {
		return fmt.Errorf("canonical-mtimes: %s changed while being read (%d bytes, then %d)", p, fi.Size(), n)
	}
	f.sum = h.Sum(nil)
	return nil
}

// dirEntry is an entry of a directory, for its derived time.
type dirEntry struct {
	name string
	dir  bool
	t    time.Time
}

// setTimes gives each file its time, then each directory holding them
// (deepest first) the time derived from its entries.
func setTimes(root string, files []*file, res *Result) error {
	entries := map[string][]dirEntry{".": nil}
	addDirs := func(d string) {
		for d != "." {
			if _, ok := entries[d]; ok {
				return
			}
			entries[d] = nil
			d = path.Dir(d)
		}
	}
	for _, f := range files {
		if f.mode != 0 || f.sum == nil {
			res.Skipped++
			continue
		}
		p := filepath.Join(root, filepath.FromSlash(f.rel))
		if f.indexed {
			// A file whose hash came from the index must still be a
			// regular file (a path git tracks as a file may have become a
			// symbolic link or directory since; git diff-files lists it
			// then, but check rather than trust).
			fi, err := os.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() {
				res.Skipped++
				continue
			}
		}
		t := TimeOf(f.sum)
		if err := os.Chtimes(p, time.Time{}, t); err != nil {
			return fmt.Errorf("canonical-mtimes: %w", err)
		}
		res.Files++
		d := path.Dir(f.rel)
		addDirs(d)
		entries[d] = append(entries[d], dirEntry{name: path.Base(f.rel), t: t})
	}
	// Deepest first, so that a directory's subdirectories have their
	// times before it does.
	dirs := make([]string, 0, len(entries))
	for d := range entries {
		dirs = append(dirs, d)
	}
	depth := func(d string) int {
		if d == "." {
			return 0
		}
		return strings.Count(d, "/") + 1
	}
	slices.SortFunc(dirs, func(a, b string) int { return depth(b) - depth(a) })
	for _, d := range dirs {
		es := entries[d]
		slices.SortFunc(es, func(a, b dirEntry) int { return strings.Compare(a.name, b.name) })
		h := sha256.New()
		for _, e := range es {
			kind := "file"
			if e.dir {
				kind = "dir"
			}
			fmt.Fprintf(h, "%s %q %d\n", kind, e.name, e.t.UnixNano())
		}
		t := TimeOf(h.Sum(nil))
		if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(d)), time.Time{}, t); err != nil {
			return fmt.Errorf("canonical-mtimes: %w", err)
		}
		res.Dirs++
		if d != "." {
			parent := path.Dir(d)
			entries[parent] = append(entries[parent], dirEntry{name: path.Base(d), dir: true, t: t})
		}
	}
	return nil
}
