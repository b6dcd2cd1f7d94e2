// Package metricsfile records the metrics of build cache processes in a
// file they share, one JSON line per process, and totals such a file.
//
// In direct mode the go command starts one cache process per go command,
// so the figures of a CI job's go commands are spread over many short
// processes. Each appends its [Record] at exit with [Append]; a summary
// step at the job's end reads the file with [Read] and adds the records
// up with [Total].
//
// Each record is written with one write(2) to a file opened with
// O_APPEND, so records of processes exiting at once do not interleave on
// a local file system. A reader skips (and reports) lines it cannot parse,
// such as one cut short by a full disk, rather than giving up on the rest.
package metricsfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Version is the version of the record format this package writes and
// reads.
const Version = 1

// Record is the line one process writes. The figures are those of the
// --metrics summary: the build cache's requests, the store's tiers, and the
// manifests and prefetches. Each counts every event once; for example
// Store.BytesDown holds all bytes read from the bucket, prefetches
// included, and Prefetch.PrefetchedBytes what those prefetches installed.
type Record struct {
	Version   int                   `json:"v"`
	Start     time.Time             `json:"start"`
	End       time.Time             `json:"end"`
	PID       int                   `json:"pid"`
	Manifests []string              `json:"manifests,omitempty"` // the manifests the process read or wrote
	Cache     gobuild.Stats         `json:"cache"`
	Store     store.Stats           `json:"store"`
	Prefetch  gobuild.PrefetchStats `json:"prefetch"`
}

// MaxLine bounds the length of a line the reader accepts.
const MaxLine = 1 << 20

// Append appends r, as one line, to the file at path, creating it if
// needed (mode 0644 less the umask).
func Append(path string, r Record) error {
	if r.Version == 0 {
		r.Version = Version
	}
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	n, err := f.Write(line)
	if err == nil && n < len(line) {
		err = io.ErrShortWrite
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	return nil
}

// LineError is a line of a metrics file that was not understood.
type LineError struct {
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Read reads the records of a metrics file. Lines that are not records of
// this version are skipped and returned as *LineError values in bad;
// err is for failures to read.
func Read(r io.Reader) (recs []Record, bad []error, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		rec, err := parse(line)
		if err != nil {
			bad = append(bad, &LineError{Line: n, Err: err})
			continue
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return recs, bad, fmt.Errorf("line %d: longer than %d bytes", n+1, MaxLine)
		}
		return recs, bad, err
	}
	return recs, bad, nil
}

func parse(line []byte) (Record, error) {
	var v struct {
		Version *int `json:"v"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return Record{}, fmt.Errorf("not a JSON object: %w", err)
	}
	switch {
	case v.Version == nil:
		return Record{}, errors.New("no version (\"v\")")
	case *v.Version != Version:
		return Record{}, fmt.Errorf("version %d; this reader knows version %d", *v.Version, Version)
	}
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("bad record: %w", err)
	}
	if rec.End.Before(rec.Start) {
		return Record{}, fmt.Errorf("ends (%v) before it starts (%v)", rec.End, rec.Start)
	}
	return rec, nil
}

// Totals are the sums of a file's records.
type Totals struct {
	Processes int // records added up
	ReadOnly  int // of them, processes whose bucket was read-only
	Remote    int // of them, processes with a bucket

	Cache    gobuild.Stats
	Store    store.Stats // the int64 counters; Breaker, Remote and ReadOnly are not set
	Prefetch gobuild.PrefetchStats

	Busy        time.Duration // the processes' lifetimes, added up
	First, Last time.Time     // the earliest start and the latest end
	Manifests   []string      // the manifest names seen, in order of first appearance
}

// Misses returns the build cache's lookups that found nothing.
func (t Totals) Misses() int64 { return t.Cache.Gets - t.Cache.Hits }

// Total adds recs up.
func Total(recs []Record) Totals {
	var t Totals
	seen := map[string]bool{}
	for _, r := range recs {
		t.Processes++
		if r.Store.Remote {
			t.Remote++
		}
		if r.Store.ReadOnly {
			t.ReadOnly++
		}
		addInts(&t.Cache, &r.Cache)
		addInts(&t.Store, &r.Store)
		addInts(&t.Prefetch, &r.Prefetch)
		t.Busy += r.End.Sub(r.Start)
		if t.First.IsZero() || r.Start.Before(t.First) {
			t.First = r.Start
		}
		if r.End.After(t.Last) {
			t.Last = r.End
		}
		for _, m := range r.Manifests {
			if !seen[m] {
				seen[m] = true
				t.Manifests = append(t.Manifests, m)
			}
		}
	}
	return t
}

// addInts adds each int64 field of *src to that of *dst, structs of one
// type, so that a counter added to the stats is totalled without a change
// here.
func addInts[T any](dst, src *T) {
	d, v := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	for i := range d.NumField() {
		if f := d.Field(i); f.Kind() == reflect.Int64 && f.CanSet() {
			f.SetInt(f.Int() + v.Field(i).Int())
		}
	}
}
