package revproxy

import (
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
)

// TestStatsCounters checks that every live counter has its Stats field
// and every Stats field its counter, but for the memory tier's, which
// Proxy.Stats fills.
func TestStatsCounters(t *testing.T) {
	if err := counters.Check[Stats](new(proxyCounters), "MemoryEntries", "MemoryBytes"); err != nil {
		t.Error(err)
	}
}
