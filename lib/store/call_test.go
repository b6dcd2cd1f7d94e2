package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// halfOpen puts a store's breaker in its half-open state: the next call
// allowed is the probe, and every other call is refused until the probe
// ends. A call that ends without telling the breaker leaves it so.
func halfOpen(s *Store) {
	b := &s.remote.breaker
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = breakerThreshold
	b.openUntil = time.Now().Add(-time.Millisecond)
	b.backoff = breakerBase
	b.probing = false
}

// callCounts are the counters a remote call's outcome moves.
type callCounts struct {
	hits, misses, errors, corrupt, uploads, found, uploadErrors int64
}

func countsOf(st Stats) callCounts {
	return callCounts{st.RemoteHits, st.RemoteMisses, st.RemoteErrors, st.CorruptRemote, st.Uploads, st.UploadsFound, st.UploadErrors}
}

func (c callCounts) minus(d callCounts) callCounts {
	return callCounts{c.hits - d.hits, c.misses - d.misses, c.errors - d.errors, c.corrupt - d.corrupt,
		c.uploads - d.uploads, c.found - d.found, c.uploadErrors - d.uploadErrors}
}

// An outcomeEnv is what one case of TestCallOutcomes works on.
type outcomeEnv struct {
	t      *testing.T
	s      *Store
	fr     *fakeRemote
	data   []byte
	key    Key
	check  Check
	ctx    context.Context    // the caller's
	cancel context.CancelFunc // cancels ctx
}

// cancelOnCall makes the caller give up as soon as the remote is called
// with op; with a hang fault, the call is then under way when it does.
func (e *outcomeEnv) cancelOnCall(op string) {
	e.fr.setHook(func(_ context.Context, got, _ string) {
		if got == op {
			e.cancel()
		}
	})
}

// breakLocalDir makes the object's local directory impossible to create:
// a dangling symbolic link stands where it goes.
func (e *outcomeEnv) breakLocalDir() {
	shard := filepath.Dir(e.s.Path(e.key))
	if err := os.MkdirAll(filepath.Dir(shard), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Symlink("nowhere", shard); err != nil {
		e.t.Fatal(err)
	}
}

const (
	rawName  = "manifest/outcome"
	packName = "pack/outcome"
)

var packHeader = []byte("header\n")

// TestCallOutcomes injects each kind of outcome into each kind of remote
// call, made as the probe of a half-open breaker, and checks that the call
// ended in exactly the one outcome expected: the counters it moved, and
// the breaker told to match (closed by an answer, open again after a
// failure, and free for the next probe after a call that says nothing of
// the remote). A call that returned without telling the breaker would
// leave it refusing every call. With the breaker open, each kind of call
// is skipped without a remote call.
func TestCallOutcomes(t *testing.T) {
	get := func(e *outcomeEnv) { e.s.Get(e.ctx, e.key, e.check) }
	readRaw := func(e *outcomeEnv) { e.s.ReadRemoteRaw(e.ctx, rawName, 100) }
	readPack := func(e *outcomeEnv) {
		objs := []Packed{{Key: e.key, Check: e.check, Offset: int64(len(packHeader))}}
		e.s.ReadPack(e.ctx, packName, objs, func(int, Object, bool) {})
	}
	uploadFile := func(e *outcomeEnv) {
		key, obj := writeLocal(e.t, e.s, e.data)
		e.s.Upload(Upload{Key: key, Path: obj.Path})
		closeStore(e.t, e.s)
	}
	uploadData := func(e *outcomeEnv) {
		e.s.Upload(Upload{Key: Key{Kind: "action", Name: "00aa"}, Data: e.data})
		closeStore(e.t, e.s)
	}
	writeRaw := func(e *outcomeEnv) { e.s.WriteRemoteRaw(e.ctx, rawName, e.data) }
	writePack := func(e *outcomeEnv) {
		key, _ := writeLocal(e.t, e.s, e.data)
		objs := []Packed{{Key: key, Check: e.check, Offset: int64(len(packHeader))}}
		e.s.WritePack(e.ctx, packName, packHeader, objs)
	}
	hasObject := func(e *outcomeEnv) { e.fr.set(e.key.String(), e.data) }
	hasRaw := func(e *outcomeEnv) { e.fr.set(rawName, e.data) }
	hasPack := func(e *outcomeEnv) { e.fr.set(packName, append(bytes.Clone(packHeader), e.data...)) }
	fails := func(op string) func(*outcomeEnv) {
		return func(e *outcomeEnv) { e.fr.setFault(op, "", fault{err: errRemoteDown}) }
	}
	hangs := func(op string) func(*outcomeEnv) {
		return func(e *outcomeEnv) { e.fr.setFault(op, "", fault{hang: true}) }
	}
	gives := func(op string, f fault) func(*outcomeEnv) {
		return func(e *outcomeEnv) { e.fr.setFault(op, "", f) }
	}
	goneDuring := func(op string) func(*outcomeEnv) {
		return func(e *outcomeEnv) {
			e.fr.setFault(op, "", fault{hang: true})
			e.cancelOnCall(op)
		}
	}
	both := func(fs ...func(*outcomeEnv)) func(*outcomeEnv) {
		return func(e *outcomeEnv) {
			for _, f := range fs {
				f(e)
			}
		}
	}

	tests := []struct {
		name  string
		setup func(*outcomeEnv)
		run   func(*outcomeEnv)
		want  outcome
		delta callCounts
	}{
		{"get/ok", hasObject, get, outOK, callCounts{hits: 1}},
		{"get/not found", nil, get, outNotFound, callCounts{misses: 1}},
		// A fault-in is not the caller's to abandon: others may share it.
		{"get/caller gone", both(hasObject, func(e *outcomeEnv) { e.cancelOnCall("get") }), get, outOK, callCounts{hits: 1}},
		{"get/local fault", both(hasObject, (*outcomeEnv).breakLocalDir), get, outLocal, callCounts{}},
		{"get/remote error", fails("get"), get, outFailed, callCounts{errors: 1}},
		{"get/stream fails", both(hasObject, gives("get", fault{failAfter: 5})), get, outFailed, callCounts{errors: 1}},
		{"get/hang", hangs("get"), get, outFailed, callCounts{errors: 1}},
		{"get/corrupt", both(hasObject, gives("get", fault{corrupt: true})), get, outCorrupt, callCounts{corrupt: 1}},
		{"get/truncated", both(hasObject, gives("get", fault{cutAfter: 5})), get, outCorrupt, callCounts{corrupt: 1}},
		{"get/wrong size", both(hasObject, gives("get", fault{size: 3})), get, outCorrupt, callCounts{corrupt: 1}},

		{"raw read/ok", hasRaw, readRaw, outOK, callCounts{hits: 1}},
		{"raw read/not found", nil, readRaw, outNotFound, callCounts{misses: 1}},
		{"raw read/caller gone", both(hasRaw, goneDuring("get")), readRaw, outGone, callCounts{}},
		{"raw read/remote error", fails("get"), readRaw, outFailed, callCounts{errors: 1}},
		{"raw read/stream fails", both(hasRaw, gives("get", fault{failAfter: 5})), readRaw, outFailed, callCounts{errors: 1}},
		{"raw read/hang", hangs("get"), readRaw, outFailed, callCounts{errors: 1}},
		{"raw read/too long", func(e *outcomeEnv) { e.fr.set(rawName, bytes.Repeat([]byte("x"), 101)) }, readRaw, outCorrupt, callCounts{corrupt: 1}},

		{"pack read/ok", hasPack, readPack, outOK, callCounts{hits: 1}},
		{"pack read/not found", nil, readPack, outNotFound, callCounts{misses: 1}},
		{"pack read/caller gone", both(hasPack, goneDuring("get_range")), readPack, outGone, callCounts{}},
		// An object that cannot be installed is the caller's loss; the
		// remote answered.
		{"pack read/local fault", both(hasPack, (*outcomeEnv).breakLocalDir), readPack, outOK, callCounts{}},
		{"pack read/remote error", fails("get_range"), readPack, outFailed, callCounts{errors: 1}},
		{"pack read/stream fails", both(hasPack, gives("get_range", fault{failAfter: len(packHeader) + 5})), readPack, outFailed, callCounts{errors: 1}},
		{"pack read/hang", hangs("get_range"), readPack, outFailed, callCounts{errors: 1}},
		// An object that does not match is counted; the remote answered.
		{"pack read/corrupt object", func(e *outcomeEnv) {
			bad := append(bytes.Clone(packHeader), e.data...)
			bad[len(packHeader)] ^= 0xff
			e.fr.set(packName, bad)
		}, readPack, outOK, callCounts{corrupt: 1}},
		{"pack read/truncated", both(hasPack, gives("get_range", fault{cutAfter: len(packHeader) + 5})), readPack, outCorrupt, callCounts{corrupt: 1}},

		{"exists/found", hasObject, uploadFile, outOK, callCounts{found: 1}},
		{"exists/not found, put", nil, uploadFile, outOK, callCounts{uploads: 1}},
		{"exists/remote error", fails("exists"), uploadFile, outFailed, callCounts{errors: 1, uploadErrors: 1}},
		{"exists/hang", hangs("exists"), uploadFile, outFailed, callCounts{errors: 1, uploadErrors: 1}},
		{"exists/local file gone", nil, func(e *outcomeEnv) {
			// The upload's file vanishes between the write and the upload.
			key, obj := writeLocal(e.t, e.s, e.data)
			if err := os.Remove(obj.Path); err != nil {
				e.t.Fatal(err)
			}
			e.s.Upload(Upload{Key: key, Path: obj.Path})
			closeStore(e.t, e.s)
		}, outLocal, callCounts{}},

		{"put/ok", nil, uploadData, outOK, callCounts{uploads: 1}},
		{"put/remote error", fails("put"), uploadData, outFailed, callCounts{errors: 1, uploadErrors: 1}},
		{"put/hang", hangs("put"), uploadData, outFailed, callCounts{errors: 1, uploadErrors: 1}},
		{"put/file, remote error", fails("put"), uploadFile, outFailed, callCounts{errors: 1, uploadErrors: 1}},

		{"write/ok", nil, writeRaw, outOK, callCounts{uploads: 1}},
		{"write/caller gone", goneDuring("put"), writeRaw, outGone, callCounts{}},
		{"write/remote error", fails("put"), writeRaw, outFailed, callCounts{errors: 1, uploadErrors: 1}},
		{"write/hang", hangs("put"), writeRaw, outFailed, callCounts{errors: 1, uploadErrors: 1}},
		{"write pack/ok", nil, writePack, outOK, callCounts{uploads: 1}},
		{"write pack/local fault", nil, func(e *outcomeEnv) {
			// The pack names an object whose local file has gone.
			key, obj := writeLocal(e.t, e.s, e.data)
			if err := os.Remove(obj.Path); err != nil {
				e.t.Fatal(err)
			}
			objs := []Packed{{Key: key, Check: e.check, Offset: int64(len(packHeader))}}
			e.s.WritePack(e.ctx, packName, packHeader, objs)
		}, outLocal, callCounts{}},
	}
	// With the breaker open, every kind of call is skipped: no remote
	// call, counted as skipped (an upload, as dropped).
	for _, sk := range []struct {
		name             string
		run              func(*outcomeEnv)
		skipped, dropped int64
	}{
		{"get", get, 1, 0}, {"raw read", readRaw, 1, 0}, {"pack read", readPack, 1, 0},
		{"upload file", uploadFile, 0, 1}, {"upload data", uploadData, 0, 1},
		{"write", writeRaw, 1, 0}, {"write pack", writePack, 1, 0},
	} {
		t.Run(sk.name+"/skipped", func(t *testing.T) {
			fr := newFakeRemote()
			s := openStore(t, "", fr)
			defer s.Close(context.Background())
			data := []byte("an object of the outcome test")
			key, check := contentKey("output", data)
			e := &outcomeEnv{t: t, s: s, fr: fr, data: data, key: key, check: check, ctx: context.Background(), cancel: func() {}}
			halfOpen(s)
			setOpenUntil(&s.remote.breaker, time.Now().Add(time.Hour))
			sk.run(e)
			closeStore(t, s)
			calls := fr.count("get", "") + fr.count("get_range", "") + fr.count("exists", "") + fr.count("put", "")
			if st := s.Stats(); calls != 0 || st.RemoteSkipped != sk.skipped || st.UploadsDropped != sk.dropped || st.Breaker != "open" {
				t.Errorf("%d remote calls, stats %v; want none, remote_skipped=%d uploads_dropped=%d breaker=open", calls, st, sk.skipped, sk.dropped)
			}
		})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fr := newFakeRemote()
				s := openStore(t, "", fr)
				defer s.Close(context.Background())
				data := []byte("an object of the outcome test")
				key, check := contentKey("output", data)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				e := &outcomeEnv{t: t, s: s, fr: fr, data: data, key: key, check: check, ctx: ctx, cancel: cancel}
				if tt.setup != nil {
					tt.setup(e)
				}
				halfOpen(s)
				before := countsOf(s.Stats())
				tt.run(e)
				synctest.Wait()

				st := s.Stats()
				if got := countsOf(st).minus(before); got != tt.delta {
					t.Errorf("counters moved by %+v, want %+v", got, tt.delta)
				}
				if st.RemoteSkipped != 0 {
					t.Errorf("remote_skipped = %d: the call was not let through", st.RemoteSkipped)
				}
				switch tt.want {
				case outOK, outNotFound, outCorrupt:
					if st.Breaker != "closed" {
						t.Errorf("breaker %q after the remote answered (%v), want closed", st.Breaker, tt.want)
					}
				case outFailed:
					if st.Breaker != "open" || allowed(&s.remote.breaker) {
						t.Errorf("breaker %q after a remote failure, want open", st.Breaker)
					}
				case outGone, outLocal:
					if st.Breaker != "half-open" {
						t.Errorf("breaker %q after a call that says nothing of the remote (%v), want half-open", st.Breaker, tt.want)
					}
				}
				if tt.want != outFailed && !allowed(&s.remote.breaker) {
					t.Errorf("after %v, the breaker refuses the next call: left probing", tt.want)
				}
			})
		})
	}
}
