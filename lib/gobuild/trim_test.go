package gobuild

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// TestTrimFollowsOutputs: a trim removes action records with their outputs
// (an action record's last use is its output's), and what it removed is a
// clean miss on both lookup paths.
func TestTrimFollowsOutputs(t *testing.T) {
	c := newCache(t, nil)
	dir := c.Store.Dir()
	oldAID, newAID, sharedAID := actionID("old"), actionID("new"), actionID("shares new's output")
	oldPath := put(t, c, oldAID, []byte("an output nobody used for a week"))
	put(t, c, newAID, []byte("an output used today"))
	put(t, c, sharedAID, []byte("an output used today"))
	closeCache(t, c)

	// The old output was last used a week ago; its record was written
	// recently, which does not count.
	week := time.Now().Add(-7 * 24 * time.Hour)
	if err := os.Chtimes(oldPath, week, week); err != nil {
		t.Fatal(err)
	}
	if k, ok := recordTarget(readActionBytes(t, c, oldAID)); !ok || c.Store.Path(k) != oldPath {
		t.Fatalf("recordTarget = %v, %v; want the old output", k, ok)
	}

	st, err := store.Open(store.Options{Dir: dir, Links: Links, Maintenance: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := st.Trim(context.Background(), store.Limits{Expiry: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	st.Close(context.Background())
	if rep.Expired.Objects != 1 || rep.Records.Objects != 1 {
		t.Errorf("trim %+v; want the old output and its record removed", rep)
	}

	c2 := newCacheIn(t, dir)
	if _, ok, handled := c2.GetFast(oldAID); ok || !handled {
		t.Errorf("GetFast of the trimmed action: ok %v handled %v; want a miss answered at once", ok, handled)
	}
	mustMiss(t, c2, oldAID)
	for _, aid := range [][]byte{newAID, sharedAID} {
		if _, ok, _ := c2.GetFast(aid); !ok {
			t.Error("GetFast of a kept action: miss")
		}
	}
	closeCache(t, c2)
}

func newCacheIn(t *testing.T, dir string) *Cache {
	t.Helper()
	s, err := store.Open(store.Options{Dir: dir, Links: Links, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return &Cache{Store: s, Logf: t.Logf}
}

func readActionBytes(t *testing.T, c *Cache, aid []byte) []byte {
	t.Helper()
	data, ok, err := c.Store.ReadLocal(actionKey(aid), maxRecord)
	if err != nil || !ok {
		t.Fatalf("ReadLocal = %v, %v", ok, err)
	}
	return data
}
