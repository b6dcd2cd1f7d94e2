// Command go-cache-plugin is a build and dependency cache for Go CI.
//
// Run with no subcommand, it is a GOCACHEPROG program: the go command starts
// it and talks the cache-prog protocol over stdin and stdout.
//
//	export GOCACHEPROG=go-cache-plugin
//
// See "go-cache-plugin help" for the subcommands and flags, and
// "go-cache-plugin help environment" for the environment variables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/s3util"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

func main() {
	cfg := new(config)
	root := &command.C{
		Name:  "go-cache-plugin",
		Usage: "[flags]\n<command> [flags] [args...]",
		Help: `A build and dependency cache for Go CI.

With no command, go-cache-plugin serves the go command's cache-prog protocol
on stdin and stdout (direct mode):

   export GOCACHEPROG=go-cache-plugin

Objects are kept in --cache-dir and, with --bucket, in a shared S3 bucket.`,
		SetFlags: func(_ *command.Env, fs *flag.FlagSet) { cfg.bind(fs) },
		Init: func(env *command.Env) error {
			if err := cfg.check(); err != nil {
				return env.Usagef("%v", err)
			}
			return nil
		},
		Run: func(env *command.Env) error {
			if len(env.Args) > 0 {
				return env.Usagef("unknown command %q", env.Args[0])
			}
			return failed(runDirect(env, cfg))
		},
		Commands: []*command.C{
			command.HelpCommand(helpTopics()), // helptopics.go
			command.VersionCommand(),
			serveCommand(cfg),
			connectCommand(cfg),
			pruneCommand(cfg),
			statsCommand(cfg),
			canonicalMtimesCommand(),
			summaryCommand(),
		},
	}
	announceStore(root.FindSubcommand("serve"), cfg)
	refuseUnknownTopics(root)
	env := root.NewEnv(cfg).MergeFlags(true)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env.SetContext(ctx)

	// The environment topic lists the global flags, so build it from them.
	var flags flag.FlagSet
	new(config).bind(&flags)
	root.FindSubcommand("help").FindSubcommand("environment").Help = environmentHelp(&flags)

	os.Exit(run(env, os.Args[1:]))
}

// failure marks an error from running a command, as opposed to an error in
// how it was invoked.
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// failed wraps a non-nil err as a failure.
func failed(err error) error {
	if err == nil {
		return nil
	}
	return failure{err}
}

// run runs the command line and returns the exit status: 0 on success or
// when help was asked for, 1 when the command failed, 2 for a usage error
// (an unknown flag, a bad value, a wrong argument).
func run(env *command.Env, args []string) int {
	err := command.Run(env, args)
	var fail failure
	var uerr command.UsageError
	var perr command.PanicError
	switch {
	case err == nil, errors.Is(err, command.ErrRequestHelp):
		return 0
	case errors.As(err, &fail):
		fmt.Fprintf(os.Stderr, "go-cache-plugin: %v\n", fail.err)
		return 1
	case errors.As(err, &perr):
		fmt.Fprintf(os.Stderr, "go-cache-plugin: internal error: %v\n%s", perr, perr.Stack())
		return 1
	case errors.As(err, &uerr):
		fmt.Fprintf(os.Stderr, "go-cache-plugin: %s\n", uerr.Message)
		uerr.Env.Command.HelpInfo(command.HelpFlags(0)).WriteUsage(os.Stderr)
		return 2
	}
	// Flag parsing errors are neither: they are usage errors too.
	fmt.Fprintf(os.Stderr, "go-cache-plugin: %v\n", err)
	fmt.Fprintln(os.Stderr, "Run 'go-cache-plugin help' for usage.")
	return 2
}

// staleTemp is the age at which a temporary file in the cache directory is
// taken to be left over from a crash.
const staleTemp = 24 * time.Hour

// logger returns a log function writing to stderr if on, or a no-op.
func logger(on bool) func(string, ...any) {
	if !on {
		return func(string, ...any) {}
	}
	l := log.New(os.Stderr, "go-cache-plugin: ", log.Lmsgprefix)
	return l.Printf
}

// openStore opens the store described by cfg. A bucket that cannot be
// used is reported on stderr and left out: the local cache still works.
// The returned function waits for the background check of the bucket (it
// stops when ctx ends) and must be called before exit. Temporary files
// older than staleTemp, left by a process that died, are swept first.
func openStore(ctx context.Context, cfg *config) (*store.Store, func(), error) {
	opts := store.Options{
		Dir:               cfg.CacheDir,
		UploadConcurrency: cfg.UploadConcurrency,
		Logf:              logger(cfg.Verbose),
		Limits:            cfg.limits(),
		Links:             gobuild.Links,
		ReadOnly:          cfg.ReadOnly,
	}
	var bucket *s3util.Client
	if cfg.Bucket != "" {
		var err error
		bucket, err = s3util.New(ctx, s3util.Config{
			Bucket:    cfg.Bucket,
			Region:    cfg.Region,
			Endpoint:  cfg.Endpoint,
			PathStyle: cfg.PathStyle,
			Prefix:    cfg.Prefix,
		})
		if err != nil {
			warnf("%v; using the local cache only", err)
		} else {
			opts.Remote = bucket
			if cfg.wrapRemote != nil {
				opts.Remote = cfg.wrapRemote(bucket)
			}
		}
	}
	st, err := store.Open(opts)
	if err == nil {
		logger(cfg.Verbose || cfg.announce)("%s", describeStore(cfg, st))
		st.CleanTemp(staleTemp)
	}
	if err != nil || bucket == nil {
		return st, func() {}, err
	}
	// Check the bucket beside the first requests rather than before them:
	// a build should not wait for it, but a misconfiguration should be
	// named rather than show up as a stream of misses.
	var wg sync.WaitGroup
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	wg.Go(func() {
		if err := bucket.Check(cctx); err != nil && cctx.Err() == nil {
			warnf("%v; using the local cache only", err)
			st.RemoteDown(err)
		}
	})
	return st, func() { cancel(); wg.Wait() }, nil
}

// checkTimeout bounds the start-up check of the bucket.
const checkTimeout = 15 * time.Second

// warnf reports a problem the user should know of, whatever the flags.
func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go-cache-plugin: "+format+"\n", args...)
}

// runDirect serves the cache-prog protocol on stdin and stdout.
func runDirect(env *command.Env, cfg *config) error {
	start := time.Now()
	if isTerminal(os.Stdin) {
		fmt.Fprintln(os.Stderr, "go-cache-plugin: serving the cache-prog protocol on stdin; "+
			"the go command runs this for you with GOCACHEPROG=go-cache-plugin (see go-cache-plugin help)")
	}
	ctx := env.Context()
	st, stopCheck, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer stopCheck()
	cache := &gobuild.Cache{
		Store:         st,
		MinUploadSize: cfg.MinUploadSize,
		Logf:          logger(true),
	}
	manifests, names := newManifests(cfg, cache), manifestNames(cfg, true)
	h := drainOnClose{cache, func(ctx context.Context) error { return closeStore(ctx, cfg, st) }}
	srv := &cacheprog.Server{Handler: beginBuild(ctx, manifests, h, names), MaxConcurrency: cfg.Concurrency}
	if cfg.Debug.has(debugBuild) {
		srv.Logf = logger(true)
	}
	err = srv.Serve(ctx, os.Stdin, os.Stdout)
	if cfg.Metrics {
		printMetrics(cache, st)
		printPrefetchMetrics(manifests, names)
	}
	appendMetricsFile(cfg, start, cache, st, manifests, names)
	if errors.Is(err, cacheprog.ErrNoClose) {
		logger(cfg.Verbose)("%v", err)
		return nil
	}
	return err
}

// printMetrics writes the summary of --metrics to stderr.
func printMetrics(cache *gobuild.Cache, st *store.Store) {
	c := cache.Stats()
	fmt.Fprintf(os.Stderr, "go-cache-plugin: gets=%d hits=%d misses=%d puts=%d put_bytes=%d\n",
		c.Gets, c.Hits, c.Gets-c.Hits, c.Puts, c.PutBytes)
	fmt.Fprintf(os.Stderr, "go-cache-plugin: store %v\n", st.Stats())
}
