package store

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Last use and trimming. See "Last use, trimming and the lock files" in the
// package documentation.
const (
	// touchInterval is how old an object's time must be for a use to
	// record it again.
	touchInterval = time.Hour

	// inUseGrace is how long after a lookup an object may still be read
	// by the request's client. A trim that is not alone leaves alone the
	// objects whose recorded use is within touchInterval+inUseGrace.
	inUseGrace = 10 * time.Minute

	// closeTrimBudget bounds the trim at Close: the client (the go
	// command, in direct mode) waits for it.
	closeTrimBudget = 5 * time.Second

	// expiryCheck is how often a trim is due for Limits.Expiry alone.
	expiryCheck = time.Hour

	// registerPoll is how often a store that could not register, because
	// another process was trimming exclusively, tries again.
	registerPoll = 100 * time.Millisecond

	usersFile = "users.lock"
	trimFile  = "trim.lock"
)

// trimCheck is how often a store with limits checks whether a trim is due,
// beside the checks its writes make: for the expiry, and for the writes of
// other processes, in a long-lived process such as the server. (A variable
// for tests.)
var trimCheck = 10 * time.Minute

// users is a store's registration as a user of its directory: a shared
// lock on <dir>/users.lock.
type users struct {
	mu   sync.Mutex
	f    *os.File // nil if not registered and not trying to
	held bool     // the shared lock is held
	stop chan struct{}
	done chan struct{} // closed when the retry goroutine has ended
}

// register registers s as a user of its directory. If an exclusive trim is
// running, s records every use until it ends and registers then.
func (s *Store) register() {
	f, err := os.OpenFile(filepath.Join(s.dir, usersFile), os.O_RDONLY|os.O_CREATE, 0o666)
	if err != nil {
		// A trim elsewhere cannot see this process; record every use,
		// so that one would notice.
		s.logf("cannot register as a user of the cache directory: %v; recording every use", err)
		s.touchAll.Store(true)
		return
	}
	u := &s.users
	u.f = f
	ok, err := tryLock(f, lockShared)
	switch {
	case err != nil:
		// No locks here (some network file systems): no trim can have the
		// directory to itself either, so hourly use records suffice.
		s.logf("cannot lock %s: %v; trims will leave recently used objects alone", f.Name(), err)
	case ok:
		u.held = true
	default:
		s.touchAll.Store(true)
		u.stop = make(chan struct{})
		u.done = make(chan struct{})
		go s.retryRegister()
	}
}

// retryRegister tries to register until it can or the store closes.
func (s *Store) retryRegister() {
	u := &s.users
	defer close(u.done)
	t := time.NewTicker(registerPoll)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
		}
		u.mu.Lock()
		ok, err := tryLock(u.f, lockShared)
		if ok || err != nil {
			u.held = ok
			s.touchAll.Store(false)
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
	}
}

// unregister ends s's registration; it keeps the file open for a trim at
// close.
func (s *Store) unregister() {
	u := &s.users
	if u.stop != nil {
		close(u.stop)
		<-u.done
		u.stop = nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.held {
		tryLock(u.f, lockUnlock)
		u.held = false
	}
}

// registered reports whether s holds its registration.
func (s *Store) registered() bool {
	u := &s.users
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.held
}

func (u *users) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
}

// haveDirectory tries to take the directory for an exclusive trim: an
// exclusive lock on users.lock, which succeeds only if no process (s
// included) is registered. It returns a function that gives the directory
// back, or nil.
func (s *Store) haveDirectory() func() {
	if !haveLocks || s.registered() || s.touchAll.Load() {
		return nil
	}
	u := &s.users
	u.mu.Lock()
	f := u.f
	u.mu.Unlock()
	own := false
	if f == nil {
		var err error
		if f, err = os.OpenFile(filepath.Join(s.dir, usersFile), os.O_RDONLY|os.O_CREATE, 0o666); err != nil {
			return nil
		}
		own = true
	}
	if ok, _ := tryLock(f, lockExclusive); !ok {
		if own {
			f.Close()
		}
		return nil
	}
	return func() {
		tryLock(f, lockUnlock)
		if own {
			f.Close()
		}
	}
}

// background runs one trim at a time behind the writes that call for it.
type background struct {
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	running bool
	stopped bool
	wg      sync.WaitGroup // the trim running
	timers  sync.WaitGroup // the goroutines of every
}

func (b *background) init() {
	b.ctx, b.cancel = context.WithCancel(context.Background())
}

// start runs f in the background unless it is running or stopped.
func (b *background) start(f func(ctx context.Context)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running || b.stopped {
		return
	}
	b.running = true
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f(b.ctx)
		b.mu.Lock()
		b.running = false
		b.mu.Unlock()
	}()
}

// every calls start(f) every d until stop.
func (b *background) every(d time.Duration, f func(ctx context.Context)) {
	b.timers.Add(1)
	go func() {
		defer b.timers.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case <-t.C:
				b.start(f)
			}
		}
	}()
}

// stop cancels the background trim and waits for it.
func (b *background) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.cancel()
	b.timers.Wait()
	b.wg.Wait()
}

// wrote accounts for n bytes written to the directory, and starts a trim in
// the background if they may have pushed it past the limit.
func (s *Store) wrote(n int64) {
	if s.limits.IsZero() {
		return
	}
	s.unaccounted.Add(n)
	if s.limits.MaxSize <= 0 {
		return
	}
	if s.sinceCheck.Add(n) < trimStep(s.limits) {
		return
	}
	s.sinceCheck.Store(0)
	s.bg.start(s.backgroundTrim)
}

// backgroundTrim trims if a trim is due.
func (s *Store) backgroundTrim(ctx context.Context) {
	rep, err := s.trim(ctx, s.limits, trimDue)
	s.logTrim("in the background", rep, err)
}

// trimStep is how many bytes written call for another look at the size.
func trimStep(lim Limits) int64 {
	return max(lim.MaxSize/16, 1<<20)
}
