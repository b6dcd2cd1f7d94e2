package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits bound the local directory. The zero value bounds nothing.
type Limits struct {
	// MaxSize bounds the bytes of the objects in the directory; zero
	// means no bound.
	MaxSize int64 `json:"max_size,omitempty"`
	// Expiry is how long an object may go unused before it is removed;
	// zero means forever. Use being recorded hourly, an object may
	// outlive it by up to an hour.
	Expiry time.Duration `json:"expiry,omitempty"`
}

// IsZero reports whether l bounds nothing.
func (l Limits) IsZero() bool { return l.MaxSize <= 0 && l.Expiry <= 0 }

// Links names the kinds of objects that are records naming another object,
// with a function reading the key a record names (false if it names none).
// A record's last use is that of the object it names; it is removed with
// that object, and when that object is gone. For the build cache,
// action records name outputs.
type Links map[string]func(record []byte) (Key, bool)

// maxLinkRecord is the largest record the trimmer reads.
const maxLinkRecord = 1 << 10

// Count is a number of objects and their bytes.
type Count struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

func (c *Count) add(size int64) {
	c.Objects++
	c.Bytes += size
}

// TrimReport says what a trim did.
type TrimReport struct {
	// Ran reports whether the trim ran: it was due and no other process
	// was trimming.
	Ran bool `json:"ran"`
	// Busy reports that another process was trimming the directory.
	Busy bool `json:"busy,omitempty"`
	// Exclusive reports that no other process was using the directory,
	// so that any object could go. Otherwise objects that may have been
	// in use were left alone.
	Exclusive bool `json:"exclusive"`

	Found    Count `json:"found"`       // objects (records included) before the trim
	Expired  Count `json:"expired"`     // removed: unused for longer than the expiry
	Evicted  Count `json:"evicted"`     // removed: least recently used, over the size bound
	Records  Count `json:"records"`     // records removed with their objects, or naming none left
	Kept     Count `json:"kept"`        // objects (records included) left
	InUse    int64 `json:"in_use"`      // objects chosen for removal but used meanwhile, and kept
	Over     int64 `json:"over"`        // bytes still over the size bound: objects that may be in use
	TempFile int   `json:"temp"`        // temporary files removed (a day old: left by a crash)
	Duration int64 `json:"duration_ns"` // nanoseconds the trim took
}

// Removed is everything the trim removed.
func (r TrimReport) Removed() Count {
	return Count{
		Objects: r.Expired.Objects + r.Evicted.Objects + r.Records.Objects,
		Bytes:   r.Expired.Bytes + r.Evicted.Bytes + r.Records.Bytes,
	}
}

// trimMode says why a trim is asked for.
type trimMode int

const (
	trimNow     trimMode = iota // on request: wait for the lock, trim whatever the estimate
	trimDue                     // if due; skip if another process trims
	trimClosing                 // as trimDue, at Close
)

// staleTemp is the age at which a temporary file is taken to be left over
// from a crash.
const staleTemp = 24 * time.Hour

// Trim trims the directory to lim now: it removes the objects not used
// within lim.Expiry, then the least recently used ones until the directory
// is within lim.MaxSize, and the records naming objects that are gone. If
// another process is trimming, Trim waits for it until ctx ends. Objects
// that may be in use are left alone (see the package documentation); so
// the directory may still be over lim.MaxSize after it, by
// [TrimReport.Over] bytes.
func (s *Store) Trim(ctx context.Context, lim Limits) (TrimReport, error) {
	return s.trim(ctx, lim, trimNow)
}

// TrimIfDue trims the directory to the store's limits ([Options.Limits])
// if a trim is due: if what the processes sharing the directory wrote
// since the last trim may have pushed it past the size bound, or an hour
// has passed since the last trim and there is an expiry. If another
// process is trimming, it returns at once, with Busy set in the report.
// When no trim is due it costs a lock and a few bytes read and written.
// The store calls it behind its writes, every ten minutes, and at Close;
// call it to check at other times.
func (s *Store) TrimIfDue(ctx context.Context) (TrimReport, error) {
	if s.limits.IsZero() {
		return TrimReport{}, nil
	}
	return s.trim(ctx, s.limits, trimDue)
}

// logTrim logs a trim that did something, or failed.
func (s *Store) logTrim(when string, rep TrimReport, err error) {
	if err != nil {
		s.logf("trim %s: %v", when, err)
		return
	}
	if !rep.Ran {
		return
	}
	rm := rep.Removed()
	s.logf("trim %s: removed %d objects (%d bytes) in %v; %d objects (%d bytes) left",
		when, rm.Objects, rm.Bytes, time.Duration(rep.Duration).Round(time.Millisecond), rep.Kept.Objects, rep.Kept.Bytes)
	if rep.Over > 0 {
		s.logf("trim %s: %d bytes over the size bound, in objects that may be in use", when, rep.Over)
	}
}

func (s *Store) trim(ctx context.Context, lim Limits, mode trimMode) (TrimReport, error) {
	var rep TrimReport
	start := time.Now()
	lf, err := s.lockTrim(ctx, mode == trimNow)
	if err != nil {
		return rep, err
	}
	if lf == nil {
		rep.Busy = true
		return rep, nil
	}
	defer lf.unlock()

	st := lf.read()
	added := s.unaccounted.Swap(0)
	est := st.size + added

	// Take the directory for an exclusive trim only if a trim is to run,
	// or if having it might make one due: while it is taken, processes
	// that start record every use.
	var release func()
	due := mode == trimNow || trimIsDue(st, est, lim, false, start)
	if !due && lim.MaxSize > 0 && est > lim.MaxSize && !st.exclusive {
		if release = s.haveDirectory(); release != nil {
			due = trimIsDue(st, est, lim, true, start)
		}
	}
	if !due {
		if release != nil {
			release()
		}
		if added != 0 {
			lf.write(trimState{valid: true, last: st.last, size: est, exclusive: st.exclusive})
		}
		return rep, nil
	}
	if release == nil {
		release = s.haveDirectory()
	}
	if release != nil {
		defer release()
		rep.Exclusive = true
	}

	rep.Ran = true
	err = s.trimDir(ctx, lim, start, &rep)
	rep.Duration = int64(time.Since(start))
	if err != nil {
		// Cut short (by the budget at close, say): the size is unknown.
		// Take it to be over the bound, so that the next attempt waits
		// for more writes rather than coming at once.
		size := est
		if lim.MaxSize > 0 {
			size = max(est, lim.MaxSize+1)
		}
		lf.write(trimState{valid: true, last: start, size: size})
		return rep, err
	}
	lf.write(trimState{valid: true, last: start, size: rep.Kept.Bytes, exclusive: rep.Exclusive})
	s.stats.trims.Add(1)
	rm := rep.Removed()
	s.stats.trimmed.Add(rm.Objects)
	s.stats.trimmedBytes.Add(rm.Bytes)
	return rep, nil
}

// trimIsDue decides whether a trim is due, given the state left by the last
// one and the size estimate now.
func trimIsDue(st trimState, est int64, lim Limits, exclusive bool, now time.Time) bool {
	switch {
	case !st.valid:
		return true
	case lim.MaxSize > 0 && est > lim.MaxSize:
		// A trim that could not get within the bound (what was left may
		// have been in use) is tried again only when it may do better:
		// with the directory to itself, or after more writes.
		return st.size <= lim.MaxSize || exclusive && !st.exclusive || est-st.size >= trimStep(lim)
	case lim.Expiry > 0 && now.Sub(st.last) >= expiryCheck:
		return true
	}
	return false
}

// trimDir does the work of a trim, filling in rep.
func (s *Store) trimDir(ctx context.Context, lim Limits, start time.Time, rep *TrimReport) error {
	sc, err := scanDir(ctx, s.dir, s.links, start.Add(-staleTemp))
	if err != nil {
		return err
	}
	rep.TempFile = sc.tempRemoved + cleanLegacyTemp(s.dir, start.Add(-staleTemp))
	ents := sc.entries
	var total int64
	for _, e := range ents {
		rep.Found.add(e.size)
		total += e.size
	}

	// Objects whose use is recorded after cutoff may be in use.
	cutoff := int64(math.MaxInt64)
	if !rep.Exclusive {
		cutoff = start.Add(-(touchInterval + inUseGrace)).UnixNano()
	}
	removeRecord := func(i int32) {
		e := &ents[i]
		if e.gone {
			return
		}
		// A record for an object written again since the scan stays.
		if _, err := os.Lstat(s.Path(e.target)); err == nil {
			return
		}
		if err := os.Remove(s.Path(e.key)); err == nil {
			rep.Records.add(e.size)
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.logf("trim: %v", err)
			return
		}
		e.gone = true
		total -= e.size
	}
	remove := func(i int, c *Count) {
		e := &ents[i]
		switch s.evict(e) {
		case evictInUse:
			rep.InUse++
			return
		case evictRemoved:
			c.add(e.size)
		case evictFailed:
			return
		}
		e.gone = true
		total -= e.size
		for _, r := range sc.refs[int32(i)] {
			removeRecord(r)
		}
	}

	for i := range ents {
		if e := &ents[i]; e.record && e.targetIdx < 0 {
			removeRecord(int32(i))
		}
	}
	var candidates []int
	for i, e := range ents {
		if !e.record && !e.gone && e.mtime < cutoff {
			candidates = append(candidates, i)
		}
	}
	if lim.Expiry > 0 {
		expired := start.Add(-lim.Expiry).UnixNano()
		for _, i := range candidates {
			if ents[i].mtime < expired {
				if err := ctx.Err(); err != nil {
					return err
				}
				remove(i, &rep.Expired)
			}
		}
	}
	if lim.MaxSize > 0 && total > lim.MaxSize {
		slices.SortFunc(candidates, func(a, b int) int { return cmp.Compare(ents[a].mtime, ents[b].mtime) })
		for _, i := range candidates {
			if total <= lim.MaxSize {
				break
			}
			if ents[i].gone {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			remove(i, &rep.Evicted)
		}
		rep.Over = max(0, total-lim.MaxSize)
	}
	for _, e := range ents {
		if !e.gone {
			rep.Kept.add(e.size)
		}
	}
	return nil
}

// trimHook, if set by a test, is called at the named points of an
// eviction.
var trimHook = func(stage, path string) {}

type evictResult int

const (
	evictRemoved evictResult = iota
	evictVanished
	evictInUse
	evictFailed
)

// evict removes the object of e unless its use was recorded since the
// scan. It takes the object out with a rename and checks its time again
// before deleting it, so that a use recorded up to the rename puts it
// back, and a use after it finds no object (a miss).
func (s *Store) evict(e *scanEntry) evictResult {
	path := s.Path(e.key)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return evictVanished
	} else if err != nil {
		s.logf("trim: %v", err)
		return evictFailed
	}
	if fi.ModTime().UnixNano() != e.mtime {
		return evictInUse
	}
	trimHook("before rename", path)
	// A random temporary name in the object's directory: renaming onto
	// another file there would need two equal 64-bit random numbers.
	trash := filepath.Join(filepath.Dir(path), trashPrefix+strconv.FormatUint(rand.Uint64(), 36))
	if err := os.Rename(path, trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return evictVanished
		}
		s.logf("trim: %v", err)
		return evictFailed
	}
	trimHook("after rename", path)
	fi, err = os.Lstat(trash)
	if err == nil && fi.ModTime().UnixNano() != e.mtime {
		// Used since: put it back, unless it has been written again.
		if err := os.Link(trash, path); err != nil && !errors.Is(err, fs.ErrExist) {
			if err := os.Rename(trash, path); err == nil {
				return evictInUse
			}
		}
		os.Remove(trash)
		return evictInUse
	}
	if err := os.Remove(trash); err != nil {
		s.logf("trim: %v", err)
	}
	return evictRemoved
}

// trimLock is the held lock on <dir>/trim.lock, with the state it records.
type trimLock struct {
	f *os.File
}

// trimState is what trim.lock records.
type trimState struct {
	valid     bool
	last      time.Time // when the last trim started
	size      int64     // the directory's estimated size
	exclusive bool      // the last trim had the directory to itself
}

// lockTrim locks <dir>/trim.lock. If another process holds it, lockTrim
// waits for it until ctx ends if wait is set, and otherwise returns nil.
func (s *Store) lockTrim(ctx context.Context, wait bool) (*trimLock, error) {
	path := filepath.Join(s.dir, trimFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if errors.Is(err, fs.ErrPermission) {
		f, err = os.Open(path) // a lock still, if no record
	}
	if err != nil {
		return nil, fmt.Errorf("trim: %w", err)
	}
	for {
		ok, err := tryLock(f, lockExclusive)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("trim: %w", err)
		}
		if ok {
			return &trimLock{f}, nil
		}
		if !wait {
			f.Close()
			return nil, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("trim: waiting for another process's trim: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *trimLock) unlock() {
	tryLock(l.f, lockUnlock)
	l.f.Close()
}

// The state is one line: "trim <unix-nanos> <size> <exclusive>".
func (l *trimLock) read() trimState {
	buf := make([]byte, 128)
	n, _ := l.f.ReadAt(buf, 0)
	f := strings.Fields(string(buf[:n]))
	if len(f) != 4 || f[0] != "trim" {
		return trimState{}
	}
	ns, err1 := strconv.ParseInt(f[1], 10, 64)
	size, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || size < 0 {
		return trimState{}
	}
	return trimState{valid: true, last: time.Unix(0, ns), size: size, exclusive: f[3] == "1"}
}

func (l *trimLock) write(st trimState) {
	if !st.valid {
		return
	}
	excl := 0
	if st.exclusive {
		excl = 1
	}
	line := fmt.Appendf(nil, "trim %d %d %d\n", st.last.UnixNano(), st.size, excl)
	if _, err := l.f.WriteAt(line, 0); err == nil {
		l.f.Truncate(int64(len(line)))
	}
}

// scanEntry is an object found by a scan.
type scanEntry struct {
	key       Key
	size      int64
	mtime     int64 // Unix nanoseconds: the last recorded use
	record    bool  // a record of a linked kind that names an object
	target    Key   // for a record: the object it names
	targetIdx int32 // for a record: the index of that object, or -1
	gone      bool
}

// dirScan is the contents of a directory.
type dirScan struct {
	entries []scanEntry
	refs    map[int32][]int32 // object -> the records naming it
	others
}

// others counts the files of a directory that are not objects.
type others struct {
	temp        Count // temporary files: .tmp-* in shards, files in <dir>/tmp
	tempRemoved int   // stale temporary files in shards removed
	foreign     Count // files that are not the store's
}

func (o *others) add(p others) {
	o.temp.Objects += p.temp.Objects
	o.temp.Bytes += p.temp.Bytes
	o.tempRemoved += p.tempRemoved
	o.foreign.Objects += p.foreign.Objects
	o.foreign.Bytes += p.foreign.Bytes
}

// scanDir lists the objects in dir. Files that do not fit the layout are
// counted as foreign and left alone. Temporary files are counted apart;
// if staleBefore is not zero (a trim), those in shards last modified
// before it, left by a crash, are removed.
func scanDir(ctx context.Context, dir string, links Links, staleBefore time.Time) (*dirScan, error) {
	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	sc := &dirScan{refs: map[int32][]int32{}}
	var shards []string // <dir>/<kind>/<xx>
	for _, e := range top {
		name := e.Name()
		path := filepath.Join(dir, name)
		switch {
		case name == legacyTemp && e.IsDir():
			countFiles(path, &sc.temp)
		case name == usersFile || name == trimFile:
		case e.IsDir() && validKind(name):
			sub, err := os.ReadDir(path)
			if err != nil {
				return nil, err
			}
			for _, x := range sub {
				if x.IsDir() && isShard(x.Name()) {
					shards = append(shards, filepath.Join(path, x.Name()))
				} else {
					countFiles(filepath.Join(path, x.Name()), &sc.foreign)
				}
			}
		default:
			countFiles(path, &sc.foreign)
		}
	}

	// Shards are read in parallel: on a large directory the stats are
	// most of a trim's time.
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan string)
		errs []error
	)
	for range min(len(shards), max(4, runtime.GOMAXPROCS(0))) {
		wg.Go(func() {
			var ents []scanEntry
			var o others
			for shard := range next {
				if err := scanShard(shard, links, staleBefore, &ents, &o); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
			mu.Lock()
			sc.entries = append(sc.entries, ents...)
			sc.others.add(o)
			mu.Unlock()
		})
	}
	for _, shard := range shards {
		if ctx.Err() != nil {
			break
		}
		next <- shard
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}

	// Resolve the records.
	index := make(map[Key]int32, len(sc.entries))
	for i, e := range sc.entries {
		index[e.key] = int32(i)
	}
	for i := range sc.entries {
		e := &sc.entries[i]
		if !e.record {
			continue
		}
		e.targetIdx = -1
		if j, ok := index[e.target]; ok && !sc.entries[j].record {
			e.targetIdx = j
			sc.refs[j] = append(sc.refs[j], int32(i))
		}
	}
	return sc, nil
}

// scanShard adds the objects in one <dir>/<kind>/<xx> directory to ents
// and counts its other files in o, removing the temporary files last
// modified before staleBefore if it is not zero.
func scanShard(shard string, links Links, staleBefore time.Time, ents *[]scanEntry, o *others) error {
	list, err := os.ReadDir(shard)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile
	} else if err != nil {
		return err
	}
	kind := filepath.Base(filepath.Dir(shard))
	xx := filepath.Base(shard)
	link := links[kind]
	for _, d := range list {
		name := d.Name()
		path := filepath.Join(shard, name)
		if d.Type().IsRegular() && strings.HasPrefix(name, tempPrefix) {
			fi, err := d.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if !staleBefore.IsZero() && fi.ModTime().Before(staleBefore) && os.Remove(path) == nil {
				o.tempRemoved++
			} else {
				o.temp.add(fi.Size())
			}
			continue
		}
		if !d.Type().IsRegular() || !validName(name, xx) {
			countFiles(path, &o.foreign)
			continue
		}
		fi, err := d.Info()
		if err != nil {
			continue // removed meanwhile
		}
		e := scanEntry{key: Key{Kind: kind, Name: name}, size: fi.Size(), mtime: fi.ModTime().UnixNano(), targetIdx: -1}
		if link != nil {
			if data, err := readSmall(path, maxLinkRecord); err == nil {
				if target, ok := link(data); ok && target.valid() == nil {
					e.record, e.target = true, target
				}
			}
		}
		*ents = append(*ents, e)
	}
	return nil
}

// countFiles adds the regular files at or under path to c.
func countFiles(path string, c *Count) {
	filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				c.add(fi.Size())
			}
		}
		return nil
	})
}

// validKind reports whether a directory name can be a kind the trimmer
// manages: lower-case letters, digits, '-' and '_', starting with a letter.
func validKind(name string) bool {
	if name == "" || name == legacyTemp || len(name) > 32 || !('a' <= name[0] && name[0] <= 'z') {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// isShard reports whether name is two lower-case hex digits.
func isShard(name string) bool {
	return len(name) == 2 && isHex(name)
}

// validName reports whether name is an object's name in shard xx.
func validName(name, xx string) bool {
	return len(name) >= 2 && name[:2] == xx && isHex(name)
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
