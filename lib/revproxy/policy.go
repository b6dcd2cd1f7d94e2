package revproxy

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultRules are the path rules used when none are configured: the
// download files of the common ecosystems, which their registries never
// change once published. Maven snapshots are excluded.
var DefaultRules = []string{
	"!**SNAPSHOT**",          // Maven snapshots are rebuilt under one name
	"**/-/*.tgz",             // npm tarballs: /<name>/-/<name>-<version>.tgz
	"**.whl",                 // Python wheels
	"**/packages/**.tar.gz",  // Python source distributions
	"**/packages/**.zip",     // Python source distributions, older form
	"**/pool/**.deb",         // Debian and Ubuntu packages
	"**/pool/**.udeb",        // Debian installer packages
	"**.crate",               // Rust crates
	"**/crates/*/*/download", // Rust crates, through the registry's download API
	"**.jar",                 // Java archives
}

// A Rule matches request paths. Patterns are globs over the URL path: "*"
// matches any run of characters other than "/", "**" any run at all, and
// every other character itself. A rule starting with "!" excludes what it
// matches. Rules are tried in order; the first that matches decides.
type Rule struct {
	Pattern string
	Exclude bool
	re      *regexp.Regexp
}

// ParseRules parses rules, a list of patterns (see [Rule]). The entry
// "default" stands for [DefaultRules]. Empty entries are ignored.
func ParseRules(list []string) ([]Rule, error) {
	var rules []Rule
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
			continue
		case s == "default":
			def, err := ParseRules(DefaultRules)
			if err != nil {
				return nil, err
			}
			rules = append(rules, def...)
			continue
		}
		r := Rule{Pattern: s}
		if rest, ok := strings.CutPrefix(s, "!"); ok {
			r.Exclude, s = true, rest
		}
		if s == "" {
			return nil, fmt.Errorf("rule %q: empty pattern", r.Pattern)
		}
		if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "*") {
			return nil, fmt.Errorf("rule %q: a pattern matches a URL path, so it starts with / or *", r.Pattern)
		}
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(s); i++ {
			switch {
			case strings.HasPrefix(s[i:], "**"):
				b.WriteString(".*")
				i++
			case s[i] == '*':
				b.WriteString("[^/]*")
			default:
				b.WriteString(regexp.QuoteMeta(s[i : i+1]))
			}
		}
		b.WriteString("$")
		re, err := regexp.Compile(b.String())
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.Pattern, err)
		}
		r.re = re
		rules = append(rules, r)
	}
	return rules, nil
}

// matchRules reports whether path is cacheable by the first rule that
// matches it; no match is false.
func matchRules(rules []Rule, path string) (cache bool, rule string) {
	for _, r := range rules {
		if r.re.MatchString(path) {
			return !r.Exclude, r.Pattern
		}
	}
	return false, ""
}

// targets is the set of host names the proxy caches for.
type targets struct {
	exact    map[string]bool
	suffixes []string // from "*.example.com": ".example.com"
}

func parseTargets(list []string) (targets, error) {
	t := targets{exact: map[string]bool{}}
	for _, h := range list {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h == "" {
			continue
		}
		if strings.ContainsAny(h, "/:@ ") && net.ParseIP(h) == nil {
			return t, fmt.Errorf("target %q: want a host name, without scheme, port or path", h)
		}
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			if rest == "" || strings.Contains(rest, "*") {
				return t, fmt.Errorf("target %q: a wildcard is only allowed as the first label", h)
			}
			t.suffixes = append(t.suffixes, "."+rest)
			continue
		}
		if strings.Contains(h, "*") {
			return t, fmt.Errorf("target %q: a wildcard is only allowed as the first label", h)
		}
		t.exact[h] = true
	}
	if len(t.exact) == 0 && len(t.suffixes) == 0 {
		return t, fmt.Errorf("no target hosts")
	}
	return t, nil
}

// match reports whether host (no port) is a target.
func (t targets) match(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if t.exact[host] {
		return true
	}
	for _, s := range t.suffixes {
		if strings.HasSuffix(host, s) && len(host) > len(s) {
			return true
		}
	}
	return false
}

// cacheControl is a parsed Cache-Control header.
type cacheControl struct {
	noStore, noCache, private, public, immutable bool
	maxAge, sMaxAge                              int64 // seconds; -1 if absent
}

func parseCacheControl(h http.Header) cacheControl {
	cc := cacheControl{maxAge: -1, sMaxAge: -1}
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			val = strings.Trim(strings.TrimSpace(val), `"`)
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store":
				cc.noStore = true
			case "no-cache":
				cc.noCache = true
			case "private":
				cc.private = true
			case "public":
				cc.public = true
			case "immutable":
				cc.immutable = true
			case "max-age":
				cc.maxAge = parseSeconds(val)
			case "s-maxage":
				cc.sMaxAge = parseSeconds(val)
			}
		}
	}
	return cc
}

// parseSeconds parses a delta-seconds value; a bad one is 0 (stale).
func parseSeconds(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange && !strings.HasPrefix(s, "-") {
			return 1 << 31 // larger than any limit
		}
		return 0
	}
	return n
}

// lifetime is how long the response stays fresh for a shared cache: its
// s-maxage or max-age less its Age; -1 if it says neither.
func (cc cacheControl) lifetime(h http.Header) time.Duration {
	age := cc.sMaxAge
	if age < 0 {
		age = cc.maxAge
	}
	if age < 0 {
		return -1
	}
	if a := h.Get("Age"); a != "" {
		age -= parseSeconds(a)
	}
	return time.Duration(max(age, 0)) * time.Second
}

// storage says where a response is kept.
type storage int

const (
	storeNone   storage = iota // passed through
	storeDisk                  // the store: local dir and bucket, forever
	storeMemory                // in memory, until it expires
)

func (s storage) String() string {
	return [...]string{"none", "disk", "memory"}[s]
}

// decide says where the response to req, a GET, is kept, for how long
// (memory only), and why.
func (p *Proxy) decide(req *http.Request, path string, hasQuery bool, resp *http.Response) (storage, time.Duration, string) {
	if resp.StatusCode != http.StatusOK {
		return storeNone, 0, fmt.Sprintf("status %d", resp.StatusCode)
	}
	cc := parseCacheControl(resp.Header)
	switch {
	case cc.noStore:
		return storeNone, 0, "no-store"
	case cc.private:
		return storeNone, 0, "private"
	case resp.Header.Get("Set-Cookie") != "":
		return storeNone, 0, "sets a cookie"
	case strings.Contains(resp.Header.Get("Vary"), "*"):
		return storeNone, 0, "Vary: *"
	case req.Header.Get("Authorization") != "" && !cc.public:
		return storeNone, 0, "request has Authorization and the response is not public"
	}
	life := cc.lifetime(resp.Header)
	if cc.immutable {
		return storeDisk, 0, "immutable"
	}
	if life >= p.longMaxAge {
		return storeDisk, 0, fmt.Sprintf("max-age %v", life)
	}
	if !hasQuery {
		if ok, rule := matchRules(p.rules, path); ok {
			return storeDisk, 0, "rule " + rule
		}
	}
	if p.mem != nil && life > 0 && !cc.noCache {
		return storeMemory, min(life, p.memMaxAge), fmt.Sprintf("max-age %v", life)
	}
	return storeNone, 0, "not immutable"
}

// varyNames returns the request headers resp varies on, other than
// Accept-Encoding (handled through Content-Encoding), canonicalised.
func varyNames(h http.Header) []string {
	var names []string
	for _, line := range h.Values("Vary") {
		for _, n := range strings.Split(line, ",") {
			n = http.CanonicalHeaderKey(strings.TrimSpace(n))
			if n != "" && n != "Accept-Encoding" {
				names = append(names, n)
			}
		}
	}
	return names
}

// servable reports whether a stored response may answer req: the request
// headers it varies on match, and the client accepts its content coding.
func servable(m *Meta, req *http.Request) bool {
	for name, val := range m.Vary {
		if strings.Join(req.Header.Values(name), ", ") != val {
			return false
		}
	}
	enc := strings.ToLower(m.Header["Content-Encoding"])
	if enc == "" || enc == "identity" {
		return true
	}
	return acceptsEncoding(req.Header.Values("Accept-Encoding"), enc)
}

// acceptsEncoding reports whether the Accept-Encoding values accept enc.
func acceptsEncoding(vals []string, enc string) bool {
	for _, line := range vals {
		for _, part := range strings.Split(line, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != enc && name != "*" {
				continue
			}
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			if q == "q=0" || q == "q=0.0" || q == "q=0.00" || q == "q=0.000" {
				return false
			}
			return true
		}
	}
	return false
}

// CheckTargets checks a list of target hosts as [Config.Targets] takes
// them.
func CheckTargets(list []string) error {
	_, err := parseTargets(list)
	return err
}
