package gobuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// fakeRemote is an in-memory [store.Remote].
type fakeRemote struct {
	mu      sync.Mutex
	objects map[string][]byte
	corrupt map[string]bool // Get returns these objects with a byte changed
	hangPut bool            // Put blocks until its context ends
	putLog  []string        // keys in the order their Put succeeded
	calls   map[string]int  // "get", "put", "exists" -> number of calls
}

func newFakeRemote() *fakeRemote {
	return &fakeRemote{objects: map[string][]byte{}, corrupt: map[string]bool{}, calls: map[string]int{}}
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

func (f *fakeRemote) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeRemote) puts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.putLog...)
}

func (f *fakeRemote) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["get"]++
	data, ok := f.objects[key]
	if !ok {
		return nil, 0, fmt.Errorf("fake: %s: %w", key, fs.ErrNotExist)
	}
	data = bytes.Clone(data)
	if f.corrupt[key] && len(data) > 0 {
		data[len(data)-1] ^= 1
	}
	return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
}

func (f *fakeRemote) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["get_range"]++
	data, ok := f.objects[key]
	if !ok {
		return nil, fmt.Errorf("fake: %s: %w", key, fs.ErrNotExist)
	}
	data = data[min(off, int64(len(data))):]
	return io.NopCloser(bytes.NewReader(bytes.Clone(data[:min(n, int64(len(data)))]))), nil
}

func (f *fakeRemote) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	f.mu.Lock()
	f.calls["put"]++
	hang := f.hangPut
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(data)) != size {
		return fmt.Errorf("fake: put %s: %d bytes, declared %d", key, len(data), size)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[key] = data
	f.putLog = append(f.putLog, key)
	return nil
}

func (f *fakeRemote) Exists(ctx context.Context, key string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["exists"]++
	_, ok := f.objects[key]
	return ok, nil
}

// newCache returns a cache on a fresh directory, with remote as its remote
// tier if it is not nil.
func newCache(t *testing.T, remote store.Remote) *Cache {
	t.Helper()
	opts := store.Options{Dir: t.TempDir(), Logf: t.Logf}
	if remote != nil {
		opts.Remote = remote
	}
	s, err := store.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &Cache{Store: s, Logf: t.Logf}
}

// closeCache closes c and then, as the owner of its store, the store.
func closeCache(t *testing.T, c *Cache) {
	t.Helper()
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Store.Close(context.Background()); err != nil {
		t.Fatalf("store Close: %v", err)
	}
}

// owned is c as direct mode serves it: its Close drains the store, as
// the store's owner does before the go command's close is answered.
type owned struct{ *Cache }

func (o owned) Close(ctx context.Context) error {
	if err := o.Cache.Close(ctx); err != nil {
		return err
	}
	return o.Store.Close(ctx)
}

func actionID(name string) []byte {
	sum := sha256.Sum256([]byte("action " + name))
	return sum[:]
}

func outputID(data []byte) []byte {
	sum := sha256.Sum256(data)
	return sum[:]
}

func put(t *testing.T, c *Cache, aid, data []byte) string {
	t.Helper()
	path, err := c.Put(context.Background(), cacheprog.PutRequest{
		ActionID: aid, OutputID: outputID(data), Size: int64(len(data)), Body: bytes.NewReader(data),
	})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return path
}

func mustGet(t *testing.T, c *Cache, aid []byte) cacheprog.Entry {
	t.Helper()
	e, ok, err := c.Get(context.Background(), aid)
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v, want hit", ok, err)
	}
	return e
}

func mustMiss(t *testing.T, c *Cache, aid []byte) {
	t.Helper()
	e, ok, err := c.Get(context.Background(), aid)
	if err != nil || ok {
		t.Fatalf("Get = %+v, %v, %v, want miss", e, ok, err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestParseRecord(t *testing.T) {
	oid := outputID([]byte("x"))
	hexID := hex.EncodeToString(oid)
	const ns = int64(1700000000123456789)

	good := []struct {
		in   string
		size int64
	}{
		{fmt.Sprintf("%s %d", hexID, ns), -1},
		{fmt.Sprintf("%s %d\n", hexID, ns), -1},
		{fmt.Sprintf("%s %d 42\n", hexID, ns), 42},
		{fmt.Sprintf("%s %d 0", hexID, ns), 0},
		{fmt.Sprintf("  %s\t%d  42 \n", hexID, ns), 42},
	}
	for _, tt := range good {
		r, err := parseRecord([]byte(tt.in), false)
		if err != nil {
			t.Errorf("parseRecord(%q): %v", tt.in, err)
			continue
		}
		if !bytes.Equal(r.outputID, oid) || r.time.UnixNano() != ns || r.size != tt.size {
			t.Errorf("parseRecord(%q) = %x %d %d", tt.in, r.outputID, r.time.UnixNano(), r.size)
		}
	}

	bad := []string{
		"",
		"\n",
		hexID,
		fmt.Sprintf("%s %d 42 7", hexID, ns),
		fmt.Sprintf("%s %d", strings.Repeat("zz", 32), ns),
		fmt.Sprintf("%s %d", hexID[:63], ns),          // odd length
		fmt.Sprintf("%s %d", hexID[:62], ns),          // 31 bytes
		fmt.Sprintf("%s00 %d", hexID, ns),             // 33 bytes
		fmt.Sprintf("%s %d", "", ns),                  // one field
		fmt.Sprintf("%s -%d", hexID, ns),              // negative time
		fmt.Sprintf("%s %d -1", hexID, ns),            // negative size
		fmt.Sprintf("%s soon", hexID),                 // time not a number
		fmt.Sprintf("%s %d big", hexID, ns),           // size not a number
		fmt.Sprintf("%s 1.5", hexID),                  // time not an integer
		fmt.Sprintf("%s 99999999999999999999", hexID), // time overflows
		fmt.Sprintf("%s %d 99999999999999999999", hexID, ns),
		"\x00\x01\x02 garbage",
	}
	for _, in := range bad {
		if r, err := parseRecord([]byte(in), false); err == nil {
			t.Errorf("parseRecord(%q) = %+v, want error", in, r)
		}
	}

	// In the local directory, two fields are the reference tool's
	// output and size, without a time.
	for _, in := range []string{fmt.Sprintf("%s 42\n", hexID), fmt.Sprintf("%s 42", hexID)} {
		r, err := parseRecord([]byte(in), true)
		if err != nil || !bytes.Equal(r.outputID, oid) || r.size != 42 || !r.time.IsZero() {
			t.Errorf("local parseRecord(%q) = %+v, %v; want size 42, no time", in, r, err)
		}
	}
	for _, in := range []string{fmt.Sprintf("%s -1\n", hexID), fmt.Sprintf("%s big", hexID), fmt.Sprintf("%s 99999999999999999999", hexID)} {
		if r, err := parseRecord([]byte(in), true); err == nil {
			t.Errorf("local parseRecord(%q) = %+v, want error", in, r)
		}
	}
	if r, err := parseRecord(fmt.Appendf(nil, "%s %d 42\n", hexID, ns), true); err != nil || r.time.UnixNano() != ns || r.size != 42 {
		t.Errorf("local three-field record = %+v, %v", r, err)
	}

	// The two forms round-trip.
	r := record{outputID: oid, time: time.Unix(0, ns), size: 99}
	if got, err := parseRecord(r.local(), true); err != nil || got.size != 99 || got.time.UnixNano() != ns {
		t.Errorf("local form %q parses as %+v, %v", r.local(), got, err)
	}
	if want := fmt.Sprintf("%s %d", hexID, ns); string(r.remote()) != want {
		t.Errorf("remote form = %q, want %q", r.remote(), want)
	}
	if want := fmt.Sprintf("%s %d 99\n", hexID, ns); string(r.local()) != want {
		t.Errorf("local form = %q, want %q", r.local(), want)
	}
}

func TestPutGet(t *testing.T) {
	c := newCache(t, nil)
	aid := actionID("a")
	data := []byte("compiled output bytes")

	before := time.Now()
	path := put(t, c, aid, data)
	after := time.Now()

	e := mustGet(t, c, aid)
	if !bytes.Equal(e.OutputID, outputID(data)) || e.Size != int64(len(data)) || e.DiskPath != path {
		t.Errorf("Get = %+v, want output %x size %d path %q", e, outputID(data), len(data), path)
	}
	if got, err := os.ReadFile(e.DiskPath); err != nil || !bytes.Equal(got, data) {
		t.Errorf("DiskPath holds %q, %v", got, err)
	}
	// The record keeps nanoseconds: the time is the put's, exactly.
	if ns := e.Time.UnixNano(); ns < before.UnixNano() || ns > after.UnixNano() {
		t.Errorf("Time %v not within the Put (%v .. %v)", e.Time, before, after)
	}
	rec := readAction(t, c, aid)
	if !rec.time.Equal(e.Time) || rec.size != int64(len(data)) {
		t.Errorf("local record %+v, entry time %v", rec, e.Time)
	}
	if e2 := mustGet(t, c, aid); !e2.Time.Equal(e.Time) || e2.DiskPath != e.DiskPath {
		t.Errorf("second Get = %+v, first %+v", e2, e)
	}

	// An empty output works too.
	empty := actionID("empty")
	put(t, c, empty, nil)
	if e := mustGet(t, c, empty); e.Size != 0 || !bytes.Equal(e.OutputID, outputID(nil)) {
		t.Errorf("empty output: Get = %+v", e)
	}

	mustMiss(t, c, actionID("never put"))
	if st := c.Stats(); st.Gets != 4 || st.Hits != 3 || st.Puts != 2 || st.PutBytes != int64(len(data)) {
		t.Errorf("stats = %+v", st)
	}
}

func TestPutSameOutputTwice(t *testing.T) {
	c := newCache(t, nil)
	data := []byte("shared output")
	p1 := put(t, c, actionID("one"), data)
	p2 := put(t, c, actionID("two"), data)
	if p1 != p2 {
		t.Errorf("same output stored at %q and %q", p1, p2)
	}
	for _, name := range []string{"one", "two"} {
		if e := mustGet(t, c, actionID(name)); e.DiskPath != p1 {
			t.Errorf("%s: DiskPath %q", name, e.DiskPath)
		}
	}
}

// readAction parses the local action record for aid.
func readAction(t *testing.T, c *Cache, aid []byte) record {
	t.Helper()
	data, ok, err := c.Store.ReadLocal(actionKey(aid), maxRecord)
	if err != nil || !ok {
		t.Fatalf("local action record: %v, %v", ok, err)
	}
	if n := len(strings.Fields(string(data))); n != 3 {
		t.Errorf("local action record %q has %d fields, want 3", data, n)
	}
	rec, err := parseRecord(data, true)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestPutBadBody(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, nil)
	aid := actionID("bad")
	data := []byte("the real output")
	claimed := outputID([]byte("some other output"))

	tests := []struct {
		name string
		req  cacheprog.PutRequest
	}{
		{"wrong output ID", cacheprog.PutRequest{ActionID: aid, OutputID: claimed, Size: int64(len(data)), Body: bytes.NewReader(data)}},
		{"short body", cacheprog.PutRequest{ActionID: aid, OutputID: outputID(data), Size: int64(len(data)) + 1, Body: bytes.NewReader(data)}},
		{"long body", cacheprog.PutRequest{ActionID: aid, OutputID: outputID(data), Size: int64(len(data)) - 1, Body: bytes.NewReader(data)}},
	}
	for _, tt := range tests {
		if path, err := c.Put(ctx, tt.req); err == nil {
			t.Errorf("%s: Put = %q, nil; want error", tt.name, path)
		}
		mustMiss(t, c, aid)
		for _, id := range [][]byte{claimed, outputID(data)} {
			if exists(c.Store.Path(outputKey(id))) {
				t.Errorf("%s: output %x stored", tt.name, id)
			}
		}
		if exists(c.Store.Path(actionKey(aid))) {
			t.Errorf("%s: action record stored", tt.name)
		}
	}
	if st := c.Stats(); st.Puts != 0 {
		t.Errorf("Puts = %d", st.Puts)
	}
}

func TestCorruptLocalRecord(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, nil)
	data := []byte("output")
	oid := outputID(data)
	for _, garbage := range []string{
		"garbage",
		"",
		fmt.Sprintf("%x", oid),
		fmt.Sprintf("%x %d -3\n", oid, time.Now().UnixNano()),
		strings.Repeat("x", maxRecord+1), // too long to be a record
	} {
		aid := actionID("corrupt " + garbage)
		put(t, c, aid, data)
		akey := actionKey(aid)
		if _, err := c.Store.WriteBytes(ctx, akey, []byte(garbage)); err != nil {
			t.Fatal(err)
		}
		if e, ok, err := c.Get(ctx, aid); ok || err != nil {
			t.Errorf("Get with record %.20q = %+v, %v, %v; want miss", garbage, e, ok, err)
		}
		if exists(c.Store.Path(akey)) {
			t.Errorf("record %.20q not removed", garbage)
		}
		// The next put repairs it.
		put(t, c, aid, data)
		mustGet(t, c, aid)
	}
}

// referenceDir writes, under dir, the files of the reference tool's local
// directory for an action of name whose output is data: the record
// "<output-id> <size>\n" with its time as the file's modification time, and
// the output. sizeInRecord is the size the record claims.
func referenceDir(t *testing.T, dir, name string, data []byte, sizeInRecord int64, mtime time.Time) []byte {
	t.Helper()
	aid, oid := actionID(name), outputID(data)
	a, o := hex.EncodeToString(aid), hex.EncodeToString(oid)
	apath := filepath.Join(dir, "action", a[:2], a)
	writeFile(t, apath, fmt.Appendf(nil, "%s %d\n", o, sizeInRecord))
	writeFile(t, filepath.Join(dir, "output", o[:2], o), data)
	if err := os.Chtimes(apath, time.Time{}, mtime); err != nil {
		t.Fatal(err)
	}
	return aid
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLocalReferenceLayout opens a local directory the reference tool
// wrote: its two-field records are output and size, the time is the
// record file's modification time, and a hit rewrites the record in the
// local form.
func TestLocalReferenceLayout(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Date(2024, 3, 4, 5, 6, 7, 123456789, time.UTC)
	data := []byte("an output the reference tool wrote")
	aid := referenceDir(t, dir, "reference", data, int64(len(data)), mtime)
	wrong := referenceDir(t, dir, "wrong size", []byte("another output"), 3, mtime)
	st, err := store.Open(store.Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cache{Store: st, Logf: t.Logf}

	// The fast path leaves a record without a time to Get.
	if _, _, done := c.GetFast(aid); done {
		t.Error("GetFast answered for a record without a time")
	}
	e := mustGet(t, c, aid)
	if !e.Time.Equal(mtime) || e.Size != int64(len(data)) || !bytes.Equal(e.OutputID, outputID(data)) {
		t.Errorf("Get = %+v; want time %v, size %d", e, mtime, len(data))
	}
	if got, err := os.ReadFile(e.DiskPath); err != nil || !bytes.Equal(got, data) {
		t.Errorf("DiskPath holds %q, %v", got, err)
	}
	rec := readAction(t, c, aid) // checks 3 fields
	if !rec.time.Equal(mtime) || rec.size != int64(len(data)) {
		t.Errorf("record rewritten as %+v", rec)
	}
	if e2, hit, done := c.GetFast(aid); !done || !hit || !e2.Time.Equal(mtime) {
		t.Errorf("GetFast after the rewrite = %+v, %v, %v", e2, hit, done)
	}

	// A size that does not match the output is a miss, as it is for the
	// reference tool.
	mustMiss(t, c, wrong)
}

func TestOutputDeleted(t *testing.T) {
	c := newCache(t, nil)
	aid := actionID("deleted")
	path := put(t, c, aid, []byte("soon gone"))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, aid)

	// Truncated rather than deleted: a miss too, and the file is removed.
	aid2 := actionID("truncated")
	path2 := put(t, c, aid2, []byte("soon truncated"))
	if err := os.Truncate(path2, 4); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, aid2)
	if exists(path2) {
		t.Error("truncated output not removed")
	}
}

// referenceBucket writes an action and its output as the reference tool
// lays them out, and returns the action ID and the record's time.
func referenceBucket(fr *fakeRemote, name string, data []byte) ([]byte, int64) {
	aid := actionID(name)
	oid := outputID(data)
	const ns = 1712345678987654321
	a, o := hex.EncodeToString(aid), hex.EncodeToString(oid)
	fr.set("action/"+a[:2]+"/"+a, fmt.Appendf(nil, "%s %d", o, ns))
	fr.set("output/"+o[:2]+"/"+o, data)
	return aid, ns
}

func TestRemoteReferenceLayout(t *testing.T) {
	fr := newFakeRemote()
	c := newCache(t, fr)
	defer closeCache(t, c)
	data := []byte("an output from another machine")
	aid, ns := referenceBucket(fr, "remote", data)

	e := mustGet(t, c, aid)
	if !e.Time.Equal(time.Unix(0, ns)) {
		t.Errorf("Time = %v (%d), want %d", e.Time, e.Time.UnixNano(), ns)
	}
	if !bytes.Equal(e.OutputID, outputID(data)) || e.Size != int64(len(data)) {
		t.Errorf("Get = %+v", e)
	}
	if got, err := os.ReadFile(e.DiskPath); err != nil || !bytes.Equal(got, data) {
		t.Errorf("DiskPath holds %q, %v", got, err)
	}
	rec := readAction(t, c, aid) // checks 3 fields
	if rec.size != int64(len(data)) || rec.time.UnixNano() != ns || !bytes.Equal(rec.outputID, outputID(data)) {
		t.Errorf("local record %+v", rec)
	}

	// Now local: no more remote reads.
	gets := fr.count("get")
	if e2 := mustGet(t, c, aid); !e2.Time.Equal(e.Time) || e2.DiskPath != e.DiskPath {
		t.Errorf("second Get = %+v", e2)
	}
	if n := fr.count("get"); n != gets {
		t.Errorf("second Get made %d remote reads", n-gets)
	}
}

func TestRemoteCorruptOutput(t *testing.T) {
	fr := newFakeRemote()
	c := newCache(t, fr)
	defer closeCache(t, c)
	data := []byte("an output whose remote copy is damaged")
	aid, _ := referenceBucket(fr, "corrupt", data)
	o := hex.EncodeToString(outputID(data))
	fr.corrupt["output/"+o[:2]+"/"+o] = true

	mustMiss(t, c, aid)
	if exists(c.Store.Path(outputKey(outputID(data)))) {
		t.Error("corrupt output installed")
	}
	if exists(c.Store.Path(actionKey(aid))) {
		t.Error("action record installed for a corrupt output")
	}
	if st := c.Store.Stats(); st.CorruptRemote != 1 {
		t.Errorf("CorruptRemote = %d", st.CorruptRemote)
	}
}

func TestRemoteGarbageRecord(t *testing.T) {
	fr := newFakeRemote()
	c := newCache(t, fr)
	defer closeCache(t, c)
	aid := actionID("garbage")
	a := hex.EncodeToString(aid)
	fr.set("action/"+a[:2]+"/"+a, []byte("not a record"))
	mustMiss(t, c, aid)
	if exists(c.Store.Path(actionKey(aid))) {
		t.Error("garbage record installed")
	}
	// A record naming an output the remote does not have.
	fr.set("action/"+a[:2]+"/"+a, fmt.Appendf(nil, "%x 12345", outputID([]byte("missing"))))
	mustMiss(t, c, aid)
	if exists(c.Store.Path(actionKey(aid))) {
		t.Error("record installed without its output")
	}
}

func TestPutUploads(t *testing.T) {
	fr := newFakeRemote()
	c := newCache(t, fr)
	aid := actionID("upload")
	data := []byte("an output to share")
	put(t, c, aid, data)
	rec := readAction(t, c, aid)
	closeCache(t, c)

	a, o := hex.EncodeToString(aid), hex.EncodeToString(outputID(data))
	okey, akey := "output/"+o[:2]+"/"+o, "action/"+a[:2]+"/"+a
	if got, want := fr.puts(), []string{okey, akey}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("uploads = %q, want %q", got, want)
	}
	if got, _ := fr.object(okey); !bytes.Equal(got, data) {
		t.Errorf("uploaded output = %q", got)
	}
	body, _ := fr.object(akey)
	if want := o + " " + strconv.FormatInt(rec.time.UnixNano(), 10); string(body) != want {
		t.Errorf("uploaded action = %q, want %q", body, want)
	}

	// Another machine reads what was uploaded.
	other := newCache(t, fr)
	defer closeCache(t, other)
	if e := mustGet(t, other, aid); !e.Time.Equal(rec.time) || e.Size != int64(len(data)) {
		t.Errorf("other machine got %+v", e)
	}
}

func TestMinUploadSize(t *testing.T) {
	fr := newFakeRemote()
	c := newCache(t, fr)
	c.MinUploadSize = 100
	small, large := []byte("small"), bytes.Repeat([]byte("L"), 100)
	put(t, c, actionID("small"), small)
	put(t, c, actionID("large"), large)
	closeCache(t, c)

	o := hex.EncodeToString(outputID(large))
	a := hex.EncodeToString(actionID("large"))
	want := []string{"output/" + o[:2] + "/" + o, "action/" + a[:2] + "/" + a}
	if got := fr.puts(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("uploads = %q, want only the large output and its action %q", got, want)
	}
	if n := fr.count("exists"); n != 1 {
		t.Errorf("Exists called %d times, want 1 (for the large output)", n)
	}
	// The small one is still served locally.
	mustGet(t, c, actionID("small"))
}

// TestCloseLeavesStore checks that a Cache's Close leaves the store's
// uploads to the store's owner: they are still pending after it, and the
// owner's bounded drain reports them.
func TestCloseLeavesStore(t *testing.T) {
	fr := newFakeRemote()
	fr.hangPut = true
	c := newCache(t, fr)
	put(t, c, actionID("stuck"), []byte("output"))
	if err := c.Close(context.Background()); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
	if q := c.Store.Stats().UploadQueue; q == 0 {
		t.Errorf("upload queue empty after the Cache's Close; want the upload still pending")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := c.Store.Close(ctx); err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Errorf("store Close = %v, want an error about unfinished uploads", err)
	}
	if n := len(fr.puts()); n != 0 {
		t.Errorf("%d uploads completed", n)
	}
}
