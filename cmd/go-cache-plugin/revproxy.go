package main

import (
	"context"
	"flag"

	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// revProxyFlags are the serve flags of the reverse proxy (lib/revproxy).
type revProxyFlags struct {
	Hosts string
}

// revProxyEnv lists the environment variables of the reverse proxy flags.
var revProxyEnv = []envVar{
	{"revproxy", "GOCACHE_REVPROXY"},
}

func (m *revProxyFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&m.Hosts, "revproxy", "", "with --http: be a caching HTTP(S) proxy for these hosts (comma-separated)")
}

func (m *revProxyFlags) enabled() bool { return m.Hosts != "" }

func (m *revProxyFlags) check() error { return nil }

// revProxyHelp is the "help revproxy" topic: setup, flags and behaviour.
const revProxyHelp = `The reverse proxy (TODO).`

// startRevProxy mounts the reverse proxy on web and returns a function that
// stops it, finishing or cutting its fills by the time ctx ends.
func startRevProxy(ctx context.Context, cfg *config, m *revProxyFlags, st *store.Store, web *ops.Server, logf func(string, ...any)) (stop func(context.Context) error, err error) {
	return func(context.Context) error { return nil }, nil
}
