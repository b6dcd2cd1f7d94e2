package main

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestDeriveManifestName(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok := deriveManifestName(sub, "", ""); ok {
		// A go.mod above the temporary directory would be found; there
		// should be none.
		t.Skip("a go.mod above the temporary directory")
	}
	gomod := "// a comment\nmodule \"golang.org/x/tools/gopls\" // the module\n\ngo 1.26\n"
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ goos, goarch, want string }{
		{"", "", "golang.org_x_tools_gopls@" + runtime.GOOS + "-" + runtime.GOARCH},
		{"windows", "arm64", "golang.org_x_tools_gopls@windows-arm64"},
	} {
		got, ok := deriveManifestName(sub, tc.goos, tc.goarch)
		if !ok || got != tc.want || !validManifestName(got) {
			t.Errorf("deriveManifestName(%q, %q) = %q, %v; want %q", tc.goos, tc.goarch, got, ok, tc.want)
		}
	}
	if _, err := parseManifestNames("a,b@c"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "a/b", ".hidden", "a,,b", "sp ace"} {
		if _, err := parseManifestNames(bad); err == nil {
			t.Errorf("parseManifestNames(%q) succeeded", bad)
		}
	}
}
