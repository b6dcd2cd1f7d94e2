package modproxy

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// TestRefusalIsMismatch checks that a file the checksum database refuses
// reaches Config.OnStore as an error wrapping store.ErrMismatch, and a
// good one with none: the proxy tells a refusal by the store's exported
// error, with no wrapper of its own around Check.Verify.
func TestRefusalIsMismatch(t *testing.T) {
	var mu sync.Mutex
	var errs []error
	e := newEnv(t, nil, nil, func(c *Config) {
		c.OnStore = func(_ int64, err error, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		}
	})
	if err := e.up.Tamper("example.com/a", "v1.0.0", ".zip"); err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, "/example.com/a/@v/v1.0.0.zip"); r.code != http.StatusBadGateway {
		t.Fatalf("GET tampered zip: %d %q, want 502", r.code, r.body)
	}
	e.mustGet(t, "/example.com/a/@v/v1.0.0.mod", "miss")
	mu.Lock()
	defer mu.Unlock()
	// The checksum database's own files are stored on the way (with
	// OnStore calls of their own); only the zip is refused.
	refused := 0
	for _, err := range errs {
		switch {
		case errors.Is(err, store.ErrMismatch):
			refused++
		case err != nil:
			t.Errorf("OnStore err = %v, want nil or one wrapping store.ErrMismatch", err)
		}
	}
	if refused != 1 {
		t.Errorf("%d OnStore errors wrap store.ErrMismatch (of %v), want 1: the tampered zip", refused, errs)
	}
	if s := e.p.Stats(); s.Refused != 1 {
		t.Errorf("refused %d, want 1", s.Refused)
	}
}
