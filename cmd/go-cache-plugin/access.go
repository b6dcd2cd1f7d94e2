package main

import (
	"errors"
	"flag"
	"fmt"
	"net"

	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
)

// httpAccessFlags guard the --http listener (internal/ops Access).
type httpAccessFlags struct {
	Token     string
	TokenFile string
	Pprof     bool
}

var httpAccessEnv = []envVar{
	{"http-token", "GOCACHE_HTTP_TOKEN"},
	{"http-token-file", "GOCACHE_HTTP_TOKEN_FILE"},
	{"http-pprof", "GOCACHE_HTTP_PPROF"},
}

func init() { serveEnv = append(serveEnv, httpAccessEnv...) }

func (a *httpAccessFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&a.Token, "http-token", "", "a token every request to --http must carry but /healthz (Authorization: Bearer, or Proxy-Authorization for proxy requests; Basic with the token as password works too); prefer --http-token-file or the variable, which ps does not show")
	fs.StringVar(&a.TokenFile, "http-token-file", "", "read the --http-token from this file")
	fs.BoolVar(&a.Pprof, "http-pprof", false, "serve /debug/pprof/ on an --http listener reachable beyond this host (a loopback one always serves it)")
}

func (a *httpAccessFlags) check(httpAddr string) error {
	switch {
	case httpAddr == "" && (a.Token != "" || a.TokenFile != "" || a.Pprof):
		return errors.New("--http-token, --http-token-file and --http-pprof need --http")
	case a.Token != "" && a.TokenFile != "":
		return errors.New("--http-token and --http-token-file: give one of them")
	case a.Token != "":
		if err := ops.CheckToken(a.Token); err != nil {
			return fmt.Errorf("--http-token: %v", err)
		}
	case a.TokenFile != "":
		tok, err := ops.ReadTokenFile(a.TokenFile)
		if err != nil {
			return fmt.Errorf("--http-token-file: %v", err)
		}
		a.Token = tok
	}
	return nil
}

// apply sets the access of web, listening on l, and says what is exposed.
func (a *httpAccessFlags) apply(web *ops.Server, l net.Listener, logf func(string, ...any)) {
	local := ops.IsLoopback(l.Addr())
	web.SetAccess(ops.Access{Token: a.Token, Pprof: local || a.Pprof})
	switch {
	case local:
	case a.Token == "":
		logf("HTTP listener %s is reachable beyond this host without a token: anyone who reaches it can read the status page and metrics, and use its proxies (--http-token-file)", l.Addr())
	}
	if !local && !a.Pprof {
		logf("HTTP listener %s is reachable beyond this host: /debug/pprof/ is off (--http-pprof)", l.Addr())
	}
}
