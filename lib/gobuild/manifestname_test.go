package gobuild

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// envOf returns a getenv reading the "KEY=VALUE" pairs kv.
func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

func TestParseGoCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		env  []string
		want string   // the kind's String
		set  []string // its settings, if given
	}{
		{line: "go build ./...", want: "build", set: []string{}},
		{line: "/usr/local/go/bin/go build -v -x -p 4 -o out ./...", want: "build", set: []string{}},
		{line: "go -C sub build ./...", want: "build"},
		{line: "go -C=sub test ./...", want: "test"},
		{line: "go test -race -short -run ^$ ./...", want: "test-race", set: []string{"race"}},
		{line: "go test ./... -race -count=1", want: "test-race"}, // go test takes flags after packages
		{line: "go test -race=false ./...", want: "test"},
		{line: "go test ./... -args -race", want: "test"}, // the test binary's
		{line: "go build ./... -race", want: "build"},     // a package, for go build
		{line: "go run . -race", want: "run"},             // the program's
		{line: "go build -race -msan -asan -cover ./...", want: "build-race-msan-asan-cover"},
		{line: "go build --race ./...", want: "build-race"},
		{line: "go vet ./onepkg", want: "vet"},
		{line: "go list -json -deps ./...", want: "list"},
		{line: "go build -tags=b,a ./...", set: []string{"tags=a,b"}},
		{line: "go build -tags a -tags b", set: []string{"tags=b"}},
		{line: "go build -gcflags=all=-N -gcflags=-l", set: []string{"gcflags=all=-N -l"}},
		{line: "go build -ldflags -s -trimpath ./cmd", set: []string{"ldflags=-s", "trimpath"}},
		{line: "go test -covermode=atomic ./...", set: []string{"cover", "covermode=atomic"}},
		{line: "go test -coverpkg=./... ./...", set: []string{"cover", "coverpkg=./..."}},
		{line: "go test -vet=off ./...", set: []string{"vet=off"}},
		{line: "go build -vet=off ./...", set: []string{}},
		{line: "go vet -vettool=/bin/x ./...", set: []string{"vettool=/bin/x"}},
		{line: "go vet -printf=false ./...", set: []string{"vet.printf=false"}},
		{line: "go build -mod=mod ./...", set: []string{}},
		{line: "go build -mod=vendor ./...", set: []string{"mod=vendor"}},
		{line: "go build -buildmode=pie -pgo=off -buildvcs=false", set: []string{"buildmode=pie", "buildvcs=false", "pgo=off"}},
		{line: "go build ./...", env: []string{"GOFLAGS=-race -mod=mod -tags=x"}, want: "build-race-", set: []string{"race", "tags=x"}},
		{line: "go build -race=false ./...", env: []string{"GOFLAGS=-race"}, want: "build"}, // the command line wins
		{line: "go build ./...", env: []string{"CGO_ENABLED=0"}, want: "build-nocgo", set: []string{"CGO_ENABLED=0"}},
		{line: "go build ./...", env: []string{"CGO_ENABLED=1", "GOAMD64=v3", "GOEXPERIMENT=jsonv2"}, set: []string{"GOAMD64=v3", "GOEXPERIMENT=jsonv2"}},
		// What the go command passes to GOCACHEPROG by default.
		{line: "go build ./...", env: []string{"CC=gcc", "CGO_ENABLED=1", "CXX=g++", "GOAMD64=v1", "GOFIPS140=off", "GOFLAGS=-buildvcs=false"}, want: "build-", set: []string{"buildvcs=false"}},
		{line: "go build ./...", env: []string{"CC=gcc", "CGO_ENABLED=1", "CXX=g++", "GOAMD64=v1", "GOFIPS140=off"}, want: "build", set: []string{}},
		{line: "go build ./...", env: []string{"CC=/opt/cc", "CGO_CFLAGS=-O3"}, set: []string{"CC=/opt/cc", "CGO_CFLAGS=-O3"}},
	} {
		k, err := ParseGoCommand(strings.Fields(tc.line), envOf(tc.env...))
		if err != nil {
			t.Errorf("%s: %v", tc.line, err)
			continue
		}
		if got := k.String(); tc.want != "" && !(got == tc.want || strings.HasSuffix(tc.want, "-") && strings.HasPrefix(got, tc.want)) {
			t.Errorf("%s (env %q): kind %q, want %q (settings %q)", tc.line, tc.env, got, tc.want, k.Settings)
		}
		if tc.set != nil && !slices.Equal(k.Settings, tc.set) && !(len(tc.set) == 0 && len(k.Settings) == 0) {
			t.Errorf("%s (env %q): settings %q, want %q", tc.line, tc.env, k.Settings, tc.set)
		}
	}
}

func TestParseGoCommandErrors(t *testing.T) {
	for _, line := range [][]string{
		nil,
		{"go"},
		{"go", "-C"},
		{"go", "-C", "dir"},
		{"bash", "-c", "go build"},
		{"cmd.test", "-test.run=X"},
		{"go", "frobnicate"},
	} {
		if k, err := ParseGoCommand(line, nil); err == nil {
			t.Errorf("ParseGoCommand(%q) = %v; want an error", line, k)
		}
	}
}

// TestJobKindNames: kinds that ask for other action sets get other names;
// flags that change no action ID do not change the name.
func TestJobKindNames(t *testing.T) {
	name := func(line string, env ...string) string {
		k, err := ParseGoCommand(strings.Fields(line), envOf(env...))
		if err != nil {
			t.Fatal(err)
		}
		n := ManifestName("example.com/m", "linux", "amd64", k)
		if !ValidManifestName(n) {
			t.Fatalf("%s: invalid name %q", line, n)
		}
		return n
	}
	base := name("go build ./...")
	if base != "example.com_m@linux-amd64.build" {
		t.Errorf("plain build: %q", base)
	}
	for _, same := range []string{"go build -v -x -p=2 ./cmd/...", "go build -a -o /tmp/x .", "go build -mod=readonly ./..."} {
		if n := name(same); n != base {
			t.Errorf("%s: %q, want %q", same, n, base)
		}
	}
	if a, b := name("go test -race -short -run ^$ ./..."), name("go test -race -v -count=1 ./pkg"); a != b || a != "example.com_m@linux-amd64.test-race" {
		t.Errorf("test -race names: %q, %q", a, b)
	}
	seen := map[string]string{}
	for _, line := range []string{
		"go build ./...", "go test ./...", "go vet ./...", "go list ./...", "go install ./...",
		"go build -race ./...", "go test -race ./...", "go build -cover ./...", "go build -tags=x ./...",
		"go build -tags=y ./...", "go build -gcflags=-N ./...", "go build -ldflags=-s ./...",
		"go build -trimpath ./...", "go test -vet=off ./...", "go test -covermode=atomic ./...",
	} {
		n := name(line)
		if prev, ok := seen[n]; ok {
			t.Errorf("%q and %q are both named %q", prev, line, n)
		}
		seen[n] = line
	}
	for _, env := range []string{"CGO_ENABLED=0", "GOEXPERIMENT=x", "GOAMD64=v3", "GOFLAGS=-tags=y -race"} {
		n := name("go build ./...", env)
		if prev, ok := seen[n]; ok {
			t.Errorf("%q and env %s are both named %q", prev, env, n)
		}
		seen[n] = env
	}
	// GOFLAGS is as good as the command line.
	if a, b := name("go build ./...", "GOFLAGS=-race -tags=x"), name("go build -tags x -race ./..."); a != b {
		t.Errorf("GOFLAGS: %q, command line: %q", a, b)
	}
	if a, b := name("go build -tags=a,b"), name("go build -tags=b,a"); a != b {
		t.Errorf("tags in another order: %q, %q", a, b)
	}
	if n := ManifestName("example.com/m", "", "", JobKind{}); n != "example.com_m@"+runtime.GOOS+"-"+runtime.GOARCH {
		t.Errorf("unknown kind: %q", n)
	}
}

func TestManifestNameBounds(t *testing.T) {
	long := strings.Repeat("a/", 150) + "m"
	k, _ := ParseGoCommand([]string{"go", "test", "-race", "-tags=x"}, nil)
	n := ManifestName(long, strings.Repeat("o", 40), "amd64", k)
	if len(n) > MaxManifestName || !ValidManifestName(n) || !strings.HasSuffix(n, ".test-race-"+k.String()[len("test-race-"):]) {
		t.Errorf("long module: %q (%d bytes)", n, len(n))
	}
	other := ManifestName(long+"2", strings.Repeat("o", 40), "amd64", k)
	if other == n {
		t.Errorf("two long modules with one prefix share the name %q", n)
	}
	if n := ManifestName(".hidden/x y", "linux", "amd64", JobKind{}); n != "_hidden_x_y@linux-amd64" {
		t.Errorf("sanitized: %q", n)
	}
}

func TestFindModule(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := FindModule(sub); err == nil {
		// A go.mod above the temporary directory would be found.
		t.Fatalf("FindModule found a module above %s", root)
	}
	gomod := "// a comment\nmodule \"golang.org/x/tools/gopls\" // the module\n\ngo 1.26\n"
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := FindModule(sub); err != nil || got != "golang.org/x/tools/gopls" {
		t.Errorf("FindModule = %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(sub, "go.mod"), []byte("go 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FindModule(sub); err == nil || !strings.Contains(err.Error(), filepath.Join(sub, "go.mod")) {
		t.Errorf("go.mod without a module line: %v; want an error naming it", err)
	}
}

// TestParentCommand: the test binary's parent is the go command (go
// test) or whatever ran the binary; its command line is read, and a test
// binary's own is not a go command's.
func TestParentCommand(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := ParentCommand(); err == nil {
			t.Errorf("ParentCommand succeeded on %s", runtime.GOOS)
		}
		return
	}
	args, err := ParentCommand()
	if err != nil || len(args) == 0 {
		t.Fatalf("ParentCommand = %q, %v", args, err)
	}
	// Run by go test, the parent is a go test command.
	if k, err := ParseGoCommand(args, nil); err == nil && k.Command != "test" {
		t.Errorf("parent %q: kind %v; want a go test command", args, k)
	}
	data, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	self := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
	if _, err := ParseGoCommand(self, nil); err == nil {
		t.Errorf("a test binary's command line %q parsed as a go command's", self)
	}
}

var kindRE = regexp.MustCompile(`^[a-z]+(-(race|msan|asan|cover|nocgo))*(-[0-9a-f]{6})?$`)

// FuzzParseGoCommand: any command line and GOFLAGS give a kind whose name
// is valid and bounded, or an error; never a panic. Adding flags that
// change no action ID changes nothing.
func FuzzParseGoCommand(f *testing.F) {
	f.Add("go test -race -short -run ^$ ./...", "-mod=mod")
	f.Add("go -C x build -tags=a,b -gcflags all=-N ./...", "")
	f.Add("go vet -printf=false ./x -args", "-race=false")
	f.Add("go build --=x - -- -=", "-tags")
	f.Fuzz(func(t *testing.T, line, goflags string) {
		args := strings.Split(line, " ")
		env := envOf("GOFLAGS=" + goflags)
		k, err := ParseGoCommand(args, env)
		if err != nil {
			return
		}
		if !kindRE.MatchString(k.String()) {
			t.Fatalf("%q: kind %q", line, k.String())
		}
		n := ManifestName(line, "linux", "amd64", k)
		if !ValidManifestName(n) {
			t.Fatalf("%q: invalid name %q", line, n)
		}
		// -v and -x take no value and change nothing.
		more := append([]string{args[0], args[1]}, args[2:]...)
		if args[1] == "-C" || strings.HasPrefix(args[1], "-C=") || strings.HasPrefix(args[1], "--C") {
			return
		}
		more = slices.Insert(more, 2, "-v", "-x")
		k2, err := ParseGoCommand(more, env)
		if err != nil || k2.String() != k.String() {
			t.Fatalf("%q with -v -x: %v, %v; want %q", line, k2, err, k.String())
		}
	})
}
