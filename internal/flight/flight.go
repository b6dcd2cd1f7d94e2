// Package flight is the one single-flight of the project: concurrent
// requests for one key share one execution of the work behind it.
//
// It has two entry points. Do runs the work in a goroutine of its own, so
// that every caller, the first one included, may give up waiting on its
// own context while the work goes on for the others (the store's fault-in,
// the module proxy's fills). Join and Land are for work that the first
// caller does itself, in its own goroutine, because it also serves that
// caller as it goes (the reverse proxy streams a fill to its first client),
// or because the others only need to know when it ends (gobuild's prefetch
// against the go command's own requests).
package flight

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
)

// A Group holds the calls in progress, by key. The zero Group is ready to
// use, with the defaults below; a Group must not be copied after first use.
type Group[K comparable, V any] struct {
	// Context, if set, returns the context the work of Do runs under. If
	// nil, the work runs under the first caller's context without its
	// cancellation (context.WithoutCancel): no caller that goes away cuts
	// the work short for the others, so the work must bound itself.
	Context func() context.Context

	// Go, if set, starts the work of Do: it runs work in a goroutine and
	// returns nil, or returns an error that every caller of that call
	// gets instead. It lets the owner of the group wait for the work at
	// shutdown and refuse new work then. If nil, the work runs in a plain
	// goroutine.
	Go func(work func()) error

	mu    sync.Mutex
	calls map[K]*Call[V]
}

// A Call is one execution of the work for a key, which its callers wait for.
type Call[V any] struct {
	done    chan struct{}
	once    sync.Once
	val     V
	err     error
	panic   *PanicError // set if the work panicked
	waiting int         // callers in Wait, under the group's mutex
	mu      *sync.Mutex // the group's
}

// A PanicError is what a call's work panicked with. Every caller waiting for
// the call panics with it in turn, so that the failure shows where the work
// was asked for; if none waits, the goroutine that ran the work panics with
// it, as any goroutine's unrecovered panic does.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the stack of the work's goroutine when it panicked
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("flight: the shared work panicked: %v\n\n%s", p.Value, p.Stack)
}

// Unwrap returns the panic value if it is an error.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// ErrGoexit is the error of a call whose work called runtime.Goexit.
var ErrGoexit = errors.New("flight: the shared work exited without an outcome")

// Join returns the call in progress for key and false, or, if there is
// none, starts one and returns it and true: the caller then leads it, does
// the work and must end it with Land (in a defer, so that a panic ends it
// too).
func (g *Group[K, V]) Join(key K) (c *Call[V], leader bool) {
	return g.join(key, 0)
}

// join is Join, counting the caller as waiting (waiting is 1) at once, so
// that a call landing before the caller reaches wait still counts it.
func (g *Group[K, V]) join(key K, waiting int) (*Call[V], bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		c.waiting += waiting
		return c, false
	}
	if g.calls == nil {
		g.calls = make(map[K]*Call[V])
	}
	c := &Call[V]{done: make(chan struct{}), mu: &g.mu, waiting: waiting}
	g.calls[key] = c
	return c, true
}

// Land ends the call c for key with val and err, and wakes its callers.
// Only the first Land of a call counts; later ones do nothing, so that a
// leader may land early (to let the others go) and again in a defer.
func (g *Group[K, V]) Land(key K, c *Call[V], val V, err error) {
	g.land(key, c, val, err, nil)
}

// land ends c and reports whether some caller was waiting for it then.
func (g *Group[K, V]) land(key K, c *Call[V], val V, err error, p *PanicError) (waited bool) {
	c.once.Do(func() {
		g.mu.Lock()
		if g.calls[key] == c {
			delete(g.calls, key)
		}
		c.val, c.err, c.panic = val, err, p
		waited = c.waiting > 0
		close(c.done)
		g.mu.Unlock()
	})
	return waited
}

// Done returns a channel closed when c has landed.
func (c *Call[V]) Done() <-chan struct{} { return c.done }

// Wait waits for c to land, or for ctx to end, and returns c's outcome or
// ctx's cause. A call that lands as ctx ends counts as landed. If c's work
// panicked, Wait panics with the *PanicError.
func (c *Call[V]) Wait(ctx context.Context) (V, error) {
	c.mu.Lock()
	c.waiting++
	c.mu.Unlock()
	return c.wait(ctx)
}

// wait is Wait for a caller counted as waiting already.
func (c *Call[V]) wait(ctx context.Context) (V, error) {
	select {
	case <-c.done:
	case <-ctx.Done():
		c.mu.Lock()
		select {
		case <-c.done:
			c.mu.Unlock()
		default:
			c.waiting--
			c.mu.Unlock()
			var zero V
			return zero, context.Cause(ctx)
		}
	}
	if c.panic != nil {
		panic(c.panic)
	}
	return c.val, c.err
}

// Do runs work once for key for every caller asking meanwhile, and waits
// for it until ctx ends. The work runs in a goroutine of its own, under the
// group's Context (see there), so a caller that gives up does not cut it
// short for the others. A panic in the work reaches the callers as
// described at PanicError.
func (g *Group[K, V]) Do(ctx context.Context, key K, work func(ctx context.Context) (V, error)) (V, error) {
	c, leader := g.join(key, 1)
	if leader {
		wctx := context.WithoutCancel(ctx)
		if g.Context != nil {
			wctx = g.Context()
		}
		run := func() {
			var val V
			var err error
			done := false
			defer func() {
				if done {
					return
				}
				r := recover()
				if r == nil {
					// runtime.Goexit, not a panic: the goroutine ends
					// as asked, and the callers hear of it.
					var zero V
					g.Land(key, c, zero, ErrGoexit)
					return
				}
				p := &PanicError{Value: r, Stack: debug.Stack()}
				if !g.land(key, c, val, err, p) {
					panic(p) // nobody waits to be told: do not lose it
				}
			}()
			val, err = work(wctx)
			done = true
			g.Land(key, c, val, err)
		}
		start := g.Go
		if start == nil {
			start = func(f func()) error { go f(); return nil }
		}
		if err := start(run); err != nil {
			var zero V
			g.Land(key, c, zero, err)
		}
	}
	return c.wait(ctx)
}
