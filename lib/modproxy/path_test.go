package modproxy

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/mod/module"
)

func testDBs(name string) bool { return name == "sum.example" }

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path      string
		kind      kind
		module    string
		version   string
		immutable bool
		code      int // expected error status, 0 for success
	}{
		{path: "/example.com/a/@v/list", kind: kindList, module: "example.com/a"},
		{path: "example.com/a/@latest", kind: kindLatest, module: "example.com/a"},
		{path: "/example.com/a/@v/v1.2.3.info", kind: kindInfo, module: "example.com/a", version: "v1.2.3", immutable: true},
		{path: "/example.com/a/@v/master.info", kind: kindInfo, module: "example.com/a", version: "master"},
		{path: "/example.com/a/@v/v1.2.info", kind: kindInfo, module: "example.com/a", version: "v1.2"},
		{path: "/example.com/a/@v/v1.2.3.mod", kind: kindMod, module: "example.com/a", version: "v1.2.3", immutable: true},
		{path: "/github.com/!foo/bar/@v/v0.0.0-20240101000000-abcdefabcdef.zip", kind: kindZip, module: "github.com/Foo/bar", version: "v0.0.0-20240101000000-abcdefabcdef", immutable: true},
		{path: "/example.com/a/v2/@v/v2.0.0.zip", kind: kindZip, module: "example.com/a/v2", version: "v2.0.0", immutable: true},
		{path: "/example.com/a/@v/v2.0.0+incompatible.zip", kind: kindZip, module: "example.com/a", version: "v2.0.0+incompatible", immutable: true},
		{path: "/example.com/a/@v/v1.0.0-!r!c1.info", kind: kindInfo, module: "example.com/a", version: "v1.0.0-RC1", immutable: true},
		{path: "/sumdb/sum.example/supported", kind: kindSupported},
		{path: "/sumdb/sum.example/latest", kind: kindSumLatest},
		{path: "/sumdb/sum.example/lookup/example.com/!a@v1.0.0", kind: kindSumLookup, module: "example.com/A", version: "v1.0.0", immutable: true},
		{path: "/sumdb/sum.example/tile/8/0/001", kind: kindSumTile, immutable: true},
		{path: "/sumdb/sum.example/tile/8/1/x001/234.p/7", kind: kindSumTile},
		{path: "/sumdb/sum.example/tile/8/data/000", kind: kindSumTile, immutable: true},

		{path: "", code: 404},
		{path: "/", code: 404},
		{path: "/example.com/a", code: 404},
		{path: "/example.com/A/@v/list", code: 400},
		{path: "/example.com/../a/@v/list", code: 400},
		{path: "/../../etc/passwd", code: 400},
		{path: "/./example.com/a/@v/list", code: 400},
		{path: "/example.com/a/@v/..", code: 400},
		{path: "/sumdb/sum.example/../sum.example/latest", code: 400},
		{path: "/sumdb/sum.example/tile/8/0/../001", code: 400},
		{path: "/example.com/a/@v/v1.0.0/../x.zip", code: 400},
		{path: "/example.com/a/@v/v1.0.zip", code: 404},
		{path: "/example.com/a/@v/V1.0.0.mod", code: 400},
		{path: "/example.com/a/@v/v1.0.0.tar", code: 404},
		{path: "/example.com/a/@v/.info", code: 400},
		{path: "/example.com/a/@v/v2.0.0.zip", code: 404},
		{path: "/example.com/a/@v/v1.0.0+incompatible.zip", code: 404},
		{path: "/nodot/@v/list", code: 400},
		{path: "/example.com/a\\b/@v/list", code: 400},
		{path: "/example.com/a\x00/@v/list", code: 400},
		{path: "/example.com/" + strings.Repeat("a", maxPathLen) + "/@v/list", code: 400},
		{path: "/sumdb/other.example/supported", code: 404},
		{path: "/sumdb/sum.example/tile/8/0/1", code: 400},
		{path: "/sumdb/sum.example/tile/8/0/001.p/256", code: 400},
		{path: "/sumdb/sum.example/lookup/example.com/a", code: 400},
		{path: "/sumdb/sum.example/lookup/example.com/a@master", code: 400},
		{path: "/sumdb/sum.example/nope", code: 404},
		{path: "/sumdb/", code: 404},
	} {
		r, err := parsePath(tc.path, testDBs)
		if tc.code != 0 {
			var herr *httpError
			if !errors.As(err, &herr) || herr.code != tc.code {
				t.Errorf("parsePath(%q) = %+v, %v; want a %d", tc.path, r, err, tc.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("parsePath(%q): %v", tc.path, err)
			continue
		}
		if r.kind != tc.kind || r.module != tc.module || r.version != tc.version || r.immutable != tc.immutable {
			t.Errorf("parsePath(%q) = kind %v module %q version %q immutable %v; want %v %q %q %v",
				tc.path, r.kind, r.module, r.version, r.immutable, tc.kind, tc.module, tc.version, tc.immutable)
		}
		if r.name != strings.TrimPrefix(tc.path, "/") {
			t.Errorf("parsePath(%q): name %q", tc.path, r.name)
		}
	}
}

var hexName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// FuzzParsePath checks that the parser never panics, that every error is
// a 4xx, and that what it accepts is a valid module path and version with
// a store key of the right form.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/example.com/a/@v/list", "/example.com/a/@latest", "/example.com/a/@v/v1.2.3.zip",
		"/github.com/!foo/bar/@v/v0.0.0-20240101000000-abcdefabcdef.mod", "/example.com/a/@v/master.info",
		"/sumdb/sum.example/lookup/example.com/!a@v1.0.0", "/sumdb/sum.example/tile/8/1/x001/234.p/7",
		"/sumdb/sum.example/latest", "/../x", "/example.com/a/@v/../../x.zip",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := parsePath(p, testDBs)
		if err != nil {
			var herr *httpError
			if !errors.As(err, &herr) || herr.code < 400 || herr.code >= 500 || herr.msg == "" {
				t.Fatalf("parsePath(%q): error %v is not a 4xx with a message", p, err)
			}
			return
		}
		if k := r.key(); k.Kind != "module" || !hexName.MatchString(k.Name) {
			t.Fatalf("parsePath(%q): key %v", p, k)
		}
		if strings.Contains(r.name, "..") && r.kind != kindInfo && r.kind != kindSumLookup {
			t.Fatalf("parsePath(%q): name %q has ..", p, r.name)
		}
		if r.module != "" {
			if err := module.CheckPath(r.module); err != nil {
				t.Fatalf("parsePath(%q): module %q: %v", p, r.module, err)
			}
		}
		switch r.kind {
		case kindMod, kindZip:
			if err := module.Check(r.module, r.version); err != nil || module.CanonicalVersion(r.version) != r.version {
				t.Fatalf("parsePath(%q): version %q: %v", p, r.version, err)
			}
		case kindSupported, kindSumLatest, kindSumLookup, kindSumTile:
			if r.db != "sum.example" {
				t.Fatalf("parsePath(%q): database %q", p, r.db)
			}
		}
		if r.kind == kindSupported && r.immutable {
			t.Fatalf("parsePath(%q): supported is immutable", p)
		}
	})
}
