package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	inflight "github.com/go-cache-plugin/go-cache-plugin/internal/flight"
)

// A Remote is a remote tier: a flat namespace of immutable objects, such as
// an S3 bucket. Keys are "<kind>/<xx>/<name>"; the Remote may prefix them.
type Remote interface {
	// Get opens the object at key and reports its size (-1 if unknown).
	// It returns an error wrapping fs.ErrNotExist if there is none.
	Get(ctx context.Context, key string) (io.ReadCloser, int64, error)

	// Put stores size bytes read from r at key.
	Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error

	// Exists reports whether an object is stored at key.
	Exists(ctx context.Context, key string) (bool, error)

	// GetRange opens the n bytes of the object at key that start at
	// offset off; a range running past the end of the object is cut
	// there. It returns an error wrapping fs.ErrNotExist if there is no
	// object at key. Packs are read with it (see [Store.ReadPack]).
	//
	// It is part of the contract, not an optional extra, so that a
	// wrapper (metrics, fault injection) cannot hide it by accident.
	GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
}

// Remote tier tuning. The timeouts bound each remote call so that a dead
// remote costs seconds, not a timeout per request; the breaker then skips
// the remote for a while.
const (
	remoteTimeout    = 20 * time.Second // a whole small call
	transferRate     = 1 << 20          // bytes per second assumed for transfer timeouts
	breakerThreshold = 2                // consecutive failures that open the breaker
	breakerBase      = 5 * time.Second  // first open period
	breakerMax       = 2 * time.Minute  // longest open period
	defaultUploads   = 4
)

// An Upload is one object to write to the remote tier: a local file or
// in-memory data.
type Upload struct {
	Key  Key
	Path string // local file to upload, or
	Data []byte // the bytes to upload if Path is empty
}

// remoteTier layers a Remote under the local directory.
type remoteTier struct {
	s       *Store
	remote  Remote
	breaker breaker
	flight  inflight.Group[Key, *Object]

	uploaded sync.Map // Key.String() -> true for objects known to be in the remote

	ctx    context.Context // for uploads; cancelled when close gives up
	cancel context.CancelFunc

	// Uploads in flight run under callCtx (a child of ctx), which is
	// cancelled and replaced whenever the breaker opens: a call still
	// waiting on a remote declared dead would only run into its timeout.
	callMu     sync.Mutex
	callCtx    context.Context
	callCancel context.CancelFunc

	mu       sync.Mutex
	queue    [][]Upload // pending upload jobs
	workers  int        // running upload workers
	maxWork  int
	inFlight atomic.Int64 // jobs being uploaded
	closing  bool
	idle     chan struct{} // closed and replaced when workers reach zero
}

func newRemoteTier(s *Store, rem Remote, concurrency int) *remoteTier {
	if concurrency <= 0 {
		concurrency = defaultUploads
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &remoteTier{
		s: s, remote: rem, maxWork: concurrency,
		ctx: ctx, cancel: cancel,
		breaker: breaker{backoff: breakerBase},
	}
	r.callCtx, r.callCancel = context.WithCancel(ctx)
	return r
}

// uploadContext returns the context for an upload call.
func (r *remoteTier) uploadContext() context.Context {
	r.callMu.Lock()
	defer r.callMu.Unlock()
	return r.callCtx
}

// abortCalls cancels the upload calls in flight.
func (r *remoteTier) abortCalls() {
	r.callMu.Lock()
	defer r.callMu.Unlock()
	r.callCancel()
	r.callCtx, r.callCancel = context.WithCancel(r.ctx)
}

// transferTimeout is the deadline for moving size bytes.
func transferTimeout(size int64) time.Duration {
	return remoteTimeout + time.Duration(size/transferRate)*time.Second
}

// faultIn fetches key from the remote tier into the local one, verified
// against check. Concurrent calls for one key share one fetch, which runs
// without the first caller's cancellation (the call path bounds it); a
// caller whose ctx ends stops waiting, with a miss.
func (r *remoteTier) faultIn(ctx context.Context, key Key, check Check) (Object, bool, error) {
	obj, _ := r.flight.Do(ctx, key, func(ctx context.Context) (*Object, error) {
		// Another process, or a fetch that just finished, may have
		// installed it meanwhile.
		if obj, ok, _ := r.s.lookup(key, check); ok {
			return &obj, nil
		}
		obj, ok := r.fetch(ctx, key, check)
		if !ok {
			return nil, nil
		}
		return &obj, nil
	})
	if obj != nil {
		return *obj, true, nil
	}
	return Object{}, false, nil
}

// firstByteTimeout bounds the wait for a fetch's response: a miss is
// cheaper than a wait. A variable so that tests can shorten it.
var firstByteTimeout = 3 * time.Second

// errNoResponse reports a remote that did not answer within
// firstByteTimeout. It opens the breaker at once: a remote that does not
// answer at all would otherwise cost that timeout once more.
var errNoResponse = errors.New("no response in time")

// readError marks an error from reading the remote stream, as opposed to
// writing the local file or verifying the content.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// fetch does the work of faultIn. Every failure is a miss.
func (r *remoteTier) fetch(ctx context.Context, key Key, check Check) (Object, bool) {
	timeout := remoteTimeout
	if check.Size > 0 {
		timeout = transferTimeout(check.Size)
	}
	var obj Object
	spec := callSpec{kind: callRead, op: "fetch", name: key.String(), total: timeout, firstByte: true}
	out := r.call(ctx, spec, func(c *callState) error {
		rc, size, err := r.remote.Get(c.ctx, key.String())
		if err != nil {
			return err
		}
		defer rc.Close()
		c.answered()
		c.moving(size)
		if check.Size < 0 {
			// Nothing expected: hold the stream to what it declared, so
			// that one cut short without an error is not installed.
			check.Size = size
		}
		if check.Size >= 0 && size >= 0 && size != check.Size {
			return corruptf("remote %s is %d bytes, want %d: not installed", key, size, check.Size)
		}
		obj, err = r.s.install(key, errReader{rc}, check)
		var rerr readError
		switch {
		case errors.As(err, &rerr):
			return rerr.err
		case errors.Is(err, ErrMismatch):
			return corruptf("remote %v: not installed", err)
		case err != nil:
			r.s.logf("fault in %s: %v", key, err)
			return localError{err}
		}
		c.bytes = obj.Size
		return nil
	})
	if out != outOK {
		return Object{}, false
	}
	r.uploaded.Store(key.String(), true)
	return obj, true
}

// RemoteDown reports that the remote tier is known to be unusable (a
// missing bucket, say). It is skipped for the longest breaker period, then
// probed again.
func (s *Store) RemoteDown(err error) {
	if s.remote == nil {
		return
	}
	b := &s.remote.breaker
	b.mu.Lock()
	b.openUntil = time.Now().Add(breakerMax)
	b.backoff = breakerMax
	b.probing = false
	b.mu.Unlock()
	s.remote.abortCalls()
	s.logf("remote tier unavailable, skipping it for %v: %v", breakerMax, err)
}

// Upload writes items to the remote tier behind the caller, in order; if
// one fails, the rest are not written (so that, for example, a record is
// never uploaded without the object it names). Without a remote tier it
// does nothing; with a read-only one ([Options.ReadOnly]) it only counts
// the items, and makes no remote call.
func (s *Store) Upload(items ...Upload) {
	r := s.remote
	if r == nil || len(items) == 0 {
		return
	}
	if s.readOnly {
		s.stats.uploadsSkipped.Add(int64(len(items)))
		return
	}
	for _, it := range items {
		if err := it.Key.valid(); err != nil {
			s.stats.uploadsDropped.Add(int64(len(items)))
			s.logf("upload: %v: job dropped", err)
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		s.stats.uploadsDropped.Add(int64(len(items)))
		return
	}
	r.queue = append(r.queue, items)
	if r.workers < r.maxWork {
		if r.workers == 0 {
			r.idle = make(chan struct{})
		}
		r.workers++
		go r.work()
	}
}

// work uploads queued jobs until the queue is empty. close waits for it
// through r.idle.
func (r *remoteTier) work() {
	for {
		r.mu.Lock()
		if len(r.queue) == 0 || r.closing && r.ctx.Err() != nil {
			r.workers--
			if r.workers == 0 {
				close(r.idle)
			}
			r.mu.Unlock()
			return
		}
		job := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.inFlight.Add(1)
		r.mu.Unlock()

		r.upload(job)
		r.inFlight.Add(-1)
	}
}

// upload writes the items of one job in order.
func (r *remoteTier) upload(job []Upload) {
	for i, it := range job {
		if r.ctx.Err() != nil {
			r.s.stats.uploadsDropped.Add(int64(len(job) - i))
			return
		}
		out, err := r.put(it)
		switch {
		case out == outSkipped:
			r.s.stats.uploadsDropped.Add(int64(len(job) - i))
			return
		case out == outLocal && !errors.Is(err, errNoCall):
			// Nothing was sent (the local file has gone, say); the
			// rest of the job (a record naming this object) must not
			// be either.
			r.s.stats.uploadsDropped.Add(int64(len(job) - i))
			r.s.logf("upload %s: %v: %d uploads dropped", it.Key, err, len(job)-i)
			return
		case out == outFailed:
			r.s.stats.uploadsDropped.Add(int64(len(job) - i - 1))
			return
		}
	}
}

// errGone reports that the local file of an upload has gone.
var errGone = errors.New("local file gone")

// put uploads one item, unless it is a file already in the remote tier.
// The error is the one that ended the call, if any.
func (r *remoteTier) put(it Upload) (outcome, error) {
	name := it.Key.String()
	var failure error
	spec := callSpec{kind: callUpload, op: "upload", name: name, total: remoteTimeout}
	out := r.call(r.uploadContext(), spec, func(c *callState) error {
		failure = r.putItem(c, it)
		return failure
	})
	return out, failure
}

// putItem is the call of put.
func (r *remoteTier) putItem(c *callState, it Upload) error {
	name := it.Key.String()
	if it.Path == "" {
		if err := r.remote.Put(c.ctx, name, bytes.NewReader(it.Data), int64(len(it.Data))); err != nil {
			return err
		}
		c.bytes = int64(len(it.Data))
		return nil
	}
	if _, ok := r.uploaded.Load(name); ok {
		c.found = true
		return errNoCall
	}
	f, err := os.Open(it.Path)
	if err != nil {
		// Trimmed locally since the write: nothing to send.
		return localError{fmt.Errorf("%w: %v", errGone, err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return localError{fmt.Errorf("stat %s: %w", it.Path, err)}
	}
	c.moving(fi.Size())
	found, err := r.remote.Exists(c.ctx, name)
	if err != nil {
		return err
	}
	if found {
		c.found = true
	} else {
		if err := r.remote.Put(c.ctx, name, f, fi.Size()); err != nil {
			return err
		}
		c.bytes = fi.Size()
	}
	r.uploaded.Store(name, true)
	return nil
}

func (r *remoteTier) queueLen() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(len(r.queue)) + r.inFlight.Load()
}

// close waits for the upload queue to drain until ctx ends, then cancels
// what is left and reports it.
func (r *remoteTier) close(ctx context.Context) error {
	r.mu.Lock()
	r.closing = true
	idle := r.idle
	r.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		select {
		case <-idle: // drained too: select chose at random
			return nil
		default:
		}
	}
	left := r.queueLen()
	r.cancel()
	<-idle
	r.mu.Lock()
	dropped := 0
	for _, job := range r.queue {
		dropped += len(job)
	}
	r.queue = nil
	r.mu.Unlock()
	r.s.stats.uploadsDropped.Add(int64(dropped))
	return fmt.Errorf("%d uploads not finished when the drain deadline passed", left)
}

// breaker skips the remote tier after repeated failures. After the open
// period one call is let through (half-open): the probe. Its success
// closes the breaker, its failure opens it again for twice as long. The
// probe is known by the ticket allow gave it, so that a call let through
// earlier, ending while the probe is out, neither frees the probe's place
// nor is taken for its result.
type breaker struct {
	mu        sync.Mutex
	failures  int
	openUntil time.Time
	backoff   time.Duration
	probing   bool
	probe     probeTicket // the ticket of the probe out, if probing
	tickets   probeTicket // the last ticket given
}

// A probeTicket names the call allow let through as the probe; zero for
// any other call.
type probeTicket uint64

// allow reports whether a call may go to the remote tier, and, if it is
// the probe of a half-open breaker, its ticket.
func (b *breaker) allow() (probeTicket, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() {
		return 0, true
	}
	if time.Now().Before(b.openUntil) || b.probing {
		return 0, false
	}
	b.tickets++
	b.probing, b.probe = true, b.tickets // let one call through to probe
	return b.probe, true
}

// isProbe reports whether t is the ticket of the probe out. b.mu is held.
func (b *breaker) isProbe(t probeTicket) bool {
	return t != 0 && b.probing && t == b.probe
}

// release ends a call let through by allow that did not reach the remote:
// if it was the probe, another call may probe instead.
func (b *breaker) release(t probeTicket) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isProbe(t) {
		b.probing = false
	}
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
	b.openUntil = time.Time{}
	b.backoff = breakerBase
	b.probing = false
}

// failure records a failure of the call with ticket t and reports whether
// it opened the breaker. A severe failure opens it without waiting for
// the threshold; a failed probe opens it again, for twice as long.
func (b *breaker) failure(severe bool, t probeTicket) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if severe {
		b.failures = max(b.failures, breakerThreshold)
	}
	probe := b.isProbe(t)
	if probe || b.failures >= breakerThreshold && b.openUntil.IsZero() {
		if probe {
			b.backoff = min(2*b.backoff, breakerMax)
		}
		b.probing = false
		b.openUntil = time.Now().Add(b.backoff)
		return true
	}
	return false
}

func (b *breaker) openFor() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Until(b.openUntil).Round(time.Second)
}

func (b *breaker) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openUntil.IsZero():
		return "closed"
	case time.Now().Before(b.openUntil):
		return "open"
	}
	return "half-open"
}
