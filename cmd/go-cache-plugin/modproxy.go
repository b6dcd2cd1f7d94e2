package main

import (
	"context"
	"flag"

	"github.com/go-cache-plugin/go-cache-plugin/internal/ops"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// modProxyFlags are the serve flags of the module proxy (lib/modproxy).
type modProxyFlags struct {
	Enabled bool
}

// modProxyEnv lists the environment variables of the module proxy flags.
var modProxyEnv = []envVar{
	{"modproxy", "GOCACHE_MODPROXY"},
}

func (m *modProxyFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&m.Enabled, "modproxy", false, "with --http: serve a caching Go module proxy at /mod/")
}

func (m *modProxyFlags) enabled() bool { return m.Enabled }

func (m *modProxyFlags) check() error { return nil }

// modProxyHelp is the "help modproxy" topic: setup, flags and behaviour.
const modProxyHelp = `The module proxy (TODO).`

// startModProxy mounts the module proxy on web and returns a function that
// stops it, finishing or cutting its fills by the time ctx ends.
func startModProxy(ctx context.Context, cfg *config, m *modProxyFlags, st *store.Store, web *ops.Server, logf func(string, ...any)) (stop func(context.Context) error, err error) {
	return func(context.Context) error { return nil }, nil
}
