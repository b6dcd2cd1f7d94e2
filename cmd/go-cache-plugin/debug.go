package main

import (
	"fmt"
	"strconv"
	"strings"
)

// debugMask is the value of --debug (GOCACHE_DEBUG): which front ends log
// every request. It takes the reference tool's bit mask (1 build cache,
// 2 module proxy, 4 reverse proxy) as well as a boolean: true is all of
// them, false none. As a boolean flag, a bare --debug is true.
type debugMask uint8

// The bits of a debugMask, those of the reference tool.
const (
	debugBuild    debugMask = 1 << iota // the build cache: every cache-prog request and response
	debugModProxy                       // the module proxy: every request under /mod/
	debugRevProxy                       // the reverse proxy: every proxied request

	debugAll = debugBuild | debugModProxy | debugRevProxy
)

func (d *debugMask) String() string { return strconv.Itoa(int(*d)) }

// Set parses a mask (a decimal number from 0 to 7) or a boolean. A number
// is read as a mask first, so "1" is the build cache alone, as in the
// reference tool.
func (d *debugMask) Set(s string) error {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n > uint64(debugAll) {
			return fmt.Errorf("bit mask %d has unknown bits: want 0 to %d (1 build cache, 2 module proxy, 4 reverse proxy)", n, debugAll)
		}
		*d = debugMask(n)
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true, false or a bit mask from 0 to %d (1 build cache, 2 module proxy, 4 reverse proxy)", debugAll)
	}
	*d = 0
	if b {
		*d = debugAll
	}
	return nil
}

// IsBoolFlag lets --debug stand alone, meaning true. A mask needs the
// "=" form: --debug=4.
func (d *debugMask) IsBoolFlag() bool { return true }

// has reports whether any of the bits of b are set.
func (d debugMask) has(b debugMask) bool { return d&b != 0 }

// debugHelp is the "help debug" topic.
const debugHelp = `Per-request logging: --debug and GOCACHE_DEBUG.

--debug logs one line per request, on stderr, for the front ends it names.
Its value is a bit mask, as in the reference tool, or a boolean:

   1      the build cache: every cache-prog request and response
          (direct mode, and each session of serve)
   2      the module proxy: every request under /mod/ (serve --modproxy)
   4      the reverse proxy: every proxied request (serve --revproxy)
   true   all of them (a bare --debug means true)
   false  none; 0 too (the default)

Add the bits for several: --debug=6 is both proxies. Give a mask with "=":
--debug=4, or GOCACHE_DEBUG=4; "--debug 4" reads as a bare --debug (all)
followed by an argument, which is a usage error.

-v logs decisions (misses from the bucket, refused objects, stale answers)
whatever --debug says. The line formats are in the package docs of
lib/daemon, lib/modproxy and lib/revproxy (go doc).`
