package flight

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// waitWaiting blocks until key's call in g has n callers waiting (the call
// may not have started yet). It watches the group's own count under its
// lock, with no sleep: each look yields to the callers it waits for.
func waitWaiting[K comparable, V any](t *testing.T, g *Group[K, V], key K, n int) {
	t.Helper()
	for {
		g.mu.Lock()
		c := g.calls[key]
		w := -1
		if c != nil {
			w = c.waiting
		}
		g.mu.Unlock()
		if w >= n {
			return
		}
		runtime.Gosched()
	}
}

// concurrently has n callers Do key at once with work held until all of
// them wait, and returns what each got.
func concurrently(t *testing.T, g *Group[string, int], n int, work func() (int, error)) (vals []int, errs []error) {
	t.Helper()
	release := make(chan struct{})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			v, err := g.Do(context.Background(), "k", func(context.Context) (int, error) {
				<-release
				return work()
			})
			mu.Lock()
			vals, errs = append(vals, v), append(errs, err)
			mu.Unlock()
		})
	}
	waitWaiting(t, g, "k", n)
	close(release)
	wg.Wait()
	return vals, errs
}

func TestDoRunsOnce(t *testing.T) {
	var g Group[string, int]
	var runs atomic.Int64
	const n = 20
	vals, errs := concurrently(t, &g, n, func() (int, error) {
		runs.Add(1)
		return 42, nil
	})
	for i, v := range vals {
		if v != 42 || errs[i] != nil {
			t.Errorf("Do = %d, %v; want 42, nil", v, errs[i])
		}
	}
	if r := runs.Load(); r != 1 {
		t.Errorf("work ran %d times for %d concurrent callers, want 1", r, n)
	}
	// The call is gone once landed: a new Do runs the work again.
	if v, _ := g.Do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil }); v != 7 {
		t.Errorf("Do after the call landed = %d, want 7 (a new run)", v)
	}
}

func TestDoErrorToAll(t *testing.T) {
	var g Group[string, int]
	boom := errors.New("boom")
	_, errs := concurrently(t, &g, 5, func() (int, error) { return 0, boom })
	if len(errs) != 5 {
		t.Fatalf("%d callers returned, want 5", len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("Do error = %v, want %v", err, boom)
		}
	}
}

func TestWaiterGivesUpLeaderGoesOn(t *testing.T) {
	var g Group[string, string]
	release := make(chan struct{})
	workCtx := make(chan context.Context, 1)
	finished := make(chan string, 1)
	work := func(ctx context.Context) (string, error) {
		workCtx <- ctx
		<-release
		finished <- "done"
		return "v", nil
	}
	// The first caller starts the work and gives up.
	ctx1, cancel1 := context.WithCancelCause(context.Background())
	gone := errors.New("client gone")
	first := make(chan error, 1)
	go func() {
		_, err := g.Do(ctx1, "k", work)
		first <- err
	}()
	wctx := <-workCtx
	// A second caller joins and stays.
	second := make(chan string, 1)
	go func() {
		v, err := g.Do(context.Background(), "k", work)
		if err != nil {
			t.Errorf("second Do: %v", err)
		}
		second <- v
	}()
	waitWaiting(t, &g, "k", 2)
	cancel1(gone)
	if err := <-first; !errors.Is(err, gone) {
		t.Errorf("first Do after its ctx ended = %v, want %v", err, gone)
	}
	if wctx.Err() != nil {
		t.Errorf("the work's context ended with the first caller's: %v", wctx.Err())
	}
	close(release)
	if v := <-second; v != "v" {
		t.Errorf("second Do = %q, want the work's result", v)
	}
	if s := <-finished; s != "done" {
		t.Errorf("work ended %q", s)
	}
}

func TestGroupContextAndGo(t *testing.T) {
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	refused := errors.New("closed")
	var started atomic.Int64
	closed := false
	g := Group[string, int]{
		Context: func() context.Context { return base },
		Go: func(work func()) error {
			if closed {
				return refused
			}
			started.Add(1)
			go work()
			return nil
		},
	}
	v, err := g.Do(context.Background(), "k", func(ctx context.Context) (int, error) {
		if ctx != base {
			t.Error("the work does not run under the group's Context")
		}
		return 1, nil
	})
	if v != 1 || err != nil || started.Load() != 1 {
		t.Errorf("Do = %d, %v (started %d), want 1, nil (started 1)", v, err, started.Load())
	}
	closed = true
	if _, err := g.Do(context.Background(), "k", func(context.Context) (int, error) {
		t.Error("work run though Go refused it")
		return 0, nil
	}); !errors.Is(err, refused) {
		t.Errorf("Do with Go refusing = %v, want %v", err, refused)
	}
}

func TestPanicReachesWaiters(t *testing.T) {
	var g Group[string, int]
	release := make(chan struct{})
	const n = 3
	panics := make(chan any, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			defer func() { panics <- recover() }()
			g.Do(context.Background(), "k", func(context.Context) (int, error) {
				<-release
				panic("bad thing")
			})
		})
	}
	waitWaiting(t, &g, "k", n)
	close(release)
	wg.Wait()
	close(panics)
	for p := range panics {
		pe, ok := p.(*PanicError)
		if !ok || pe.Value != "bad thing" || len(pe.Stack) == 0 {
			t.Errorf("caller recovered %#v, want a *PanicError of the work's panic", p)
		}
	}
}

func TestGoexitIsAnError(t *testing.T) {
	var g Group[string, int]
	_, err := g.Do(context.Background(), "k", func(context.Context) (int, error) {
		runtime.Goexit()
		return 0, nil
	})
	if !errors.Is(err, ErrGoexit) {
		t.Errorf("Do of work calling Goexit = %v, want ErrGoexit", err)
	}
}

func TestJoinLand(t *testing.T) {
	var g Group[int, string]
	c, leader := g.Join(1)
	if !leader {
		t.Fatal("first Join does not lead")
	}
	c2, leader2 := g.Join(1)
	if leader2 || c2 != c {
		t.Fatal("second Join does not join the call in progress")
	}
	if _, other := g.Join(2); !other {
		t.Error("Join of another key does not lead its own call")
	}
	got := make(chan string, 1)
	go func() {
		v, _ := c2.Wait(context.Background())
		got <- v
	}()
	g.Land(1, c, "early", nil)
	g.Land(1, c, "late", nil) // only the first counts
	if v := <-got; v != "early" {
		t.Errorf("Wait = %q, want the first Land's value", v)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Land")
	}
	if _, leader := g.Join(1); !leader {
		t.Error("Join after Land does not start a new call")
	}
	// A waiter whose context is over returns its cause.
	c3, _ := g.Join(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c3.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with an ended ctx = %v, want context.Canceled", err)
	}
}
