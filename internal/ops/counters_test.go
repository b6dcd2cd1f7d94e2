package ops

import (
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
)

// TestFrontEndStatsCounters checks that every live counter of a
// FrontEnd has its FrontEndStats field and every field its counter, but
// for those FrontEnd.Stats fills.
func TestFrontEndStatsCounters(t *testing.T) {
	if err := counters.Check[FrontEndStats](new(frontEndCounters), "Name", "HitRatio"); err != nil {
		t.Error(err)
	}
}
