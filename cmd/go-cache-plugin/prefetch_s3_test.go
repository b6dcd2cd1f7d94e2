package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/internal/faultproxy"
)

// parsePrefetch finds the last --metrics prefetch line in out.
func parsePrefetch(t *testing.T, out string) metrics {
	t.Helper()
	return parseMetricsLine(t, out, "go-cache-plugin: prefetch ")
}

// getObject returns the bucket's object at key, or nil if there is none.
func (h *s3Harness) getObject(t *testing.T, key string) []byte {
	t.Helper()
	out, err := h.srv.Client().GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
	if err != nil {
		return nil
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (h *s3Harness) putObject(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := h.srv.Client().PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(s3Bucket), Key: aws.String(key), Body: bytes.NewReader(data),
	}); err != nil {
		t.Fatal(err)
	}
}

// testPrefetch: manifests and prefetch with a real bucket.
func (h *s3Harness) testPrefetch(t *testing.T) {
	t.Run("ColdWorker", h.testPrefetchCold)
	t.Run("StaleManifest", h.testPrefetchStale)
	t.Run("Faults", h.testPrefetchFaults)
	t.Run("Serve", h.testPrefetchServe)
	t.Run("Compressed", h.testPrefetchCompressed)
	t.Run("JobKinds", h.testPrefetchJobKinds)
}

// testPrefetchCompressed: a build with --compress writes its pack with
// each output compressed and a version 4 manifest; a worker with an empty
// directory, without the flag, reads a fraction of the bytes from the pack
// and builds without compiling, every output checked.
func (h *s3Harness) testPrefetchCompressed(t *testing.T) {
	const prefix = "compressed"
	mod, want := newModule(t, "compressed")
	out, _ := buildHello(t, mod, h.env(t, copyCache(t, h.baseDir), h.srv.Endpoint, prefix, "--manifest=compressed", "--compress"), want)
	if p := parsePrefetch(t, out); p.get("manifests_written") != 1 || p.get("packs_written") != 1 {
		t.Fatalf("first build: prefetch %v; want a manifest and a pack written", map[string]string(p))
	}
	manifest := h.getObject(t, prefix+"/manifest/compressed")
	if !bytes.HasPrefix(manifest, []byte("go-cache-plugin manifest 4\n")) || !bytes.Contains(manifest, []byte(" zstd\n")) {
		t.Fatalf("manifest %.100q; want version 4 listing a compressed pack", manifest)
	}

	dir := t.TempDir()
	out, _ = buildHello(t, mod, h.env(t, dir, h.srv.Endpoint, prefix, "--manifest=compressed"), want)
	if n := len(compileRE.FindAllString(out, -1)); n != 0 {
		t.Errorf("build ran the compiler %d times; want everything from the bucket", n)
	}
	m, p := parseMetrics(t, out), parsePrefetch(t, out)
	t.Logf("store: %s; prefetch: %v", m, map[string]string(p))
	if p.get("prefetch_packed") == 0 || p.get("prefetch_records") != 0 {
		t.Errorf("prefetch %v; want the outputs read from the compressed pack", map[string]string(p))
	}
	// What was read is a fraction of what was installed: compiled
	// packages compress to about a quarter.
	down, got := m.get("bytes_down"), p.get("prefetched_bytes")
	t.Logf("read %d bytes from the bucket for %d bytes prefetched", down, got)
	if got == 0 || down*2 > got {
		t.Errorf("read %d bytes from the bucket for %d bytes prefetched; want less than half", down, got)
	}
	if m.get("remote_errors") != 0 || m.get("corrupt_remote") != 0 {
		t.Errorf("metrics %s; want no errors", m)
	}
	checkCacheDir(t, dir)
}

// testPrefetchServe: in server mode each connect names its build's
// manifest (derived from the go command's module, or GOCACHE_MANIFEST);
// the daemon writes it at the session's close and a daemon with an empty
// directory prefetches from it, over a Unix socket (hand-over) and TCP
// (stream) alike.
func (h *s3Harness) testPrefetchServe(t *testing.T) {
	const prefix = "serve-manifest"
	mod, want := newModule(t, "servemf")
	derived := "example.com_servemf@" + runtime.GOOS + "-" + runtime.GOARCH + ".build"
	flags := []string{"--bucket=" + s3Bucket, "--s3-endpoint-url=" + h.srv.Endpoint, "--s3-path-style", "--prefix=" + prefix}
	daemonEnv := append(cleanEnv(), h.awsEnv()...)

	// Over a Unix socket: the first build writes the derived manifest,
	// a second one with GOCACHE_MANIFEST writes the named one.
	d := startDaemonEnv(t, daemonEnv, t.TempDir(), filepath.Join(shortTempDir(t), "s"), flags...)
	buildHello(t, mod, d.goEnv(t), want)
	buildHello(t, mod, append(d.goEnv(t), "GOCACHE_MANIFEST=ci-servemf"), want)
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon exited with %v", err)
	}
	for _, name := range []string{derived, "ci-servemf"} {
		if m := h.getObject(t, prefix+"/manifest/"+name); !bytes.HasPrefix(m, []byte("go-cache-plugin manifest 3\n")) {
			t.Errorf("manifest %s: %.60q; want one written by the daemon's session", name, m)
		}
	}
	// The daemon has --http, whose metrics wrap the remote tier: packs
	// must be written through the wrapper all the same.
	lo, err := h.srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket), Prefix: aws.String(prefix + "/pack/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lo.Contents) == 0 {
		t.Errorf("the daemon with --http wrote no pack under %s/pack/", prefix)
	}

	// Over TCP, a daemon with an empty directory prefetches from the
	// manifest its client derived.
	d = startDaemonEnv(t, daemonEnv, t.TempDir(), "0", flags...)
	out, _ := buildHello(t, mod, d.goEnv(t), want)
	if n := len(compileRE.FindAllString(out, -1)); n != 0 {
		t.Errorf("build through the TCP daemon ran the compiler %d times; want everything from the bucket", n)
	}
	line := d.waitLine(t, regexp.MustCompile(`prefetch of `+regexp.QuoteMeta(derived)+` .* prefetched=(\d+) .* pack_reads=(\d+) `))
	if line[1] == "0" {
		t.Errorf("daemon prefetched nothing from %s: %s", derived, line[0])
	}
	if line[2] == "0" {
		t.Errorf("daemon with --http read no pack: %s", line[0])
	}
	if n := d.metric(t, "gocacheplugin_prefetch_pack_reads_total"); n == 0 {
		t.Errorf("gocacheplugin_prefetch_pack_reads_total = 0; want the pack reads counted")
	}
}

// testPrefetchCold: the harness's first build wrote a manifest for the
// base module, named after its go.mod; a worker with an empty directory
// prefetches from it what the build then asks for, and compiles nothing.
func (h *s3Harness) testPrefetchCold(t *testing.T) {
	name := "example.com_s3base@" + runtime.GOOS + "-" + runtime.GOARCH + ".build"
	manifest := h.getObject(t, "base/manifest/"+name)
	if !bytes.HasPrefix(manifest, []byte("go-cache-plugin manifest 3\n")) {
		lo, _ := h.srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket), Prefix: aws.String("base/manifest/")})
		var keys []string
		for _, o := range lo.Contents {
			keys = append(keys, *o.Key)
		}
		t.Fatalf("manifest base/manifest/%s: %.100q; want one written by the first build (manifests: %q)", name, manifest, keys)
	}
	// The first build packed its outputs; builds of other subtests on
	// the same manifest may since have listed a few more, not packed.
	packs := bytes.Count(manifest, []byte("\npack "))
	entries := bytes.Count(manifest, []byte("\n")) - 1 - packs
	placed := bytes.Count(manifest, []byte("@"))
	if packs == 0 || placed == 0 {
		t.Fatalf("manifest lists %d packs and places %d of %d outputs in them; want the first build's outputs packed", packs, placed, entries)
	}

	dir := t.TempDir()
	out := runGo(t, h.baseMod, h.env(t, dir, h.srv.Endpoint, "base"), "build", "-x", "./...")
	if n := len(compileRE.FindAllString(out, -1)); n != 0 {
		t.Errorf("build ran the compiler %d times; want everything from the bucket", n)
	}
	m, p := parseMetrics(t, out), parsePrefetch(t, out)
	t.Logf("%d actions listed; store: %s; prefetch: %v", entries, m, map[string]string(p))
	if p["manifest"] != name || p.get("manifests_read") != 1 || p.get("manifest_entries") != int64(entries) {
		t.Errorf("prefetch %v; want manifest %s read, %d entries", p, name, entries)
	}
	// Objects were fetched before the go command asked for them: used,
	// and not merely waited for.
	if p.get("prefetched") == 0 || p.get("prefetch_used") <= p.get("prefetch_waited") || p.get("prefetch_used_bytes") == 0 {
		t.Errorf("prefetch %v; want outputs prefetched before they were asked for", map[string]string(p))
	}
	// The manifest lists what the first build asked for and what it put;
	// a cached build asks for nearly all of those again (a put not asked
	// for again, such as an empty output, is wasted).
	if p.get("prefetch_wasted")*50 > p.get("prefetched") || p.get("prefetch_wasted_bytes")*50 > p.get("prefetched_bytes") {
		t.Errorf("prefetch %v; want at most 2%% wasted: the build is the one the manifest lists", map[string]string(p))
	}
	// The manifest lists each action's output, in a pack: no action
	// record read, and a few ranged reads for all the outputs.
	if p.get("prefetch_records") != 0 {
		t.Errorf("prefetch %v; want no action record read: the manifest lists the outputs", map[string]string(p))
	}
	if packed := p.get("prefetch_packed"); packed < int64(placed)/2 || p.get("pack_reads") == 0 || p.get("pack_reads")*4 > packed {
		t.Errorf("prefetch %v; want the %d packed outputs read from the pack, several in each ranged read", map[string]string(p), placed)
	}
	if m.get("remote_errors") != 0 || m.get("corrupt_remote") != 0 {
		t.Errorf("metrics %s; want no errors", m)
	}
	checkCacheDir(t, dir)
}

// testPrefetchStale: a manifest listing actions the build no longer asks
// for (the module changed) and actions that do not exist costs wasted
// bytes and misses, nothing more; the build is correct, and the manifest
// written at close is the new build's.
func (h *s3Harness) testPrefetchStale(t *testing.T) {
	const prefix = "stale"
	mod, want := newModule(t, "stale")
	manifestKey := prefix + "/manifest/test-stale"
	out, _ := buildHello(t, mod, h.env(t, copyCache(t, h.baseDir), h.srv.Endpoint, prefix, "--manifest=test-stale"), want)
	if p := parsePrefetch(t, out); p.get("manifests_written") != 1 || p.get("manifests_read") != 0 {
		t.Fatalf("first build: prefetch %v; want a manifest written\n%s", p, out)
	}
	old := h.getObject(t, manifestKey)
	// Add actions that never existed.
	for i := range 3 {
		old = fmt.Appendf(old, "%x\n", sha256.Sum256(fmt.Appendf(nil, "no such action %d", i)))
	}
	h.putObject(t, manifestKey, old)

	// Change the module: its packages' actions are new.
	lib := filepath.Join(mod, "lib", "gen.go")
	src, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, append(src, "\nvar Changed = 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = buildHello(t, mod, h.env(t, copyCache(t, h.baseDir), h.srv.Endpoint, prefix, "--manifest=test-stale"), want)
	m, p := parseMetrics(t, out), parsePrefetch(t, out)
	t.Logf("store: %s; prefetch: %v", m, map[string]string(p))
	if len(compileRE.FindAllString(out, -1)) == 0 {
		t.Errorf("nothing compiled, but the module changed")
	}
	if p.get("manifests_read") != 1 || p.get("prefetch_wasted") == 0 || p.get("prefetch_wasted_bytes") == 0 {
		t.Errorf("prefetch %v; want the changed packages' old outputs prefetched and wasted", map[string]string(p))
	}
	if m.get("remote_errors") != 0 || m.get("corrupt_remote") != 0 || m.get("remote_misses") == 0 {
		t.Errorf("metrics %s; want misses for the actions that never existed, no errors", m)
	}
	// Those are listed without outputs: their records were looked for.
	if p.get("prefetch_records") < 3 {
		t.Errorf("prefetch %v; want the records of the 3 actions listed alone looked for", map[string]string(p))
	}
	if p.get("manifests_written") != 1 {
		t.Errorf("prefetch %v; want the new build's manifest written", map[string]string(p))
	}
	if now := h.getObject(t, manifestKey); bytes.Equal(now, old) || bytes.Contains(now, old[len(old)-65:]) {
		t.Errorf("manifest still lists the actions that never existed")
	}
}

// testPrefetchFaults: through a proxy adding latency to every request the
// prefetch is still correct; with a bucket that never answers, the build
// does not wait for the manifest and the prefetch stops.
func (h *s3Harness) testPrefetchFaults(t *testing.T) {
	mod, want := newModule(t, "prefetch-faults")
	const prefix = "prefetch-faults"
	p := faultproxy.Start(t, h.srv.Endpoint)
	out, _ := buildHello(t, mod, h.env(t, copyCache(t, h.baseDir), p.URL, prefix), want)
	if pm := parsePrefetch(t, out); pm.get("manifests_written") != 1 {
		t.Fatalf("first build: prefetch %v; want a manifest written", pm)
	}

	t.Run("slow", func(t *testing.T) {
		p.Set(faultproxy.Fault{Mode: faultproxy.Slow, Delay: 200 * time.Millisecond})
		defer p.SetMode(faultproxy.Pass)
		dir := copyCache(t, h.baseDir)
		out, _ := buildHello(t, mod, h.env(t, dir, p.URL, prefix), want)
		m, pm := parseMetrics(t, out), parsePrefetch(t, out)
		if n := len(compileRE.FindAllString(out, -1)); n != 0 {
			t.Errorf("build ran the compiler %d times; want everything from the bucket", n)
		}
		t.Logf("store: %s; prefetch: %v", m, map[string]string(pm))
		if pm.get("manifests_read") != 1 || pm.get("prefetched") == 0 || pm.get("prefetch_used") == 0 {
			t.Errorf("prefetch %v; want outputs prefetched and used", map[string]string(pm))
		}
		if m.get("remote_errors") != 0 || m.get("corrupt_remote") != 0 {
			t.Errorf("metrics %s; want no errors", m)
		}
		checkCacheDir(t, dir)
	})

	t.Run("manifest-blackhole", func(t *testing.T) {
		// Only the manifest read hangs: the build goes on meanwhile.
		p.Set(faultproxy.Fault{Mode: faultproxy.Blackhole, Only: faultproxy.GetsOf(prefix + "/manifest/")})
		defer p.SetMode(faultproxy.Pass)
		dir := copyCache(t, h.baseDir)
		out, _ := buildHello(t, mod, h.env(t, dir, p.URL, prefix, "--drain-timeout=2s"), want)
		m, pm := parseMetrics(t, out), parsePrefetch(t, out)
		t.Logf("store: %s; prefetch: %v", m, map[string]string(pm))
		if p.Faulted() == 0 {
			t.Fatalf("the manifest read was not faulted")
		}
		// Requests were answered while the manifest read was waiting on
		// the bucket: start-up did not wait for it.
		if pm.get("answered_early") == 0 || pm.get("manifests_read") != 0 || pm.get("prefetched") != 0 {
			t.Errorf("prefetch %v; want requests answered before the manifest read gave up, nothing prefetched", map[string]string(pm))
		}
		if n := m.get("remote_errors"); n > 2 {
			t.Errorf("%d remote errors; want at most the manifest read's and one more", n)
		}
		checkCacheDir(t, dir)
	})

	t.Run("blackhole", func(t *testing.T) {
		p.SetMode(faultproxy.Blackhole)
		defer p.SetMode(faultproxy.Pass)
		dir := copyCache(t, h.baseDir)
		out, _ := buildHello(t, mod, h.env(t, dir, p.URL, prefix, "--drain-timeout=2s"), want)
		m, pm := parseMetrics(t, out), parsePrefetch(t, out)
		t.Logf("store: %s; prefetch: %v", m, map[string]string(pm))
		// No request waited for the prefetch, which never got going: the
		// manifest read failed and opened the breaker with the rest.
		if pm.get("manifests_read") != 0 || pm.get("prefetched") != 0 || pm.get("prefetch_waited") != 0 {
			t.Errorf("prefetch %v; want nothing read from a bucket that does not answer, no request waiting", map[string]string(pm))
		}
		if m["breaker"] != "open" && m.get("remote_skipped") == 0 {
			t.Errorf("breaker never opened: %s", m)
		}
		if n := m.get("remote_errors"); n > 10 {
			t.Errorf("%d remote errors: the breaker did not stop the calls", n)
		}
		checkCacheDir(t, dir)
	})
}
