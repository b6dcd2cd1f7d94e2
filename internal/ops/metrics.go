package ops

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	"github.com/prometheus/client_golang/prometheus"
)

const ns = "gocacheplugin"

// A FrontEnd counts the requests of one front end (the build cache, the
// module proxy, ...) for /metrics and the status page. Its methods are
// safe for concurrent use.
type FrontEnd struct {
	name  string
	stats frontEndCounters

	lookupDur, storeDur prometheus.Observer
}

// frontEndCounters are a FrontEnd's live counters, the twins of
// [FrontEndStats]'s int64 fields (see internal/counters).
type frontEndCounters struct {
	lookups, hits, lookupErrors atomic.Int64
	stores, storeErrors         atomic.Int64
	bytesServed, bytesStored    atomic.Int64
}

// FrontEndStats is a snapshot of a front end's counts.
type FrontEndStats struct {
	Name         string  `json:"name"`
	Lookups      int64   `json:"lookups"`
	Hits         int64   `json:"hits"`
	LookupErrors int64   `json:"lookup_errors"`
	HitRatio     float64 `json:"hit_ratio"` // hits / lookups; 0 before the first lookup
	BytesServed  int64   `json:"bytes_served"`
	Stores       int64   `json:"stores"`
	StoreErrors  int64   `json:"store_errors"`
	BytesStored  int64   `json:"bytes_stored"`
}

// NewFrontEnd registers a front end named name.
func (s *Server) NewFrontEnd(name string) *FrontEnd {
	f := &FrontEnd{
		name:      name,
		lookupDur: s.metrics.frontDur.WithLabelValues(name, "lookup"),
		storeDur:  s.metrics.frontDur.WithLabelValues(name, "store"),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frontEnds = append(s.frontEnds, f)
	return f
}

// Lookup records a lookup that took d: a hit of size bytes, a miss, or an
// error.
var _ store.Recorder = (*FrontEnd)(nil)

func (f *FrontEnd) Lookup(hit bool, size int64, err error, d time.Duration) {
	f.stats.lookups.Add(1)
	switch {
	case err != nil:
		f.stats.lookupErrors.Add(1)
	case hit:
		f.stats.hits.Add(1)
		f.stats.bytesServed.Add(size)
	}
	f.lookupDur.Observe(d.Seconds())
}

// Store records the storing of size bytes that took d.
func (f *FrontEnd) Store(size int64, err error, d time.Duration) {
	f.stats.stores.Add(1)
	if err != nil {
		f.stats.storeErrors.Add(1)
	} else {
		f.stats.bytesStored.Add(size)
	}
	f.storeDur.Observe(d.Seconds())
}

// Stats returns a snapshot of f's counts.
func (f *FrontEnd) Stats() FrontEndStats {
	st := counters.Snapshot[FrontEndStats](&f.stats)
	st.Name = f.name
	if st.Lookups > 0 {
		st.HitRatio = float64(st.Hits) / float64(st.Lookups)
	}
	return st
}

// InstrumentHandler returns h counting its requests in f as the proxies
// count theirs: a get is a lookup, a put a store. If h has a fast path
// ([cacheprog.FastGetter]), so does the result.
func InstrumentHandler(h cacheprog.Handler, f store.Recorder) cacheprog.Handler {
	i := &instrumented{h: h, f: f}
	if fg, ok := h.(cacheprog.FastGetter); ok {
		return &instrumentedFast{i, fg}
	}
	return i
}

type instrumentedFast struct {
	*instrumented
	fg cacheprog.FastGetter
}

func (i *instrumentedFast) GetFast(actionID []byte) (cacheprog.Entry, bool, bool) {
	start := time.Now()
	e, found, answered := i.fg.GetFast(actionID)
	if answered {
		i.f.Lookup(found, e.Size, nil, time.Since(start))
	}
	return e, found, answered
}

type instrumented struct {
	h cacheprog.Handler
	f store.Recorder
}

func (i *instrumented) Get(ctx context.Context, actionID []byte) (cacheprog.Entry, bool, error) {
	start := time.Now()
	e, ok, err := i.h.Get(ctx, actionID)
	i.f.Lookup(ok, e.Size, err, time.Since(start))
	return e, ok, err
}

func (i *instrumented) Put(ctx context.Context, req cacheprog.PutRequest) (string, error) {
	start := time.Now()
	path, err := i.h.Put(ctx, req)
	i.f.Store(req.Size, err, time.Since(start))
	return path, err
}

func (i *instrumented) Close(ctx context.Context) error { return i.h.Close(ctx) }

// InstrumentRemote returns r timing its calls in
// gocacheplugin_remote_request_duration_seconds.
func (s *Server) InstrumentRemote(r store.Remote) store.Remote {
	return &timedRemote{r: r, h: s.metrics.remoteDur}
}

type timedRemote struct {
	r store.Remote
	h *prometheus.HistogramVec
}

func (t *timedRemote) observe(op string, start time.Time, err error) {
	result := "ok"
	switch {
	case errors.Is(err, fs.ErrNotExist):
		result = "not_found"
	case err != nil:
		result = "error"
	}
	t.h.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

// Get times the call up to the opening of the object, not the transfer.
func (t *timedRemote) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	start := time.Now()
	rc, n, err := t.r.Get(ctx, key)
	t.observe("get", start, err)
	return rc, n, err
}

func (t *timedRemote) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	start := time.Now()
	err := t.r.Put(ctx, key, r, size)
	t.observe("put", start, err)
	return err
}

func (t *timedRemote) Exists(ctx context.Context, key string) (bool, error) {
	start := time.Now()
	ok, err := t.r.Exists(ctx, key)
	t.observe("exists", start, err)
	return ok, err
}

// GetRange times the call up to the opening of the range, as Get does.
func (t *timedRemote) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := t.r.GetRange(ctx, key, off, n)
	t.observe("get_range", start, err)
	return rc, err
}

// metrics is the collector of everything read at scrape time.
type metrics struct {
	s         *Server
	frontDur  *prometheus.HistogramVec
	remoteDur *prometheus.HistogramVec

	lookups, served, stores, stored *prometheus.Desc
	uploadQueue, breaker, remoteOn  *prometheus.Desc
	live, accepted, closed, dropped *prometheus.Desc
	buildInfo, startTime            *prometheus.Desc
}

func newMetrics(s *Server) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
	}
	m := &metrics{
		s: s,
		frontDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time to answer a front end's request (lookup or store).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10), // 50µs to 13s
		}, []string{"frontend", "op"}),
		remoteDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "remote_request_duration_seconds",
			Help:    "Time of remote tier calls (for get, until the object is open).",
			Buckets: prometheus.ExponentialBuckets(1e-3, 3, 11), // 1ms to 59s
		}, []string{"op", "result"}),
		lookups:     d("lookups_total", "Front end lookups, by result (hit, miss, error).", "frontend", "result"),
		served:      d("served_bytes_total", "Bytes of the objects a front end found (hits).", "frontend"),
		stores:      d("stores_total", "Objects a front end was asked to store, by result (ok, error).", "frontend", "result"),
		stored:      d("stored_bytes_total", "Bytes of the objects a front end stored.", "frontend"),
		uploadQueue: d("store_upload_queue", "Uploads to the remote tier waiting or in flight."),
		breaker:     d("remote_breaker_state", "Remote tier circuit breaker: 1 for the current state (closed, open, half-open).", "state"),
		remoteOn:    d("remote_enabled", "1 if the store has a remote tier."),
		live:        d("sessions_live", "Cache-prog sessions open now."),
		accepted:    d("sessions_accepted_total", "Cache-prog sessions opened."),
		closed:      d("sessions_closed_total", "Cache-prog sessions ended by the client's close request."),
		dropped:     d("sessions_dropped_total", "Cache-prog sessions dropped by the daemon, by reason.", "reason"),
		buildInfo:   d("build_info", "Version of the running binary.", "version", "goversion"),
		startTime:   d("start_time_seconds", "When the daemon started, in Unix seconds."),
	}
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		m.lookups, m.served, m.stores, m.stored, m.uploadQueue, m.breaker, m.remoteOn,
		m.live, m.accepted, m.closed, m.dropped, m.buildInfo, m.startTime,
	} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(m.buildInfo, 1, s.version, goVersion)
	gauge(m.startTime, float64(s.start.UnixNano())/1e9)

	s.mu.Lock()
	fronts := append([]*FrontEnd(nil), s.frontEnds...)
	st, sessions := s.store, s.sessions
	s.mu.Unlock()

	for _, f := range fronts {
		fs := f.Stats()
		counter(m.lookups, fs.Hits, fs.Name, "hit")
		counter(m.lookups, fs.Lookups-fs.Hits-fs.LookupErrors, fs.Name, "miss")
		counter(m.lookups, fs.LookupErrors, fs.Name, "error")
		counter(m.served, fs.BytesServed, fs.Name)
		counter(m.stores, fs.Stores-fs.StoreErrors, fs.Name, "ok")
		counter(m.stores, fs.StoreErrors, fs.Name, "error")
		counter(m.stored, fs.BytesStored, fs.Name)
	}
	if st != nil {
		ss := st.Stats() // the counters: Server.storeCollector
		if ss.Remote {
			gauge(m.remoteOn, 1)
			gauge(m.uploadQueue, float64(ss.UploadQueue))
			for _, state := range []string{"closed", "open", "half-open"} {
				v := 0.0
				if ss.Breaker == state {
					v = 1
				}
				gauge(m.breaker, v, state)
			}
		} else {
			gauge(m.remoteOn, 0)
		}
	}
	if sessions != nil {
		ds := sessions()
		gauge(m.live, float64(ds.Live))
		counter(m.accepted, ds.Accepted)
		counter(m.closed, ds.Closed)
		for _, r := range []string{daemon.DropProtocol, daemon.DropNoClose, daemon.DropNotReading, daemon.DropShutdown, daemon.DropRefused} {
			counter(m.dropped, ds.Dropped[r], r)
		}
	}
}
