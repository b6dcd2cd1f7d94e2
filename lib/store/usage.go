package store

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// Usage is what a directory or a remote tier holds.
type Usage struct {
	Kinds []KindCount `json:"kinds"` // by kind, in order of name
	Total Count       `json:"total"` // every object, records included
	// Ages counts objects by the age of their last use (for a remote
	// tier: of their last write), youngest first.
	Ages []AgeCount `json:"ages"`

	Dangling Count `json:"dangling"` // records naming an object that is not there (local only)
	Temp     Count `json:"temp"`     // files being written, or left by a crash (local only)
	Foreign  Count `json:"foreign"`  // files that are not the store's, left alone
}

// KindCount is a count of the objects of one kind.
type KindCount struct {
	Kind string `json:"kind"`
	Count
}

// AgeCount counts the objects whose age is less than Within (in seconds);
// the last one, with Within zero, counts the older ones.
type AgeCount struct {
	Label  string `json:"label"`
	Within int64  `json:"within_seconds,omitempty"`
	Count
}

// ageBuckets are the ages Usage counts by.
var ageBuckets = []struct {
	label string
	d     time.Duration
}{
	{"1h", time.Hour},
	{"1d", 24 * time.Hour},
	{"7d", 7 * 24 * time.Hour},
	{"30d", 30 * 24 * time.Hour},
	{"older", 0},
}

// A Tally adds objects up into a [Usage].
type Tally struct {
	now   time.Time
	kinds map[string]*Count
	u     Usage
}

// NewTally returns an empty tally that takes ages relative to now.
func NewTally(now time.Time) *Tally {
	t := &Tally{now: now, kinds: map[string]*Count{}}
	for _, b := range ageBuckets {
		t.u.Ages = append(t.u.Ages, AgeCount{Label: b.label, Within: int64(b.d / time.Second)})
	}
	return t
}

// Add counts an object of kind, size bytes, last used (or written) at t.
func (t *Tally) Add(kind string, size int64, at time.Time) {
	c := t.kinds[kind]
	if c == nil {
		c = new(Count)
		t.kinds[kind] = c
	}
	c.add(size)
	t.u.Total.add(size)
	age := t.now.Sub(at)
	for i, b := range ageBuckets {
		if b.d == 0 || age < b.d {
			t.u.Ages[i].add(size)
			break
		}
	}
}

// Foreign counts a file that is not the store's.
func (t *Tally) Foreign(size int64) { t.u.Foreign.add(size) }

// Usage returns the sums so far.
func (t *Tally) Usage() Usage {
	u := t.u
	u.Ages = slices.Clone(u.Ages)
	u.Kinds = nil
	for k, c := range t.kinds {
		u.Kinds = append(u.Kinds, KindCount{Kind: k, Count: *c})
	}
	slices.SortFunc(u.Kinds, func(a, b KindCount) int { return strings.Compare(a.Kind, b.Kind) })
	return u
}

// ParseKey parses a key's relative path, "<kind>/<xx>/<name>" (the name of
// an object in the remote tier, prefix removed). It reports false for a
// path that is not of that form.
func ParseKey(rel string) (Key, bool) {
	kind, rest, ok := strings.Cut(rel, "/")
	if !ok {
		return Key{}, false
	}
	xx, name, ok := strings.Cut(rest, "/")
	if !ok || !validKind(kind) || !isShard(xx) || !validName(name, xx) {
		return Key{}, false
	}
	return Key{Kind: kind, Name: name}, true
}

// Scan reports what the cache directory dir holds, without changing it:
// objects by kind and by the age of their last use (for records named in
// links, the last use of the object they name). It does not wait for, or
// stop, processes using or trimming the directory. A missing directory is
// an error wrapping [fs.ErrNotExist].
func Scan(ctx context.Context, dir string, links Links) (Usage, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return Usage{}, err
	}
	if !fi.IsDir() {
		return Usage{}, &fs.PathError{Op: "scan", Path: dir, Err: fmt.Errorf("not a directory")}
	}
	sc, err := scanDir(ctx, dir, links, time.Time{})
	if err != nil {
		return Usage{}, err
	}
	t := NewTally(time.Now())
	for _, e := range sc.entries {
		last := e.mtime
		if e.record {
			if e.targetIdx < 0 {
				t.u.Dangling.add(e.size)
			} else {
				last = max(last, sc.entries[e.targetIdx].mtime)
			}
		}
		t.Add(e.key.Kind, e.size, time.Unix(0, last))
	}
	t.u.Temp = sc.temp
	t.u.Foreign = sc.foreign
	return t.Usage(), nil
}
