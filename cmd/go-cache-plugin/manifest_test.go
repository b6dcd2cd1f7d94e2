package main

import "testing"

func TestParseManifestNames(t *testing.T) {
	if _, err := parseManifestNames("a,b@c"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "a/b", ".hidden", "a,,b", "sp ace"} {
		if _, err := parseManifestNames(bad); err == nil {
			t.Errorf("parseManifestNames(%q) succeeded", bad)
		}
	}
}
