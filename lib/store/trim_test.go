package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testLinks makes kind "record" a record naming the output whose name is
// its content.
var testLinks = Links{"record": func(data []byte) (Key, bool) {
	name := strings.TrimSpace(string(data))
	return Key{Kind: "output", Name: name}, name != ""
}}

// openMaint opens a maintenance store on dir (which prune uses).
func openMaint(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Links: testLinks, Maintenance: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// fill writes n outputs of size bytes each through s, with a record for
// each, the i-th last used age(i) ago; it returns their keys.
func fill(t *testing.T, s *Store, n, size int, age func(i int) time.Duration) (outs, recs []Key) {
	t.Helper()
	now := time.Now()
	for i := range n {
		data := bytes.Repeat([]byte{byte(i)}, size)
		copy(data, fmt.Sprint(i))
		key, obj := writeLocal(t, s, data)
		rec := Key{Kind: "record", Name: fmt.Sprintf("%064x", i+1)}
		robj, err := s.WriteBytes(context.Background(), rec, []byte(key.Name))
		if err != nil {
			t.Fatal(err)
		}
		when := now.Add(-age(i))
		for _, p := range []string{obj.Path, robj.Path} {
			if err := os.Chtimes(p, when, when); err != nil {
				t.Fatal(err)
			}
		}
		outs = append(outs, key)
		recs = append(recs, rec)
	}
	return outs, recs
}

func present(s *Store, key Key) bool {
	_, err := os.Lstat(s.Path(key))
	return err == nil
}

// dirSize is the total length of the objects under dir (not temporary
// files or the lock files).
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, kind := range []string{"output", "record"} {
		filepath.WalkDir(filepath.Join(dir, kind), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), tempPrefix) {
				fi, _ := d.Info()
				n += fi.Size()
			}
			return nil
		})
	}
	return n
}

func TestLookupRecordsUseHourly(t *testing.T) {
	s := openStore(t, "", nil)
	defer closeStore(t, s)
	data := []byte("used now and then")
	key, obj := writeLocal(t, s, data)
	mtime := func() time.Time {
		fi, err := os.Stat(obj.Path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}

	// Recorded 30 minutes ago: a use does not record it again.
	recent := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	os.Chtimes(obj.Path, recent, recent)
	if _, ok := s.GetLocal(key, Check{Size: int64(len(data))}); !ok {
		t.Fatal("GetLocal: miss")
	}
	if got := mtime(); !got.Equal(recent) {
		t.Errorf("use 30 minutes after the last record set the time to %v", got)
	}

	// Recorded two hours ago: a use records it.
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(obj.Path, old, old)
	before := time.Now().Add(-time.Minute) // file system clocks may be coarse
	obj2, ok := s.GetLocal(key, Check{Size: int64(len(data))})
	if !ok {
		t.Fatal("GetLocal: miss")
	}
	if got := mtime(); got.Before(before) {
		t.Errorf("use two hours after the last record left the time at %v", got)
	}
	if obj2.ModTime.Before(before) {
		t.Errorf("Object.ModTime = %v, want the time of use", obj2.ModTime)
	}
}

func TestTrimMaxSizeLRU(t *testing.T) {
	dir := t.TempDir()
	w := openStore(t, dir, nil)
	// Ten outputs of 10 KiB, output i last used 10-i days ago: 0 is the
	// least recently used.
	outs, recs := fill(t, w, 10, 10<<10, func(i int) time.Duration { return time.Duration(10-i) * 24 * time.Hour })
	closeStore(t, w)

	// A dangling record and files that are not the store's.
	dangling := Key{Kind: "record", Name: strings.Repeat("d", 64)}
	if _, err := w.WriteBytes(context.Background(), dangling, []byte(strings.Repeat("e", 64))); err != nil {
		t.Fatal(err)
	}
	foreign := []string{"README", "output/notes.txt", "output/ab/not-hex", "output/ab/cd00", "Output/ab/ab00", "x.y/ab/ab00"}
	for _, f := range foreign {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("not the cache's"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	s := openMaint(t, dir)
	bound := int64(45 << 10)
	rep, err := s.Trim(context.Background(), Limits{MaxSize: bound})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)
	if !rep.Ran || !rep.Exclusive {
		t.Errorf("Ran = %v, Exclusive = %v; want a trim with the directory to itself", rep.Ran, rep.Exclusive)
	}
	if got := dirSize(t, dir); got > bound {
		t.Errorf("directory holds %d bytes after the trim, bound %d", got, bound)
	}
	// The six least recently used outputs go, with their records.
	for i := range outs {
		want := i >= 6
		if present(s, outs[i]) != want || present(s, recs[i]) != want {
			t.Errorf("output %d present %v, record present %v; want %v", i, present(s, outs[i]), present(s, recs[i]), want)
		}
	}
	if present(s, dangling) {
		t.Error("dangling record not removed")
	}
	if rep.Evicted.Objects != 6 || rep.Records.Objects != 7 || rep.Kept.Objects != 8 || rep.Over != 0 {
		t.Errorf("report %+v; want 6 evicted, 7 records removed, 8 kept", rep)
	}
	for _, f := range foreign {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("foreign file %s: %v", f, err)
		}
	}
	checkNoTemp(t, s)
}

func TestTrimExpiry(t *testing.T) {
	dir := t.TempDir()
	w := openStore(t, dir, nil)
	outs, recs := fill(t, w, 6, 100, func(i int) time.Duration { return time.Duration(i) * 24 * time.Hour })
	closeStore(t, w)

	s := openMaint(t, dir)
	rep, err := s.Trim(context.Background(), Limits{Expiry: 3*24*time.Hour + time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range outs {
		want := i <= 3
		if present(s, outs[i]) != want || present(s, recs[i]) != want {
			t.Errorf("output %d (unused %d days) present %v; want %v", i, i, present(s, outs[i]), want)
		}
	}
	if rep.Expired.Objects != 2 || rep.Evicted.Objects != 0 {
		t.Errorf("report %+v; want 2 expired", rep)
	}
}

// TestTrimLeavesInUseAlone: with another process using the directory, a
// trim removes only what was not used in the last hour and ten minutes,
// and says how far over the bound that leaves it.
func TestTrimLeavesInUseAlone(t *testing.T) {
	dir := t.TempDir()
	user := openStore(t, dir, nil) // registered: a live user
	defer closeStore(t, user)
	ages := []time.Duration{5 * time.Minute, 50 * time.Minute, 65 * time.Minute, 2 * time.Hour, 3 * time.Hour}
	outs, _ := fill(t, user, len(ages), 1000, func(i int) time.Duration { return ages[i] })

	s := openMaint(t, dir)
	rep, err := s.Trim(context.Background(), Limits{MaxSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Exclusive {
		t.Error("trim had the directory to itself while another store was open on it")
	}
	for i, age := range ages {
		want := age < touchInterval+inUseGrace
		if present(s, outs[i]) != want {
			t.Errorf("output used %v ago: present %v, want %v", age, present(s, outs[i]), want)
		}
	}
	if want := int64(3*1000+3*64) - 1; rep.Over != want {
		t.Errorf("Over = %d, want %d", rep.Over, want)
	}

	// Once the user has gone, everything may go.
	closeStore(t, user)
	rep, err = s.Trim(context.Background(), Limits{MaxSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Exclusive || rep.Kept.Objects != 0 {
		t.Errorf("after the user closed: report %+v; want an exclusive trim removing everything", rep)
	}
}

// setTrimHook sets trimHook for the test.
func setTrimHook(t *testing.T, h func(stage, path string)) {
	old := trimHook
	trimHook = h
	t.Cleanup(func() { trimHook = old })
}

// TestTrimUseDuringEviction: a use recorded between the trim's scan and
// its rename keeps the object; one after the rename finds no object (a
// miss), and the object goes.
func TestTrimUseDuringEviction(t *testing.T) {
	for _, tc := range []struct {
		stage   string
		present bool
	}{
		{"before rename", true},
		{"after rename", false},
	} {
		t.Run(strings.ReplaceAll(tc.stage, " ", "-"), func(t *testing.T) {
			dir := t.TempDir()
			w := openStore(t, dir, nil)
			outs, _ := fill(t, w, 1, 100, func(int) time.Duration { return 3 * time.Hour })
			closeStore(t, w)

			// Another process starts while the trim runs; an exclusive
			// trim is running, so it records every use.
			var user *Store
			var hit bool
			setTrimHook(t, func(stage, path string) {
				if stage != tc.stage || user != nil {
					return
				}
				user = openStore(t, dir, nil)
				if !user.touchAll.Load() {
					t.Error("store opened during an exclusive trim does not record every use")
				}
				_, hit = user.GetLocal(outs[0], Check{Size: 100})
			})
			s := openMaint(t, dir)
			rep, err := s.Trim(context.Background(), Limits{MaxSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			if user == nil {
				t.Fatal("no eviction")
			}
			defer closeStore(t, user)
			if hit != tc.present || present(s, outs[0]) != tc.present {
				t.Errorf("use %s: hit %v, present after the trim %v; want %v", tc.stage, hit, present(s, outs[0]), tc.present)
			}
			if tc.present && rep.InUse != 1 {
				t.Errorf("InUse = %d, want 1", rep.InUse)
			}
			checkNoTemp(t, s)

			// The trim over, the user registers and records use hourly again.
			user.retryOnce()
			if user.touchAll.Load() || !user.registered() {
				t.Error("user not registered after the trim")
			}
		})
	}
}

// retryOnce is one attempt of retryRegister, for tests.
func (s *Store) retryOnce() {
	u := &s.users
	u.mu.Lock()
	defer u.mu.Unlock()
	if ok, _ := tryLock(u.f, lockShared); ok {
		u.held = true
		s.touchAll.Store(false)
	}
}

func TestTrimBusy(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Limits: Limits{MaxSize: 1}, Links: testLinks, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	// Another process trims.
	other := openMaint(t, dir)
	lk, err := other.lockTrim(context.Background(), false)
	if err != nil || lk == nil {
		t.Fatalf("lockTrim = %v, %v", lk, err)
	}
	rep, err := s.TrimIfDue(context.Background())
	if err != nil || !rep.Busy || rep.Ran {
		t.Errorf("TrimIfDue while another trims = %+v, %v; want Busy", rep, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Trim(ctx, Limits{MaxSize: 1}); !errors.Is(err, context.Canceled) {
		t.Errorf("Trim while another trims, ctx cancelled: %v", err)
	}
	lk.unlock()
	if rep, err := s.TrimIfDue(context.Background()); err != nil || !rep.Ran {
		t.Errorf("TrimIfDue after the other trim = %+v, %v; want a trim (first ever)", rep, err)
	}
}

// TestTrimIfDue: the shared estimate decides, and each store adds what it
// wrote to it.
func TestTrimIfDue(t *testing.T) {
	dir := t.TempDir()
	lim := Limits{MaxSize: 3 << 20} // trimStep is 1 MiB
	open := func() *Store {
		s, err := Open(Options{Dir: dir, Limits: lim, Links: testLinks, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()
	a, b := open(), open()
	if rep, _ := a.TrimIfDue(ctx); !rep.Ran {
		t.Errorf("first TrimIfDue: %+v; want a trim (no state yet)", rep)
	}
	if rep, _ := a.TrimIfDue(ctx); rep.Ran {
		t.Errorf("second TrimIfDue: %+v; want none", rep)
	}
	// Each writes half a MiB (not enough for a background look): not
	// past the bound together.
	writeLocal(t, a, bytes.Repeat([]byte("a"), 1<<19))
	writeLocal(t, b, bytes.Repeat([]byte("b"), 1<<19))
	for _, s := range []*Store{a, b} {
		if rep, _ := s.TrimIfDue(ctx); rep.Ran {
			t.Errorf("TrimIfDue at 1 MiB: %+v; want none", rep)
		}
	}
	// b writes 2.5 MiB: its background look finds the estimate (3.5 MiB)
	// past the bound and trims, but both stores are live and everything
	// is recent: nothing goes.
	writeLocal(t, b, bytes.Repeat([]byte("c"), 5<<19))
	b.bg.wg.Wait()
	if st := b.Stats(); st.Trims != 1 || st.Trimmed != 0 {
		t.Errorf("b's stats %v; want one background trim that removed nothing", st)
	}
	// Trying again before more is written would not do better.
	if rep, _ := a.TrimIfDue(ctx); rep.Ran {
		t.Errorf("TrimIfDue again: %+v; want none until more is written", rep)
	}
	closeStore(t, a)
	if st := a.Stats(); st.Trims != 1 {
		t.Errorf("a's stats %v; want no trim at close (b is live)", st)
	}
	// The last to close has the directory to itself, and trims.
	closeStore(t, b)
	if got := dirSize(t, dir); got > lim.MaxSize {
		t.Errorf("%d bytes after the last close, bound %d", got, lim.MaxSize)
	}
}

// TestBackgroundTrim: writes past the bound start a trim behind them.
func TestBackgroundTrim(t *testing.T) {
	dir := t.TempDir()
	w := openStore(t, dir, nil)
	old, _ := fill(t, w, 4, 1<<20, func(int) time.Duration { return 5 * time.Hour })
	closeStore(t, w)

	s, err := Open(Options{Dir: dir, Limits: Limits{MaxSize: 2 << 20}, Links: testLinks, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	s.TrimIfDue(context.Background()) // the first trim, to set the state
	writeLocal(t, s, bytes.Repeat([]byte("new"), 1<<19))
	s.bg.wg.Wait()
	if st := s.Stats(); st.Trims != 2 || st.Trimmed == 0 {
		t.Errorf("stats %v; want a background trim", st)
	}
	for i, k := range old {
		if present(s, k) {
			t.Errorf("old object %d still there", i)
		}
	}
}

func TestReadOnlyUpload(t *testing.T) {
	fr := newFakeRemote()
	s, err := Open(Options{Dir: t.TempDir(), Remote: fr, ReadOnly: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	key, obj := writeLocal(t, s, []byte("made by an untrusted build"))
	s.Upload(Upload{Key: key, Path: obj.Path}, Upload{Key: Key{Kind: "action", Name: "abcd"}, Data: []byte("x")})
	closeStore(t, s)
	if puts := fr.puts(); len(puts) != 0 || fr.count("exists", key.String()) != 0 {
		t.Errorf("read-only store called the remote: puts %q", puts)
	}
	if st := s.Stats(); st.UploadsSkipped != 2 || st.Uploads != 0 || !st.ReadOnly || !strings.Contains(st.String(), "uploads_skipped=2") {
		t.Errorf("stats %v; want 2 uploads skipped", st)
	}
}

func TestScan(t *testing.T) {
	ctx := context.Background()
	if _, err := Scan(ctx, filepath.Join(t.TempDir(), "missing"), testLinks); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Scan of a missing directory: %v", err)
	}
	dir := t.TempDir()
	u, err := Scan(ctx, dir, testLinks)
	if err != nil || u.Total.Objects != 0 || len(u.Ages) != 5 {
		t.Errorf("Scan of an empty directory = %+v, %v", u, err)
	}

	w := openStore(t, dir, nil)
	outs, recs := fill(t, w, 3, 100, func(i int) time.Duration { return []time.Duration{0, 2 * time.Hour, 40 * 24 * time.Hour}[i] })
	closeStore(t, w)
	// The record of the oldest output was written recently: a record's
	// last use is its own or its output's, whichever is later.
	now := time.Now()
	os.Chtimes(w.Path(recs[2]), now, now)
	os.Remove(w.Path(outs[1])) // its record dangles
	// Temporary files: one of an older version's, in tmp, and one in an
	// object's directory.
	os.Mkdir(filepath.Join(dir, "tmp"), 0o755)
	os.WriteFile(filepath.Join(dir, "tmp", "output-123"), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(w.Path(outs[0])), ".tmp-123"), []byte("part"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes"), []byte("mine"), 0o644)

	u, err = Scan(ctx, dir, testLinks)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", u)
	want := Usage{
		Kinds:    []KindCount{{"output", Count{2, 200}}, {"record", Count{3, 192}}},
		Total:    Count{5, 392},
		Dangling: Count{1, 64},
		Temp:     Count{2, 11},
		Foreign:  Count{1, 4},
	}
	if fmt.Sprint(u.Kinds) != fmt.Sprint(want.Kinds) || u.Total != want.Total || u.Dangling != want.Dangling || u.Temp != want.Temp || u.Foreign != want.Foreign {
		t.Errorf("Scan = %+v\nwant %+v", u, want)
	}
	// Ages: output 0, its record and record 2 now; the dangling record
	// (written two hours ago) within a day; output 2 older.
	ages := map[string]int64{}
	for _, a := range u.Ages {
		ages[a.Label] = a.Objects
	}
	if ages["1h"] != 3 || ages["1d"] != 1 || ages["older"] != 1 {
		t.Errorf("ages %v", ages)
	}
}

// TestTrimStaleTemp: a trim removes the temporary files left by a crash,
// a day old, in the objects' directories and in the legacy tmp, and leaves
// fresh ones (being written); none is ever an object or foreign.
func TestTrimStaleTemp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := openStore(t, dir, nil)
	outs, _ := fill(t, w, 2, 100, func(int) time.Duration { return time.Hour })
	closeStore(t, w)

	shard := filepath.Dir(w.Path(outs[0]))
	old := filepath.Join(shard, ".tmp-old")
	trash := filepath.Join(shard, ".tmp-trim-old") // a crashed trim's
	fresh := filepath.Join(shard, ".tmp-fresh")
	legacy := filepath.Join(dir, "tmp", "output-old")
	os.Mkdir(filepath.Dir(legacy), 0o755)
	for _, p := range []string{old, trash, fresh, legacy} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-staleTemp - time.Hour)
	for _, p := range []string{old, trash, legacy} {
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}

	u, err := Scan(ctx, dir, testLinks)
	if err != nil {
		t.Fatal(err)
	}
	if u.Temp != (Count{4, 28}) || u.Foreign != (Count{}) || u.Total.Objects != 4 {
		t.Errorf("Scan = %+v; want 4 temporary files, no foreign file, 4 objects", u)
	}
	if got, _ := TempFiles(dir); len(got) != 4 {
		t.Errorf("TempFiles before the trim = %q, want 4 files", got)
	}

	s := openMaint(t, dir)
	rep, err := s.Trim(ctx, Limits{MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TempFile != 3 || rep.Found.Objects != 4 || rep.Kept.Objects != 4 || rep.Removed().Objects != 0 {
		t.Errorf("report %+v; want 3 temporary files removed, 4 objects found and kept", rep)
	}
	for _, p := range []string{old, trash, legacy} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temporary file %s not removed: %v", p, err)
		}
	}
	if got, err := TempFiles(dir); err != nil || len(got) != 1 || got[0] != fresh {
		t.Errorf("TempFiles after the trim = %q, %v; want only %s", got, err, fresh)
	}
	u, err = Scan(ctx, dir, testLinks)
	if err != nil {
		t.Fatal(err)
	}
	if u.Temp != (Count{1, 7}) || u.Foreign != (Count{}) || u.Total.Objects != 4 {
		t.Errorf("Scan after the trim = %+v; want 1 temporary file, no foreign file, 4 objects", u)
	}
}

func TestParseKey(t *testing.T) {
	for rel, ok := range map[string]bool{
		"output/ab/abcdef":  true,
		"action/00/00":      true,
		"output/ab/cdef":    false,
		"output/AB/ABCDEF":  false,
		"output/abcdef":     false,
		"tmp/ab/abcd":       false,
		"output/ab/abcd/ef": false,
		"../ab/abcd":        false,
	} {
		if _, got := ParseKey(rel); got != ok {
			t.Errorf("ParseKey(%q) = %v, want %v", rel, got, ok)
		}
	}
}

// TestTrimCutShort: a trim cut short (the budget at close) leaves the
// estimate over the bound, so the next attempt waits for more writes.
func TestTrimCutShort(t *testing.T) {
	dir := t.TempDir()
	lim := Limits{MaxSize: 1 << 30}
	s, err := Open(Options{Dir: dir, Limits: lim, Links: testLinks, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rep, err := s.TrimIfDue(ctx); !errors.Is(err, context.Canceled) || !rep.Ran {
		t.Fatalf("TrimIfDue with its context cancelled = %+v, %v; want a trim cut short", rep, err)
	}
	lf, err := s.lockTrim(context.Background(), false)
	if err != nil || lf == nil {
		t.Fatal(lf, err)
	}
	st := lf.read()
	lf.unlock()
	if !st.valid || st.size <= lim.MaxSize || st.exclusive {
		t.Errorf("state after the cut %+v; want an estimate over the bound", st)
	}
	if rep, err := s.TrimIfDue(context.Background()); err != nil || rep.Ran {
		t.Errorf("TrimIfDue right after = %+v, %v; want none", rep, err)
	}
}

// BenchmarkTrimScan measures a trim that removes nothing, on a directory
// of b.N outputs (1 KiB) and as many action-like records.
func BenchmarkTrimScan(b *testing.B) {
	dir := b.TempDir()
	w, err := Open(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	n := 50000
	for i := range n {
		data := fmt.Appendf(bytes.Repeat([]byte{'x'}, 1000), "%d", i)
		key, check := contentKey("output", data)
		if _, err := w.Write(context.Background(), key, bytes.NewReader(data), check); err != nil {
			b.Fatal(err)
		}
		if _, err := w.WriteBytes(context.Background(), Key{Kind: "record", Name: fmt.Sprintf("%064x", i+1)}, []byte(key.Name)); err != nil {
			b.Fatal(err)
		}
	}
	w.Close(context.Background())
	s, err := Open(Options{Dir: dir, Links: testLinks, Maintenance: true})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := s.Trim(context.Background(), Limits{MaxSize: 1 << 40})
		if err != nil || rep.Found.Objects != int64(2*n) {
			b.Fatal(rep, err)
		}
	}
	b.ReportMetric(float64(2*n), "files")
}

// BenchmarkGetLocal is the lookup of a build-cache hit: "recorded" when
// the object's use was recorded within the hour (the usual case: a stat),
// "touch" when every lookup records it (a stat and a utimensat; the first
// lookup of an object in an hour).
func BenchmarkGetLocal(b *testing.B) {
	for _, touchEvery := range []bool{false, true} {
		name := map[bool]string{false: "recorded", true: "touch"}[touchEvery]
		b.Run(name, func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			data := bytes.Repeat([]byte("x"), 4<<10)
			key, check := contentKey("output", data)
			if _, err := s.Write(context.Background(), key, bytes.NewReader(data), check); err != nil {
				b.Fatal(err)
			}
			s.touchAll.Store(touchEvery)
			for b.Loop() {
				if _, ok := s.GetLocal(key, check); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// TestTrimTimer: a store with limits checks on a timer whether a trim is
// due, without writes.
func TestTrimTimer(t *testing.T) {
	dir := t.TempDir()
	w := openStore(t, dir, nil)
	outs, _ := fill(t, w, 2, 100, func(i int) time.Duration { return time.Duration(i) * 48 * time.Hour })
	closeStore(t, w)

	old := trimCheck
	trimCheck = time.Millisecond
	defer func() { trimCheck = old }()
	trimmed := make(chan string, 1)
	s, err := Open(Options{Dir: dir, Limits: Limits{Expiry: 24 * time.Hour}, Links: testLinks, Logf: func(format string, args ...any) {
		if msg := fmt.Sprintf(format, args...); strings.HasPrefix(msg, "trim in the background") {
			select {
			case trimmed <- msg:
			default:
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	t.Log(<-trimmed)
	if !present(s, outs[0]) || present(s, outs[1]) {
		t.Errorf("after the timed trim: recent output present %v, two-day-old one present %v", present(s, outs[0]), present(s, outs[1]))
	}
}

// Stat looks without recording a use; Get and GetLocal record one.
func TestStatDoesNotRecordUse(t *testing.T) {
	s := openStore(t, "", nil)
	data := []byte("looked at, not used")
	key, check := contentKey("output", data)
	obj, err := s.Write(context.Background(), key, bytes.NewReader(data), check)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * touchInterval).Truncate(time.Second)
	if err := os.Chtimes(obj.Path, old, old); err != nil {
		t.Fatal(err)
	}
	mtime := func() time.Time {
		fi, err := os.Stat(obj.Path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	if _, ok, err := s.Stat(key); !ok || err != nil {
		t.Fatalf("Stat = %v, %v", ok, err)
	}
	if got := mtime(); !got.Equal(old) {
		t.Errorf("Stat recorded a use: mtime %v, want %v", got, old)
	}
	if _, ok := s.GetLocal(key, check); !ok {
		t.Fatal("GetLocal missed")
	}
	if got := mtime(); !got.After(old) {
		t.Errorf("GetLocal did not record a use: mtime %v", got)
	}
}
