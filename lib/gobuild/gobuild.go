// Package gobuild is the build cache: it maps the go command's action IDs to
// output objects on a [store.Store], and is the [cacheprog.Handler] behind a
// cache-prog server.
//
// # Layout
//
// Outputs are content-addressed; actions are small records naming them:
//
//	output/<xx>/<output-id>   the output bytes; <output-id> is their SHA-256, in hex
//	action/<xx>/<action-id>   "<output-id> <unix-nanos> <size>\n" in the local directory,
//	                          "<output-id> <unix-nanos>" in the remote tier
//
// where <xx> is the first two hex digits of the ID and <unix-nanos> is the
// time of the put, which the go command uses to expire cached test results
// ("go clean -testcache"). The remote form is that of the reference tool, so
// a bucket it wrote is read as is; a record without a size is completed when
// its output has been faulted in and verified.
//
// A local directory the reference tool wrote is read as is too: its action
// records are "<output-id> <size>\n", with the time of the put in the
// file's modification time. Such a record is used with that time and, on
// its first hit, rewritten in this package's local form.
//
// Outputs are uploaded before the action records that name them, so another
// worker never finds an action whose output has not been written.
//
// With [Manifests], each build also keeps a manifest in the remote tier,
// "manifest/<name>", listing the actions it asked for, and now and then
// packs their outputs into one object, "pack/<xx>/<pack-id>"; a build that
// starts prefetches what its manifest lists, from the packs where it can
// (see [Manifests] and manifest.go for the formats).
//
// For the store's trimmer ([Links]), an action record goes with its output:
// the output's last use is the record's, and a record whose output has
// been trimmed is removed. A record found without its output is a miss.
//
// # Log format
//
// [Cache.Logf] gets a line for a record it could not use, which is then a
// miss (the store logs its own lines, see package store):
//
//	action/3f/3f1c…: 4100 bytes, too long for an action record: ignored
//	action/3f/3f1c…: <why it does not parse>: ignored
//
// [Manifests.Logf] gets one line per manifest read or written, per pack
// written, and one summary per build's prefetch, at its end:
//
//	manifest <name>: none read
//	manifest <name>: <why it does not decode>: ignored
//	manifest <name>: wrote 1234 actions
//	manifest <name>: unchanged (1234 actions)
//	manifest <name>: kept: this build asked for 12 actions, it lists 1234 (...)
//	manifest <name>: the build asked for nothing cached: not written
//	manifest <name>: not written: <error>
//	pack <name>: wrote 812 outputs, 97700000 bytes [compressed to N]
//	pack <name>: not written: <error>
//	prefetch of <names> done|stopped by close|stopped: remote tier failing after 1.2s: <PrefetchStats>
//
// The binary always writes the Cache's lines to stderr, and the Manifests'
// with -v; --metrics prints the prefetch figures at exit.
package gobuild

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Key kinds of the build cache.
const (
	KindAction = "action"
	KindOutput = "output"
)

// maxRecord bounds the size of an action record.
const maxRecord = 256

// Cache is a build cache on a store. It implements [cacheprog.Handler].
type Cache struct {
	Store *store.Store

	// MinUploadSize is the smallest output uploaded to the remote tier;
	// smaller ones (and their actions) stay local.
	MinUploadSize int64

	// Logf, if set, receives log lines about records that could not be
	// used.
	Logf func(format string, args ...any)

	stats cacheCounters
}

// cacheCounters are a Cache's live counters, the twins of [Stats]'s
// fields (see internal/counters).
type cacheCounters struct {
	gets, hits, puts, putBytes atomic.Int64
}

var _ cacheprog.FastGetter = (*Cache)(nil)

// Stats are the build cache's request counts.
type Stats struct {
	Gets     int64 `json:"gets"`
	Hits     int64 `json:"hits"`
	Puts     int64 `json:"puts"`
	PutBytes int64 `json:"put_bytes"`
}

// Stats returns the request counts so far.
func (c *Cache) Stats() Stats {
	return counters.Snapshot[Stats](&c.stats)
}

func (c *Cache) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// record is a parsed action record.
type record struct {
	outputID []byte
	time     time.Time // zero if the record has none (the reference tool's local form)
	size     int64     // -1 if the record has none (the remote form)
}

func (r record) local() []byte {
	return fmt.Appendf(nil, "%x %d %d\n", r.outputID, r.time.UnixNano(), r.size)
}

func (r record) remote() []byte {
	return fmt.Appendf(nil, "%x %d", r.outputID, r.time.UnixNano())
}

// parseRecord parses an action record read from the local directory
// (local) or the remote tier. Three fields are "<output-id> <unix-nanos>
// <size>" in either place; two are "<output-id> <unix-nanos>" in the
// remote tier, but "<output-id> <size>" in the local directory, where
// only the reference tool writes two (the record's time is then zero: the
// caller takes the file's modification time). It is on the path of every
// lookup, so it splits the fields by hand.
func parseRecord(data []byte, local bool) (record, error) {
	var f [4]string
	n := 0
	for field := range strings.FieldsSeq(string(data)) {
		if n == len(f) {
			break
		}
		f[n] = field
		n++
	}
	if n != 2 && n != 3 {
		return record{}, fmt.Errorf("action record has %d fields, want 2 or 3", n)
	}
	oid, err := hex.DecodeString(f[0])
	if err != nil || len(oid) != cacheprog.IDSize {
		return record{}, fmt.Errorf("action record has invalid output ID %q", f[0])
	}
	if n == 2 && local {
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 {
			return record{}, fmt.Errorf("action record has invalid size %q", f[1])
		}
		return record{outputID: oid, size: size}, nil
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || ns < 0 {
		return record{}, fmt.Errorf("action record has invalid time %q", f[1])
	}
	r := record{outputID: oid, time: time.Unix(0, ns), size: -1}
	if n == 3 {
		if r.size, err = strconv.ParseInt(f[2], 10, 64); err != nil || r.size < 0 {
			return record{}, fmt.Errorf("action record has invalid size %q", f[2])
		}
	}
	return r, nil
}

// Links tells the store's trimmer that action records name outputs; pass
// it as [store.Options.Links].
var Links = store.Links{KindAction: recordTarget}

// recordTarget returns the output an action record names.
func recordTarget(data []byte) (store.Key, bool) {
	rec, err := parseRecord(data, true)
	if err != nil {
		return store.Key{}, false
	}
	return outputKey(rec.outputID), true
}

func actionKey(id []byte) store.Key { return store.Key{Kind: KindAction, Name: hex.EncodeToString(id)} }
func outputKey(id []byte) store.Key { return store.Key{Kind: KindOutput, Name: hex.EncodeToString(id)} }

// GetFast implements [cacheprog.FastGetter]: it answers a get from the
// local directory when the action record and its output are both there and
// well formed, and answers a miss when there is no record and no remote
// tier to ask. Anything else (a remote tier to consult, a record without a
// size or a time, a damaged record, an error) is left to Get.
func (c *Cache) GetFast(actionID []byte) (cacheprog.Entry, bool, bool) {
	akey := actionKey(actionID)
	data, ok, err := c.Store.ReadLocal(akey, maxRecord)
	if err != nil {
		return cacheprog.Entry{}, false, false
	}
	if !ok {
		if c.Store.HasRemote() {
			return cacheprog.Entry{}, false, false
		}
		c.stats.gets.Add(1)
		return cacheprog.Entry{}, false, true
	}
	rec, err := parseRecord(data, true)
	if err != nil || rec.size < 0 || rec.time.IsZero() {
		return cacheprog.Entry{}, false, false
	}
	obj, ok := c.Store.GetLocal(outputKey(rec.outputID), store.Check{Size: rec.size, SHA256: rec.outputID})
	if !ok {
		return cacheprog.Entry{}, false, false
	}
	c.stats.gets.Add(1)
	c.stats.hits.Add(1)
	return cacheprog.Entry{OutputID: rec.outputID, Size: obj.Size, Time: rec.time, DiskPath: obj.Path}, true, true
}

// Get implements [cacheprog.Handler]. Anything wrong with a record or
// object is a miss; only local I/O failures are errors.
func (c *Cache) Get(ctx context.Context, actionID []byte) (cacheprog.Entry, bool, error) {
	c.stats.gets.Add(1)
	akey := actionKey(actionID)
	data, local, err := c.Store.ReadLocal(akey, maxRecord)
	if err != nil {
		// A file too long to be a record is as corrupt as garbage.
		if obj, ok, serr := c.Store.Stat(akey); serr == nil && ok && obj.Size > maxRecord {
			c.logf("%s: %d bytes, too long for an action record: ignored", akey, obj.Size)
			c.Store.Remove(akey)
			return cacheprog.Entry{}, false, nil
		}
		return cacheprog.Entry{}, false, err
	}
	if !local {
		if data, _ = c.Store.ReadRemoteKey(context.WithoutCancel(ctx), akey, maxRecord); data == nil {
			return cacheprog.Entry{}, false, nil
		}
	}
	rec, err := parseRecord(data, local)
	if err != nil {
		c.logf("%s: %v: ignored", akey, err)
		if local {
			c.Store.Remove(akey)
		}
		return cacheprog.Entry{}, false, nil
	}

	obj, ok, err := c.Store.Get(ctx, outputKey(rec.outputID), store.Check{Size: rec.size, SHA256: rec.outputID})
	if err != nil || !ok {
		return cacheprog.Entry{}, false, err
	}
	reference := local && rec.time.IsZero()
	if reference {
		// The reference tool's record: the time of its put is the
		// file's modification time (the output's, if the record has
		// gone meanwhile).
		rec.time = obj.ModTime
		if a, ok, err := c.Store.Stat(akey); err == nil && ok {
			rec.time = a.ModTime
		}
	}
	if !local || rec.size < 0 || reference {
		// The output is verified and local now; keep the action with it,
		// in the local form.
		rec.size = obj.Size
		if _, err := c.Store.WriteBytes(ctx, akey, rec.local()); err != nil {
			return cacheprog.Entry{}, false, err
		}
	}
	c.stats.hits.Add(1)
	return cacheprog.Entry{OutputID: rec.outputID, Size: obj.Size, Time: rec.time, DiskPath: obj.Path}, true, nil
}

// Put implements [cacheprog.Handler]: it stores the output (verified
// against its ID) and the action record, then queues both for upload.
func (c *Cache) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	okey := outputKey(req.OutputID)
	obj, err := c.Store.Write(ctx, okey, req.Body, store.Check{Size: req.Size, SHA256: req.OutputID})
	if err != nil {
		return "", err
	}
	rec := record{outputID: req.OutputID, time: time.Now(), size: obj.Size}
	akey := actionKey(req.ActionID)
	if _, err := c.Store.WriteBytes(ctx, akey, rec.local()); err != nil {
		return "", err
	}
	c.stats.puts.Add(1)
	c.stats.putBytes.Add(obj.Size)
	if obj.Size >= c.MinUploadSize {
		c.Store.Upload(store.Upload{Key: okey, Path: obj.Path}, store.Upload{Key: akey, Data: rec.remote()})
	}
	return obj.Path, nil
}

// Close implements [cacheprog.Handler]. It leaves the store alone:
// draining its uploads ([store.Store.Close]) is the job of whoever opened
// it, who may serve other builds from it (the daemon) or drain it before
// answering the go command's close (direct mode; see [cacheprog.Handler]).
func (c *Cache) Close(context.Context) error { return nil }
