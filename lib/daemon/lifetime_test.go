package daemon

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// stepRecorder records the steps of a shutdown in order.
type stepRecorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *stepRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.steps)
}

func (r *stepRecorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
}

type fakeHTTP struct {
	shutdown func(context.Context) error
}

func (h fakeHTTP) Shutdown(ctx context.Context) error { return h.shutdown(ctx) }

// TestLifetimeOrder stops a daemon with a live session, an HTTP listener
// and two front ends: the daemon is marked draining first, the session is
// cut (by a hurry, standing for the second signal, long before Timeout)
// before the HTTP listener stops, and the front ends stop last, in order,
// with the failing one reported.
func TestLifetimeOrder(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t)
	c.roundTrip(1, 1) // a live session, never closed

	var rec stepRecorder
	liveAtHTTP := -1
	feErr := errors.New("front end 2: fills cut")
	var feCtxErr error
	life := &Lifetime{
		Sessions: f.srv,
		Draining: func() { rec.add("draining") },
		HTTP: fakeHTTP{func(ctx context.Context) error {
			liveAtHTTP = f.srv.Stats().Live
			rec.add("http")
			return nil
		}},
		FrontEnds: []func(context.Context) error{
			func(ctx context.Context) error { rec.add("front end 1"); return nil },
			func(ctx context.Context) error {
				rec.add("front end 2")
				feCtxErr = ctx.Err()
				return feErr
			},
		},
		Timeout: time.Hour,
		Logf:    f.log.logf,
	}
	hurry, hurryUp := context.WithCancel(context.Background())
	defer hurryUp()
	reports := make(chan StopReport, 1)
	go func() { reports <- life.Stop(hurry) }()
	f.log.wait(t, `shutdown: 1 live session; waiting up to`)
	if got := rec.get(); !slices.Equal(got, []string{"draining"}) {
		t.Errorf("steps while the session is live: %q, want only draining", got)
	}
	hurryUp()
	var rep StopReport
	select {
	case rep = <-reports:
	case <-time.After(hangGuard):
		t.Fatal("Stop did not return")
	}
	c.eof()

	if want := []string{"draining", "http", "front end 1", "front end 2"}; !slices.Equal(rec.get(), want) {
		t.Errorf("steps %q, want %q", rec.get(), want)
	}
	if liveAtHTTP != 0 {
		t.Errorf("%d sessions live when the HTTP listener stopped, want 0", liveAtHTTP)
	}
	if !errors.Is(feCtxErr, context.Canceled) {
		t.Errorf("front end's context: %v, want cancelled by the hurry", feCtxErr)
	}
	if !rep.HasSessions || rep.Sessions != (ShutdownReport{Cut: 1}) {
		t.Errorf("report %+v, want 1 session cut", rep)
	}
	if len(rep.FrontEndErr) != 1 || rep.FrontEndErr[0] != feErr || rep.HTTPErr != nil {
		t.Errorf("report errors: HTTP %v, front ends %v; want only %v", rep.HTTPErr, rep.FrontEndErr, feErr)
	}
	if got, want := rep.String(), "sessions: 0 finished, 1 cut"; got != want {
		t.Errorf("report says %q, want %q", got, want)
	}
	f.log.wait(t, `front end 2: fills cut`)
}

// TestLifetimeNothingToStop checks that a Lifetime of zero fields stops
// at once and reports nothing, and that Wait returns the server's error
// or, when the context ends, nil.
func TestLifetimeNothingToStop(t *testing.T) {
	var life Lifetime
	if rep := life.Stop(context.Background()); rep.HasSessions || rep.String() != "" || rep.HTTPErr != nil || rep.FrontEndErr != nil {
		t.Errorf("report %+v, want empty", rep)
	}
	failed := make(chan error, 1)
	serveErr := errors.New("accept: too many open files")
	failed <- serveErr
	if err := life.Wait(context.Background(), failed); err != serveErr {
		t.Errorf("Wait = %v, want the server's error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := life.Wait(ctx, make(chan error)); err != nil {
		t.Errorf("Wait after cancel = %v, want nil", err)
	}
}
