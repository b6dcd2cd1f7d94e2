package gobuild

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/modfile"
)

// Manifest names. A build's manifest lists the actions it asked for, so
// builds that ask for different sets of actions need manifests of their
// own: a cold worker prefetching another job kind's manifest (a build
// reading what a "go test -race" listed) fetches much and uses little.
// The derived name of a build's manifest is
//
//	<module>@<goos>-<goarch>[.<kind>]
//
// where <module> is the path of the module in the go command's working
// directory, and <kind> names what in the go command changes the actions
// it asks for: the go subcommand, then "-race", "-msan", "-asan",
// "-cover" and "-nocgo" (CGO_ENABLED=0) when they apply, then, if any
// other setting that changes action IDs or the action set is given, a
// dash and six hex digits of a hash of them all ([JobKind]). For example
//
//	golang.org_x_mod@linux-amd64.build
//	golang.org_x_mod@linux-amd64.test-race
//	golang.org_x_mod@linux-amd64.test-race-3f2a1c
//
// Package patterns and flags that do not change action IDs (-v, -x, -p,
// -o, the test binary's flags such as -run and -short) are not part of
// the name, so a job kind keeps its name whatever packages or tests a run
// picks. A run that asks for much less than its manifest lists leaves the
// manifest in place (see [Manifests]). Without the go command's command
// line (a system other than Linux, or the plugin started through a
// wrapper) the name has no kind, as in releases before job kinds.

// MaxManifestName bounds the length of a manifest name.
const MaxManifestName = 200

// ValidManifestName reports whether name may name a manifest: 1 to
// MaxManifestName of A-Z a-z 0-9 . _ @ + = -, not starting with a dot.
func ValidManifestName(name string) bool {
	if name == "" || len(name) > MaxManifestName || name[0] == '.' {
		return false
	}
	for _, c := range []byte(name) {
		if !nameByte(c) {
			return false
		}
	}
	return true
}

// nameByte reports whether c may be used in a manifest name.
func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._@+=-", c) >= 0
}

// A JobKind is what in a go command decides the set of actions it asks
// the cache for, beyond the module and GOOS/GOARCH: its subcommand and
// the flags and environment that change action IDs. Go commands of one
// kind on one commit ask for the same actions.
type JobKind struct {
	// Command is the go subcommand ("build", "test", "vet", ...), or ""
	// if the command line was not a go command's.
	Command string
	// Settings are the flags and environment variables given that
	// change action IDs or the action set, as sorted "name=value" (for a
	// flag: without its dash; "race", not "race=true").
	Settings []string
}

// goCommands are the go subcommands; the first word of a go command line
// (after -C dir) must be one.
var goCommands = []string{
	"bug", "build", "clean", "doc", "env", "fix", "fmt", "generate", "get", "help", "install",
	"list", "mod", "run", "telemetry", "test", "tool", "version", "vet", "work",
}

// Flags of go commands, by how they bear on the name. A flag not listed
// takes no separate value ("-name" alone, or "-name=value").
var (
	// idBoolFlags are boolean flags that change action IDs or the set.
	idBoolFlags = map[string]bool{"race": true, "msan": true, "asan": true, "cover": true, "trimpath": true, "linkshared": true, "buildvcs": true}
	// idFlags take a value and change action IDs or the set. -mod does
	// only as -mod=vendor (sources from vendor/).
	idFlags = map[string]bool{
		"tags": true, "gcflags": true, "ldflags": true, "asmflags": true, "gccgoflags": true,
		"buildmode": true, "compiler": true, "installsuffix": true, "overlay": true, "pgo": true,
		"toolexec": true, "covermode": true, "coverpkg": true, "mod": true,
		"vet": true, "vettool": true,
	}
	// repeatedFlags accumulate: each takes a pattern and flags.
	repeatedFlags = map[string]bool{"gcflags": true, "ldflags": true, "asmflags": true, "gccgoflags": true}
	// otherValueFlags take a value and change nothing the name tracks:
	// build flags, then go test's and go list's.
	otherValueFlags = map[string]bool{
		"C": true, "o": true, "p": true, "pkgdir": true, "modfile": true, "exec": true,
		"debug-actiongraph": true, "debug-runtime-trace": true, "debug-trace": true,
		"bench": true, "benchtime": true, "blockprofile": true, "blockprofilerate": true,
		"count": true, "coverprofile": true, "cpu": true, "cpuprofile": true, "fuzz": true,
		"fuzzcachedir": true, "fuzzminimizetime": true, "fuzztime": true, "list": true,
		"memprofile": true, "memprofilerate": true, "mutexprofile": true, "mutexprofilefraction": true,
		"outputdir": true, "parallel": true, "run": true, "skip": true, "shuffle": true,
		"timeout": true, "trace": true, "f": true, "reuse": true,
	}
)

// kindEnv are the environment variables that change action IDs (GOOS and
// GOARCH are in the name already).
var kindEnv = []string{
	"CGO_ENABLED", "GOEXPERIMENT", "GOFIPS140",
	"GO386", "GOAMD64", "GOARM", "GOARM64", "GOMIPS", "GOMIPS64", "GOPPC64", "GORISCV64", "GOWASM",
	"CC", "CXX", "CGO_CFLAGS", "CGO_CPPFLAGS", "CGO_CXXFLAGS", "CGO_FFLAGS", "CGO_LDFLAGS",
}

// envDefaults are the values of kindEnv variables that the go command
// sets by default (on some system) in the environment of the programs it
// starts.
var envDefaults = map[string][]string{
	"CGO_ENABLED": {"1"}, "GOFIPS140": {"off"}, "CC": {"gcc", "clang"}, "CXX": {"g++", "clang++"},
	"GO386": {"sse2"}, "GOAMD64": {"v1"}, "GOARM": {"7"}, "GOARM64": {"v8.0"},
	"GOMIPS": {"hardfloat"}, "GOMIPS64": {"hardfloat"}, "GOPPC64": {"power8"}, "GORISCV64": {"rva20u64"},
	"CGO_CFLAGS": {"-O2 -g"}, "CGO_CXXFLAGS": {"-O2 -g"}, "CGO_FFLAGS": {"-O2 -g"}, "CGO_LDFLAGS": {"-O2 -g"},
}

// ParseGoCommand returns the job kind of the go command run with args (its
// command line, args[0] the program) in an environment read with getenv
// (nil reads nothing). For a GOCACHEPROG program, that is its own
// environment: the go command passes its settings there, whether set by
// the user, by "go env -w" or computed (CC=gcc, GOAMD64=v1, ...). So the
// environment variables' values that are the go command's defaults are
// left out: a name does not change with whether they were set. Flags come from GOFLAGS first, then
// the command line (which overrides); the flags of every subcommand are
// read before its first argument that is not a flag, and those of go test
// and go vet, which take flags after packages too, up to -args. It fails
// only if args is not a go command line.
func ParseGoCommand(args []string, getenv func(string) string) (JobKind, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	var k JobKind
	if len(args) < 2 {
		return k, errors.New("no go subcommand on the command line")
	}
	rest := args[1:]
	// go -C dir <command>: the only flag before the subcommand.
	if f := rest[0]; f == "-C" || f == "--C" {
		if len(rest) < 2 {
			return k, errors.New("go -C without a directory")
		}
		rest = rest[2:]
	} else if strings.HasPrefix(f, "-C=") || strings.HasPrefix(f, "--C=") {
		rest = rest[1:]
	}
	if len(rest) == 0 || !slices.Contains(goCommands, rest[0]) {
		bad := ""
		if len(rest) > 0 {
			bad = rest[0]
		}
		return k, fmt.Errorf("not a go command line: %.40q is not a go subcommand", bad)
	}
	k.Command, rest = rest[0], rest[1:]
	set := map[string]string{}
	var repeated map[string][]string
	apply := func(name, value string, hasValue bool) {
		switch {
		case idBoolFlags[name]:
			if !hasValue {
				value = "true"
			}
			if b, err := strconv.ParseBool(value); err == nil && name != "buildvcs" {
				if b {
					set[name] = ""
				} else {
					delete(set, name)
				}
			} else {
				set[name] = value // -buildvcs=auto; or a bad value the go command rejects
			}
		case repeatedFlags[name]:
			if repeated == nil {
				repeated = map[string][]string{}
			}
			repeated[name] = append(repeated[name], value)
		case name == "tags":
			set[name] = canonicalTags(value)
		case name == "mod":
			if value == "vendor" {
				set[name] = value
			} else {
				delete(set, name)
			}
		case name == "vettool" && k.Command != "vet", name == "vet" && k.Command != "test":
			// Not this command's: left alone (GOFLAGS may hold them).
		case idFlags[name]:
			set[name] = value
		case k.Command == "vet" && !otherValueFlags[name] && !knownBool(name):
			// An analyzer's flag: it changes what vet reports.
			set["vet."+name] = value
		}
	}
	// GOFLAGS: space-separated -flag or -flag=value entries.
	for _, f := range strings.Fields(getenv("GOFLAGS")) {
		if name, value, hasValue, ok := cutFlag(f); ok {
			apply(name, value, hasValue)
		}
	}
	anywhere := k.Command == "test" || k.Command == "vet"
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" || a == "-args" || a == "--args" {
			break
		}
		name, value, hasValue, ok := cutFlag(a)
		if !ok {
			if anywhere {
				continue // a package
			}
			break
		}
		if !hasValue && (idFlags[name] || otherValueFlags[name]) {
			if i+1 < len(rest) {
				i++
				value, hasValue = rest[i], true
			}
		}
		apply(name, value, hasValue)
	}
	for name, vals := range repeated {
		set[name] = strings.Join(vals, " ")
	}
	if _, ok := set["covermode"]; ok {
		set["cover"] = "" // -covermode and -coverpkg imply -cover
	} else if _, ok := set["coverpkg"]; ok {
		set["cover"] = ""
	}
	for _, env := range kindEnv {
		if v := getenv(env); v != "" && !slices.Contains(envDefaults[env], v) {
			set[env] = v
		}
	}
	for name, value := range set {
		if value == "" && !strings.HasPrefix(name, "vet.") {
			k.Settings = append(k.Settings, name)
		} else {
			k.Settings = append(k.Settings, name+"="+value)
		}
	}
	slices.Sort(k.Settings)
	return k, nil
}

// knownBool reports whether name is a boolean flag of the go command that
// changes nothing the name tracks.
func knownBool(name string) bool {
	switch name {
	case "a", "n", "v", "x", "work", "json", "modcacherw", "c", "i", "short", "failfast",
		"benchmem", "fullpath", "e", "deps", "test", "export", "compiled", "find", "m", "u", "t", "d":
		return true
	}
	return false
}

// cutFlag splits a command-line argument "-name", "--name" or
// "-name=value" into its parts; ok is false for an argument that is not
// a flag.
func cutFlag(arg string) (name, value string, hasValue, ok bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return "", "", false, false
	}
	name = arg[1:]
	if name[0] == '-' {
		name = name[1:]
	}
	if name == "" || name[0] == '-' || name[0] == '=' {
		return "", "", false, false
	}
	name, value, hasValue = strings.Cut(name, "=")
	return name, value, hasValue, true
}

// canonicalTags returns a -tags value as sorted, unique, comma-separated
// tags: the go command takes them comma- or space-separated, in any order.
func canonicalTags(v string) string {
	tags := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ",")
}

// labels are the settings the kind's name spells out, in the order it
// does.
var labels = []struct{ setting, label string }{
	{"race", "race"}, {"msan", "msan"}, {"asan", "asan"}, {"cover", "cover"}, {"CGO_ENABLED=0", "nocgo"},
}

// String returns the kind as it appears in a manifest name: the
// subcommand, the labels of the settings it spells out ("-race",
// "-msan", "-asan", "-cover", "-nocgo"), then, if there are other
// settings, a dash and the first six hex digits of the SHA-256 of all the
// settings, one a line. It is "" for an unknown kind.
func (k JobKind) String() string {
	if k.Command == "" {
		return ""
	}
	var b strings.Builder
	b.WriteString(k.Command)
	spelled := 0
	for _, l := range labels {
		if slices.Contains(k.Settings, l.setting) {
			b.WriteString("-" + l.label)
			spelled++
		}
	}
	if len(k.Settings) > spelled {
		h := sha256.Sum256([]byte(strings.Join(k.Settings, "\n") + "\n"))
		b.WriteString("-" + hex.EncodeToString(h[:3]))
	}
	return b.String()
}

// ManifestName returns the derived name of the manifest of a build of
// module for goos and goarch (each defaulting to the running system's) of
// the given kind (see the top of this file). Characters a name cannot
// hold become "_"; a module path too long for the name is cut and given a
// hash of the whole.
func ManifestName(module, goos, goarch string, kind JobKind) string {
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	suffix := "@" + sanitize(goos, 20) + "-" + sanitize(goarch, 20)
	if k := kind.String(); k != "" {
		suffix += "." + sanitize(k, 60)
	}
	mod := sanitize(module, len(module))
	if room := MaxManifestName - len(suffix); len(mod) > room {
		h := sha256.Sum256([]byte(module))
		mod = mod[:room-7] + "-" + hex.EncodeToString(h[:3])
	}
	name := mod + suffix
	if name[0] == '.' {
		name = "_" + name[1:]
	}
	return name
}

// sanitize replaces the bytes of s that a manifest name cannot hold with
// "_" and cuts it to at most n bytes.
func sanitize(s string, n int) string {
	b := []byte(s[:min(len(s), n)])
	for i, c := range b {
		if !nameByte(c) {
			b[i] = '_'
		}
	}
	return string(b)
}

// FindModule returns the path of the module whose go.mod is in dir or the
// nearest directory above it, read with [modfile.ModulePath].
func FindModule(dir string) (string, error) {
	for d := dir; ; {
		gomod := filepath.Join(d, "go.mod")
		data, err := os.ReadFile(gomod)
		if err == nil {
			if p := modfile.ModulePath(data); p != "" {
				return p, nil
			}
			return "", fmt.Errorf("%s: no module path", gomod)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read go.mod: %w", err)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %s or above", dir)
		}
		d = parent
	}
}
