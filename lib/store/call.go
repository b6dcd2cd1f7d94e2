package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// The one path of every remote call. Each read and write of the remote
// tier is a function given to [remoteTier.call], which owns what every call
// must get right: it asks the breaker first, bounds the call with its
// deadlines, sorts the way the call ended into exactly one [outcome],
// tells the breaker (a success, a failure, or a release that says nothing
// of the remote) and counts it. No other code calls the breaker's allow,
// success, failure or release, so no path can leave the breaker probing.

// A callKind is what a remote call does; it decides what the call counts.
type callKind int

const (
	callRead   callKind = iota // Get of a whole object: a fault-in or a small read
	callRange                  // GetRange of part of a pack
	callWrite                  // Put of a raw object, at once
	callUpload                 // Exists and Put of a queued upload
)

// An outcome is how a remote call ended.
type outcome int

const (
	outSkipped  outcome = iota // the breaker is open: no call made
	outOK                      // the remote answered with what was asked
	outNotFound                // the remote answered that there is no such object
	outCorrupt                 // the remote answered with bytes that are not the object
	outGone                    // the caller gave up: says nothing of the remote
	outLocal                   // a local fault, or nothing to ask: says nothing of the remote
	outFailed                  // the remote failed, or did not answer in time
)

func (o outcome) String() string {
	return [...]string{"skipped", "ok", "not found", "corrupt", "caller gone", "local fault", "remote failure"}[o]
}

// A callSpec describes a remote call.
type callSpec struct {
	kind callKind
	op   string // what the call is, for logs: "fetch", "read" or "upload"
	name string // the object, for logs

	// total bounds the whole call. With firstByte, the remote must also
	// answer within firstByteTimeout (until fn calls answered): a miss is
	// cheaper than a wait, and a remote that does not answer at all
	// opens the breaker at once.
	total     time.Duration
	firstByte bool
}

// A callState is a remote call in progress, as its function sees it.
type callState struct {
	ctx       context.Context // the call's context, with its deadlines
	start     time.Time
	total     time.Duration
	firstByte *time.Timer // nil without a first-byte deadline
	deadline  *time.Timer

	ticket probeTicket // the breaker's ticket, if the call is its probe

	bytes int64 // bytes moved, added to the counters whatever the outcome
	found bool  // upload: the remote had the object already
}

// answered tells the call that the remote's response has begun, which
// ends the first-byte deadline.
func (c *callState) answered() {
	if c.firstByte != nil {
		c.firstByte.Stop()
	}
}

// moving tells the call that it moves size bytes (-1 if unknown): if they
// take longer to move than the call's total deadline allows, the deadline
// becomes their [transferTimeout] from the start of the call.
func (c *callState) moving(size int64) {
	if longer := transferTimeout(size); size > 0 && longer > c.total && c.deadline.Stop() {
		c.deadline.Reset(longer - time.Since(c.start))
	}
}

// errNoCall is returned by a call's function that found nothing to ask of
// the remote after all (an upload of an object known to be there).
var errNoCall = errors.New("no remote call needed")

// A corruptError reports a remote answer that is not the object asked
// for: content that fails its check, a stream cut short, an object too
// long. Its text is the line logged.
type corruptError struct{ msg string }

func (e corruptError) Error() string { return e.msg }

func corruptf(format string, args ...any) error {
	return corruptError{fmt.Sprintf(format, args...)}
}

// call makes one remote call: fn, run with a context that carries the
// spec's deadlines. Unless the call is an upload (whose context is the
// tier's own, cancelled only to abort it), a cancelled ctx means the
// caller has given up: then no call is made, or the one made ends as
// outGone. fn's error is sorted in this order: a [localError] or errNoCall
// is outLocal; a [corruptError] is outCorrupt; ctx done is outGone; for a
// read, an error wrapping [fs.ErrNotExist] is outNotFound; any other error
// is outFailed. Nil is outOK.
func (r *remoteTier) call(ctx context.Context, spec callSpec, fn func(*callState) error) outcome {
	abandonable := spec.kind != callUpload
	if abandonable && ctx.Err() != nil {
		return outGone
	}
	ticket, ok := r.breaker.allow()
	if !ok {
		if spec.kind != callUpload { // the upload queue counts what it drops
			r.s.stats.remoteSkipped.Add(1)
		}
		return outSkipped
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c := &callState{ctx: cctx, start: time.Now(), total: spec.total, ticket: ticket}
	c.deadline = time.AfterFunc(spec.total, func() { cancel(context.DeadlineExceeded) })
	defer c.deadline.Stop()
	if spec.firstByte {
		c.firstByte = time.AfterFunc(firstByteTimeout, func() { cancel(errNoResponse) })
		defer c.firstByte.Stop()
	}
	err := fn(c)

	var lerr localError
	var cerr corruptError
	out := outOK
	switch {
	case err == nil:
	case errors.As(err, &lerr) || errors.Is(err, errNoCall):
		out = outLocal
	case errors.As(err, &cerr):
		out = outCorrupt
	case abandonable && ctx.Err() != nil:
		out = outGone
	case errors.Is(err, fs.ErrNotExist) && (spec.kind == callRead || spec.kind == callRange):
		out = outNotFound
	default:
		out = outFailed
		if context.Cause(cctx) == errNoResponse && !errors.Is(err, errNoResponse) {
			err = fmt.Errorf("%w: %v", errNoResponse, err)
		}
	}
	r.settle(spec, c, out, err)
	return out
}

// settle tells the breaker how a call ended, counts it and logs what is
// worth a line.
func (r *remoteTier) settle(spec callSpec, c *callState, out outcome, err error) {
	st := &r.s.stats
	reading := spec.kind == callRead || spec.kind == callRange
	if reading {
		st.bytesDown.Add(c.bytes)
	} else {
		st.bytesUp.Add(c.bytes)
	}
	switch out {
	case outOK:
		r.breaker.success()
		switch {
		case spec.kind == callRead:
			st.remoteHits.Add(1)
		case c.found:
			st.uploadsFound.Add(1)
		case !reading:
			st.uploads.Add(1)
		}
	case outNotFound:
		r.breaker.success()
		st.remoteMisses.Add(1)
	case outCorrupt:
		r.breaker.success() // the remote answered; the object is bad
		st.corruptRemote.Add(1)
		r.s.logf("%v", err)
	case outGone, outLocal:
		r.breaker.release(c.ticket)
		if c.found { // an upload of an object known to be there
			st.uploadsFound.Add(1)
		}
	case outFailed:
		st.remoteErrors.Add(1)
		if !reading {
			st.uploadErrors.Add(1)
		}
		if r.breaker.failure(errors.Is(err, errNoResponse), c.ticket) {
			r.abortCalls()
			r.s.logf("remote tier failing (%s %s: %v); skipping it for %v", spec.op, spec.name, err, r.breaker.openFor())
			return
		}
		r.s.logf("remote %s %s: %v", spec.op, spec.name, err)
	}
}
