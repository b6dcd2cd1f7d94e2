package metricsfile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/metricsfile"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func record(i int) metricsfile.Record {
	n := int64(i + 1)
	return metricsfile.Record{
		Start:     t0.Add(time.Duration(i) * time.Second),
		End:       t0.Add(time.Duration(i)*time.Second + 500*time.Millisecond),
		PID:       1000 + i,
		Manifests: []string{"m"},
		Cache:     gobuild.Stats{Gets: 10 * n, Hits: 7 * n, Puts: 3 * n, PutBytes: 300 * n},
		Store:     store.Stats{RemoteHits: n, BytesDown: 1000 * n, Uploads: 2 * n, BytesUp: 200 * n, Remote: true, ReadOnly: i%2 == 1},
		Prefetch:  gobuild.PrefetchStats{Prefetched: n, PrefetchedBytes: 800 * n, UsedBytes: 700 * n, WastedBytes: 100 * n},
	}
}

// TestConcurrentAppend: records appended by many writers at once come
// back whole, each once, and add up.
func TestConcurrentAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := metricsfile.Append(path, record(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, bad, err := metricsfile.Read(f)
	if err != nil || len(bad) > 0 {
		t.Fatalf("Read: %v, bad lines %v", err, bad)
	}
	if len(recs) != n {
		t.Fatalf("read %d records; want %d", len(recs), n)
	}
	pids := map[int]bool{}
	for _, r := range recs {
		if r.Version != metricsfile.Version {
			t.Errorf("record version %d", r.Version)
		}
		i := r.PID - 1000
		want := record(i)
		want.Version = metricsfile.Version
		if !reflect.DeepEqual(r, want) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, r, want)
		}
		pids[r.PID] = true
	}
	if len(pids) != n {
		t.Errorf("%d distinct records of %d", len(pids), n)
	}

	tot := metricsfile.Total(recs)
	sum := int64(n * (n + 1) / 2) // of i+1
	if tot.Processes != n || tot.Remote != n || tot.ReadOnly != n/2 {
		t.Errorf("totals %d processes, %d with a bucket, %d read-only", tot.Processes, tot.Remote, tot.ReadOnly)
	}
	if tot.Cache.Gets != 10*sum || tot.Cache.Hits != 7*sum || tot.Misses() != 3*sum || tot.Cache.PutBytes != 300*sum {
		t.Errorf("cache totals %+v", tot.Cache)
	}
	if tot.Store.BytesDown != 1000*sum || tot.Store.Uploads != 2*sum || tot.Store.RemoteHits != sum {
		t.Errorf("store totals %+v", tot.Store)
	}
	if tot.Prefetch.PrefetchedBytes != 800*sum || tot.Prefetch.UsedBytes != 700*sum || tot.Prefetch.WastedBytes != 100*sum {
		t.Errorf("prefetch totals %+v", tot.Prefetch)
	}
	if tot.Busy != n*500*time.Millisecond || !tot.First.Equal(t0) || !tot.Last.Equal(t0.Add((n-1)*time.Second+500*time.Millisecond)) {
		t.Errorf("times: busy %v, %v to %v", tot.Busy, tot.First, tot.Last)
	}
	if !reflect.DeepEqual(tot.Manifests, []string{"m"}) {
		t.Errorf("manifests %q", tot.Manifests)
	}
}

// TestReadBadLines: lines that are not records are skipped and reported
// by line number with the reason; the good ones are still read.
func TestReadBadLines(t *testing.T) {
	good, err := json.Marshal(record(0))
	if err != nil {
		t.Fatal(err)
	}
	good = bytes.Replace(good, []byte(`"v":0`), []byte(`"v":1`), 1)
	cut := good[:len(good)/2]
	input := strings.Join([]string{
		string(good),
		string(cut),
		`{"v":2,"cache":{}}`,
		`{"cache":{}}`,
		`[1,2]`,
		``,
		`{"v":1,"start":"2026-01-02T00:00:01Z","end":"2026-01-02T00:00:00Z"}`,
		`{"v":1,"cache":{"gets":"many"}}`,
		string(good),
	}, "\n")
	recs, bad, err := metricsfile.Read(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Errorf("read %d records; want 2", len(recs))
	}
	want := map[int]string{2: "not a JSON object", 3: "version 2", 4: "no version", 5: "not a JSON object", 7: "before it starts", 8: "bad record"}
	if len(bad) != len(want) {
		t.Errorf("bad lines %v; want %d", bad, len(want))
	}
	for _, e := range bad {
		var le *metricsfile.LineError
		if !errors.As(e, &le) {
			t.Errorf("error %v is not a LineError", e)
			continue
		}
		if w, ok := want[le.Line]; !ok || !strings.Contains(e.Error(), w) {
			t.Errorf("line %d: %v; want it to say %q", le.Line, e, w)
		}
	}

	long := `{"v":1,"manifests":["` + strings.Repeat("x", metricsfile.MaxLine) + `"]}`
	if _, _, err := metricsfile.Read(strings.NewReader(string(good) + "\n" + long)); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Read of an over-long line: %v; want an error naming line 2", err)
	}
}

// FuzzRead: Read never panics, every line is a record or a reported bad
// line, and a record written back reads the same.
func FuzzRead(f *testing.F) {
	good, _ := json.Marshal(record(2))
	f.Add(string(good))
	f.Add(`{"v":1}` + "\n" + `{"v":1,"cache":{"gets":3}}`)
	f.Add(`{"v":1,"start":"x"}`)
	f.Add("\n\n{\n")
	f.Fuzz(func(t *testing.T, input string) {
		recs, bad, err := metricsfile.Read(strings.NewReader(input))
		if err != nil {
			return // an over-long line
		}
		lines := 0
		for l := range strings.SplitSeq(input, "\n") {
			if strings.TrimSpace(l) != "" {
				lines++
			}
		}
		if len(recs)+len(bad) != lines {
			t.Fatalf("%d records and %d bad lines from %d lines", len(recs), len(bad), lines)
		}
		for _, r := range recs {
			if r.End.Before(r.Start) {
				t.Fatalf("record ends before it starts: %+v", r)
			}
			var buf bytes.Buffer
			if err := json.NewEncoder(&buf).Encode(r); err != nil {
				t.Fatal(err)
			}
			again, bad, err := metricsfile.Read(&buf)
			if err != nil || len(bad) > 0 || len(again) != 1 || !reflect.DeepEqual(normal(again[0]), normal(r)) {
				t.Fatalf("record %+v read back as %+v, %v, %v", r, again, bad, err)
			}
		}
		metricsfile.Total(recs)
	})
}

// normal drops what does not survive JSON: monotonic clock readings and
// locations.
func normal(r metricsfile.Record) metricsfile.Record {
	r.Start, r.End = r.Start.UTC().Round(0), r.End.UTC().Round(0)
	if len(r.Manifests) == 0 {
		r.Manifests = nil
	}
	return r
}
