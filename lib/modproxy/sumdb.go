package modproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
)

// A sumDB is a checksum database the proxy serves and, for the first one,
// verifies module files against. Its client reads the database through
// the proxy's own cache (never over HTTP to itself), and keeps the latest
// signed tree it has verified in memory and in the store, so that a
// restarted daemon, or another one on the same bucket, goes on from it.
type sumDB struct {
	p    *Proxy
	name string
	vkey string

	client atomic.Pointer[sumdb.Client]

	mu     sync.Mutex
	loaded bool
	latest []byte // the latest verified signed tree ("" before the first)
}

func newSumDB(p *Proxy, vkey string) (*sumDB, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("invalid verifier key: %w", err)
	}
	if strings.ContainsAny(v.Name(), "/ ") || v.Name() == "" {
		return nil, fmt.Errorf("invalid database name %q", v.Name())
	}
	db := &sumDB{p: p, name: v.Name(), vkey: vkey}
	db.client.Store(sumdb.NewClient(db))
	return db, nil
}

// configName is the store name of the database's latest verified tree.
func (db *sumDB) configName() string { return "sumdb/" + db.name + "/config/latest" }

// lookup returns the go.sum hash ("h1:...") of mod@vers, or of its go.mod.
func (db *sumDB) lookup(mod, vers string, goMod bool) (string, error) {
	target := vers
	if goMod {
		target += "/go.mod"
	}
	c := db.client.Load()
	lines, err := c.Lookup(mod, target)
	if err != nil {
		// The client remembers failures for good: start afresh (from
		// the latest tree it verified) so that the next call retries.
		db.client.CompareAndSwap(c, sumdb.NewClient(db))
		return "", fmt.Errorf("checksum database %s: %w", db.name, err)
	}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == mod && f[1] == target {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("checksum database %s has no hash for %s %s", db.name, mod, target)
}

// verify checks the module file at path (a zip, or a go.mod) of mod@vers
// against the checksum database.
func (p *Proxy) verify(mod, vers string, isZip bool, path string) error {
	var got string
	var err error
	what := "go.mod"
	if isZip {
		what = "zip"
		got, err = dirhash.HashZip(path, dirhash.Hash1)
	} else {
		got, err = dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) { return os.Open(path) })
	}
	if err != nil {
		return fmt.Errorf("%s@%s: hashing the %s: %w", mod, vers, what, err)
	}
	want, err := p.checker.lookup(mod, vers, !isZip)
	if err != nil {
		return fmt.Errorf("verifying %s@%s: %w", mod, vers, err)
	}
	if got != want {
		return fmt.Errorf("SECURITY ERROR: %s@%s: the %s from the upstream has hash %s, checksum database %s has %s", mod, vers, what, got, p.checker.name, want)
	}
	p.stats.verified.Add(1)
	return nil
}

// The sumdb.ClientOps of the database.

// ReadRemote reads path ("/lookup/...", "/tile/...") through the proxy's
// cache.
func (db *sumDB) ReadRemote(path string) ([]byte, error) {
	p := db.p
	req, err := parsePath("sumdb/"+db.name+path, func(n string) bool { return n == db.name })
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(p.ctx, 2*p.cfg.Timeout)
	defer cancel()
	res, err := p.get(ctx, req)
	if err != nil {
		return nil, err
	}
	if !res.isObj {
		return res.data, nil
	}
	data, ok, err := p.st.ReadLocal(req.key(), maxMeta)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: gone from the cache", req.name)
	}
	return data, nil
}

// ReadConfig returns the verifier key, or the latest verified tree: from
// memory, else the store's local directory, else the bucket, else none.
func (db *sumDB) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(db.vkey), nil
	}
	if file != db.name+"/latest" {
		return nil, fmt.Errorf("unknown config file %q", file)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if !db.loaded {
		db.latest = db.loadLatest()
		db.loaded = true
	}
	return bytes.Clone(db.latest), nil
}

func (db *sumDB) loadLatest() []byte {
	p := db.p
	key := nameKey(db.configName())
	if data, ok, err := p.st.ReadLocal(key, maxMeta); err == nil && ok {
		return data
	}
	if p.st.HasRemote() {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
		defer cancel()
		if data, ok := p.st.ReadRemoteRaw(ctx, key.String(), maxMeta); ok {
			return data
		}
	}
	return nil
}

// WriteConfig records a newer verified tree, in memory, the local
// directory and (behind) the bucket.
func (db *sumDB) WriteConfig(file string, old, new []byte) error {
	if file != db.name+"/latest" {
		return fmt.Errorf("unknown config file %q", file)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if !bytes.Equal(db.latest, old) {
		return sumdb.ErrWriteConflict
	}
	db.latest = bytes.Clone(new)
	p := db.p
	key := nameKey(db.configName())
	if _, err := p.st.WriteBytes(p.ctx, key, db.latest); err != nil {
		p.logf("modproxy: checksum database %s: storing the latest tree: %v", db.name, err)
	}
	if p.st.HasRemote() && !p.st.ReadOnly() {
		data := db.latest
		p.background(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			defer cancel()
			if err := p.st.WriteRemoteRaw(ctx, key.String(), data); err != nil {
				p.verbosef("modproxy: checksum database %s: writing the latest tree to the bucket: %v", db.name, err)
			}
		})
	}
	return nil
}

// ReadCache reports a miss: ReadRemote reads the proxy's cache already.
func (db *sumDB) ReadCache(file string) ([]byte, error) { return nil, errNoCache }

// WriteCache does nothing: ReadRemote stored the file already.
func (db *sumDB) WriteCache(file string, data []byte) {}

var errNoCache = errors.New("no client cache")

func (db *sumDB) Log(msg string) { db.p.verbosef("modproxy: checksum database %s: %s", db.name, msg) }

func (db *sumDB) SecurityError(msg string) {
	db.p.logf("modproxy: SECURITY ERROR: checksum database %s: %s", db.name, msg)
}
