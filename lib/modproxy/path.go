package modproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// maxPathLen bounds the request path under the mount point. The go
// command's module paths are far shorter; anything longer is refused
// before it is looked at.
const maxPathLen = 1024

// kind is what a request asks for.
type kind int

const (
	kindList      kind = iota // <module>/@v/list
	kindInfo                  // <module>/@v/<version>.info
	kindMod                   // <module>/@v/<version>.mod
	kindZip                   // <module>/@v/<version>.zip
	kindLatest                // <module>/@latest
	kindSupported             // sumdb/<name>/supported
	kindSumLatest             // sumdb/<name>/latest
	kindSumLookup             // sumdb/<name>/lookup/<module>@<version>
	kindSumTile               // sumdb/<name>/tile/<H>/<L>/<NNN>[.p/<W>]
)

var kindNames = [...]string{"list", "info", "mod", "zip", "latest", "supported", "sumdb-latest", "lookup", "tile"}

func (k kind) String() string { return kindNames[k] }

// request is a parsed, validated request path.
type request struct {
	kind kind
	// name is the escaped path under the mount point, without a leading
	// slash ("github.com/!foo/bar/@v/v1.0.0.zip"): the path asked of the
	// upstream and, hashed, the object's name in the store.
	name string

	module  string // the module path, unescaped (module files and lookups)
	version string // the version, unescaped (.info, .mod, .zip, lookups)

	db     string // the checksum database's name (sumdb requests)
	dbPath string // the path under the database, with a leading slash ("/tile/8/0/001")

	// immutable reports whether the response never changes: cached for
	// good. Otherwise it is cached for the TTL and served stale when the
	// upstream fails.
	immutable bool
}

// key is the request's object in the store.
func (r request) key() store.Key { return nameKey(r.name) }

// nameKey is the store key of the object called name:
// {Kind: "module", Name: hex(sha256(name))}.
func nameKey(name string) store.Key {
	sum := sha256.Sum256([]byte(name))
	return store.Key{Kind: "module", Name: hex.EncodeToString(sum[:])}
}

// httpError is an error with the HTTP status it is served with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// parsePath parses p, a request path under the mount point (with or
// without a leading slash). dbs reports whether a checksum database name
// is proxied. It never panics; an error is an *httpError.
func parsePath(p string, dbs func(string) bool) (request, error) {
	p = strings.TrimPrefix(p, "/")
	if len(p) > maxPathLen {
		return request{}, badRequest("path too long (%d bytes, at most %d)", len(p), maxPathLen)
	}
	if p == "" {
		return request{}, notFound("not a module proxy path")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x21 || c >= 0x7f || c == '\\' {
			return request{}, badRequest("invalid character %q in path", c)
		}
	}
	// Dot segments, sent as they are or percent-encoded (the path here is
	// decoded), are refused rather than resolved: no module path, version
	// or database path has one, and a mount point that cleaned them
	// would serve another path than the one asked for.
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return request{}, badRequest("path has a %q segment: dot segments are not allowed in module proxy paths", seg)
		}
	}
	if rest, ok := strings.CutPrefix(p, "sumdb/"); ok {
		return parseSumPath(p, rest, dbs)
	}
	if epath, ok := strings.CutSuffix(p, "/@latest"); ok {
		mod, err := modulePath(epath)
		if err != nil {
			return request{}, err
		}
		return request{kind: kindLatest, name: p, module: mod}, nil
	}
	epath, file, ok := strings.Cut(p, "/@v/")
	if !ok {
		return request{}, notFound("not a module proxy path: want <module>/@v/... or <module>/@latest")
	}
	mod, err := modulePath(epath)
	if err != nil {
		return request{}, err
	}
	if file == "list" {
		return request{kind: kindList, name: p, module: mod}, nil
	}
	var k kind
	var evers string
	switch {
	case strings.HasSuffix(file, ".info"):
		k, evers = kindInfo, strings.TrimSuffix(file, ".info")
	case strings.HasSuffix(file, ".mod"):
		k, evers = kindMod, strings.TrimSuffix(file, ".mod")
	case strings.HasSuffix(file, ".zip"):
		k, evers = kindZip, strings.TrimSuffix(file, ".zip")
	default:
		return request{}, notFound("unknown file %q: want list, <version>.info, .mod or .zip", file)
	}
	vers, err := moduleVersion(evers)
	if err != nil {
		return request{}, err
	}
	r := request{kind: k, name: p, module: mod, version: vers}
	canonical := module.CanonicalVersion(vers) == vers
	if canonical {
		if err := module.Check(mod, vers); err != nil {
			return request{}, notFound("%v", err)
		}
		if strings.HasSuffix(vers, "+incompatible") && semver.Compare(semver.Major(vers), "v2") < 0 {
			return request{}, notFound("%s@%s: +incompatible is for major versions v2 and above", mod, vers)
		}
	}
	switch {
	case k == kindInfo:
		// A query (a branch, a tag that is not canonical) resolves to
		// different versions over time.
		r.immutable = canonical
	case !canonical:
		return request{}, notFound("%s@%s: version is not canonical (want %q)", mod, vers, module.CanonicalVersion(vers))
	default:
		r.immutable = true
	}
	return r, nil
}

// modulePath unescapes and checks an escaped module path.
func modulePath(epath string) (string, error) {
	mod, err := module.UnescapePath(epath)
	if err != nil {
		return "", badRequest("invalid module path %q: %v", epath, err)
	}
	if err := module.CheckPath(mod); err != nil {
		return "", badRequest("invalid module path: %v", err)
	}
	return mod, nil
}

// moduleVersion unescapes and checks an escaped version.
func moduleVersion(evers string) (string, error) {
	vers, err := module.UnescapeVersion(evers)
	if err != nil {
		return "", badRequest("invalid version %q: %v", evers, err)
	}
	if vers == "" || strings.ContainsAny(vers, "/@") || vers == "." || vers == ".." || strings.HasPrefix(vers, "-") {
		return "", badRequest("invalid version %q", evers)
	}
	return vers, nil
}

// parseSumPath parses rest, the path under "sumdb/" of p.
func parseSumPath(p, rest string, dbs func(string) bool) (request, error) {
	db, sub, ok := strings.Cut(rest, "/")
	if !ok || db == "" {
		return request{}, notFound("not a checksum database path: want sumdb/<name>/...")
	}
	if !dbs(db) {
		// 404 makes the go command fall back to the next proxy, or to
		// the database itself.
		return request{}, notFound("checksum database %q is not proxied here", db)
	}
	r := request{name: p, db: db, dbPath: "/" + sub}
	switch {
	case sub == "supported":
		r.kind = kindSupported
	case sub == "latest":
		r.kind = kindSumLatest
	case strings.HasPrefix(sub, "lookup/"):
		target := strings.TrimPrefix(sub, "lookup/")
		i := strings.LastIndex(target, "@")
		if i < 0 {
			return request{}, badRequest("invalid lookup %q: want <module>@<version>", target)
		}
		mod, err := modulePath(target[:i])
		if err != nil {
			return request{}, err
		}
		vers, err := moduleVersion(target[i+1:])
		if err != nil {
			return request{}, err
		}
		if !semver.IsValid(vers) {
			return request{}, badRequest("invalid lookup %q: version is not semantic", target)
		}
		r.kind, r.module, r.version, r.immutable = kindSumLookup, mod, vers, true
	case strings.HasPrefix(sub, "tile/"):
		t, err := tlog.ParseTilePath(sub)
		if err != nil || t.Path() != sub {
			return request{}, badRequest("invalid tile path %q", sub)
		}
		r.kind = kindSumTile
		r.immutable = t.W == 1<<t.H // partial tiles may go away upstream
	default:
		return request{}, notFound("unknown checksum database path %q", sub)
	}
	return r, nil
}
