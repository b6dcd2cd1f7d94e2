package store

import (
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
)

// TestStatsCounters checks that every live counter has its Stats field
// and every Stats field its counter, but for those Store.Stats fills.
func TestStatsCounters(t *testing.T) {
	if err := counters.Check[Stats](new(storeCounters), "UploadQueue", "Remote", "ReadOnly", "Breaker"); err != nil {
		t.Error(err)
	}
}
