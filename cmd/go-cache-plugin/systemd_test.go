package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unitFile is the systemd unit shipped in scripts/.
const unitFile = "../../scripts/go-cache-plugin.service"

// parseUnit reads a systemd unit file: section -> key -> values, in order,
// with continuation lines joined and comments dropped.
func parseUnit(r io.Reader) (map[string]map[string][]string, error) {
	units := map[string]map[string][]string{}
	var section, pending string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if units[section] == nil {
				units[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is not key=value in a section", n, line)
		}
		k = strings.TrimSpace(k)
		units[section][k] = append(units[section][k], strings.TrimSpace(v))
	}
	return units, sc.Err()
}

// parseTimeSpan parses a systemd time span: "105", "90s", "1min 30s",
// "2m", "500ms".
func parseTimeSpan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"ms": time.Millisecond, "msec": time.Millisecond,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
	}
	var total time.Duration
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, fmt.Errorf("empty time span")
	}
	for _, f := range fields {
		i := strings.IndexFunc(f, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if i < 0 {
			i = len(f)
		}
		n, err := strconv.ParseFloat(f[:i], 64)
		u, ok := units[f[i:]]
		if err != nil || !ok {
			return 0, fmt.Errorf("bad time span %q", s)
		}
		total += time.Duration(n * float64(u))
	}
	return total, nil
}

func TestParseTimeSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"105": 105 * time.Second, "90s": 90 * time.Second, "1min 30s": 90 * time.Second,
		"2m": 2 * time.Minute, "500ms": 500 * time.Millisecond, "1h 1min": 61 * time.Minute,
	} {
		if got, err := parseTimeSpan(in); err != nil || got != want {
			t.Errorf("parseTimeSpan(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "5 parsecs", "1x"} {
		if got, err := parseTimeSpan(in); err == nil {
			t.Errorf("parseTimeSpan(%q) = %v, want an error", in, got)
		}
	}
}

// TestSystemdUnit checks scripts/go-cache-plugin.service against the
// binary's flags: ExecStart parses as a serve command line, and
// TimeoutStopSec covers --shutdown-timeout plus --drain-timeout (as given
// there, or their defaults) with a margin, so that a stop never kills the
// daemon while it drains. The socket and cache directories are the ones
// systemd makes for the service's user.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit, err := parseUnit(f)
	if err != nil {
		t.Fatalf("%s: %v", unitFile, err)
	}
	svc := unit["Service"]
	one := func(key string) string {
		t.Helper()
		if v := svc[key]; len(v) == 1 && v[0] != "" {
			return v[0]
		}
		t.Fatalf("%s: [Service] %s = %q, want one value", unitFile, key, svc[key])
		return ""
	}

	// ExecStart is a serve command line the binary accepts (global and
	// serve flags mixed, as the binary merges them).
	argv := strings.Fields(strings.TrimLeft(one("ExecStart"), "-@:+!"))
	if len(argv) < 2 || path.Base(argv[0]) != "go-cache-plugin" || argv[1] != "serve" {
		t.Fatalf("ExecStart = %q, want go-cache-plugin serve ...", argv)
	}
	for _, kv := range os.Environ() { // the flags' defaults, not this machine's settings
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GOCACHE_") {
			t.Setenv(k, "")
		}
	}
	// The unit serves the members of its own group, which exists where the
	// unit is installed, not on this machine: check that it is the unit's
	// Group, then parse it as a group that exists here (gid 0).
	group := one("Group")
	allowed := false
	for i, a := range argv {
		if v, ok := strings.CutPrefix(a, "--allow-group="); ok {
			if v != group {
				t.Errorf("ExecStart has --allow-group=%s, want the unit's Group %s", v, group)
			}
			argv[i], allowed = "--allow-group=0", true
		}
	}
	if !allowed {
		t.Errorf("ExecStart has no --allow-group: the unit's group would not be served")
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg config
	var sc serveConfig
	cfg.bind(fs)
	sc.bind(fs)
	if err := fs.Parse(argv[2:]); err != nil || fs.NArg() != 0 {
		t.Fatalf("ExecStart flags %q: %v (args %q)", argv[2:], err, fs.Args())
	}
	if err := cfg.check(); err != nil {
		t.Errorf("ExecStart: %v", err)
	}
	if err := sc.check(); err != nil {
		t.Errorf("ExecStart: %v", err)
	}

	stop, err := parseTimeSpan(one("TimeoutStopSec"))
	if err != nil {
		t.Fatal(err)
	}
	const margin = 10 * time.Second
	if need := sc.ShutdownTimeout + cfg.DrainTimeout + margin; stop < need {
		t.Errorf("TimeoutStopSec=%v, want at least --shutdown-timeout (%v) + --drain-timeout (%v) + %v", stop, sc.ShutdownTimeout, cfg.DrainTimeout, margin)
	}

	// The socket is in the runtime directory, the cache in the cache
	// directory, both made by systemd for User.
	one("User")
	if r := one("Restart"); r != "on-failure" && r != "always" {
		t.Errorf("Restart=%s, want on-failure or always", r)
	}
	if want := "/run/" + one("RuntimeDirectory") + "/"; !strings.HasPrefix(sc.Plugin, want) {
		t.Errorf("--plugin=%s is not in the RuntimeDirectory %s", sc.Plugin, want)
	}
	if want := "/var/cache/" + one("CacheDirectory"); cfg.CacheDir != want {
		t.Errorf("--cache-dir=%s, want the CacheDirectory %s", cfg.CacheDir, want)
	}
}
