package main

import (
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/modproxytest"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
)

var updateMetrics = flag.Bool("update-metrics", false, "rewrite testdata/metrics.golden from the daemon's /metrics")

// TestServeMetricNames checks that a daemon with every front end (and a
// bucket) serves exactly the gocacheplugin_* metrics of
// testdata/metrics.golden: their names, help, types and label sets. The
// golden file was written by the binary before the metrics moved into
// internal/ops, so the move kept every metric.
func TestServeMetricNames(t *testing.T) {
	up := modproxytest.Start(t, modproxytest.ExampleModules()...)
	srv := s3test.Start(t)
	if err := srv.CreateBucket(t.Context(), "metrics"); err != nil {
		t.Fatal(err)
	}
	awsDir := t.TempDir()
	env := append(cleanEnv(), srv.Env()...)
	env = append(env,
		"AWS_CONFIG_FILE="+filepath.Join(awsDir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(awsDir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=", "AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_S3=")
	d := startDaemonEnv(t, env, t.TempDir(), filepath.Join(t.TempDir(), "sock"),
		"--modproxy", "--modproxy-upstream="+up.URL, "--sumdb="+up.VerifierKey, "--modproxy-nosumdb=",
		"--revproxy=metrics.test",
		"--bucket=metrics", "--s3-endpoint-url="+srv.Endpoint, "--s3-path-style")
	resp, err := http.Get(d.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	got := metricShape(string(body))

	golden := filepath.Join("testdata", "metrics.golden")
	if *updateMetrics {
		if err := os.WriteFile(golden, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for _, l := range want {
		if !slices.Contains(got, l) {
			t.Errorf("missing from /metrics: %s", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			t.Errorf("new on /metrics: %s", l)
		}
	}
}

// metricShape returns the HELP and TYPE lines of the gocacheplugin_*
// metrics of a scrape, and their series without values (histograms: only
// the _count series; build_info: without its version labels), sorted.
func metricShape(scrape string) []string {
	versions := regexp.MustCompile(`\{goversion="[^"]*",version="[^"]*"\}`)
	var out []string
	for _, line := range strings.Split(scrape, "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP gocacheplugin_"), strings.HasPrefix(line, "# TYPE gocacheplugin_"):
			out = append(out, line)
		case strings.HasPrefix(line, "gocacheplugin_"):
			series := line[:strings.LastIndexByte(line, ' ')]
			name, _, _ := strings.Cut(series, "{")
			if strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_sum") {
				continue
			}
			out = append(out, versions.ReplaceAllString(series, "{...}"))
		}
	}
	slices.Sort(out)
	return out
}
