package main

import (
	"bytes"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// kindsModule is the module of testPrefetchJobKinds: one package
// importing a little of the standard library, with a test (so that a race
// build compiles the testing package's dependencies once), and one that
// imports nothing, for runs that touch a handful of actions.
var kindsModule = map[string]string{
	"go.mod":      "module example.com/kinds\n\ngo 1.26\n",
	"a/a.go":      "package a\n\nimport \"strings\"\n\n// Up upper-cases s.\nfunc Up(s string) string { return strings.ToUpper(s) }\n",
	"a/a_test.go": "package a\n\nimport \"testing\"\n\nfunc TestUp(t *testing.T) {\n\tif Up(\"a\") != \"A\" {\n\t\tt.Fatal(Up(\"a\"))\n\t}\n}\n",
	"b/b.go":      "package b\n\n// N is a number.\nconst N = 1\n\n// Twice doubles n.\nfunc Twice(n int) int { return 2 * n }\n",
}

// requestsLine matches the plugin's line of request counts and captures
// its hits.
var requestsLine = regexp.MustCompile(`(?m)^go-cache-plugin: gets=\d+ hits=(\d+) `)

// manifestNames lists the manifests under prefix in the bucket.
func (h *s3Harness) manifestNames(t *testing.T, prefix string) []string {
	t.Helper()
	lo, err := h.srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket), Prefix: aws.String(prefix + "/manifest/")})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range lo.Contents {
		names = append(names, strings.TrimPrefix(*o.Key, prefix+"/manifest/"))
	}
	slices.Sort(names)
	return names
}

// testPrefetchJobKinds: a build job and a race test job of one module
// alternate on cold workers (an empty cache directory and GOCACHE each)
// sharing a bucket. Each job kind writes a manifest of its own name, and
// each cold worker prefetches what its kind uses: at least 90% of the
// prefetched bytes are asked for, nearly every hit is listed in the
// manifest (the subkeys a compiling build puts without asking for them
// too), and nearly every prefetched output comes from a pack. Runs that touch a few actions (go list,
// go vet of one package, a build of one package) leave the big manifests
// in place.
func (h *s3Harness) testPrefetchJobKinds(t *testing.T) {
	const prefix = "kinds"
	start := time.Now()
	mod := t.TempDir()
	writeFiles(t, mod, kindsModule)
	sys := "@" + runtime.GOOS + "-" + runtime.GOARCH
	buildName, raceName := "example.com_kinds"+sys+".build", "example.com_kinds"+sys+".test-race"
	build := []string{"build", "./..."}
	race := []string{"test", "-race", "-short", "-run", "^$", "./..."}

	// hits holds the cache hits of the last job.
	var hits int64
	// job runs the go command with args on a cold worker and returns its
	// prefetch metrics.
	job := func(t *testing.T, args ...string) metrics {
		t.Helper()
		jobStart := time.Now()
		out := runGo(t, mod, h.env(t, t.TempDir(), h.srv.Endpoint, prefix), args...)
		p := parsePrefetch(t, out)
		m := parseMetrics(t, out)
		if m.get("remote_errors") != 0 || m.get("corrupt_remote") != 0 {
			t.Errorf("go %s: metrics %s; want no errors", strings.Join(args, " "), m)
		}
		hits = -1
		if sm := requestsLine.FindStringSubmatch(out); sm != nil {
			hits, _ = strconv.ParseInt(sm[1], 10, 64)
		}
		t.Logf("go %s: %v: %d hits, prefetch %v", strings.Join(args, " "), time.Since(jobStart).Round(time.Millisecond), hits, map[string]string(p))
		return p
	}

	// First of each kind: nothing to read, its own manifest written.
	for _, k := range []struct {
		name string
		args []string
	}{{buildName, build}, {raceName, race}} {
		p := job(t, k.args...)
		if p["manifest"] != k.name || p.get("manifests_read") != 0 || p.get("manifests_written") != 1 {
			t.Errorf("first go %s: prefetch %v; want manifest %s written, none read", strings.Join(k.args, " "), map[string]string(p), k.name)
		}
	}
	if got, want := h.manifestNames(t, prefix), []string{buildName, raceName}; !slices.Equal(got, want) {
		t.Fatalf("manifests in the bucket: %q; want %q", got, want)
	}

	// Then each kind again, alternating, on cold workers: each reads its
	// own manifest and uses what it prefetched.
	for round := range 2 {
		for _, k := range []struct {
			name string
			args []string
		}{{buildName, build}, {raceName, race}} {
			p := job(t, k.args...)
			used, got := p.get("prefetch_used_bytes"), p.get("prefetched_bytes")
			t.Logf("round %d, %s: prefetched %d bytes, used %d (%.1f%%)", round, k.name, got, used, 100*float64(used)/float64(max(got, 1)))
			if p["manifest"] != k.name || p.get("manifests_read") != 1 {
				t.Errorf("go %s: prefetch %v; want manifest %s read", strings.Join(k.args, " "), map[string]string(p), k.name)
			}
			if got == 0 || used*10 < got*9 {
				t.Errorf("go %s: prefetched %d bytes, used %d; want at least 90%% used", strings.Join(k.args, " "), got, used)
			}
			// Each hit not listed is a request of its own, and each
			// output outside a pack too.
			if listed := p.get("manifest_entries"); hits <= 0 || (hits-listed)*50 > hits {
				t.Errorf("go %s: %d hits, %d of them listed in the manifest; want all but 2%%", strings.Join(k.args, " "), hits, listed)
			}
			if n, packed := p.get("prefetched"), p.get("prefetch_packed"); (n-packed)*50 > n {
				t.Errorf("go %s: %d outputs prefetched, %d from packs; want all but 2%%", strings.Join(k.args, " "), n, packed)
			}
		}
	}

	manifests := map[string][]byte{}
	for _, name := range []string{buildName, raceName} {
		manifests[name] = h.getObject(t, prefix+"/manifest/"+name)
	}
	if bytes.Equal(manifests[buildName], manifests[raceName]) {
		t.Fatalf("the build and the race test wrote the same manifest")
	}

	// Small runs: go list, go vet of one package, a build of one package.
	// The last is of the build kind, and asks for a few of the actions
	// its manifest lists: it leaves it in place.
	for _, args := range [][]string{{"list", "./..."}, {"vet", "./b"}, {"build", "./b"}} {
		p := job(t, args...)
		if args[0] == "build" && (p.get("manifests_kept") != 1 || p.get("manifests_written") != 0) {
			t.Errorf("go %s: prefetch %v; want the build's manifest kept", strings.Join(args, " "), map[string]string(p))
		}
	}
	for name, old := range manifests {
		if now := h.getObject(t, prefix+"/manifest/"+name); !bytes.Equal(now, old) {
			t.Errorf("manifest %s changed by the small runs", name)
		}
	}
	names := h.manifestNames(t, prefix)
	t.Logf("manifests: %q", names)
	kind := regexp.MustCompile(`^example\.com_kinds` + regexp.QuoteMeta(sys) + `\.[a-z]+(-[a-z]+)*(-[0-9a-f]{6})?$`)
	for _, n := range names {
		if !kind.MatchString(n) {
			t.Errorf("manifest name %q: want module@goos-goarch.kind", n)
		}
	}
	t.Logf("job kinds: %v in all", time.Since(start).Round(time.Millisecond))
}
