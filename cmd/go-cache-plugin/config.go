package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// config holds the global settings, from flags and their environment
// variables.
type config struct {
	CacheDir     string
	Concurrency  int
	Metrics      bool
	MetricsFile  string // see summary.go
	Verbose      bool
	Debug        debugMask // which front ends log every request (see debug.go)
	DrainTimeout time.Duration

	// Remote tier.
	Bucket            string
	Region            string
	Endpoint          string
	PathStyle         bool
	Prefix            string
	MinUploadSize     int64
	UploadConcurrency int

	// Hygiene and trust (see limits.go).
	MaxSize  byteSize
	Expiry   age
	ReadOnly bool
	announce bool // log the store's setup at startup whatever -v says (serve)

	// Manifests and prefetch (see manifest.go).
	Manifest string
	Prefetch int
	PackMin  int
	Compress bool

	envErrs []error // environment variables that did not parse

	// wrapRemote, if set, wraps the remote tier (serve sets it to time
	// remote calls for its metrics).
	wrapRemote func(store.Remote) store.Remote
}

// envVar ties a flag to the environment variable that sets its default.
type envVar struct {
	Flag string
	Env  string
}

// globalEnv lists the environment variables of the global flags, in the
// order "help environment" shows them.
var globalEnv = []envVar{
	{"cache-dir", "GOCACHE_DIR"},
	{"c", "GOCACHE_CONCURRENCY"},
	{"metrics", "GOCACHE_METRICS"},
	{"v", "GOCACHE_VERBOSE"},
	{"debug", "GOCACHE_DEBUG"},
	{"drain-timeout", "GOCACHE_DRAIN_TIMEOUT"},
	{"bucket", "GOCACHE_S3_BUCKET"},
	{"region", "GOCACHE_S3_REGION"},
	{"s3-endpoint-url", "GOCACHE_S3_ENDPOINT_URL"},
	{"s3-path-style", "GOCACHE_S3_PATH_STYLE"},
	{"prefix", "GOCACHE_KEY_PREFIX"},
	{"min-upload-size", "GOCACHE_MIN_SIZE"},
	{"u", "GOCACHE_S3_CONCURRENCY"},
	{"max-size", "GOCACHE_MAX_SIZE"},
	{"expiry", "GOCACHE_EXPIRY"},
	{"read-only", "GOCACHE_READ_ONLY"},
}

// defaultCacheDir is <user cache dir>/go-cache-plugin.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "go-cache-plugin")
}

// bind defines the global flags on fs.
func (c *config) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.CacheDir, "cache-dir", defaultCacheDir(), "local cache directory")
	fs.IntVar(&c.Concurrency, "c", runtime.NumCPU(), "maximum number of requests handled at once (0: the number of CPUs)")
	fs.BoolVar(&c.Metrics, "metrics", false, "print a summary of cache metrics to stderr at exit")
	fs.BoolVar(&c.Verbose, "v", false, "log cache decisions (misses from the bucket, rejected objects)")
	fs.Var(&c.Debug, "debug", "log every request: true (all), or a bit mask, 1 build cache, 2 module proxy, 4 reverse proxy (see \"help debug\")")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "how long close waits for pending uploads")
	fs.StringVar(&c.Bucket, "bucket", "", "S3 bucket of the shared remote tier (none: local only)")
	fs.StringVar(&c.Region, "region", "", "S3 region (default: asked of the bucket)")
	fs.StringVar(&c.Endpoint, "s3-endpoint-url", "", "S3 endpoint URL, for S3-compatible servers")
	fs.BoolVar(&c.PathStyle, "s3-path-style", false, "use path-style S3 requests (http://host/bucket/key)")
	fs.StringVar(&c.Prefix, "prefix", "", "prefix of every key in the bucket")
	fs.Int64Var(&c.MinUploadSize, "min-upload-size", 0, "smallest object, in bytes, written to the bucket")
	fs.IntVar(&c.UploadConcurrency, "u", runtime.NumCPU(), "maximum number of concurrent uploads to the bucket (0: the number of CPUs)")
	c.bindLimits(fs)
	c.bindManifest(fs)
	c.bindMetricsFile(fs)
	c.envErrs = applyEnv(fs, globalEnv)
}

// applyEnv sets each flag in vars from its environment variable, if set,
// and annotates its usage with the variable's name. Values set this way
// are defaults: flags on the command line are parsed later and win.
func applyEnv(fs *flag.FlagSet, vars []envVar) []error {
	var errs []error
	for _, v := range vars {
		f := fs.Lookup(v.Flag)
		if f == nil {
			panic("no flag " + v.Flag) // a programming error in the table above
		}
		f.Usage += fmt.Sprintf(" ($%s)", v.Env)
		if s, ok := os.LookupEnv(v.Env); ok && s != "" {
			if err := fs.Set(v.Flag, s); err != nil {
				errs = append(errs, fmt.Errorf("invalid %s=%q: %v", v.Env, s, err))
			}
		}
	}
	return errs
}

// check reports settings that are out of range. A concurrency of 0 is
// the number of CPUs, as in the reference tool.
func (c *config) check() error {
	if len(c.envErrs) > 0 {
		return c.envErrs[0]
	}
	if c.Concurrency == 0 {
		c.Concurrency = runtime.NumCPU()
	}
	if c.UploadConcurrency == 0 {
		c.UploadConcurrency = runtime.NumCPU()
	}
	if err := c.checkManifest(); err != nil {
		return err
	}
	switch {
	case c.CacheDir == "":
		return fmt.Errorf("--cache-dir must not be empty")
	case c.Concurrency < 0:
		return fmt.Errorf("-c must not be negative (0 is the number of CPUs), got %d", c.Concurrency)
	case c.UploadConcurrency < 0:
		return fmt.Errorf("-u must not be negative (0 is the number of CPUs), got %d", c.UploadConcurrency)
	case c.MinUploadSize < 0:
		return fmt.Errorf("--min-upload-size must not be negative")
	case c.DrainTimeout < 0:
		return fmt.Errorf("--drain-timeout must not be negative")
	case c.Bucket == "" && (c.Endpoint != "" || c.Region != "" || c.Prefix != ""):
		return fmt.Errorf("S3 settings given without --bucket")
	}
	return nil
}

// environmentHelp is the text of "help environment".
func environmentHelp(root *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("Environment variables.\n\nEach global flag takes its default from an environment variable; a flag on\nthe command line overrides it. Boolean variables take true/false/1/0;\nGOCACHE_DEBUG also takes a bit mask (see \"help debug\").\n\n")
	for _, v := range globalEnv {
		f := root.Lookup(v.Flag)
		usage := strings.TrimSuffix(f.Usage, fmt.Sprintf(" ($%s)", v.Env))
		name := "--" + v.Flag
		if len(v.Flag) == 1 {
			name = "-" + v.Flag
		}
		fmt.Fprintf(&b, "  %-26s %-21s %s\n", v.Env, name, usage)
	}
	b.WriteString(subcommandEnvHelp())
	b.WriteString("\nThe S3 client also reads the AWS SDK's own variables (AWS_ACCESS_KEY_ID,\nAWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION, ...).\n")
	return b.String()
}
