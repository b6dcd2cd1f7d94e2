// Package store is the tiered object store shared by every front end of
// go-cache-plugin: the build cache, the module proxy and the reverse proxy.
//
// # Local tier
//
// Objects live in a local directory, one file per object:
//
//	<dir>/<kind>/<xx>/<name>   an object; <xx> is the first two characters of <name>
//	<dir>/<kind>/<xx>/.tmp-*   a file being written; renamed to <name> when complete
//
// Kinds are chosen by the front ends ("action" and "output" for the build
// cache, for example); names are lower-case hex. A file appears under its
// final name only once it is complete and verified: it is written to a
// temporary file in its own directory and renamed, so a crash at any point
// (even SIGKILL) never leaves a partial object visible, and several
// processes may share one directory. Temporary files live in their
// objects' directories, not in one shared directory, so that concurrent
// writers are spread over the shards and each rename stays within one
// directory.
//
// Temporary files left by a crash are removed once they are a day old, by
// every trim, which sweeps every directory, and by [Store.CleanTemp], which
// the command calls at each start: to stay cheap it sweeps one directory
// of each kind, chosen at random, so that over many starts every directory
// is swept. Both also clean <dir>/tmp/, where older versions wrote
// temporary files.
//
// # Last use, trimming and the lock files
//
// An object's modification time is the time of its last use: a lookup that
// finds an object whose time is an hour old or more sets it to now (one
// system call, at most once an hour per object, as the go command does with
// its own cache). Records named in [Options.Links] (the build cache's
// action records) are not touched: their last use is that of the object
// they name.
//
// With [Limits] (a size bound and an expiry), a trim removes objects unused
// for longer than the expiry, then the least recently used objects until the
// directory is within the size. Records go with the objects they name, and
// records naming an object that is gone are removed. Sizes are the files'
// lengths. Trims run in the background when writes may have pushed the
// directory past its size ([Options.Limits]), every ten minutes while the
// store is open, at [Store.Close], and on request ([Store.Trim],
// [Store.TrimIfDue]); each time only if one is due, except for Trim.
//
// Several processes may share a directory, so two lock files coordinate
// them:
//
//	<dir>/users.lock   every process serving requests from the directory
//	                   holds a shared lock on it, from Open to Close
//	<dir>/trim.lock    held exclusively by the one process trimming; it
//	                   also records when the last trim ran and the
//	                   directory's estimated size, to which each process
//	                   adds what it wrote
//
// A trim never removes a file that a live request may still read. If it can
// lock users.lock exclusively, no other process is using the directory and
// any object may go (a process that starts meanwhile records every use, not
// only hourly ones, until the trim ends). Otherwise the trim leaves alone
// every object whose recorded use is less than an hour and ten minutes old:
// use being recorded hourly, that covers every object used in the last ten
// minutes. Either way an object is taken out by a rename and its time
// checked again before it is deleted: an object whose use was recorded
// meanwhile is put back, and a request that finds it gone is a miss.
//
// # Writing and verification
//
// [Store.Write] stores what a reader holds; [Store.Create] returns a
// [Writer] for an object produced in pieces (a response streamed to a
// client and to the store at once), which [Writer.Commit] installs and
// [Writer.Abort] discards. Either way the bytes go to a temporary file in
// the object's directory, renamed into place only once complete and
// verified, and a write stops, leaving nothing behind, once its context
// ends. Neither uploads: see [Store.Upload].
//
// A [Check] describes what an object must be: its size and, for
// content-addressed objects, its SHA-256; a bound on its size
// (Check.MaxSize), enforced as the bytes arrive, so that an oversized
// object is refused before it is ever installed; and a function that
// checks the complete file another way (Check.Verify). Writes are verified
// before the rename; a write that fails its check is discarded, with an
// error wrapping [ErrMismatch]. A local read checks the size (a stat,
// cheap enough for every request); a file of the wrong size is removed and
// reported as a miss. Objects faulted in from the remote tier are verified
// in full before they are installed.
//
// Whoever opens a store closes it: [Store.Close] drains the pending
// uploads within its context's bound and is the only drain (the build
// cache's handler leaves it to the command, which calls it at the go
// command's close in direct mode and at shutdown in serve mode).
//
// # Remote tier
//
// With a [Remote], a local miss is faulted in from the remote tier (one
// fetch per key at a time) and [Store.Upload] writes objects behind the
// request that made them. The remote tier uses the same keys as the local
// directory, "<kind>/<xx>/<name>"; the [Remote] adds any bucket prefix.
// A remote failure is never an error to the caller: it is a miss, counted
// and logged.
//
// Every remote call (a fault-in, a small or raw read, a ranged read of a
// pack, an upload's Exists and Put, a raw write) takes one path, which
// bounds it (a first-byte deadline of a few seconds for reads, a total one
// that grows with the bytes moved) and ends it in exactly one outcome:
//
//	ok           the remote answered with the object        breaker closed again
//	not found    the remote answered that there is none     breaker closed again; a miss
//	corrupt      the remote answered with other bytes       breaker closed again; counted, never installed
//	caller gone  the caller's context ended (reads, raw writes; not fault-ins or uploads)   breaker untouched
//	local fault  a local file could not be read or written  breaker untouched
//	failure      an error, a stream cut by an error, a deadline passed   counts towards opening the breaker
//
// Two consecutive failures open the breaker, as does one call that gets
// no response at all; while it is open the remote tier is skipped (each
// skip counted), and after the open period one call probes it: an answer
// closes it, a failure opens it for twice as long (up to two minutes), and
// a call that says nothing of the remote lets the next one probe.
//
// # Log format
//
// Lines go to [Options.Logf], one per decision or failure; nothing is
// logged for a hit, a miss or an upload that succeeds:
//
//	remote <fetch|read|upload> <key or name>: <error>                      a remote failure
//	remote tier failing (<op> <key>: <error>); skipping it for <period>   the failure that opened the breaker
//	remote tier unavailable, skipping it for 2m0s: <error>                 from Store.RemoteDown
//	remote <key> is <n> bytes, want <m>: not installed                     a fault-in of the wrong size
//	remote content does not match: <key>: <why>: not installed             a fault-in failing its check
//	remote <name> is longer than <max> bytes: ignored                      a small read of an object too long
//	fault in <key>: <error>                                                a local fault during a fault-in
//	upload <key>: <error>: <n> uploads dropped                             an upload's local file has gone
//	upload: <error>: job dropped                                           an upload job with an invalid key
//	pack <name>: not found                                                 a pack read
//	pack <name>: content does not match: <key>: <why>: not installed       an object of a pack
//	pack <name>: install <key>: <error>                                    an object of a pack, a local fault
//	pack <name> ends <n> bytes into the range read, before <key>: the rest is not installed
//	local <key> is <n> bytes, want <m>: removing it                        a local object failing its size check
//	remove <path>: <error>
//	trim <when>: removed <n> objects (<b> bytes) in <duration>; <n> objects (<b> bytes) left
//	trim <when>: <n> bytes over the size bound, in objects that may be in use
//	trim <when>: <error>
//	cannot register as a user of the cache directory: <error>; recording every use
//	cannot lock <file>: <error>; trims will leave recently used objects alone
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A Key names an object: a kind and a lower-case hex name.
type Key struct {
	Kind string
	Name string
}

// String returns the key's relative path, "<kind>/<xx>/<name>", which is
// also its name in the remote tier.
func (k Key) String() string {
	return k.Kind + "/" + k.Name[:2] + "/" + k.Name
}

// valid reports whether k can be used as a file name.
func (k Key) valid() error {
	if k.Kind == "" || strings.ContainsAny(k.Kind, `/\.`) {
		return fmt.Errorf("invalid key kind %q", k.Kind)
	}
	if k.Kind == legacyTemp {
		// Older versions wrote temporary files there, and every start
		// cleans it: an object would be taken for one.
		return fmt.Errorf("invalid key kind %q: reserved for temporary files", k.Kind)
	}
	if len(k.Name) < 2 {
		return fmt.Errorf("invalid key name %q", k.Name)
	}
	for _, c := range k.Name {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("invalid key name %q: not lower-case hex", k.Name)
		}
	}
	return nil
}

// A Check describes what an object must be.
type Check struct {
	// Size is the object's size in bytes, or -1 if unknown.
	Size int64
	// SHA256, if set, is the object's SHA-256 digest.
	SHA256 []byte
	// MaxSize, if positive, bounds the object's size: a write or fault-in
	// that brings more is refused (an error wrapping [ErrMismatch]) as
	// the bytes arrive, before anything is installed, so that an
	// oversized object is never visible under its name. It is for objects
	// of unknown size (Size -1) from sources that might send anything.
	MaxSize int64
	// Verify, if set, checks the complete file at path before it is
	// installed (written locally or faulted in from the remote tier), for
	// objects whose integrity is known another way: a module zip against
	// the checksum database, say. The file must not be modified. An error
	// rejects the object as a mismatch.
	Verify func(path string) error
}

// AnyContent is the check for objects with no known size or digest.
var AnyContent = Check{Size: -1}

// An Object is an object in the local tier.
type Object struct {
	Path    string    // absolute path of the file
	Size    int64     // size in bytes
	ModTime time.Time // when the file was written or its use last recorded
}

// Options configure a [Store].
type Options struct {
	// Dir is the local directory. It is created if it does not exist.
	Dir string

	// Remote, if set, is the remote tier.
	Remote Remote

	// UploadConcurrency bounds concurrent uploads; if zero, 4 is used.
	UploadConcurrency int

	// Logf, if set, receives log lines about decisions and failures.
	Logf func(format string, args ...any)

	// Limits, if not zero, bound the local directory: writes that may
	// have pushed it past Limits.MaxSize start a trim in the background,
	// the store checks every ten minutes whether one is due, and Close
	// trims it if one is due.
	Limits Limits

	// Links names the kinds of objects that are records naming other
	// objects, for the trimmer.
	Links Links

	// ReadOnly makes the remote tier read-only: [Store.Upload] only
	// counts what it would have written. The local directory is written
	// as usual.
	ReadOnly bool

	// Maintenance opens the store to inspect or trim the directory, not
	// to serve requests: the store does not register as a user of the
	// directory (see the package documentation), so a trim it runs may
	// have the directory to itself.
	Maintenance bool
}

// Store is a local directory with an optional remote tier.
// Its methods are safe for concurrent use.
type Store struct {
	dir      string
	logf     func(string, ...any)
	remote   *remoteTier // nil without a remote tier
	readOnly bool
	limits   Limits
	links    Links

	// touchAll makes every lookup record its use, not only hourly ones.
	// It is set while the store is not registered as a user of the
	// directory because another process is trimming it exclusively.
	touchAll atomic.Bool
	users    users

	// Trimming: bytes written since they were last added to the shared
	// estimate, bytes written since the last background check, and the
	// background trim.
	unaccounted atomic.Int64
	sinceCheck  atomic.Int64
	bg          background
	closeOnce   sync.Once

	stats storeCounters
}

// Open opens (creating if needed) a store in opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("store: no directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create cache directory: %w", err)
	}
	s := &Store{dir: dir, logf: opts.Logf, readOnly: opts.ReadOnly, limits: opts.Limits, links: opts.Links}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if opts.Remote != nil {
		s.remote = newRemoteTier(s, opts.Remote, opts.UploadConcurrency)
	}
	s.bg.init()
	if !opts.Maintenance {
		s.register()
		if !s.limits.IsZero() {
			s.bg.every(trimCheck, s.backgroundTrim)
		}
	}
	return s, nil
}

// Limits returns the limits the store was opened with.
func (s *Store) Limits() Limits { return s.limits }

// ReadOnly reports whether the remote tier is read-only.
func (s *Store) ReadOnly() bool { return s.readOnly }

// Dir returns the absolute path of the local directory.
func (s *Store) Dir() string { return s.dir }

// Path returns the local path of key.
func (s *Store) Path(key Key) string {
	return filepath.Join(s.dir, key.Kind, key.Name[:2], key.Name)
}

// Get returns the local object for key, faulting it in from the remote tier
// if it is not present locally. A local file that fails check.Size is
// removed and treated as absent. Errors are for local faults only; a remote
// failure is reported as a miss.
func (s *Store) Get(ctx context.Context, key Key, check Check) (Object, bool, error) {
	if err := key.valid(); err != nil {
		return Object{}, false, err
	}
	obj, ok, err := s.lookup(key, check)
	if ok || err != nil {
		if ok {
			s.stats.localHits.Add(1)
		}
		return obj, ok, err
	}
	s.stats.localMisses.Add(1)
	if s.remote == nil {
		return Object{}, false, nil
	}
	return s.remote.faultIn(ctx, key, check)
}

// GetLocal is [Store.Get] without the remote tier: it returns the local
// object for key if it is there and passes check.Size. A hit is counted; a
// miss is not, since a caller that cares goes on to call Get.
func (s *Store) GetLocal(key Key, check Check) (Object, bool) {
	if key.valid() != nil {
		return Object{}, false
	}
	obj, ok, err := s.lookup(key, check)
	if !ok || err != nil {
		return Object{}, false
	}
	s.stats.localHits.Add(1)
	return obj, true
}

// HasRemote reports whether the store has a remote tier.
func (s *Store) HasRemote() bool { return s.remote != nil }

// lookup finds key in the local tier and records its use.
func (s *Store) lookup(key Key, check Check) (Object, bool, error) {
	obj, ok, err := s.find(key, check)
	if !ok || err != nil {
		return obj, ok, err
	}
	// Record the use, at most hourly. A trim may have taken the object
	// out since the stat: then it is a miss.
	if now := time.Now(); now.Sub(obj.ModTime) >= touchInterval || s.touchAll.Load() {
		if err := touch(obj.Path); err == nil {
			obj.ModTime = now
		} else if errors.Is(err, fs.ErrNotExist) {
			return Object{}, false, nil
		}
		// Otherwise (a file of another user's, say) the use goes
		// unrecorded; the object is still good.
	}
	return obj, true, nil
}

// find is lookup without recording a use.
func (s *Store) find(key Key, check Check) (Object, bool, error) {
	path := s.Path(key)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Object{}, false, nil
	} else if err != nil {
		return Object{}, false, fmt.Errorf("stat %s: %w", key, err)
	}
	if check.Size >= 0 && fi.Size() != check.Size {
		s.stats.corruptLocal.Add(1)
		s.logf("local %s is %d bytes, want %d: removing it", key, fi.Size(), check.Size)
		s.remove(path)
		return Object{}, false, nil
	}
	return Object{Path: path, Size: fi.Size(), ModTime: fi.ModTime()}, true, nil
}

// Stat reports the local object for key without checking it, looking in
// the remote tier or recording a use (so that looking, as a prefetch or a
// report does, does not keep an object from being trimmed).
func (s *Store) Stat(key Key) (Object, bool, error) {
	if err := key.valid(); err != nil {
		return Object{}, false, err
	}
	return s.find(key, AnyContent)
}

// ReadLocal returns the contents of the local object for key, which must be
// at most max bytes; a larger file is an error.
func (s *Store) ReadLocal(key Key, max int64) ([]byte, bool, error) {
	if err := key.valid(); err != nil {
		return nil, false, err
	}
	data, err := readSmall(s.Path(key), max)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", key, err)
	}
	return data, true, nil
}

// errTooLong reports a file longer than readSmall's limit.
var errTooLong = errors.New("file too long")

// Remove removes the local object for key, if present.
func (s *Store) Remove(key Key) error {
	if err := key.valid(); err != nil {
		return err
	}
	if err := os.Remove(s.Path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	return nil
}

func (s *Store) remove(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.logf("remove %s: %v", path, err)
	}
}

// Write stores the contents of r in the local tier under key, verifying it
// against check first. If an object already exists under key with the
// right size, r is read and verified but not written again. Write stops
// copying once ctx ends (between reads of r: a read that blocks is r's to
// end), and then nothing is installed and no temporary file is left. An
// error wraps [ErrMismatch] if the content failed check. Write does not
// upload; see [Store.Upload]. For an object produced in pieces, see
// [Store.Create].
func (s *Store) Write(ctx context.Context, key Key, r io.Reader, check Check) (Object, error) {
	if err := key.valid(); err != nil {
		return Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return Object{}, fmt.Errorf("write %s: %w", key, err)
	}
	if check.SHA256 != nil {
		// Content-addressed: an existing object of the right size is the
		// same object, so the body need only be verified.
		if obj, ok, _ := s.lookup(key, check); ok && check.Size >= 0 {
			if err := verifyOnly(ctx, key, r, check); err != nil {
				return Object{}, err
			}
			return obj, nil
		}
	}
	if ctx.Done() != nil {
		r = ctxReader{ctx, r}
	}
	w, err := s.create(ctx, key, check)
	if err != nil {
		return Object{}, err
	}
	w.count = true
	return w.install(r)
}

// WriteBytes is [Store.Write] for small in-memory objects.
func (s *Store) WriteBytes(ctx context.Context, key Key, data []byte) (Object, error) {
	return s.Write(ctx, key, bytes.NewReader(data), Check{Size: int64(len(data))})
}

// install writes r to a temporary file, verifies it and renames it to its
// final name.
func (s *Store) install(key Key, r io.Reader, check Check) (Object, error) {
	w, err := s.create(context.Background(), key, check)
	if err != nil {
		return Object{}, err
	}
	return w.install(r)
}

// install is [Store.install] on w, which it ends.
func (w *Writer) install(r io.Reader) (Object, error) {
	if _, err := w.ReadFrom(r); err != nil {
		w.Abort()
		if w.err == err {
			return Object{}, err // w's own, already wrapped
		}
		return Object{}, fmt.Errorf("write %s: %w", w.key, err)
	}
	return w.Commit()
}

// copyBufferSize is the size of a [Writer]'s buffer. Most build outputs
// fit in one, so each is written with a single write call, which lets the
// kernel put it in the page cache in large pieces; with small writes, page
// cache bookkeeping is a large part of the cost of faulting in a cold
// build's outputs.
const copyBufferSize = 1 << 20

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// tempPrefix starts the name of every temporary file in an object's
// directory. Object names are hex, so no object has it.
const tempPrefix = ".tmp-"

// trashPrefix starts the name under which a trim takes an object out
// before deleting it (see [Store.evict]).
const trashPrefix = tempPrefix + "trim-"

// createTemp creates a new temporary file in the directory of key,
// creating that directory if needed, so that install renames the file
// within one directory. Unlike os.CreateTemp it leaves the mode to the
// umask (0666 before it, as the go command's own cache does), so a
// directory shared by a group stays usable.
func (s *Store) createTemp(key Key) (*os.File, error) {
	dir := filepath.Dir(s.Path(key))
	made := false
	for range 100 {
		name := filepath.Join(dir, tempPrefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrNotExist) && !made {
			// The first object of its directory.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			made = true
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, errors.New("cannot create a temporary file")
}

// verify checks that n bytes with digest h (nil if not computed) satisfy
// check.
func verify(key Key, check Check, n int64, h hash.Hash) error {
	if check.Size >= 0 && n != check.Size {
		return fmt.Errorf("%w: %s: got %d bytes, want %d", ErrMismatch, key, n, check.Size)
	}
	if h != nil {
		if sum := h.Sum(nil); !bytes.Equal(sum, check.SHA256) {
			return fmt.Errorf("%w: %s: SHA-256 is %x, want %x", ErrMismatch, key, sum, check.SHA256)
		}
	}
	return nil
}

// Close waits for pending uploads until ctx ends and reports what was left.
// Then, the store's requests being over, it stops any background trim,
// ends its registration as a user of the directory and, if the store has
// limits and a trim is due, trims the directory for at most a few seconds
// (closeTrimBudget), whatever ctx says.
func (s *Store) Close(ctx context.Context) error {
	var err error
	if s.remote != nil {
		err = s.remote.close(ctx)
	}
	s.closeOnce.Do(func() {
		s.bg.stop()
		s.unregister()
		if !s.limits.IsZero() {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTrimBudget)
			rep, terr := s.trim(tctx, s.limits, trimClosing)
			cancel()
			s.logTrim("at close", rep, terr)
		}
		s.users.close()
	})
	return err
}

// CleanTemp removes temporary files older than age, left behind by crashed
// writers, and returns the number removed. Being meant for every start of
// a process, it is cheap: it sweeps the legacy <dir>/tmp/ of older versions
// and, of each kind, one directory <dir>/<kind>/<xx> chosen at random (a
// few directory reads in all). Over many starts every directory is swept;
// a trim sweeps all of them. It leaves to trims the files a trim takes
// objects out under: one may be another process's eviction in progress.
func (s *Store) CleanTemp(age time.Duration) int {
	cutoff := time.Now().Add(-age)
	n := cleanLegacyTemp(s.dir, cutoff)
	top, err := os.ReadDir(s.dir)
	if err != nil {
		return n
	}
	for _, e := range top {
		if !e.IsDir() || !validKind(e.Name()) {
			continue
		}
		kind := filepath.Join(s.dir, e.Name())
		sub, err := os.ReadDir(kind)
		if err != nil {
			continue
		}
		var shards []string
		for _, x := range sub {
			if x.IsDir() && isShard(x.Name()) {
				shards = append(shards, x.Name())
			}
		}
		if len(shards) == 0 {
			continue
		}
		n += cleanShardTemp(filepath.Join(kind, shards[rand.IntN(len(shards))]), cutoff)
	}
	return n
}

// cleanLegacyTemp removes the files in <dir>/tmp/ (where older versions
// wrote temporary files) last modified before cutoff, and returns the
// number removed. The directory itself stays: a process of an older
// version sharing dir needs it.
func cleanLegacyTemp(dir string, cutoff time.Time) int {
	tmp := filepath.Join(dir, legacyTemp)
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			if os.Remove(filepath.Join(tmp, e.Name())) == nil {
				n++
			}
		}
	}
	return n
}

// cleanShardTemp removes the temporary files in the object directory shard
// last modified before cutoff, other than a trim's, and returns the number
// removed.
func cleanShardTemp(shard string, cutoff time.Time) int {
	entries, err := os.ReadDir(shard)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, tempPrefix) || strings.HasPrefix(name, trashPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			if os.Remove(filepath.Join(shard, name)) == nil {
				n++
			}
		}
	}
	return n
}

// legacyTemp is the directory, under a store's, where older versions wrote
// temporary files.
const legacyTemp = "tmp"

// TempFiles returns the paths of the temporary files in the store
// directory dir: files being written, or left by a crash, in the objects'
// directories and in the legacy <dir>/tmp/. It walks the whole directory,
// so it is for tests and tools, not for a process serving requests.
func TempFiles(dir string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		legacy := len(parts) > 1 && parts[0] == legacyTemp
		shard := len(parts) == 3 && validKind(parts[0]) && isShard(parts[1]) && strings.HasPrefix(parts[2], tempPrefix)
		if legacy || shard {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list temporary files: %w", err)
	}
	return paths, nil
}
