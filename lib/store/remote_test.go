package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// A fault is a failure injected into calls of one kind on a [fakeRemote].
type fault struct {
	err       error // the call fails with err
	hang      bool  // the call blocks until its context is done
	corrupt   bool  // Get: the content is returned with its first byte changed
	failAfter int   // Get: if > 0, the stream fails after this many bytes
	cutAfter  int   // Get: if > 0, the stream ends cleanly after this many bytes
	size      int64 // Get: if != 0, the declared size (instead of the true one)
}

// fakeRemote is an in-memory [Remote] with fault injection. Faults and
// hooks are keyed by object key; the key "" applies to every key without a
// fault of its own.
type fakeRemote struct {
	mu      sync.Mutex
	objects map[string][]byte
	faults  map[string]fault // "<op> <key>", op is get, put or exists
	calls   map[string]int   // "<op> <key>" and "<op>" -> number of calls
	putLog  []string         // keys in the order their Put succeeded

	// hook, if set, is called (without the lock held) at the start of
	// every call, before any fault; it may block.
	hook func(ctx context.Context, op, key string)
}

func newFakeRemote() *fakeRemote {
	return &fakeRemote{objects: map[string][]byte{}, faults: map[string]fault{}, calls: map[string]int{}}
}

func (f *fakeRemote) set(key string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[key] = bytes.Clone(data)
}

func (f *fakeRemote) object(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.objects[key]
	return data, ok
}

func (f *fakeRemote) setFault(op, key string, ft fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op+" "+key] = ft
}

func (f *fakeRemote) clearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.faults)
}

func (f *fakeRemote) setHook(h func(ctx context.Context, op, key string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

// count reports the calls of op on key, or of op on every key if key is "".
func (f *fakeRemote) count(op, key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key == "" {
		return f.calls[op]
	}
	return f.calls[op+" "+key]
}

func (f *fakeRemote) puts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.putLog...)
}

// begin records a call and returns its fault after running the hook.
func (f *fakeRemote) begin(ctx context.Context, op, key string) (fault, error) {
	f.mu.Lock()
	f.calls[op]++
	f.calls[op+" "+key]++
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		hook(ctx, op, key)
	}
	f.mu.Lock()
	ft, ok := f.faults[op+" "+key]
	if !ok {
		ft = f.faults[op+" "]
	}
	f.mu.Unlock()
	if ft.hang {
		<-ctx.Done()
		return ft, ctx.Err()
	}
	return ft, ft.err
}

func (f *fakeRemote) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	return f.get(ctx, "get", key)
}

// get is Get, recorded as the call op.
func (f *fakeRemote) get(ctx context.Context, op, key string) (io.ReadCloser, int64, error) {
	ft, err := f.begin(ctx, op, key)
	if err != nil {
		return nil, 0, err
	}
	data, ok := f.object(key)
	if !ok {
		return nil, 0, fmt.Errorf("fake get %s: %w", key, fs.ErrNotExist)
	}
	data = bytes.Clone(data)
	size := int64(len(data))
	if ft.size != 0 {
		size = ft.size
	}
	if ft.corrupt && len(data) > 0 {
		data[0] ^= 0xff
	}
	var r io.Reader = bytes.NewReader(data)
	switch {
	case ft.failAfter > 0:
		r = io.MultiReader(bytes.NewReader(data[:ft.failAfter]), failReader{errors.New("connection reset by fake")})
	case ft.cutAfter > 0:
		r = bytes.NewReader(data[:ft.cutAfter])
	}
	return io.NopCloser(r), size, nil
}

// GetRange reads a range of what Get would return, faults included.
func (f *fakeRemote) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, _, err := f.get(ctx, "get_range", key)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, off); err != nil && err != io.EOF {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, n), rc}, nil
}

func (f *fakeRemote) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if _, err := f.begin(ctx, "put", key); err != nil {
		return err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(data)) != size {
		return fmt.Errorf("fake put %s: read %d bytes, declared %d", key, len(data), size)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[key] = data
	f.putLog = append(f.putLog, key)
	return nil
}

func (f *fakeRemote) Exists(ctx context.Context, key string) (bool, error) {
	if _, err := f.begin(ctx, "exists", key); err != nil {
		return false, err
	}
	_, ok := f.object(key)
	return ok, nil
}

type failReader struct{ err error }

func (r failReader) Read([]byte) (int, error) { return 0, r.err }

var errRemoteDown = errors.New("remote is down")

// closeStore drains the store's uploads with no deadline.
func closeStore(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// writeLocal writes data as a content-addressed output and returns its key
// and object.
func writeLocal(t *testing.T, s *Store, data []byte) (Key, Object) {
	t.Helper()
	key, check := contentKey("output", data)
	obj, err := s.Write(context.Background(), key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatal(err)
	}
	return key, obj
}

func TestFaultIn(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	data := []byte("an object only the remote tier has")
	key, check := contentKey("output", data)
	fr.set(key.String(), data)

	obj, ok, err := s.Get(ctx, key, check)
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v, want hit from remote", ok, err)
	}
	if obj.Path != s.Path(key) || obj.Size != int64(len(data)) {
		t.Errorf("Get = %+v", obj)
	}
	if got := readFile(t, s.Path(key)); !bytes.Equal(got, data) {
		t.Errorf("installed %q, want %q", got, data)
	}
	st := s.Stats()
	if st.RemoteHits != 1 || st.BytesDown != int64(len(data)) || st.LocalMisses != 1 || st.RemoteErrors != 0 {
		t.Errorf("stats = %v", st)
	}
	if st.Writes != 0 {
		t.Errorf("Writes = %d: a fault-in is not a write", st.Writes)
	}

	// Now it is local: no second remote call.
	if _, ok, err := s.Get(ctx, key, check); !ok || err != nil {
		t.Fatalf("second Get = %v, %v", ok, err)
	}
	if n := fr.count("get", key.String()); n != 1 {
		t.Errorf("remote Get called %d times, want 1", n)
	}
	if st := s.Stats(); st.LocalHits != 1 || st.RemoteHits != 1 {
		t.Errorf("stats after second Get = %v", st)
	}
	checkNoTemp(t, s)

	// A remote miss.
	other, otherCheck := contentKey("output", []byte("nowhere"))
	if _, ok, err := s.Get(ctx, other, otherCheck); ok || err != nil {
		t.Errorf("Get of absent key = %v, %v, want miss", ok, err)
	}
	if st := s.Stats(); st.RemoteMisses != 1 || st.Breaker != "closed" {
		t.Errorf("stats after remote miss = %v", st)
	}
}

func TestFaultInUnknownSize(t *testing.T) {
	// A record without a size (check.Size -1) is still verified by digest;
	// the remote need not declare a size either.
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	data := []byte("size unknown to the caller")
	key, check := contentKey("output", data)
	check.Size = -1
	fr.set(key.String(), data)
	fr.setFault("get", key.String(), fault{size: -1})
	if obj, ok, err := s.Get(ctx, key, check); !ok || err != nil || obj.Size != int64(len(data)) {
		t.Fatalf("Get = %+v, %v, %v", obj, ok, err)
	}

	bad := []byte("corrupt, size unknown")
	badKey, badCheck := contentKey("output", bad)
	badCheck.Size = -1
	fr.set(badKey.String(), bad)
	fr.setFault("get", badKey.String(), fault{corrupt: true, size: -1})
	if _, ok, err := s.Get(ctx, badKey, badCheck); ok || err != nil {
		t.Fatalf("Get of corrupt object = %v, %v, want miss", ok, err)
	}
	checkAbsent(t, s, badKey)
	if st := s.Stats(); st.CorruptRemote != 1 {
		t.Errorf("CorruptRemote = %d, want 1", st.CorruptRemote)
	}
}

func TestFaultInRejected(t *testing.T) {
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	tests := []struct {
		name                   string
		fault                  fault
		corrupt, errors, skips int64
	}{
		{name: "corrupt bytes", fault: fault{corrupt: true}, corrupt: 1},
		{name: "clean short stream", fault: fault{cutAfter: 10}, corrupt: 1},
		{name: "stream fails midway", fault: fault{failAfter: 10}, errors: 1},
		{name: "declared size too small", fault: fault{size: 5}, corrupt: 1},
		{name: "declared size too large", fault: fault{size: 5000}, corrupt: 1},
		{name: "get fails", fault: fault{err: errRemoteDown}, errors: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			fr := newFakeRemote()
			s := openStore(t, "", fr)
			defer closeStore(t, s)
			key, check := contentKey("output", data)
			fr.set(key.String(), data)
			fr.setFault("get", key.String(), tt.fault)

			if obj, ok, err := s.Get(ctx, key, check); ok || err != nil {
				t.Fatalf("Get = %+v, %v, %v, want miss", obj, ok, err)
			}
			checkAbsent(t, s, key)
			checkNoTemp(t, s)
			st := s.Stats()
			if st.CorruptRemote != tt.corrupt || st.RemoteErrors != tt.errors || st.RemoteHits != 0 || st.BytesDown != 0 {
				t.Errorf("stats = %v, want corrupt_remote=%d remote_errors=%d", st, tt.corrupt, tt.errors)
			}
			if st.Breaker != "closed" {
				t.Errorf("breaker %q after one bad object", st.Breaker)
			}

			// Once the remote serves it properly, it is faulted in.
			fr.clearFaults()
			if _, ok, err := s.Get(ctx, key, check); !ok || err != nil {
				t.Fatalf("Get after repair = %v, %v", ok, err)
			}
			if got := readFile(t, s.Path(key)); !bytes.Equal(got, data) {
				t.Errorf("installed %q", got)
			}
		})
	}
}

// waitFor polls cond until it holds or a generous deadline passes. Used
// only where there is no event to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFaultInSingleFlight(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	data := bytes.Repeat([]byte("shared "), 1000)
	key, check := contentKey("output", data)
	fr.set(key.String(), data)

	entered := make(chan struct{}, 100)
	release := make(chan struct{})
	fr.setHook(func(ctx context.Context, op, k string) {
		if op == "get" {
			entered <- struct{}{}
			<-release
		}
	})

	const n = 20
	var wg sync.WaitGroup
	results := make(chan error, n)
	for range n {
		wg.Go(func() {
			obj, ok, err := s.Get(ctx, key, check)
			switch {
			case err != nil:
				results <- err
			case !ok:
				results <- errors.New("miss")
			case obj.Path != s.Path(key) || obj.Size != int64(len(data)):
				results <- fmt.Errorf("got %+v", obj)
			default:
				results <- nil
			}
		})
	}
	<-entered // the one remote fetch has started and is held
	// Every caller has missed locally while the fetch is held; they must all
	// share it. There is no event for "waiting in the flight", so poll.
	waitFor(t, "all callers to miss locally", func() bool { return s.Stats().LocalMisses == n })
	close(release)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Errorf("Get: %v", err)
		}
	}
	if c := fr.count("get", ""); c != 1 {
		t.Errorf("remote Get called %d times for %d concurrent Gets, want 1", c, n)
	}
	if st := s.Stats(); st.RemoteHits != 1 || st.BytesDown != int64(len(data)) {
		t.Errorf("stats = %v, want one remote hit", st)
	}
}

func TestBreakerOpensAfterFailures(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	fr.setFault("get", "", fault{err: errRemoteDown})
	fr.setFault("exists", "", fault{err: errRemoteDown})
	fr.setFault("put", "", fault{err: errRemoteDown})

	for i := range breakerThreshold {
		key, check := contentKey("output", []byte{byte(i)})
		if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
			t.Fatalf("Get %d = %v, %v, want miss", i, ok, err)
		}
		want := "closed"
		if i == breakerThreshold-1 {
			want = "open"
		}
		if st := s.Stats(); st.Breaker != want {
			t.Errorf("after %d failures breaker is %q, want %q", i+1, st.Breaker, want)
		}
	}
	if c := fr.count("get", ""); c != breakerThreshold {
		t.Fatalf("remote Get called %d times, want %d", c, breakerThreshold)
	}

	key, check := contentKey("output", []byte("skipped"))
	if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
		t.Errorf("Get while open = %v, %v, want miss", ok, err)
	}
	if _, ok := s.ReadRemoteKey(ctx, key, maxRecordSize); ok {
		t.Error("ReadRemoteKey while open: hit")
	}
	// Uploads are dropped without calling the remote.
	s.Upload(Upload{Key: key, Data: []byte("skipped")}, Upload{Key: Key{Kind: "action", Name: "ab"}, Data: []byte("x")})
	closeStore(t, s)

	if c := fr.count("get", ""); c != breakerThreshold {
		t.Errorf("remote Get called %d times, want %d: open breaker did not skip", c, breakerThreshold)
	}
	if c := fr.count("put", "") + fr.count("exists", ""); c != 0 {
		t.Errorf("remote Put/Exists called %d times while open", c)
	}
	st := s.Stats()
	if st.RemoteSkipped != 2 || st.RemoteErrors != breakerThreshold || st.UploadsDropped != 2 || st.Breaker != "open" {
		t.Errorf("stats = %v, want remote_skipped=2 remote_errors=%d uploads_dropped=2 breaker=open", st, breakerThreshold)
	}
	if s := st.String(); !strings.Contains(s, "breaker=open") || !strings.Contains(s, "remote_skipped=2") {
		t.Errorf("Stats.String() = %q", s)
	}
}

func TestNotExistIsNotFailure(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	get := func(name string) {
		t.Helper()
		key, check := contentKey("output", []byte(name))
		if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
			t.Fatalf("Get %s = %v, %v, want miss", name, ok, err)
		}
	}
	for i := range 2 * breakerThreshold {
		get(fmt.Sprint("absent ", i))
	}
	if st := s.Stats(); st.Breaker != "closed" || st.RemoteMisses != 2*breakerThreshold || st.RemoteErrors != 0 {
		t.Fatalf("after misses: stats = %v", st)
	}

	// Failures must be consecutive: a miss in between is a success.
	fr.setFault("get", "", fault{err: errRemoteDown})
	for i := range breakerThreshold - 1 {
		get(fmt.Sprint("fail a", i))
	}
	fr.clearFaults()
	get("absent again")
	fr.setFault("get", "", fault{err: errRemoteDown})
	for i := range breakerThreshold - 1 {
		get(fmt.Sprint("fail b", i))
	}
	if st := s.Stats(); st.Breaker != "closed" {
		t.Fatalf("breaker %q after %d failures, a miss, %d failures; want closed", st.Breaker, breakerThreshold-1, breakerThreshold-1)
	}
	get("fail 5")
	if st := s.Stats(); st.Breaker != "open" {
		t.Errorf("breaker %q after 3 consecutive failures; want open", st.Breaker)
	}
}

// setOpenUntil moves the breaker's open period, as if time had passed.
func setOpenUntil(b *breaker, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.openUntil = t
}

func TestBreakerStates(t *testing.T) {
	b := &breaker{backoff: breakerBase}
	if b.state() != "closed" || !allowed(b) || !allowed(b) {
		t.Fatal("new breaker is not closed")
	}
	for i := range breakerThreshold - 1 {
		if b.failure(false, 0) {
			t.Fatalf("failure %d opened the breaker", i+1)
		}
	}
	b.success() // resets the count
	for i := range breakerThreshold - 1 {
		if b.failure(false, 0) {
			t.Fatalf("failure %d after a success opened the breaker", i+1)
		}
	}
	before := time.Now()
	if !b.failure(false, 0) {
		t.Fatalf("failure %d did not open the breaker", breakerThreshold)
	}
	after := time.Now()
	if b.state() != "open" || allowed(b) {
		t.Fatalf("breaker state %q after opening", b.state())
	}
	if b.openUntil.Before(before.Add(breakerBase)) || b.openUntil.After(after.Add(breakerBase)) {
		t.Errorf("open until %v, want %v after opening", b.openUntil.Sub(before), breakerBase)
	}
	// A late failure of a call let through before it opened does not
	// extend the period.
	until := b.openUntil
	if b.failure(false, 0) || !b.openUntil.Equal(until) {
		t.Errorf("failure while open changed the period")
	}

	// Each failed probe doubles the period, up to the maximum.
	want := breakerBase
	for range 8 {
		setOpenUntil(b, time.Now().Add(-time.Millisecond))
		if b.state() != "half-open" {
			t.Fatalf("state %q after the open period, want half-open", b.state())
		}
		probe, ok := b.allow()
		if !ok || probe == 0 {
			t.Fatal("no probe allowed after the open period")
		}
		if allowed(b) {
			t.Fatal("a second call allowed while the probe is in flight")
		}
		want = min(2*want, breakerMax)
		before := time.Now()
		if !b.failure(false, probe) {
			t.Fatal("failed probe did not reopen the breaker")
		}
		after := time.Now()
		if b.state() != "open" || allowed(b) {
			t.Fatalf("state %q after a failed probe", b.state())
		}
		if b.backoff != want {
			t.Errorf("backoff %v after a failed probe, want %v", b.backoff, want)
		}
		if b.openUntil.Before(before.Add(want)) || b.openUntil.After(after.Add(want)) {
			t.Errorf("reopened until +%v, want +%v", b.openUntil.Sub(before), want)
		}
	}
	if want != breakerMax {
		t.Fatalf("test did not reach the maximum backoff (%v)", want)
	}

	// A successful probe closes it and resets the backoff.
	setOpenUntil(b, time.Now().Add(-time.Millisecond))
	if !allowed(b) {
		t.Fatal("no probe allowed")
	}
	b.success()
	if b.state() != "closed" || !allowed(b) || !allowed(b) || b.backoff != breakerBase {
		t.Errorf("after a successful probe: state %q backoff %v", b.state(), b.backoff)
	}
	for range breakerThreshold - 1 {
		b.failure(false, 0)
	}
	if b.state() != "closed" {
		t.Error("failure count not reset by the successful probe")
	}
}

// allowed reports whether b lets a call through (taking the probe's place
// if it is half-open).
func allowed(b *breaker) bool {
	_, ok := b.allow()
	return ok
}

// TestBreakerProbeTicket: a call let through before the breaker opened,
// ending while the probe is out, neither frees the probe's place (which
// would let a second probe through) nor counts as the probe's failure.
func TestBreakerProbeTicket(t *testing.T) {
	b := &breaker{backoff: breakerBase}
	early, ok := b.allow() // let through while closed
	if !ok || early != 0 {
		t.Fatalf("closed breaker: ticket %d, allowed %v; want an ordinary call", early, ok)
	}
	for range breakerThreshold {
		b.failure(false, 0)
	}
	setOpenUntil(b, time.Now().Add(-time.Millisecond))
	probe, ok := b.allow()
	if !ok || probe == 0 {
		t.Fatal("no probe allowed after the open period")
	}
	b.release(early) // the early call ends saying nothing of the remote
	if allowed(b) {
		t.Error("the early call's release let a second probe through")
	}
	if b.failure(false, early) || b.backoff != breakerBase {
		t.Errorf("the early call's failure was taken for the probe's: backoff %v", b.backoff)
	}
	if allowed(b) {
		t.Error("a second probe let through after the early call's failure")
	}
	b.release(probe)
	if !allowed(b) {
		t.Error("the probe's release did not free its place")
	}
}

// openBreaker makes a store's breaker open by failing remote Gets, then
// moves its open period into the past so that the next call is a probe.
func openBreaker(t *testing.T, s *Store, fr *fakeRemote) {
	t.Helper()
	fr.setFault("get", "", fault{err: errRemoteDown})
	for i := range breakerThreshold {
		key, check := contentKey("output", []byte(fmt.Sprint("fail ", i)))
		s.Get(context.Background(), key, check)
	}
	fr.clearFaults()
	if st := s.Stats(); st.Breaker != "open" {
		t.Fatalf("breaker %q, want open", st.Breaker)
	}
	setOpenUntil(&s.remote.breaker, time.Now().Add(-time.Millisecond))
	if st := s.Stats(); st.Breaker != "half-open" {
		t.Fatalf("breaker %q, want half-open", st.Breaker)
	}
}

// A probe that never reaches the remote (the object is already known to be
// there) must not leave the breaker waiting for it forever.
func TestBreakerProbeNotUsedByUpload(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)

	// Fault in A, so the store knows the remote has it.
	a := []byte("object A")
	akey, acheck := contentKey("output", a)
	fr.set(akey.String(), a)
	if _, ok, err := s.Get(ctx, akey, acheck); !ok || err != nil {
		t.Fatalf("Get A = %v, %v", ok, err)
	}
	openBreaker(t, s, fr)

	rkey := Key{Kind: "action", Name: "0123"}
	s.Upload(Upload{Key: akey, Path: s.Path(akey)}, Upload{Key: rkey, Data: []byte("record")})
	closeStore(t, s)

	if _, ok := fr.object(rkey.String()); !ok {
		t.Errorf("record not uploaded after the breaker's open period: stats %v", s.Stats())
	}
	if st := s.Stats(); st.Breaker != "closed" {
		t.Errorf("breaker %q after a successful upload, want closed", st.Breaker)
	}
}

// Likewise a fetch that fails locally (here: the object's directory cannot
// be created) is neither a success nor a failure of the remote.
func TestBreakerProbeNotUsedByLocalFailure(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	data := []byte("remote object")
	key, check := contentKey("output", data)
	fr.set(key.String(), data)
	openBreaker(t, s, fr)

	// A dangling symbolic link where the object's directory goes: a
	// lookup finds no object, and the temporary file cannot be created.
	shard := filepath.Dir(s.Path(key))
	if err := os.MkdirAll(filepath.Dir(shard), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", shard); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
		t.Fatalf("Get without the object's directory = %v, %v, want miss", ok, err)
	}
	if err := os.Remove(shard); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Get(ctx, key, check); !ok || err != nil {
		t.Errorf("Get after the local fault was repaired = %v, %v, want hit; stats %v", ok, err, s.Stats())
	}
	if st := s.Stats(); st.Breaker != "closed" {
		t.Errorf("breaker %q, want closed", st.Breaker)
	}
}

// maxRecordSize is the bound of the small reads in the tests.
const maxRecordSize = 4 << 10

func TestReadRemote(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	key := Key{Kind: "action", Name: "00aa"}
	fr.set(key.String(), []byte("small record"))
	data, ok := s.ReadRemoteKey(ctx, key, maxRecordSize)
	if !ok || string(data) != "small record" {
		t.Errorf("ReadRemoteKey = %q, %v", data, ok)
	}
	checkAbsent(t, s, key) // not installed locally
	if st := s.Stats(); st.BytesDown != int64(len("small record")) {
		t.Errorf("BytesDown = %d", st.BytesDown)
	}

	max := Key{Kind: "action", Name: "00bb"}
	fr.set(max.String(), bytes.Repeat([]byte("m"), maxRecordSize))
	if data, ok := s.ReadRemoteKey(ctx, max, maxRecordSize); !ok || len(data) != maxRecordSize {
		t.Errorf("ReadRemoteKey of %d bytes = %d bytes, %v", maxRecordSize, len(data), ok)
	}

	big := Key{Kind: "action", Name: "00cc"}
	fr.set(big.String(), bytes.Repeat([]byte("b"), maxRecordSize+1))
	if data, ok := s.ReadRemoteKey(ctx, big, maxRecordSize); ok || data != nil {
		t.Errorf("ReadRemoteKey of %d bytes = %d bytes, %v, want miss", maxRecordSize+1, len(data), ok)
	}
	if st := s.Stats(); st.CorruptRemote != 1 {
		t.Errorf("CorruptRemote = %d, want 1", st.CorruptRemote)
	}

	if data, ok := s.ReadRemoteKey(ctx, Key{Kind: "action", Name: "00dd"}, maxRecordSize); ok || data != nil {
		t.Errorf("ReadRemoteKey of absent key = %q, %v", data, ok)
	}
	if st := s.Stats(); st.RemoteMisses != 1 || st.RemoteErrors != 0 {
		t.Errorf("stats = %v, want one miss, no errors", st)
	}

	fr.setFault("get", key.String(), fault{err: errRemoteDown})
	if data, ok := s.ReadRemoteKey(ctx, key, maxRecordSize); ok || data != nil {
		t.Errorf("ReadRemoteKey with failing Get = %q, %v", data, ok)
	}
	fr.setFault("get", key.String(), fault{failAfter: 3})
	if data, ok := s.ReadRemoteKey(ctx, key, maxRecordSize); ok || data != nil {
		t.Errorf("ReadRemoteKey with failing stream = %q, %v", data, ok)
	}
	if st := s.Stats(); st.RemoteErrors != 2 {
		t.Errorf("RemoteErrors = %d, want 2", st.RemoteErrors)
	}

	// Without a remote tier it is always a miss.
	local := openStore(t, "", nil)
	if data, ok := local.ReadRemoteKey(ctx, key, maxRecordSize); ok || data != nil {
		t.Errorf("ReadRemoteKey without remote = %q, %v", data, ok)
	}
}

func TestUploadOrderAndFailure(t *testing.T) {
	fr := newFakeRemote()
	s := openStore(t, "", fr)

	akey, aobj := writeLocal(t, s, []byte("output A"))
	bkey := Key{Kind: "action", Name: "b0"}
	ckey := Key{Kind: "action", Name: "c0"}
	s.Upload(Upload{Key: akey, Path: aobj.Path}, Upload{Key: bkey, Data: []byte("record B")}, Upload{Key: ckey, Data: []byte("record C")})

	dkey, dobj := writeLocal(t, s, []byte("output D"))
	ekey := Key{Kind: "action", Name: "e0"}
	fr.setFault("put", dkey.String(), fault{err: errRemoteDown})
	s.Upload(Upload{Key: dkey, Path: dobj.Path}, Upload{Key: ekey, Data: []byte("record E")})

	fkey := Key{Kind: "action", Name: "f0"}
	s.Upload(Upload{Key: fkey, Data: []byte("record F")})
	s.Upload() // nothing
	closeStore(t, s)

	want := []string{akey.String(), bkey.String(), ckey.String(), fkey.String()}
	if got := fr.puts(); !slicesEqual(got, want) {
		t.Errorf("uploaded %q, want %q", got, want)
	}
	if _, ok := fr.object(ekey.String()); ok {
		t.Error("E uploaded although D, before it in its job, failed")
	}
	if got, _ := fr.object(akey.String()); !bytes.Equal(got, []byte("output A")) {
		t.Errorf("remote A = %q", got)
	}
	if got, _ := fr.object(bkey.String()); !bytes.Equal(got, []byte("record B")) {
		t.Errorf("remote B = %q", got)
	}
	st := s.Stats()
	wantBytes := int64(len("output A") + len("record B") + len("record C") + len("record F"))
	if st.Uploads != 4 || st.UploadErrors != 1 || st.UploadsDropped != 1 || st.BytesUp != wantBytes || st.UploadQueue != 0 {
		t.Errorf("stats = %v, want uploads=4 upload_errors=1 uploads_dropped=1 bytes_up=%d", st, wantBytes)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// An output file that vanished locally before its upload must not let the
// rest of its job (the record naming it) be uploaded.
func TestUploadVanishedFile(t *testing.T) {
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	akey, aobj := writeLocal(t, s, []byte("output that will be trimmed"))
	if err := os.Remove(aobj.Path); err != nil {
		t.Fatal(err)
	}
	rkey := Key{Kind: "action", Name: "abcd"}
	s.Upload(Upload{Key: akey, Path: aobj.Path}, Upload{Key: rkey, Data: []byte("record naming A")})
	closeStore(t, s)

	if got := fr.puts(); len(got) != 0 {
		t.Errorf("uploaded %q after the output vanished, want nothing", got)
	}
	st := s.Stats()
	if st.UploadsDropped != 2 || st.RemoteErrors != 0 || st.UploadErrors != 0 || st.Breaker != "closed" {
		t.Errorf("stats = %v, want uploads_dropped=2 and no remote errors", st)
	}
}

func TestUploadFound(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr) // one upload worker: jobs run in order

	// A is in the remote already.
	akey, aobj := writeLocal(t, s, []byte("output A"))
	fr.set(akey.String(), []byte("output A"))
	// B is not.
	bkey, bobj := writeLocal(t, s, []byte("output B"))
	// C is faulted in from the remote.
	c := []byte("output C")
	ckey, ccheck := contentKey("output", c)
	fr.set(ckey.String(), c)
	cobj, ok, err := s.Get(ctx, ckey, ccheck)
	if !ok || err != nil {
		t.Fatalf("Get C = %v, %v", ok, err)
	}
	rkey := Key{Kind: "action", Name: "dd"}

	s.Upload(Upload{Key: akey, Path: aobj.Path})
	s.Upload(Upload{Key: akey, Path: aobj.Path})
	s.Upload(Upload{Key: bkey, Path: bobj.Path})
	s.Upload(Upload{Key: bkey, Path: bobj.Path})
	s.Upload(Upload{Key: ckey, Path: cobj.Path})
	s.Upload(Upload{Key: rkey, Data: []byte("r1")})
	s.Upload(Upload{Key: rkey, Data: []byte("r2")})
	closeStore(t, s)

	for _, tt := range []struct {
		key          Key
		exists, puts int
	}{
		{akey, 1, 0},
		{bkey, 1, 1},
		{ckey, 0, 0},
		{rkey, 0, 2}, // in-memory data (records) is always written
	} {
		if e, p := fr.count("exists", tt.key.String()), fr.count("put", tt.key.String()); e != tt.exists || p != tt.puts {
			t.Errorf("%s: Exists called %d times, Put %d; want %d, %d", tt.key, e, p, tt.exists, tt.puts)
		}
	}
	if got, _ := fr.object(rkey.String()); string(got) != "r2" {
		t.Errorf("record = %q, want the last one written", got)
	}
	st := s.Stats()
	if st.UploadsFound != 4 || st.Uploads != 3 {
		t.Errorf("stats = %v, want uploads_found=4 uploads=3", st)
	}
}

func TestUploadExistsFails(t *testing.T) {
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	akey, aobj := writeLocal(t, s, []byte("output A"))
	fr.setFault("exists", akey.String(), fault{err: errRemoteDown})
	s.Upload(Upload{Key: akey, Path: aobj.Path}, Upload{Key: Key{Kind: "action", Name: "aa"}, Data: []byte("r")})
	closeStore(t, s)
	if got := fr.puts(); len(got) != 0 {
		t.Errorf("uploaded %q after Exists failed", got)
	}
	if st := s.Stats(); st.UploadErrors != 1 || st.UploadsDropped != 1 || st.RemoteErrors != 1 {
		t.Errorf("stats = %v", st)
	}
}

func TestCloseWaitsForDrain(t *testing.T) {
	fr := newFakeRemote()
	s, err := Open(Options{Dir: t.TempDir(), Remote: fr, UploadConcurrency: 2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	fr.setHook(func(ctx context.Context, op, key string) {
		if op == "put" {
			once.Do(func() { close(started) })
			<-release
		}
	})

	var keys []string
	for i := range 6 {
		key, obj := writeLocal(t, s, []byte(fmt.Sprint("output ", i)))
		keys = append(keys, key.String())
		s.Upload(Upload{Key: key, Path: obj.Path})
	}
	<-started

	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an upload was held", err)
	default:
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, k := range keys {
		if _, ok := fr.object(k); !ok {
			t.Errorf("%s not uploaded when Close returned", k)
		}
	}
	if st := s.Stats(); st.Uploads != 6 || st.UploadQueue != 0 || st.UploadsDropped != 0 {
		t.Errorf("stats after Close = %v", st)
	}
}

func TestCloseDeadline(t *testing.T) {
	fr := newFakeRemote()
	s := openStore(t, "", fr) // one upload worker
	akey, aobj := writeLocal(t, s, []byte("output A, whose upload hangs"))
	bkey, bobj := writeLocal(t, s, []byte("output B"))
	started := make(chan struct{})
	fr.setHook(func(ctx context.Context, op, key string) {
		if op == "put" && key == akey.String() {
			close(started)
		}
	})
	fr.setFault("put", akey.String(), fault{hang: true})

	s.Upload(Upload{Key: akey, Path: aobj.Path})
	s.Upload(Upload{Key: bkey, Path: bobj.Path}, Upload{Key: Key{Kind: "action", Name: "bb"}, Data: []byte("record B")})
	<-started

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the drain deadline has passed
	start := time.Now()
	err := s.Close(ctx)
	elapsed := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Fatalf("Close = %v, want an error about unfinished uploads", err)
	}
	// The hung Put is cancelled, not waited out (its own timeout is 20s).
	if elapsed > remoteTimeout/2 {
		t.Errorf("Close took %v", elapsed)
	}
	if got := fr.puts(); len(got) != 0 {
		t.Errorf("uploaded %q", got)
	}
	st := s.Stats()
	if st.UploadsDropped != 2 || st.UploadQueue != 0 {
		t.Errorf("stats = %v, want uploads_dropped=2 (B and its record) and an empty queue", st)
	}

	// Later uploads are dropped, not started.
	s.Upload(Upload{Key: bkey, Path: bobj.Path}, Upload{Key: Key{Kind: "action", Name: "cc"}, Data: []byte("c")})
	if st := s.Stats(); st.UploadsDropped != 4 || st.UploadQueue != 0 {
		t.Errorf("stats after Upload after Close = %v, want uploads_dropped=4", st)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := fr.puts(); len(got) != 0 {
		t.Errorf("uploaded %q after Close", got)
	}
}

func TestUploadAfterClose(t *testing.T) {
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	closeStore(t, s) // no uploads ever: returns at once
	akey, aobj := writeLocal(t, s, []byte("late output"))
	s.Upload(Upload{Key: akey, Path: aobj.Path})
	st := s.Stats()
	if st.UploadsDropped != 1 || st.UploadQueue != 0 {
		t.Errorf("stats = %v, want the upload dropped", st)
	}
	closeStore(t, s)
	if c := fr.count("put", "") + fr.count("exists", ""); c != 0 {
		t.Errorf("%d remote calls after Close", c)
	}
}

// Close with an expired context after the queue has drained has nothing
// left to report.
func TestCloseExpiredAfterDrain(t *testing.T) {
	for i := range 30 {
		fr := newFakeRemote()
		s := openStore(t, "", fr)
		s.Upload(Upload{Key: Key{Kind: "action", Name: "aa"}, Data: []byte("r")})
		s.remote.mu.Lock()
		idle := s.remote.idle
		s.remote.mu.Unlock()
		<-idle // the upload is done and the worker gone
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Close(ctx); err != nil {
			t.Fatalf("round %d: Close after drain = %v, want nil", i, err)
		}
		if st := s.Stats(); st.Uploads != 1 || st.UploadsDropped != 0 {
			t.Fatalf("stats = %v", st)
		}
	}
}

func TestUploadInvalidKey(t *testing.T) {
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	good := Key{Kind: "action", Name: "aa"}
	s.Upload(Upload{Key: good, Data: []byte("r")}, Upload{Key: Key{Kind: "action", Name: "A"}, Data: []byte("r")})
	s.Upload(Upload{Key: Key{}, Data: []byte("r")})
	closeStore(t, s)
	if got := fr.puts(); len(got) != 0 {
		t.Errorf("uploaded %q from jobs with invalid keys", got)
	}
	if st := s.Stats(); st.UploadsDropped != 3 {
		t.Errorf("UploadsDropped = %d, want 3", st.UploadsDropped)
	}
}

func TestLocalHitSkipsRemote(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)
	key, _ := writeLocal(t, s, []byte("local"))
	_, check := contentKey("output", []byte("local"))
	if _, ok, err := s.Get(ctx, key, check); !ok || err != nil {
		t.Fatalf("Get = %v, %v", ok, err)
	}
	if c := fr.count("get", ""); c != 0 {
		t.Errorf("remote Get called %d times for a local hit", c)
	}
	// A local object failing its size check is replaced from the remote.
	if err := os.Truncate(s.Path(key), 2); err != nil {
		t.Fatal(err)
	}
	fr.set(key.String(), []byte("local"))
	if obj, ok, err := s.Get(ctx, key, check); !ok || err != nil || obj.Size != 5 {
		t.Fatalf("Get of truncated local object = %+v, %v, %v, want remote hit", obj, ok, err)
	}
	if st := s.Stats(); st.CorruptLocal != 1 || st.RemoteHits != 1 {
		t.Errorf("stats = %v", st)
	}
}

// An upload stuck on a remote that the breaker then declares dead is
// cancelled at once, so Close does not wait for its timeout.
func TestBreakerOpeningAbortsUploads(t *testing.T) {
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	started := make(chan struct{}, 1)
	fr.setHook(func(ctx context.Context, op, key string) {
		if op == "exists" {
			started <- struct{}{}
		}
	})
	fr.setFault("exists", "", fault{hang: true})
	fr.setFault("get", "", fault{err: errRemoteDown})

	data := []byte("stuck upload")
	key, check := contentKey("output", data)
	if _, err := s.Write(ctx, key, bytes.NewReader(data), check); err != nil {
		t.Fatal(err)
	}
	s.Upload(Upload{Key: key, Path: s.Path(key)})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("upload never reached the remote")
	}
	for i := range breakerThreshold {
		other, check := contentKey("output", []byte{byte(i)})
		s.Get(ctx, other, check)
	}
	// Without the abort, this Close would wait for the hung call; the
	// context given has no deadline, so the test would time out.
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if st := s.Stats(); st.Breaker != "open" || st.UploadErrors != 1 || st.Uploads != 0 {
		t.Errorf("stats = %v, want breaker=open upload_errors=1 uploads=0", st)
	}
}

// A remote that does not answer at all opens the breaker on the first
// call, so it costs one first-byte timeout, not one per call.
func TestNoResponseOpensBreakerAtOnce(t *testing.T) {
	defer func(d time.Duration) { firstByteTimeout = d }(firstByteTimeout)
	firstByteTimeout = 20 * time.Millisecond
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)
	fr.setFault("get", "", fault{hang: true})

	key, check := contentKey("output", []byte("unanswered"))
	if _, ok, err := s.Get(ctx, key, check); ok || err != nil {
		t.Fatalf("Get = %v, %v, want miss", ok, err)
	}
	if st := s.Stats(); st.Breaker != "open" || st.RemoteErrors != 1 {
		t.Fatalf("after one unanswered fetch: stats %v, want breaker=open remote_errors=1", st)
	}
	other, check := contentKey("output", []byte("skipped"))
	s.Get(ctx, other, check)
	if c := fr.count("get", ""); c != 1 {
		t.Errorf("remote Get called %d times, want 1", c)
	}
}

func TestVerifyHook(t *testing.T) {
	// Check.Verify sees the complete file before it is installed, whether
	// it is written locally or faulted in; a rejection installs nothing.
	ctx := context.Background()
	fr := newFakeRemote()
	s := openStore(t, "", fr)
	defer closeStore(t, s)

	wantPrefix := func(prefix string) func(string) error {
		return func(path string) error {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(data, []byte(prefix)) {
				return fmt.Errorf("content %q lacks prefix %q", data, prefix)
			}
			return nil
		}
	}
	good := Key{Kind: "module", Name: "aa01"}
	if _, err := s.Write(ctx, good, strings.NewReader("good: body"), Check{Size: -1, Verify: wantPrefix("good:")}); err != nil {
		t.Fatalf("Write of a good object: %v", err)
	}
	bad := Key{Kind: "module", Name: "aa02"}
	_, err := s.Write(ctx, bad, strings.NewReader("evil: body"), Check{Size: -1, Verify: wantPrefix("good:")})
	if err == nil || !strings.Contains(err.Error(), `lacks prefix "good:"`) {
		t.Fatalf("Write of a bad object: err = %v, want the verifier's reason", err)
	}
	checkAbsent(t, s, bad)
	checkNoTemp(t, s)

	// Faulted in: a remote object the verifier rejects is a corrupt miss.
	remoteBad := Key{Kind: "module", Name: "aa03"}
	fr.set(remoteBad.String(), []byte("evil: from the bucket"))
	if _, ok, err := s.Get(ctx, remoteBad, Check{Size: -1, Verify: wantPrefix("good:")}); ok || err != nil {
		t.Fatalf("Get of a rejected remote object = %v, %v, want miss", ok, err)
	}
	checkAbsent(t, s, remoteBad)
	if st := s.Stats(); st.CorruptRemote != 1 {
		t.Errorf("CorruptRemote = %d, want 1", st.CorruptRemote)
	}
	remoteGood := Key{Kind: "module", Name: "aa04"}
	fr.set(remoteGood.String(), []byte("good: from the bucket"))
	if _, ok, err := s.Get(ctx, remoteGood, Check{Size: -1, Verify: wantPrefix("good:")}); !ok || err != nil {
		t.Fatalf("Get of a good remote object = %v, %v, want hit", ok, err)
	}
}

// slowRemote serves one object of size bytes at rate bytes per second
// (of the bubble's fake time), declaring its size.
type slowRemote struct {
	size, rate int64
}

func (r slowRemote) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	return io.NopCloser(&slowReader{ctx: ctx, left: r.size, rate: r.rate}), r.size, nil
}
func (slowRemote) Put(context.Context, string, io.ReadSeeker, int64) error { return errRemoteDown }
func (slowRemote) Exists(context.Context, string) (bool, error)            { return false, nil }
func (slowRemote) GetRange(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, errRemoteDown
}

type slowReader struct {
	ctx        context.Context
	left, rate int64
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.rate, r.left)
	select {
	case <-time.After(time.Duration(n) * time.Second / time.Duration(r.rate)):
	case <-r.ctx.Done():
		return 0, context.Cause(r.ctx)
	}
	clear(p[:n])
	r.left -= n
	return int(n), nil
}

// TestFaultInUnknownSizeTimeout: an object whose size the caller does not
// know has the transfer time its declared size allows, not a small call's.
func TestFaultInUnknownSizeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Declared 30 MiB at 1 MiB/s: 30 s, longer than a small call
		// may take but within the declared size's allowance.
		const size = 30 << 20
		s := openStore(t, "", slowRemote{size: size, rate: 1 << 20})
		defer closeStore(t, s)
		key := Key{Kind: "revproxy", Name: "ab01"}
		start := time.Now()
		obj, ok, err := s.Get(context.Background(), key, AnyContent)
		if !ok || err != nil || obj.Size != size {
			t.Fatalf("Get after %v = %+v, %v, %v; want the whole object", time.Since(start), obj, ok, err)
		}
		if elapsed := time.Since(start); elapsed <= remoteTimeout {
			t.Fatalf("transfer took %v of fake time; the test needs it longer than %v", elapsed, remoteTimeout)
		}
	})
}
