package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
)

// Manifests and prefetch (see gobuild.Manifests): with a bucket, each
// build records the actions it asked for as a manifest in the bucket,
// <prefix>/manifest/<name>, and a build that starts prefetches what its
// manifest lists.

// manifestEnv lists the environment variables of the manifest flags; they
// are global flags, listed by "help environment" with the others.
var manifestEnv = []envVar{
	{"manifest", "GOCACHE_MANIFEST"},
	{"prefetch", "GOCACHE_PREFETCH"},
	{"pack-min", "GOCACHE_PACK_MIN"},
	{"compress", "GOCACHE_COMPRESS"},
}

// defaultPrefetch is the default of --prefetch.
const defaultPrefetch = 16

// bindManifest defines the manifest flags on fs.
func (c *config) bindManifest(fs *flag.FlagSet) {
	fs.StringVar(&c.Manifest, "manifest", "", `with --bucket: the build's manifest, read at start to prefetch and written at close; `+
		`"name" or "name,name2,..." (the first is written), "off" for none; default: derived from the module in the working directory, GOOS/GOARCH and the go command's job kind, e.g. example.com_m@linux-amd64.test-race (direct mode and connect; serve: what each connect asks for)`)
	fs.IntVar(&c.Prefetch, "prefetch", defaultPrefetch, "with a manifest: how many objects (or ranged reads of packs) to prefetch at once (0: none, but still write the manifest)")
	fs.IntVar(&c.PackMin, "pack-min", gobuild.DefaultPackMinEntries, "with a manifest: at close, pack the listed outputs that no pack holds into one bucket object, for a cold worker to read in a few requests, "+
		"when they are at least this many and a quarter of the listed bytes (0: write no packs; packs are still read)")
	fs.BoolVar(&c.Compress, "compress", false, "with a manifest: write packs compressed (zstd), about a quarter of the bytes for a cold worker to read, for some CPU to decode them; "+
		"for workers whose link to the bucket is slower than about 2 Gbit/s. The manifests then need readers of this version or later; objects under their own keys are never compressed")
}

// checkManifest reports manifest settings that are out of range.
func (c *config) checkManifest() error {
	if c.Prefetch < 0 {
		return fmt.Errorf("--prefetch must not be negative")
	}
	if c.PackMin < 0 {
		return fmt.Errorf("--pack-min must not be negative")
	}
	if c.Manifest != "" && c.Manifest != "off" {
		if _, err := parseManifestNames(c.Manifest); err != nil {
			return fmt.Errorf("--manifest: %v", err)
		}
	}
	return nil
}

// parseManifestNames splits a --manifest value.
func parseManifestNames(s string) ([]string, error) {
	var names []string
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if !validManifestName(name) {
			return nil, fmt.Errorf("invalid manifest name %q: want 1 to 200 of A-Z a-z 0-9 . _ @ + = -, not starting with a dot", name)
		}
		names = append(names, name)
	}
	return names, nil
}

func validManifestName(name string) bool { return gobuild.ValidManifestName(name) }

// manifestNames returns the build's manifests: those of --manifest, or the
// one derived from the working directory if derive is set. It returns none
// without a bucket or with --manifest=off.
func manifestNames(cfg *config, derive bool) []string {
	switch {
	case cfg.Bucket == "" || cfg.Manifest == "off":
		return nil
	case cfg.Manifest != "":
		names, _ := parseManifestNames(cfg.Manifest) // checked
		return names
	case !derive:
		return nil
	}
	name, ok := workingManifestName(cfg)
	if !ok {
		return nil
	}
	return []string{name}
}

// workingManifestName derives the manifest name of a build in the working
// directory (see gobuild.ManifestName): the module there, GOOS and GOARCH,
// and the job kind of the go command that started this process (its
// command line, and this process's environment, in which the go command
// passes its settings). Without the command line (not on Linux, or
// started through a wrapper) the name has no kind.
func workingManifestName(cfg *config) (string, bool) {
	logf := logger(cfg.Verbose)
	wd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	mod, err := gobuild.FindModule(wd)
	if err != nil {
		logf("%v: no manifest (set --manifest to name one)", err)
		return "", false
	}
	var kind gobuild.JobKind
	args, err := gobuild.ParentCommand()
	if err == nil {
		kind, err = gobuild.ParseGoCommand(args, os.Getenv)
	}
	if err != nil {
		logf("job kind unknown (%v): manifest named without it", err)
	}
	// The go command sets GOOS and GOARCH in the environment it passes too.
	name := gobuild.ManifestName(mod, os.Getenv("GOOS"), os.Getenv("GOARCH"), kind)
	if kind.Command != "" {
		logf("manifest %s: go %s, settings %q", name, kind.Command, kind.Settings)
	}
	return name, true
}

// sessionOptions returns what connect asks of its session: the manifest
// named by its --manifest (or GOCACHE_MANIFEST), and the one derived from
// the go command's working directory and job kind (connect is the go
// command's child, as the plugin is in direct mode), which the daemon
// uses if neither that nor its own --manifest names one. The kind travels
// in the name, so a daemon of any release uses it, and a daemon takes an
// older connect's name without a kind as it is.
func sessionOptions(cfg *config) daemon.SessionOptions {
	opts := daemon.SessionOptions{Manifest: cfg.Manifest}
	if cfg.Manifest == "" {
		opts.DerivedManifest, _ = workingManifestName(cfg)
	}
	return opts
}

// sessionManifests returns the manifests of a daemon session: those the
// client names (if valid), else the daemon's --manifest, else the one the
// client derived. There are none without a bucket, and none if either
// the client or, when the client names none, the daemon says "off".
func sessionManifests(cfg *config, opts daemon.SessionOptions, logf func(string, ...any)) []string {
	if cfg.Bucket == "" {
		return nil
	}
	switch {
	case opts.Manifest == "off":
		return nil
	case opts.Manifest != "":
		names, err := parseManifestNames(opts.Manifest)
		if err == nil {
			return names
		}
		logf("session asked for manifest %q: %v; using the daemon's", opts.Manifest, err)
	}
	if names := manifestNames(cfg, false); names != nil || cfg.Manifest == "off" {
		return names
	}
	if validManifestName(opts.DerivedManifest) {
		return []string{opts.DerivedManifest}
	}
	return nil
}

// newManifests returns the manifests of the cache, as cfg sets them.
func newManifests(cfg *config, cache *gobuild.Cache) *gobuild.Manifests {
	return &gobuild.Manifests{Cache: cache, Concurrency: cfg.Prefetch, PackMinEntries: cfg.PackMin, Compress: cfg.Compress, Logf: logger(cfg.Verbose)}
}

// beginBuild wraps the handler of one build with its manifests.
func beginBuild(ctx context.Context, m *gobuild.Manifests, h cacheprog.FastGetter, names []string) cacheprog.FastGetter {
	return m.Begin(ctx, h, names)
}

// printPrefetchMetrics adds the manifest counts to --metrics.
func printPrefetchMetrics(m *gobuild.Manifests, names []string) {
	if len(names) == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "go-cache-plugin: prefetch manifest=%s %v\n", strings.Join(names, ","), m.Stats())
}

func init() { globalEnv = append(globalEnv, manifestEnv...) }
