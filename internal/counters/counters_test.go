package counters

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

//lint:ignore U1000 unexp is there to be left alone
type sampleStats struct {
	Hits      int64         `json:"hits"`
	BytesUp   int64         `json:"bytes_up"`
	TLSErrors int64         `json:"tls_errors"`
	Waited    time.Duration `json:"waited"` // an int64 kind, counted in nanoseconds
	Queue     int64         `json:"queue"`  // filled by the caller
	Remote    bool          `json:"remote"` // filled by the caller
	unexp     int64
}

type sampleLive struct {
	hits, bytesUp atomic.Int64
	tlsErrors     atomic.Int64
	waited        atomic.Int64
}

func TestSnapshotCopiesTwins(t *testing.T) {
	var c sampleLive
	c.hits.Add(3)
	c.bytesUp.Add(1 << 40)
	c.tlsErrors.Add(-2)
	c.waited.Add(int64(time.Second))
	got := Snapshot[sampleStats](&c)
	want := sampleStats{Hits: 3, BytesUp: 1 << 40, TLSErrors: -2, Waited: time.Second}
	if got != want {
		t.Errorf("Snapshot = %+v, want %+v", got, want)
	}
	// A second call uses the cached mapping and sees new values.
	c.hits.Add(1)
	if got := Snapshot[sampleStats](&c); got.Hits != 4 || got.BytesUp != 1<<40 {
		t.Errorf("second Snapshot = %+v, want Hits 4, BytesUp 1<<40", got)
	}
	if err := Check[sampleStats](&c, "Queue", "Remote"); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestSnapshotAllocatesNothing(t *testing.T) {
	var c sampleLive
	c.hits.Add(1)
	var s sampleStats
	if n := testing.AllocsPerRun(100, func() { s = Snapshot[sampleStats](&c) }); n != 0 {
		t.Errorf("Snapshot allocates %v times per call, want 0", n)
	}
	if s.Hits != 1 {
		t.Errorf("Hits = %d, want 1", s.Hits)
	}
}

func TestCheckFindsMismatches(t *testing.T) {
	type stats struct {
		Hits    int64  `json:"hits"`
		Misses  int64  `json:"misses"` // no live twin, not listed
		Queue   int64  `json:"queue"`  // listed
		State   string `json:"state"`  // no live twin, not listed
		Flag    bool   `json:"flag"`   // has a live twin, but is not int64
		Counted int64  `json:"counted"`
	}
	//lint:ignore U1000 the fields are read by reflection only
	type live struct {
		hits    atomic.Int64
		hitz    atomic.Int64 // no Stats twin
		flag    atomic.Int64
		counted atomic.Int64
		plain   int64 // not atomic.Int64
		small   atomic.Int32
	}
	err := Check[stats](new(live), "Queue", "Counted", "Nope", "Queue")
	if err == nil {
		t.Fatal("Check found nothing wrong")
	}
	msg := err.Error()
	for _, want := range []string{
		"live field counters.live.hitz has no field of the same name in counters.stats",
		"live field counters.live.flag has twin counters.stats.Flag of type bool, not int64",
		"live field counters.live.plain is int64, not atomic.Int64",
		"live field counters.live.small is atomic.Int32, not atomic.Int64",
		"counters.stats.Misses (int64) has no live counter",
		"counters.stats.State (string) has no live counter",
		"counters.stats.Counted is listed as filled by the caller but is counted by live field counters.live.counted",
		"counters.stats has no exported field Nope",
		"counters.stats.Queue is listed as filled twice",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Check error lacks %q; got:\n%s", want, msg)
		}
	}
	for _, unwanted := range []string{"stats.Hits ", "stats.Queue (", "live.hits has"} {
		if strings.Contains(msg, unwanted) {
			t.Errorf("Check error mentions the sound field %q; got:\n%s", unwanted, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 9 {
		t.Errorf("Check reported %d problems, want 9:\n%s", n, msg)
	}
}

func TestCheckFindsAmbiguousNames(t *testing.T) {
	type stats struct {
		TLSErrors int64
		TlsErrors int64
	}
	//lint:ignore U1000 the fields are read by reflection only
	type live struct {
		tlsErrors atomic.Int64
		TLSerrors atomic.Int64
	}
	err := Check[stats](new(live))
	if err == nil {
		t.Fatal("Check found nothing wrong")
	}
	for _, want := range []string{"fields TLSErrors and TlsErrors differ only in case", "live fields counters.live.tlsErrors and TLSerrors differ only in case"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error lacks %q; got:\n%v", want, err)
		}
	}
}

func TestCheckNonStructs(t *testing.T) {
	if err := Check[int64](new(sampleLive)); err == nil || !strings.Contains(err.Error(), "Stats type int64 is not a struct") {
		t.Errorf("Check[int64] = %v, want an error naming int64", err)
	}
	if err := Check[sampleStats](new(int64)); err == nil || !strings.Contains(err.Error(), "live type int64 is not a struct") {
		t.Errorf("Check with an int64 as the live struct = %v, want an error naming it", err)
	}
}

func TestSnapshotPanicsOnMismatch(t *testing.T) {
	type stats struct{ Hits int64 }
	//lint:ignore U1000 the fields are read by reflection only
	type live struct{ misses atomic.Int64 }
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !strings.Contains(err.Error(), "live field counters.live.misses has no field of the same name") {
			t.Errorf("Snapshot of a mismatched pair panicked with %v, want the mismatch", r)
		}
	}()
	Snapshot[stats](new(live))
	t.Error("Snapshot of a mismatched pair did not panic")
}

func TestFormat(t *testing.T) {
	type stats struct {
		B     int64   `json:"b_count"`
		A     int64   `json:"a_count,omitempty"`
		Skip  int64   `json:"-"`
		Plain int64   // untagged: its Go name
		U     uint8   `json:"u"`
		F     float64 `json:"ratio"`
		On    bool    `json:"on"`
		S     string  `json:"state"`
		Q     string  `json:"quoted"`
		E     string  `json:"empty"`
		D     []int   `json:"list"`
		priv  int64
	}
	s := stats{B: 2, A: 0, Skip: 9, Plain: -4, U: 7, F: 0.25, On: true, S: "half-open", Q: "a b", D: []int{1, 2}, priv: 5}
	got := Format(s)
	want := `b_count=2 a_count=0 Plain=-4 u=7 ratio=0.25 on=true state=half-open quoted="a b" empty="" list=[1 2]`
	if got != want {
		t.Errorf("Format =\n%s\nwant\n%s", got, want)
	}
	if got := Format(struct{}{}); got != "" {
		t.Errorf("Format of an empty struct = %q, want empty", got)
	}
}

func BenchmarkSnapshot(b *testing.B) {
	var c sampleLive
	for b.Loop() {
		_ = Snapshot[sampleStats](&c)
	}
}
