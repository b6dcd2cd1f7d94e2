package gobuild

import (
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
)

// TestStatsCounters checks that every live counter of a Cache and of
// Manifests has its field in Stats or PrefetchStats, and every field its
// counter.
func TestStatsCounters(t *testing.T) {
	if err := counters.Check[Stats](new(cacheCounters)); err != nil {
		t.Error(err)
	}
	if err := counters.Check[PrefetchStats](new(prefetchCounters)); err != nil {
		t.Error(err)
	}
}

// TestPrefetchStatsString checks the log form of PrefetchStats, which
// log readers parse, against its literal text.
func TestPrefetchStatsString(t *testing.T) {
	s := PrefetchStats{
		ManifestsRead: 1, ManifestsWritten: 2, ManifestsKept: 3, Entries: 4, Local: 5,
		Prefetched: 6, PrefetchedBytes: 7, Used: 8, UsedBytes: 9, Wasted: 10, WastedBytes: 11,
		Waited: 12, Stopped: 13, Early: 14, Records: 15, PackReads: 16, Packed: 17,
		PacksWritten: 18, PackBytes: 1 << 40,
	}
	const want = "manifests_read=1 manifests_written=2 manifests_kept=3 manifest_entries=4 prefetch_local=5 prefetched=6 prefetched_bytes=7 prefetch_used=8 prefetch_used_bytes=9 prefetch_wasted=10 prefetch_wasted_bytes=11 prefetch_waited=12 prefetch_stopped=13 answered_early=14 prefetch_records=15 pack_reads=16 prefetch_packed=17 packs_written=18 pack_bytes_written=1099511627776"
	if got := s.String(); got != want {
		t.Errorf("PrefetchStats.String() =\n%s\nwant\n%s", got, want)
	}
}

// TestManifestsStatsSnapshot checks that Manifests.Stats reads its live
// counters into the fields of their names.
func TestManifestsStatsSnapshot(t *testing.T) {
	var m Manifests
	m.stats.manifestsRead.Add(1)
	m.stats.local.Add(2)
	m.stats.packBytes.Add(3)
	got := m.Stats()
	if want := (PrefetchStats{ManifestsRead: 1, Local: 2, PackBytes: 3}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}
