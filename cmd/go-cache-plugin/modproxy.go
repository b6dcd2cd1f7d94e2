package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
	"github.com/go-cache-plugin/go-cache-plugin/lib/modproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// modProxyFlags are the serve flags of the module proxy (lib/modproxy).
type modProxyFlags struct {
	Enabled  bool
	Upstream optString
	SumDB    optString
	NoSumDB  optString
	TTL      time.Duration
	Timeout  time.Duration

	http flag.Value // the --http flag, to tell this server from its upstream
}

// optString is a string flag that knows whether it was set (by a flag or
// its environment variable), even to "".
type optString struct {
	val string
	set bool
}

func (o *optString) String() string { return o.val }
func (o *optString) Set(s string) error {
	o.val, o.set = s, true
	return nil
}

// modProxyEnv lists the environment variables of the module proxy flags.
var modProxyEnv = []envVar{
	{"modproxy", "GOCACHE_MODPROXY"},
	{"modproxy-upstream", "GOCACHE_MODPROXY_UPSTREAM"},
	{"sumdb", "GOCACHE_SUMDB"},
	{"modproxy-nosumdb", "GOCACHE_MODPROXY_NOSUMDB"},
	{"modproxy-ttl", "GOCACHE_MODPROXY_TTL"},
	{"modproxy-timeout", "GOCACHE_MODPROXY_TIMEOUT"},
}

func (m *modProxyFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&m.Enabled, "modproxy", false, "with --http: serve a caching, checksum-verified Go module proxy at /mod/")
	fs.Var(&m.Upstream, "modproxy-upstream", "module proxy to fetch from (default: the first http(s) entry of go env GOPROXY that is not this server)")
	fs.Var(&m.SumDB, "sumdb", "checksum databases to proxy and verify against, comma-separated names or name+hash+key (the first verifies), or off (default: go env GOSUMDB; see \"help modproxy\")")
	fs.Var(&m.NoSumDB, "modproxy-nosumdb", "module path patterns not verified, GONOSUMDB syntax (default: go env GONOSUMDB, else GOPRIVATE)")
	fs.DurationVar(&m.TTL, "modproxy-ttl", modproxy.DefaultTTL, "how long list, @latest and the checksum database's latest are served before the upstream is asked again")
	fs.DurationVar(&m.Timeout, "modproxy-timeout", modproxy.DefaultTimeout, "bound of each upstream request (zips: of the wait for the response; a zip may take 20 times longer)")
	m.http = fs.Lookup("http").Value
}

func (m *modProxyFlags) enabled() bool { return m.Enabled }

func (m *modProxyFlags) check() error {
	if !m.Enabled {
		return nil
	}
	switch {
	case m.TTL <= 0:
		return errors.New("--modproxy-ttl must be positive")
	case m.Timeout <= 0:
		return errors.New("--modproxy-timeout must be positive")
	}
	if m.Upstream.set {
		if err := checkUpstream(m.Upstream.val); err != nil {
			return fmt.Errorf("--modproxy-upstream: %v", err)
		}
	}
	if m.SumDB.set {
		// A name's key may come from GOSUMDB: check the keys given here,
		// and resolve names at startup (modProxyConfig).
		if err := checkSumDBList(m.SumDB.val); err != nil {
			return fmt.Errorf("--sumdb: %v", err)
		}
	}
	return nil
}

func checkUpstream(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// checkSumDBList checks the entries of --sumdb that are verifier keys;
// names are resolved by modproxy.SumDBKeys once GOSUMDB is known.
func checkSumDBList(s string) error {
	var keys []string
	for e := range strings.SplitSeq(s, ",") {
		if e = strings.TrimSpace(e); strings.Contains(e, "+") {
			keys = append(keys, e)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	_, err := modproxy.SumDBKeys(strings.Join(keys, ","), "off")
	return err
}

// modProxyHelp is the "help modproxy" topic: setup, flags and behaviour.
const modProxyHelp = `The module proxy: a caching, checksum-verified GOPROXY for every go command
on the host (or the network), that keeps working when the upstream is down.

   go-cache-plugin serve --http=localhost:5970 --modproxy [--bucket=...] &
   export GOPROXY=http://localhost:5970/mod

The daemon serves the GOPROXY protocol at /mod/ (list, .info, .mod, .zip,
@latest) and the checksum database at /mod/sumdb/<name>/, so the go command
verifies go.sum through it too (GOSUMDB stays as it is). Module files are
kept in --cache-dir and, with --bucket, in the shared bucket, under
module/<xx>/<sha256 of the request path>.

Before a .mod or .zip is cached or served, its hash is checked against the
checksum database (signed tree and inclusion proof checked, as the go
command does); a file that does not match is refused with a 502 whose
message says so, and never cached. Files read back from the bucket are
checked again. Modules matching --modproxy-nosumdb are not checked.

.info, .mod and .zip of a version are cached for good; list, @latest and
the database's latest tree for --modproxy-ttl, then asked again. When the
upstream fails they are served from the last copy (this daemon's, or
another one's in the bucket), with the header "X-Cache: stale". A 404 or
410 of the upstream is passed on; any other failure is a 502 (504 for a
timeout), never a 404.

Flags (each has a variable; see "help environment"):

  --modproxy            serve the module proxy at /mod/ (needs --http)
  --modproxy-upstream   the proxy to fetch from; default: the first http(s)
                        entry of "go env GOPROXY" that is not this server
  --sumdb               the databases to proxy, comma-separated; the first
                        verifies. Each is a name (the reference tool's
                        form) or name+hash+key. A name's key comes from
                        GOSUMDB if it has one for that name, else from the
                        keys compiled in (the go command's default
                        database); "off": none. Default: go env GOSUMDB
  --modproxy-nosumdb    patterns of module paths not verified (GONOSUMDB
                        syntax); default: go env GONOSUMDB, else GOPRIVATE
  --modproxy-ttl        freshness of list, @latest and latest (1m)
  --modproxy-timeout    bound of each upstream request (30s; a zip's whole
                        download may take 20 times that)

With -v the daemon logs fills, refusals and stale answers; with --debug=2
(or --debug), every request. /metrics has the proxy's counts under
frontend="modproxy" and gocacheplugin_modproxy_*. More in docs/modproxy.md.`

// goEnv is what the module proxy needs of "go env".
type goEnvVars struct {
	GOPROXY, GOSUMDB, GONOSUMDB, GOPRIVATE string
}

// readGoEnv runs "go env -json".
func readGoEnv(ctx context.Context) (goEnvVars, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "env", "-json", "GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return goEnvVars{}, fmt.Errorf("go env: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var v goEnvVars
	if err := json.Unmarshal(out, &v); err != nil {
		return goEnvVars{}, fmt.Errorf("go env: %v", err)
	}
	return v, nil
}

// defaultUpstream picks the first http(s) entry of goproxy that is not
// self (the --http address, host:port).
func defaultUpstream(goproxy, self string) (string, bool) {
	selfHost, selfPort, _ := net.SplitHostPort(self)
	for entry := range strings.FieldsFuncSeq(goproxy, func(r rune) bool { return r == ',' || r == '|' }) {
		u, err := url.Parse(strings.TrimSpace(entry))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		if selfPort != "" && selfPort != "0" && u.Port() == selfPort && (isLoopback(u.Hostname()) || u.Hostname() == selfHost) {
			continue // this server
		}
		return strings.TrimSpace(entry), true
	}
	return "", false
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// modProxyConfig resolves the flags, with "go env" for those not set.
func modProxyConfig(ctx context.Context, m *modProxyFlags, logf func(string, ...any)) (upstream string, sumdbs []string, nosumdb string, err error) {
	// The go command's settings, or without it (not needed, or not on
	// PATH) the checksum settings as the process's own variables have
	// them: GOSUMDB may hold the key of a database --sumdb names.
	env := goEnvVars{GOSUMDB: os.Getenv("GOSUMDB"), GONOSUMDB: os.Getenv("GONOSUMDB"), GOPRIVATE: os.Getenv("GOPRIVATE")}
	var envErr error
	if !m.Upstream.set || !m.SumDB.set || !m.NoSumDB.set {
		var goenv goEnvVars
		if goenv, envErr = readGoEnv(ctx); envErr == nil {
			env = goenv
		} else if !m.SumDB.set || !m.NoSumDB.set {
			logf("module proxy: %v: using GOSUMDB=%q GONOSUMDB=%q GOPRIVATE=%q from the environment", envErr, env.GOSUMDB, env.GONOSUMDB, env.GOPRIVATE)
		}
	}
	need := func(flag string) error {
		return fmt.Errorf("module proxy: cannot read %s from the go command (%v): set it with %s", flag, envErr, flag)
	}

	upstream = m.Upstream.val
	if !m.Upstream.set {
		if envErr != nil {
			return "", nil, "", need("--modproxy-upstream")
		}
		self := ""
		if m.http != nil {
			self, _ = ops.ListenAddr(m.http.String())
		}
		var ok bool
		if upstream, ok = defaultUpstream(env.GOPROXY, self); !ok {
			return "", nil, "", fmt.Errorf("module proxy: go env GOPROXY=%q has no http(s) proxy other than this server: set --modproxy-upstream", env.GOPROXY)
		}
	}

	list, from := m.SumDB.val, fmt.Sprintf("--sumdb=%q", m.SumDB.val)
	if !m.SumDB.set {
		list, from = "", fmt.Sprintf("GOSUMDB=%q", env.GOSUMDB)
	}
	if sumdbs, err = modproxy.SumDBKeys(list, env.GOSUMDB); err != nil {
		return "", nil, "", fmt.Errorf("module proxy: %s: %v", from, err)
	}
	if len(sumdbs) == 0 {
		logf("module proxy: WARNING: no checksum database (GOSUMDB or --sumdb off): module files are not verified")
	}

	nosumdb = m.NoSumDB.val
	if !m.NoSumDB.set {
		nosumdb = env.GONOSUMDB
		if nosumdb == "" {
			nosumdb = env.GOPRIVATE
		}
	}
	return upstream, sumdbs, nosumdb, nil
}

// startModProxy mounts the module proxy on web and returns a function that
// stops it, finishing or cutting its fills by the time ctx ends.
func startModProxy(ctx context.Context, cfg *config, m *modProxyFlags, st *store.Store, web *ops.Server, logf func(string, ...any)) (stop func(context.Context) error, err error) {
	if web == nil {
		return nil, errors.New("--modproxy needs --http")
	}
	upstream, sumdbs, nosumdb, err := modProxyConfig(ctx, m, logf)
	if err != nil {
		return nil, err
	}
	fe := web.NewFrontEnd("modproxy")
	pc := modproxy.Config{
		Store:      st,
		Upstream:   upstream,
		SumDBs:     sumdbs,
		NoSumDB:    nosumdb,
		TTL:        m.TTL,
		Timeout:    m.Timeout,
		ZipTimeout: 20 * m.Timeout,
		Logf:       logf,
		Verbosef:   logger(cfg.Verbose),
		Recorder:   fe,
	}
	if cfg.Debug.has(debugModProxy) {
		pc.Debugf = logf
	}
	p, err := modproxy.New(pc)
	if err != nil {
		return nil, err
	}
	web.WatchModProxy(p)
	web.HandleRaw("/mod/", http.StripPrefix("/mod", p)) // paths as sent: the proxy refuses dot segments

	var dbs []string
	for _, k := range sumdbs {
		dbs = append(dbs, strings.SplitN(k, "+", 2)[0])
	}
	verify := "no checksum database"
	if len(dbs) > 0 {
		verify = "verifying against " + dbs[0]
		if len(dbs) > 1 {
			verify += "; also proxying " + strings.Join(dbs[1:], ", ")
		}
	}
	if nosumdb != "" {
		verify += " except " + nosumdb
	}
	logf("module proxy at /mod/: upstream %s, %s; list and @latest fresh for %v", upstream, verify, m.TTL)
	return p.Close, nil
}
