package modproxy

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// DefaultSumDB is the checksum database the go command uses when GOSUMDB
// is not set, and so the one SumDBKeys takes for an empty GOSUMDB.
const DefaultSumDB = "sum.golang.org"

// knownKeys are the verifier keys of well-known checksum databases, by
// name. The go command compiles its default database's key in the same
// way; a database's key changes only if its operator starts a new log.
var knownKeys = map[string]string{
	DefaultSumDB: "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
}

// KnownKey returns the verifier key compiled in for the checksum database
// called name, if there is one.
func KnownKey(name string) (string, bool) {
	k, ok := knownKeys[name]
	return k, ok
}

// keyHelp says where a verifier key comes from, for error messages.
const keyHelp = "give its verifier key, name+hash+key, in --sumdb (GOCACHE_SUMDB) or GOSUMDB; " +
	"the database's operator publishes it, and the go command's own list is $GOROOT/src/cmd/go/internal/modfetch/key.go"

// SumDBKeys selects the checksum databases a Proxy serves
// ([Config.SumDBs]) from a list in the syntax of the daemon's --sumdb flag
// and the GOSUMDB value in effect.
//
// list is "off" (no database), or comma-separated entries, each a
// verifier key ("name+hash+key") or a database name (as the reference
// tool takes them); the first entry is the one module files are verified
// against. An empty list means GOSUMDB's database.
//
// gosumdb is GOSUMDB as the go command reads it: "off", a verifier key or
// a name, either followed by a URL, or empty for [DefaultSumDB]. A name's
// key is taken from gosumdb when it names that database with a key, else
// from the keys compiled in ([KnownKey]); a name with neither is an error
// that says where the key goes and where to find one.
func SumDBKeys(list, gosumdb string) ([]string, error) {
	list = strings.TrimSpace(list)
	if list == "off" {
		return nil, nil
	}
	gosumdb = strings.TrimSpace(gosumdb)
	var envKey string // gosumdb's key, if it has one
	if f := strings.Fields(gosumdb); len(f) > 0 && strings.Contains(f[0], "+") {
		if _, err := note.NewVerifier(f[0]); err != nil {
			return nil, fmt.Errorf("GOSUMDB=%q: invalid verifier key: %v", gosumdb, err)
		}
		envKey = f[0]
	}
	if list == "" {
		switch f := strings.Fields(gosumdb); {
		case gosumdb == "off":
			return nil, nil
		case len(f) == 0:
			list = DefaultSumDB
		default:
			list = f[0]
		}
	}
	var keys []string
	seen := map[string]bool{}
	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.TrimSpace(entry)
		key, err := sumDBKey(entry, envKey)
		if err != nil {
			return nil, err
		}
		name, _, _ := strings.Cut(key, "+")
		if seen[name] {
			return nil, fmt.Errorf("checksum database %q listed twice", name)
		}
		seen[name] = true
		keys = append(keys, key)
	}
	return keys, nil
}

// sumDBKey returns the verifier key of one entry of a --sumdb list.
func sumDBKey(entry, envKey string) (string, error) {
	if entry == "" {
		return "", errors.New("empty checksum database name")
	}
	if strings.Contains(entry, "+") {
		if _, err := note.NewVerifier(entry); err != nil {
			return "", fmt.Errorf("checksum database %q: invalid verifier key, want name+hash+key: %v", entry, err)
		}
		return entry, nil
	}
	if err := checkDBName(entry); err != nil {
		return "", err
	}
	if envName, _, _ := strings.Cut(envKey, "+"); envKey != "" && envName == entry {
		return envKey, nil
	}
	if k, ok := knownKeys[entry]; ok {
		return k, nil
	}
	return "", fmt.Errorf("checksum database %q: no verifier key known: %s", entry, keyHelp)
}

// checkDBName checks a checksum database's name: a host name, or what
// note accepts as a verifier's name, and nothing that could leave
// sumdb/<name>/ in a path.
func checkDBName(name string) error {
	if strings.ContainsAny(name, "/\\ \t\n") || name == "." || name == ".." {
		return fmt.Errorf("invalid checksum database name %q", name)
	}
	return nil
}
