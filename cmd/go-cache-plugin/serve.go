package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
)

// serveConfig holds the flags of the serve command.
type serveConfig struct {
	Plugin          string
	HTTP            string
	ShutdownTimeout time.Duration
	WriteTimeout    time.Duration
	AllowUsers      string
	AllowGroup      string

	// The HTTP front ends on the --http listener.
	Mod modProxyFlags // modproxy.go
	Rev revProxyFlags // revproxy.go

	Access httpAccessFlags // access.go

	envErrs []error
}

// serveEnv lists the environment variables of the serve command's flags
// (the reference tool's names for --plugin and --http).
var serveEnv = []envVar{
	{"plugin", "GOCACHE_PLUGIN"},
	{"http", "GOCACHE_HTTP"},
	{"shutdown-timeout", "GOCACHE_SHUTDOWN_TIMEOUT"},
	{"write-timeout", "GOCACHE_WRITE_TIMEOUT"},
	{"allow-users", "GOCACHE_ALLOW_USERS"},
	{"allow-group", "GOCACHE_ALLOW_GROUP"},
}

func init() { serveEnv = append(append(serveEnv, modProxyEnv...), revProxyEnv...) }

func (c *serveConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.Plugin, "plugin", "", "where to serve the cache-prog protocol: a port number (TCP on 127.0.0.1 only) or a Unix socket path")
	fs.StringVar(&c.HTTP, "http", "", "address of the HTTP listener ([host]:port; loopback unless a host is given): /metrics, /healthz, status page, and /debug/pprof/ on loopback (see --http-pprof)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGINT or SIGTERM, how long live sessions may take to finish before they are cut")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", daemon.DefaultWriteTimeout, "drop a client that leaves its responses unread this long")
	fs.StringVar(&c.AllowUsers, "allow-users", "", `local users served besides the daemon's own and root: names or uids, comma-separated ("*": any user)`)
	fs.StringVar(&c.AllowGroup, "allow-group", "", "serve the members of these groups too: names or gids, comma-separated")
	c.Mod.bind(fs)
	c.Rev.bind(fs)
	c.Access.bind(fs)
	c.envErrs = applyEnv(fs, serveEnv)
}

func (c *serveConfig) check() error {
	if len(c.envErrs) > 0 {
		return c.envErrs[0]
	}
	proxies := c.Mod.enabled() || c.Rev.enabled()
	switch {
	case c.Plugin == "" && !proxies:
		return errors.New("serve needs --plugin (a port number or a Unix socket path), or --http with --modproxy or --revproxy")
	case proxies && c.HTTP == "":
		return errors.New("--modproxy and --revproxy need --http")
	case c.ShutdownTimeout < 0:
		return errors.New("--shutdown-timeout must not be negative")
	case c.WriteTimeout <= 0:
		return errors.New("--write-timeout must be positive")
	}
	if c.Plugin != "" {
		if _, err := daemon.ParseAddr(c.Plugin); err != nil {
			return fmt.Errorf("--plugin: %v", err)
		}
	}
	if _, err := c.policy(""); err != nil {
		return err
	}
	if err := c.Mod.check(); err != nil {
		return err
	}
	if err := c.Rev.check(); err != nil {
		return err
	}
	if err := c.Access.check(c.HTTP); err != nil {
		return err
	}
	if c.HTTP != "" {
		if _, err := ops.ListenAddr(c.HTTP); err != nil {
			return fmt.Errorf("--http=%q: %v", c.HTTP, err)
		}
	}
	return nil
}

func serveCommand(cfg *config) *command.C {
	sc := new(serveConfig)
	return &command.C{
		Name:  "serve",
		Usage: "--plugin=<port|socket> [--http=[host]:port] [flags]\n--http=[host]:port --modproxy|--revproxy=<hosts> [flags]",
		Help: `Run the cache as a daemon shared by every go command on the host.

The daemon serves the cache-prog protocol on --plugin: a port number means TCP
on 127.0.0.1 only; anything else is the path of a Unix socket, created with
mode 0600 (a stale socket file is replaced; a live daemon's is left alone).
Go commands reach it through the connect command:

   go-cache-plugin serve --plugin=5930 &
   export GOCACHEPROG="go-cache-plugin connect 5930"

On a Unix socket, connect hands the go command's pipes over to the daemon,
which then talks to the go command directly; over TCP connect copies the
protocol through, at some cost per request. Prefer a socket where you can.

All sessions share one store; the global flags (--cache-dir, --bucket, -c
per session, ...) apply. A client's close ends its own session only.

With --http, an HTTP listener serves /metrics (Prometheus), /healthz,
/debug/pprof/ and a status page at /. On a listener reachable beyond this
host (--http=0.0.0.0:5970, say), pprof is off unless --http-pprof, and
--http-token-file (or $GOCACHE_HTTP_TOKEN) makes every request but /healthz
carry a token: "Authorization: Bearer <token>", or, through the proxy,
HTTPS_PROXY=http://ci:<token>@host:5970. See "help revproxy" for what the
proxy relays. The same listener can serve a caching,
checksum-verified Go module proxy at /mod/ (--modproxy; see "help modproxy")
and be a caching HTTP(S) proxy for other ecosystems' downloads (--revproxy;
see "help revproxy"). With one of those, --plugin may be left out.

The daemon serves its own user and root only. It learns each client's user
from the kernel (SO_PEERCRED on the socket, the socket table for TCP) and
refuses others, with a message that connect prints. --allow-users and
--allow-group serve further local users; the socket is then made 0660 in
the group if --allow-group names one group and nothing else, else 0666. A user
who is served must be able to read the objects in --cache-dir, since the
go command reads them by path: the daemon checks the directories down to
them and its umask, and refuses, saying what to change, a user who could
not (see "Several users on one host" in docs/operations.md).

On SIGINT or SIGTERM the daemon stops accepting, lets live sessions finish
for --shutdown-timeout, drains pending uploads for --drain-timeout, reports
what it had to cut and exits 0. A second signal cuts the waits short.`,
		SetFlags: func(_ *command.Env, fs *flag.FlagSet) { sc.bind(fs) },
		Run: func(env *command.Env) error {
			if len(env.Args) > 0 {
				return env.Usagef("serve takes no arguments, got %q", env.Args)
			}
			if err := sc.check(); err != nil {
				return env.Usagef("%v", err)
			}
			return failed(runServe(env, cfg, sc))
		},
	}
}

// policy returns whom the daemon serves, for a store in cacheDir (if not
// empty, the dir checked for other users' access).
func (c *serveConfig) policy(cacheDir string) (*daemon.Policy, error) {
	p := &daemon.Policy{
		Self:     os.Geteuid(),
		CacheDir: cacheDir,
		Umask:    fs.FileMode(daemon.CurrentUmask()),
		Egid:     os.Getegid(),
	}
	if strings.TrimSpace(c.AllowUsers) == "*" {
		p.AnyUser = true
	} else if c.AllowUsers != "" {
		users, err := daemon.ParseUsers(c.AllowUsers)
		if err != nil {
			return nil, fmt.Errorf("--allow-users: %v", err)
		}
		p.Users = users
	}
	if c.AllowGroup != "" {
		groups, err := daemon.ParseGroups(c.AllowGroup)
		if err != nil {
			return nil, fmt.Errorf("--allow-group: %v", err)
		}
		p.Groups = groups
	}
	p.UnixOwnerOnly = !p.AnyUser && len(p.Users) == 0 && len(p.Groups) == 0
	return p, nil
}

// socketOptions is how the socket is made for policy p: open to the
// users it serves, who are checked one by one as they connect.
func socketOptions(p *daemon.Policy) daemon.ListenOptions {
	switch {
	case p.AnyUser || len(p.Users) > 0 || len(p.Groups) > 1:
		return daemon.ListenOptions{Perm: 0o666}
	case len(p.Groups) == 1:
		return daemon.ListenOptions{Perm: 0o660, Group: p.Groups[0]}
	}
	return daemon.ListenOptions{}
}

// version names the running binary for the status page and metrics: its
// module version ("devel" if it has none) and the commit, unless the
// version (a pseudo-version the go command stamped from git) holds it.
func version() string {
	vi := command.GetVersionInfo()
	v := vi.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	if c := vi.Commit[:min(12, len(vi.Commit))]; c != "" && !strings.Contains(v, c) {
		v += " " + c
	}
	if vi.Modified && !strings.HasSuffix(v, "+dirty") {
		v += "+dirty"
	}
	return v
}

// runServe runs the daemon until SIGINT or SIGTERM.
func runServe(env *command.Env, cfg *config, sc *serveConfig) error {
	ctx := env.Context() // cancelled by SIGINT and SIGTERM
	logf := logger(true)

	// Whom to serve (read the umask before anything runs that may
	// create files).
	policy, err := sc.policy(cfg.CacheDir)
	if err != nil {
		return err
	}

	// Listen first: a live daemon on the socket should stop us before
	// anything else is set up.
	var pl net.Listener
	var addr daemon.Addr
	if sc.Plugin != "" {
		addr, _ = daemon.ParseAddr(sc.Plugin) // checked
		var err error
		if pl, err = daemon.ListenWith(addr, socketOptions(policy)); err != nil {
			return err
		}
		defer pl.Close()
	}
	var hl net.Listener
	var web *ops.Server
	if sc.HTTP != "" {
		var err error
		if hl, err = ops.Listen(sc.HTTP); err != nil {
			return fmt.Errorf("--http: %w", err)
		}
		defer hl.Close()
		web = ops.New(version())
		sc.Access.apply(web, hl, logf)
		sc.Rev.loopbackListener = ops.IsLoopback(hl.Addr())
		cfg.wrapRemote = web.InstrumentRemote
	}

	st, stopCheck, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer stopCheck()
	cache := &gobuild.Cache{
		Store:         st,
		MinUploadSize: cfg.MinUploadSize,
		Logf:          logf,
	}

	// The HTTP front ends, each stopped (its fills finished or cut) before
	// the store closes.
	var stops []func(context.Context) error
	if sc.Mod.enabled() {
		stop, err := startModProxy(ctx, cfg, &sc.Mod, st, web, logf)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	if sc.Rev.enabled() {
		stop, err := startRevProxy(ctx, cfg, &sc.Rev, st, web, logf)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}

	// Each session is a build with the manifests its client asks for (see
	// sessionManifests).
	manifests, names := newManifests(cfg, cache), manifestNames(cfg, false)
	if web != nil {
		web.WatchPrefetch(manifests)
	}
	var d *daemon.Server
	serveErr := make(chan error, 2)
	if pl != nil {
		session := func(opts daemon.SessionOptions) cacheprog.FastGetter {
			return beginBuild(ctx, manifests, cache.Session(), sessionManifests(cfg, opts, logf))
		}
		newHandler := func(opts daemon.SessionOptions) cacheprog.Handler { return session(opts) }
		if web != nil {
			fe := web.NewFrontEnd("build")
			newHandler = func(opts daemon.SessionOptions) cacheprog.Handler { return ops.InstrumentHandler(session(opts), fe) }
		}
		policy.CacheDir = st.Dir()
		d = &daemon.Server{
			NewHandler:     newHandler,
			Admit:          policy.Admit,
			MaxConcurrency: cfg.Concurrency,
			WriteTimeout:   sc.WriteTimeout,
			Logf:           logf,
			Verbosef:       logger(cfg.Verbose),
		}
		if cfg.Debug.has(debugBuild) {
			d.Debugf = logf
		}
		go func() { serveErr <- d.Serve(pl) }()
		target := sc.Plugin
		if addr.Network == "tcp" {
			_, target, _ = net.SplitHostPort(pl.Addr().String())
		}
		logf("serving the cache-prog protocol on %s %s; use GOCACHEPROG=\"go-cache-plugin connect %s\"",
			addr.Network, pl.Addr(), target)
		if !policy.UnixOwnerOnly {
			logf("serving other users: %s", policy)
		}
	}
	if web != nil {
		web.WatchStore(st)
		if d != nil {
			web.WatchSessions(d.Stats)
		}
		go func() {
			if err := web.Serve(hl); err != nil {
				serveErr <- fmt.Errorf("HTTP listener: %w", err)
			}
		}()
		logf("serving HTTP on http://%s/", hl.Addr())
	}

	// Sessions and HTTP requests finish within --shutdown-timeout; then the
	// proxies' fills (lib/daemon.Lifetime); then the uploads within
	// --drain-timeout. A second signal cuts the waits short.
	life := &daemon.Lifetime{Sessions: d, FrontEnds: stops, Timeout: sc.ShutdownTimeout, Logf: logf}
	if web != nil {
		life.HTTP, life.Draining = web, web.SetDraining
	}
	runErr := life.Wait(ctx, serveErr)
	hurry, stopHurry := daemon.Hurry(logf)
	defer stopHurry()
	rep := life.Stop(hurry)

	queued := st.Stats().UploadQueue
	drainErr := closeStore(hurry, cfg, st)

	var b strings.Builder
	b.WriteString("shutdown complete")
	if r := rep.String(); r != "" {
		b.WriteString(": " + r)
	}
	switch {
	case drainErr != nil:
		fmt.Fprintf(&b, "; uploads: %v", drainErr)
	case queued > 0:
		fmt.Fprintf(&b, "; uploads: %d drained", queued)
	}
	logf("%s", b.String())
	if cfg.Metrics {
		printMetrics(cache, st)
		printPrefetchMetrics(manifests, names)
	}
	return runErr
}

// subcommandEnvHelp lists the environment variables of the subcommands'
// flags, for "help environment".
func subcommandEnvHelp() string {
	var b strings.Builder
	for _, c := range []struct {
		name string
		vars []envVar
		bind func(*flag.FlagSet)
	}{
		{"serve", serveEnv, func(fs *flag.FlagSet) { new(serveConfig).bind(fs) }},
		{"connect", connectEnv, func(fs *flag.FlagSet) { new(connectConfig).bind(fs) }},
	} {
		var fs flag.FlagSet
		c.bind(&fs)
		fmt.Fprintf(&b, "\nFlags of %q:\n\n", c.name)
		for _, v := range c.vars {
			usage := strings.TrimSuffix(fs.Lookup(v.Flag).Usage, fmt.Sprintf(" ($%s)", v.Env))
			fmt.Fprintf(&b, "  %-26s %-21s %s\n", v.Env, "--"+v.Flag, usage)
		}
	}
	return b.String()
}
