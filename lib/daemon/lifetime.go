package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// A Lifetime owns the order in which a daemon stops. When the daemon is
// told to stop (its context is done) or one of its servers fails, Wait
// returns, and Stop then
//
//  1. marks the daemon as draining (Draining: /healthz fails from now on),
//  2. stops accepting sessions and lets the live ones finish, cutting
//     those still open when Timeout passes ([Server.Shutdown]),
//  3. stops the HTTP listener, waiting for its requests within the same
//     bound,
//  4. stops the front ends (their fills finished or cut), in order, within
//     the same bound,
//
// and reports what it had to cut. A second SIGINT or SIGTERM during Stop
// cuts the waits short. What comes after (the store's drain) is the
// caller's. Every field may be left zero.
type Lifetime struct {
	// Sessions is the cache-prog server, if the daemon has one.
	Sessions *Server
	// HTTP is the HTTP listener, if the daemon has one: an
	// [net/http.Server], or anything that stops the same way.
	HTTP interface{ Shutdown(context.Context) error }
	// FrontEnds stop the HTTP front ends, after the HTTP listener: each
	// finishes or cuts its work in progress by the time ctx is done.
	FrontEnds []func(ctx context.Context) error
	// Draining, if set, is called first, when the shutdown begins.
	Draining func()
	// Timeout bounds the whole of Stop (sessions, HTTP requests, front
	// ends); zero means no time at all: live sessions are cut at once.
	Timeout time.Duration
	// Logf, if set, receives a line for each step that fails.
	Logf func(format string, args ...any)
}

// A StopReport says how [Lifetime.Stop] went.
type StopReport struct {
	Sessions    ShutdownReport // with Lifetime.Sessions
	HasSessions bool           // whether there was a cache-prog server
	HTTPErr     error          // the HTTP listener's requests were cut
	FrontEndErr []error        // the front ends that could not stop cleanly
}

// String describes the sessions part of r ("sessions: 3 finished, 1 cut"),
// or "" without a cache-prog server.
func (r StopReport) String() string {
	if !r.HasSessions {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sessions: %d finished, %d cut", r.Sessions.Finished, r.Sessions.Cut)
	if r.Sessions.Stuck > 0 {
		fmt.Fprintf(&b, " (%d still busy, abandoned)", r.Sessions.Stuck)
	}
	return b.String()
}

func (l *Lifetime) logf(format string, args ...any) {
	if l.Logf != nil {
		l.Logf(format, args...)
	}
}

// Wait waits until ctx is done or a server reports an error on failed,
// logs why the daemon is shutting down, and returns the server's error
// (nil if ctx ended).
func (l *Lifetime) Wait(ctx context.Context, failed <-chan error) error {
	select {
	case <-ctx.Done():
		l.logf("shutting down (%v): accepting no new sessions", context.Cause(ctx))
		return nil
	case err := <-failed:
		l.logf("shutting down: %v", err)
		return err
	}
}

// Stop stops the daemon's servers in order (see [Lifetime]) within
// Timeout, or sooner if hurry is done. It returns what it had to cut.
func (l *Lifetime) Stop(hurry context.Context) StopReport {
	if l.Draining != nil {
		l.Draining()
	}
	ctx, cancel := context.WithTimeout(hurry, l.Timeout)
	defer cancel()
	var rep StopReport
	if l.Sessions != nil {
		rep.HasSessions = true
		rep.Sessions = l.Sessions.Shutdown(ctx)
	}
	if l.HTTP != nil {
		if err := l.HTTP.Shutdown(ctx); err != nil {
			rep.HTTPErr = err
			l.logf("HTTP listener: requests cut at shutdown: %v", err)
		}
	}
	for _, stop := range l.FrontEnds {
		if err := stop(ctx); err != nil {
			rep.FrontEndErr = append(rep.FrontEndErr, err)
			l.logf("%v", err)
		}
	}
	return rep
}

// Hurry returns a context that a second SIGINT or SIGTERM (the first
// ended the daemon's own context) cancels, for the waits of the shutdown,
// and a function that releases the signals. It logs the signal.
func Hurry(logf func(string, ...any)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			if logf != nil {
				logf("%v again: cutting the shutdown short", s)
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}
