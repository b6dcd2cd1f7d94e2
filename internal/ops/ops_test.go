package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fakeHandler hits for action 1 (a 100-byte object) and misses otherwise.
type fakeHandler struct{}

func (fakeHandler) Get(ctx context.Context, action []byte) (cacheprog.Entry, bool, error) {
	if action[0] == 1 {
		return cacheprog.Entry{Size: 100}, true, nil
	}
	return cacheprog.Entry{}, false, nil
}

func (fakeHandler) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	return "/x", nil
}

func (fakeHandler) Close(context.Context) error { return nil }

// fakeRemote has no objects.
type fakeRemote struct{}

func (fakeRemote) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	return nil, 0, fs.ErrNotExist
}
func (fakeRemote) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	return errors.New("read-only")
}
func (fakeRemote) Exists(ctx context.Context, key string) (bool, error) { return false, nil }
func (fakeRemote) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	return nil, fs.ErrNotExist
}

func get(t *testing.T, h http.Handler, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	return rec.Code, rec.Body.String()
}

func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, text)
	}
	return mfs
}

// value returns the value of the sample of family name whose labels
// include want.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with labels %v", name, want)
	return 0
}

func TestMetricsAndStatus(t *testing.T) {
	s := New("v1.2.3-test")
	st, err := store.Open(store.Options{Dir: t.TempDir(), Remote: s.InstrumentRemote(fakeRemote{})})
	if err != nil {
		t.Fatal(err)
	}
	s.WatchStore(st)
	s.WatchSessions(func() daemon.Stats {
		return daemon.Stats{Live: 2, Accepted: 7, Closed: 4, Dropped: map[string]int64{daemon.DropNoClose: 1}}
	})
	fe := s.NewFrontEnd("build")
	h := InstrumentHandler(fakeHandler{}, fe)
	ctx := context.Background()
	hit, miss := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for range 3 {
		h.Get(ctx, hit)
	}
	h.Get(ctx, miss)
	h.Put(ctx, cacheprog.PutRequest{Size: 42})
	st.Get(ctx, store.Key{Kind: "output", Name: "abcd"}, store.AnyContent) // a remote miss, timed

	code, text := get(t, s, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	mfs := parseMetrics(t, text)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gocacheplugin_lookups_total", map[string]string{"frontend": "build", "result": "hit"}, 3},
		{"gocacheplugin_lookups_total", map[string]string{"frontend": "build", "result": "miss"}, 1},
		{"gocacheplugin_served_bytes_total", map[string]string{"frontend": "build"}, 300},
		{"gocacheplugin_stores_total", map[string]string{"frontend": "build", "result": "ok"}, 1},
		{"gocacheplugin_stored_bytes_total", map[string]string{"frontend": "build"}, 42},
		{"gocacheplugin_request_duration_seconds", map[string]string{"frontend": "build", "op": "lookup"}, 4},
		{"gocacheplugin_remote_request_duration_seconds", map[string]string{"op": "get", "result": "not_found"}, 1},
		{"gocacheplugin_store_remote_misses_total", nil, 1},
		{"gocacheplugin_remote_breaker_state", map[string]string{"state": "closed"}, 1},
		{"gocacheplugin_remote_breaker_state", map[string]string{"state": "open"}, 0},
		{"gocacheplugin_sessions_live", nil, 2},
		{"gocacheplugin_sessions_dropped_total", map[string]string{"reason": "no_close"}, 1},
		{"gocacheplugin_build_info", map[string]string{"version": "v1.2.3-test"}, 1},
	} {
		if got := value(t, mfs, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "gocacheplugin_start_time_seconds"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("no metric %s", name)
		}
	}

	code, page := get(t, s, "/")
	if code != 200 {
		t.Fatalf("status page: %d", code)
	}
	for _, want := range []string{"v1.2.3-test", "uptime", "75.0%", "300 B", "healthy", `<span id="sessions-live">2</span>`, "/metrics"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q:\n%s", want, page)
		}
	}

	code, body := get(t, s, "/status.json")
	var status Status
	if err := json.Unmarshal([]byte(body), &status); code != 200 || err != nil {
		t.Fatalf("/status.json: %d %v\n%s", code, err, body)
	}
	if len(status.FrontEnds) != 1 || status.FrontEnds[0].HitRatio != 0.75 || status.Store.RemoteState != "healthy" || status.Sessions.Accepted != 7 {
		t.Errorf("status.json: %s", body)
	}

	if code, _ := get(t, s, "/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/: %d", code)
	}
	if code, _ := get(t, s, "/nothing-here"); code != 404 {
		t.Errorf("/nothing-here: %d, want 404", code)
	}
}

// fastHandler answers gets on the fast path: a hit for action 1.
type fastHandler struct{ fakeHandler }

func (fastHandler) GetFast(action []byte) (cacheprog.Entry, bool, bool) {
	return cacheprog.Entry{Size: 10}, action[0] == 1, true
}

func TestInstrumentKeepsFastPath(t *testing.T) {
	s := New("devel")
	fe := s.NewFrontEnd("build")
	h, ok := InstrumentHandler(fastHandler{}, fe).(cacheprog.FastGetter)
	if !ok {
		t.Fatal("InstrumentHandler hides the fast path")
	}
	h.GetFast(bytes.Repeat([]byte{1}, 32))
	h.GetFast(bytes.Repeat([]byte{2}, 32))
	if st := fe.Stats(); st.Lookups != 2 || st.Hits != 1 || st.BytesServed != 10 {
		t.Errorf("stats %+v, want 2 lookups, 1 hit, 10 bytes", st)
	}
	if _, ok := InstrumentHandler(fakeHandler{}, fe).(cacheprog.FastGetter); ok {
		t.Error("InstrumentHandler claims a fast path the handler lacks")
	}
}

func TestStatusLocalOnly(t *testing.T) {
	s := New("devel")
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s.WatchStore(st)
	code, page := get(t, s, "/")
	if code != 200 || !strings.Contains(page, "none: local cache only") {
		t.Errorf("status page %d without a remote tier:\n%s", code, page)
	}
	mfs := parseMetrics(t, func() string { _, m := get(t, s, "/metrics"); return m }())
	if v := value(t, mfs, "gocacheplugin_remote_enabled", nil); v != 0 {
		t.Errorf("remote_enabled = %v", v)
	}
}

func TestHealthz(t *testing.T) {
	s := New("devel")
	if code, body := get(t, s, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	s.SetDraining()
	if code, body := get(t, s, "/healthz"); code != 503 || body != "shutting down\n" {
		t.Errorf("/healthz while draining: %d %q", code, body)
	}
	if _, page := get(t, s, "/"); !strings.Contains(page, "shutting down") {
		t.Errorf("status page does not say it is shutting down")
	}
}

// TestSeams checks the mount points of the module and reverse proxies.
func TestSeams(t *testing.T) {
	s := New("devel")
	s.Handle("/mod/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "mod "+r.URL.Path) }))
	if _, body := get(t, s, "/mod/example.com/@v/list"); body != "mod /mod/example.com/@v/list" {
		t.Errorf("/mod/ mount: %q", body)
	}
	s.HandleProxy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "proxy "+r.Method+" "+r.Host) }))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "http://pkg.example/x.tgz", nil))
	if rec.Body.String() != "proxy GET pkg.example" {
		t.Errorf("absolute-form request: %q", rec.Body.String())
	}
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("CONNECT", "/", nil)
	req.Host = "pkg.example:443"
	s.ServeHTTP(rec, req)
	if rec.Body.String() != "proxy CONNECT pkg.example:443" {
		t.Errorf("CONNECT request: %q", rec.Body.String())
	}
	if code, _ := get(t, s, "/healthz"); code != 200 {
		t.Errorf("/healthz with a proxy mounted: %d", code)
	}
}

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		":5970":           "127.0.0.1:5970",
		"5970":            "127.0.0.1:5970",
		"localhost:5970":  "localhost:5970",
		"0.0.0.0:5970":    "0.0.0.0:5970",
		"[::1]:0":         "[::1]:0",
		"host.example:80": "host.example:80",
	} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "localhost", ":http", ":99999"} {
		if got, err := ListenAddr(bad); err == nil {
			t.Errorf("ListenAddr(%q) = %q, want an error", bad, got)
		}
	}
	l, err := Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !strings.HasPrefix(l.Addr().String(), "127.0.0.1:") {
		t.Errorf("Listen(\":0\") bound %s, want loopback", l.Addr())
	}
	s := New("devel")
	go s.Serve(l)
	resp, err := http.Get("http://" + l.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
