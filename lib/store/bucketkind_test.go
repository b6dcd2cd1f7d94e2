package store

import "testing"

func TestBucketKind(t *testing.T) {
	out := "output/ab/ab" + repeatHex(62)
	for _, c := range []struct{ key, want string }{
		{out, "output"},
		{"action/00/00" + repeatHex(62), "action"},
		{"manifest/example.com_m-linux-amd64-build", "manifest"},
		{"manifest/", ""},     // no name
		{"manifest", ""},      // no slash
		{"README.txt", ""},    // not the cache's
		{"Bad Kind/x", ""},    // not a kind
		{"/output/ab/cd", ""}, // empty kind
		{"", ""},
	} {
		if got := BucketKind(c.key); got != c.want {
			t.Errorf("BucketKind(%q) = %q, want %q", c.key, got, c.want)
		}
	}
}

func repeatHex(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}
