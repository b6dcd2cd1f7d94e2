package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// pruneConfig holds the flags of the prune command.
type pruneConfig struct {
	JSON bool
}

func pruneCommand(cfg *config) *command.C {
	pc := new(pruneConfig)
	return &command.C{
		Name:  "prune",
		Usage: "[--max-size=<size>] [--expiry=<age>] [--json]",
		Help: `Trim the cache directory now, to the given bounds.

prune removes the objects not used within --expiry, then the least recently
used objects until the directory is within --max-size, with the action
records that name them, and prints what it removed. The bounds are the
global flags (or GOCACHE_MAX_SIZE and GOCACHE_EXPIRY); at least one is
needed. The bucket is never touched: see docs/operations.md for lifecycle
rules.

If a go command is using the directory meanwhile, prune leaves alone the
objects it may be reading (anything used in the last hour or so) and says
how far over --max-size that leaves the directory. If another process is
trimming the directory, prune waits for it to finish first.

Files in the directory that are not the cache's are left alone.`,
		SetFlags: func(_ *command.Env, fs *flag.FlagSet) {
			fs.BoolVar(&pc.JSON, "json", false, "print the report as JSON")
		},
		Run: func(env *command.Env) error {
			if len(env.Args) > 0 {
				return env.Usagef("prune takes no arguments, got %q", env.Args)
			}
			if cfg.limits().IsZero() {
				return env.Usagef("prune needs --max-size or --expiry (or GOCACHE_MAX_SIZE or GOCACHE_EXPIRY)")
			}
			return failed(runPrune(env, cfg, pc))
		},
	}
}

// pruneReport is the output of prune --json.
type pruneReport struct {
	Dir           string           `json:"dir"`
	MaxSize       int64            `json:"max_size,omitempty"`       // bytes
	ExpirySeconds int64            `json:"expiry_seconds,omitempty"` // seconds
	Report        store.TrimReport `json:"report"`
}

func runPrune(env *command.Env, cfg *config, pc *pruneConfig) error {
	dir, err := existingCacheDir(cfg.CacheDir)
	if err != nil {
		return err
	}
	st, err := store.Open(store.Options{
		Dir:         dir,
		Links:       gobuild.Links,
		Maintenance: true,
		Logf:        logger(cfg.Verbose),
	})
	if err != nil {
		return err
	}
	defer st.Close(env.Context())
	lim := cfg.limits()
	rep, err := st.Trim(env.Context(), lim)
	if err != nil {
		return err
	}
	if pc.JSON {
		return writeJSON(os.Stdout, pruneReport{Dir: st.Dir(), MaxSize: lim.MaxSize, ExpirySeconds: int64(lim.Expiry / time.Second), Report: rep})
	}
	printPrune(os.Stdout, st.Dir(), lim, rep)
	return nil
}

// existingCacheDir returns dir if it is a directory, and an error that
// says so plainly otherwise: prune and stats never create one.
func existingCacheDir(dir string) (string, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("no cache directory at %s (set --cache-dir or GOCACHE_DIR)", dir)
	case err != nil:
		return "", err
	case !fi.IsDir():
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return dir, nil
}

func printPrune(w io.Writer, dir string, lim store.Limits, rep store.TrimReport) {
	count := func(c store.Count) string {
		return fmt.Sprintf("%s (%s)", plural(c.Objects, "object"), formatBytes(c.Bytes))
	}
	rm := rep.Removed()
	fmt.Fprintf(w, "cache directory %s\n", dir)
	fmt.Fprintf(w, "  removed  %s in %v\n", count(rm), time.Duration(rep.Duration).Round(time.Millisecond))
	if rep.Expired.Objects > 0 {
		fmt.Fprintf(w, "           %s unused for over %s\n", count(rep.Expired), formatAge(lim.Expiry))
	}
	if rep.Evicted.Objects > 0 {
		fmt.Fprintf(w, "           %s least recently used\n", count(rep.Evicted))
	}
	if rep.Records.Objects > 0 {
		fmt.Fprintf(w, "           %s: action records of those, or naming nothing left\n", count(rep.Records))
	}
	kept := "  kept     " + count(rep.Kept)
	if lim.MaxSize > 0 {
		kept += "; max size " + formatBytes(lim.MaxSize)
	}
	fmt.Fprintln(w, kept)
	if rep.Over > 0 {
		fmt.Fprintf(w, "  %s over the max size, in objects another process may be using: they go once unused\n", formatBytes(rep.Over))
	}
	if rep.InUse > 0 {
		fmt.Fprintf(w, "  %s kept: used during the trim\n", plural(rep.InUse, "object"))
	}
	if rep.TempFile > 0 {
		fmt.Fprintf(w, "  %s left by crashes removed\n", plural(int64(rep.TempFile), "temporary file"))
	}
}

// plural formats n things.
func plural(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
