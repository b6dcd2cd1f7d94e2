package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestShippedBinaryHasNoTestHooks builds the binary as a release is built
// (no build tags) and checks that the test-only setting of testhooks_on.go
// is not in it, while it is in the tests' own build.
func TestShippedBinaryHasNoTestHooks(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "go-cache-plugin")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		bin  string
		want bool
	}{{bin, false}, {pluginBin, true}} {
		data, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(data, []byte(revProxyTestDialEnvName)); got != c.want {
			t.Errorf("%s holds %q: %v, want %v", c.bin, revProxyTestDialEnvName, got, c.want)
		}
	}
}

// revProxyTestDialEnvName is the name of testhooks_on.go's setting, spelt
// out: the test is built without that file too.
const revProxyTestDialEnvName = "GOCACHE_REVPROXY_TEST_ONLY_DIAL"
