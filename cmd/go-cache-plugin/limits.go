package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// bindLimits defines the global flags of cache hygiene and trust.
func (c *config) bindLimits(fs *flag.FlagSet) {
	fs.Var(&c.MaxSize, "max-size", "bound the cache directory, removing the least recently used objects (e.g. 20GiB, 500MB; default: no bound)")
	fs.Var(&c.Expiry, "expiry", "remove objects unused for this long (e.g. 30d, 72h; default: never)")
	fs.BoolVar(&c.ReadOnly, "read-only", false, "read the bucket but never write it (the cache directory is written as usual)")
}

// limits returns the bounds of the cache directory.
func (c *config) limits() store.Limits {
	return store.Limits{MaxSize: int64(c.MaxSize), Expiry: time.Duration(c.Expiry)}
}

// describeStore says how the store is set up, for the line at startup.
func describeStore(cfg *config, st *store.Store) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cache directory %s", st.Dir())
	lim := cfg.limits()
	switch {
	case lim.IsZero():
		b.WriteString(" (no size bound)")
	default:
		var parts []string
		if lim.MaxSize > 0 {
			parts = append(parts, "max size "+formatBytes(lim.MaxSize))
		}
		if lim.Expiry > 0 {
			parts = append(parts, "expiry "+formatAge(lim.Expiry))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	switch {
	case st.HasRemote() && st.ReadOnly():
		fmt.Fprintf(&b, "; bucket %s, read-only: read, never written", cfg.Bucket)
	case st.HasRemote():
		fmt.Fprintf(&b, "; bucket %s, read and written", cfg.Bucket)
	case cfg.Bucket != "":
		fmt.Fprintf(&b, "; bucket %s unusable: local only", cfg.Bucket)
	default:
		b.WriteString("; no bucket")
	}
	return b.String()
}

// announceStore makes the store's setup be logged at startup whatever -v
// says, for commands (serve) whose log is read by operators.
func announceStore(c *command.C, cfg *config) {
	if c == nil {
		return
	}
	run := c.Run
	c.Run = func(env *command.Env) error {
		cfg.announce = true
		return run(env)
	}
}
