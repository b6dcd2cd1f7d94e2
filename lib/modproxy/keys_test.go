package modproxy

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func genKey(t *testing.T, name string) string {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

func TestSumDBKeys(t *testing.T) {
	def, ok := KnownKey(DefaultSumDB)
	if !ok {
		t.Fatalf("no compiled-in key for %s", DefaultSumDB)
	}
	other := genKey(t, "other.example")
	third := genKey(t, "third.example")
	for _, tc := range []struct {
		list, gosumdb string
		want          []string
	}{
		{"off", "", nil},
		{"off", other, nil},
		{"", "off", nil},
		{"", "", []string{def}},           // the go command's default
		{"", DefaultSumDB, []string{def}}, // a name alone: compiled in
		{"", DefaultSumDB + " https://mirror.example", []string{def}}, // with a URL
		{"", other + " https://other.example/db", []string{other}},
		{DefaultSumDB, "", []string{def}}, // the reference tool's form
		{DefaultSumDB, "off", []string{def}},
		{"other.example", other, []string{other}}, // the key from GOSUMDB
		{" other.example , " + DefaultSumDB + " ", other + " https://x.example", []string{other, def}},
		{third + "," + DefaultSumDB, "", []string{third, def}}, // keys and names mixed, in order
		{third, other, []string{third}},
	} {
		got, err := SumDBKeys(tc.list, tc.gosumdb)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("SumDBKeys(%q, %q) = %q, %v; want %q", tc.list, tc.gosumdb, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		list, gosumdb string
		want          []string // in the message
	}{
		{"nokey.example", "", []string{`"nokey.example"`, "no verifier key", "--sumdb", "GOCACHE_SUMDB", "GOSUMDB", "key.go"}},
		{"", "nokey.example", []string{`"nokey.example"`, "no verifier key"}},
		{"nokey.example", other, []string{`"nokey.example"`}}, // GOSUMDB's key is another database's
		{"other.example+00000000+bad", "", []string{"invalid verifier key"}},
		{"", "other.example+00000000+bad", []string{"GOSUMDB", "invalid verifier key"}},
		{DefaultSumDB + "," + DefaultSumDB, "", []string{"listed twice"}},
		{"a/../b", "", []string{"invalid checksum database name"}},
		{DefaultSumDB + ",", "", []string{"empty"}},
	} {
		got, err := SumDBKeys(tc.list, tc.gosumdb)
		if err == nil {
			t.Errorf("SumDBKeys(%q, %q) = %q, want an error", tc.list, tc.gosumdb, got)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("SumDBKeys(%q, %q): %v; want a message with %q", tc.list, tc.gosumdb, err, w)
			}
		}
	}
}

// TestKnownKeys checks the compiled-in keys: each is a valid verifier key
// of the database it is listed under, and the default one is the go
// command's own (its source ships with every toolchain).
func TestKnownKeys(t *testing.T) {
	for name, key := range knownKeys {
		v, err := note.NewVerifier(key)
		if err != nil || v.Name() != name {
			t.Errorf("key of %s: %v, name %q", name, err, v.Name())
		}
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "src", "cmd", "go", "internal", "modfetch", "key.go"))
	if err != nil {
		t.Fatalf("the go command's list of keys: %v", err)
	}
	if def, _ := KnownKey(DefaultSumDB); !strings.Contains(string(src), `"`+def+`"`) {
		t.Errorf("the go command's list of keys does not hold %s", def)
	}
}
