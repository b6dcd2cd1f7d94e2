package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// testReadOnly: a trusted build fills the bucket; untrusted builds with
// --read-only and a credential that cannot write use what is there, build
// what is not, write nothing to the bucket and log no error.
func (h *s3Harness) testReadOnly(t *testing.T) {
	const prefix = "readonly"
	mod, want := newModule(t, "readonly")
	out, _ := buildHello(t, mod, h.env(t, copyCache(t, h.baseDir), h.srv.Endpoint, prefix), want)
	if m := parseMetrics(t, out); m.get("uploads") == 0 || m.get("upload_errors") != 0 {
		t.Fatalf("trusted build did not fill the bucket: %s", m)
	}
	before := listBucket(t, h)

	roEnv, err := h.srv.ReadOnlyEnv(t.Context(), s3Bucket)
	if err != nil {
		t.Fatal(err)
	}
	untrusted := func(t *testing.T, mod, want string) (metrics, int) {
		env := append(h.env(t, copyCache(t, h.baseDir), h.srv.Endpoint, prefix, "--read-only"), roEnv...)
		out, _ := buildHello(t, mod, env, want)
		if !strings.Contains(out, "read-only: read, never written") {
			t.Errorf("startup does not say the mode (with -v):\n%s", out)
		}
		// With -v the plugin logs its decisions; none may be an error.
		// (A 403 as a number of its own: temporary directories' names
		// hold random digits.)
		status403 := regexp.MustCompile(`(^|[^0-9])403([^0-9]|$)`)
		for line := range strings.Lines(out) {
			l := strings.ToLower(line)
			if strings.HasPrefix(line, "go-cache-plugin: ") && !strings.Contains(l, "upload_errors=0") &&
				(strings.Contains(l, "error") || strings.Contains(l, "denied") || strings.Contains(l, "fail") ||
					status403.MatchString(l) || strings.Contains(l, "forbidden") || strings.Contains(l, "upload")) {
				t.Errorf("error in the log: %s", line)
			}
		}
		m := parseMetrics(t, out)
		if m.get("uploads") != 0 || m.get("upload_errors") != 0 || m.get("remote_errors") != 0 || m["read_only"] != "true" {
			t.Errorf("metrics %s read_only=%s; want no uploads and no errors", m, m["read_only"])
		}
		return m, len(compileRE.FindAllString(out, -1))
	}

	// The trusted build's module: everything from the bucket.
	m, compiles := untrusted(t, mod, want)
	if compiles != 0 || m.get("remote_hits") == 0 {
		t.Errorf("%d compiles, metrics %s; want everything from the bucket", compiles, m)
	}
	// A fork's change: built, and nothing written to the bucket.
	fork, forkWant := newModule(t, "readonly-fork")
	m, compiles = untrusted(t, fork, forkWant)
	if compiles == 0 || m.get("uploads_skipped") == 0 {
		t.Errorf("%d compiles, uploads_skipped=%d; want a build whose uploads were skipped", compiles, m.get("uploads_skipped"))
	}

	after := listBucket(t, h)
	if !maps.Equal(before, after) {
		var added []string
		for k := range after {
			if _, ok := before[k]; !ok {
				added = append(added, k)
			}
		}
		slices.Sort(added)
		t.Errorf("the bucket changed: %d objects before, %d after; new: %q", len(before), len(after), added)
	}

	// stats lists the prefix, with the read-only credentials too.
	var wantObjects, wantBytes int64
	for k, v := range after {
		if strings.HasPrefix(k, prefix+"/") {
			var size int64
			fmt.Sscan(v, &size)
			wantObjects++
			wantBytes += size
		}
	}
	cmd := exec.Command(pluginBin, "stats", "--json", "--cache-dir="+h.baseDir, "--bucket="+s3Bucket,
		"--s3-endpoint-url="+h.srv.Endpoint, "--s3-path-style", "--prefix="+prefix)
	cmd.Env = append(append(os.Environ(), h.awsEnv()...), roEnv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	statsOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, stderr.String())
	}
	var rep statsReport
	if err := json.Unmarshal(statsOut, &rep); err != nil || rep.Bucket == nil {
		t.Fatalf("stats printed %s (%v)", statsOut, err)
	}
	u := rep.Bucket.Usage
	if u.Total.Objects != wantObjects || u.Total.Bytes != wantBytes || u.Foreign.Objects != 0 || len(u.Kinds) < 2 || u.Ages[0].Objects != wantObjects {
		t.Errorf("bucket usage %+v; want %d objects, %d bytes, all written within the hour", u, wantObjects, wantBytes)
	}
	if rep.Local.Total.Objects == 0 {
		t.Errorf("local usage %+v; want the base directory's objects", rep.Local)
	}
}

// listBucket lists the whole test bucket: key -> "<size> <etag>".
func listBucket(t *testing.T, h *s3Harness) map[string]string {
	t.Helper()
	objs := map[string]string{}
	p := s3.NewListObjectsV2Paginator(h.srv.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			objs[aws.ToString(o.Key)] = fmt.Sprintf("%d %s", aws.ToInt64(o.Size), aws.ToString(o.ETag))
		}
	}
	return objs
}
