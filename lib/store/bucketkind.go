package store

import "strings"

// BucketKind returns the kind of the remote object at key (the prefix
// removed), for reports of what a bucket holds: that of a store key,
// "<kind>/<xx>/<name>", or, for the other objects front ends keep beside
// the store's under a kind of their own (the build cache's manifests,
// "manifest/<name>"), the first element of the key. Anything else is not
// the cache's: "".
func BucketKind(key string) string {
	if k, ok := ParseKey(key); ok {
		return k.Kind
	}
	if kind, rest, ok := strings.Cut(key, "/"); ok && rest != "" && validKind(kind) {
		return kind
	}
	return ""
}
