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
// reaches Config.Recorder's Store as an error wrapping store.ErrMismatch, and a
// good one with none: the proxy tells a refusal by the store's exported
// error, with no wrapper of its own around Check.Verify.
func TestRefusalIsMismatch(t *testing.T) {
	rec := &storeErrs{}
	e := newEnv(t, nil, nil, func(c *Config) { c.Recorder = rec })
	if err := e.up.Tamper("example.com/a", "v1.0.0", ".zip"); err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, "/example.com/a/@v/v1.0.0.zip"); r.code != http.StatusBadGateway {
		t.Fatalf("GET tampered zip: %d %q, want 502", r.code, r.body)
	}
	e.mustGet(t, "/example.com/a/@v/v1.0.0.mod", "miss")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	errs := rec.errs
	// The checksum database's own files are stored on the way (with
	// Store calls of their own); only the zip is refused.
	refused := 0
	for _, err := range errs {
		switch {
		case errors.Is(err, store.ErrMismatch):
			refused++
		case err != nil:
			t.Errorf("Recorder.Store err = %v, want nil or one wrapping store.ErrMismatch", err)
		}
	}
	if refused != 1 {
		t.Errorf("%d Recorder.Store errors wrap store.ErrMismatch (of %v), want 1: the tampered zip", refused, errs)
	}
	if s := e.p.Stats(); s.Refused != 1 {
		t.Errorf("refused %d, want 1", s.Refused)
	}
}

// storeErrs is a Recorder that keeps the errors of the stores.
type storeErrs struct {
	mu   sync.Mutex
	errs []error
}

func (r *storeErrs) Lookup(bool, int64, error, time.Duration) {}

func (r *storeErrs) Store(_ int64, err error, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}
