package gobuild

import (
	"bytes"
	"context"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// TestSessionCloseLeavesStore checks that a session's close ends the
// session only: the shared store goes on taking uploads, and its owner
// drains them all at the end.
func TestSessionCloseLeavesStore(t *testing.T) {
	fr := newFakeRemote()
	c := newCache(t, fr)
	first, second := c.Session(), c.Session()
	data1, data2 := []byte("from the first session"), []byte("from the second session")
	if _, err := first.Put(context.Background(), putRequest(actionID("one"), data1)); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatalf("session Close: %v", err)
	}
	// The second session still puts, gets and uploads.
	if _, err := second.Put(context.Background(), putRequest(actionID("two"), data2)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := second.Get(context.Background(), actionID("one")); !ok || err != nil {
		t.Errorf("second session's get of the first one's put: %v, %v", ok, err)
	}
	second.Close(context.Background())
	closeCache(t, c)
	if n, want := len(fr.puts()), 4; n != want {
		t.Errorf("%d objects uploaded, want %d (two outputs, two actions): %q", n, want, fr.puts())
	}
	if st := c.Store.Stats(); st.UploadsDropped != 0 {
		t.Errorf("%d uploads dropped", st.UploadsDropped)
	}
}

func putRequest(aid, data []byte) cacheprog.PutRequest {
	return cacheprog.PutRequest{ActionID: aid, OutputID: outputID(data), Size: int64(len(data)), Body: bytes.NewReader(data)}
}
