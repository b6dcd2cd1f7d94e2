package ops

import (
	"fmt"
	"reflect"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/modproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Every counter a package keeps reaches /metrics one way: the package's
// Stats struct is the snapshot (read from its live counters by
// internal/counters), and a table below maps the struct's int64 fields,
// by their json tags, to metrics. The collector reads the fields by
// reflection, so adding a counter is a live atomic.Int64 field and a
// Stats field of the same name (the package's counters.Check test fails
// on one without the other), and a row here or in its table's list of
// fields kept off /metrics (TestStatsTablesCoverFields fails on a field
// in neither).

// A statRow is one metric series read from one int64 field of a Stats
// struct.
type statRow struct {
	field string // json tag of the field
	name  string // metric name without the "gocacheplugin_" namespace
	help  string
	gauge bool // a gauge, not a counter
	// label and value, if set, are the series' label: rows of one name
	// differ in value and must agree on name, help, kind and label.
	label, value string
}

// A statTable is the metrics of one Stats struct type.
type statTable struct {
	rows []statRow
	// off lists the fields deliberately not on /metrics (shown on the
	// status page, in --metrics, or derived elsewhere).
	off []string
}

// statsCollector is a prometheus.Collector reading the rows of a table
// from snapshots that get returns.
type statsCollector[T any] struct {
	get   func() (T, bool) // false: nothing to report
	rows  []statRow
	index [][]int            // field index of each row
	descs []*prometheus.Desc // desc of each row (shared by rows of a name)
}

// newStatsCollector returns a collector of table's rows, read from get.
// It panics if a row names a field T lacks or one that is not an int64: a
// programming error, which TestStatsTablesCoverFields catches.
func newStatsCollector[T any](get func() (T, bool), table statTable) *statsCollector[T] {
	t := reflect.TypeFor[T]()
	fields := fieldsByTag(t)
	c := &statsCollector[T]{get: get, rows: table.rows}
	byName := map[string]*prometheus.Desc{}
	for _, r := range table.rows {
		f, ok := fields[r.field]
		if !ok || f.Type.Kind() != reflect.Int64 {
			panic(fmt.Sprintf("ops: %v has no int64 field with json tag %q (metric %s)", t, r.field, r.name))
		}
		c.index = append(c.index, f.Index)
		d := byName[r.name]
		if d == nil {
			var labels []string
			if r.label != "" {
				labels = []string{r.label}
			}
			d = prometheus.NewDesc(ns+"_"+r.name, r.help, labels, nil)
			byName[r.name] = d
		}
		c.descs = append(c.descs, d)
	}
	return c
}

// fieldsByTag maps the keys of t's fields ([counters.Key]: their json
// names) to the fields.
func fieldsByTag(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := range t.NumField() {
		if key, ok := counters.Key(t.Field(i)); ok {
			m[key] = t.Field(i)
		}
	}
	return m
}

func (c *statsCollector[T]) Describe(ch chan<- *prometheus.Desc) {
	seen := map[*prometheus.Desc]bool{}
	for _, d := range c.descs {
		if !seen[d] {
			seen[d] = true
			ch <- d
		}
	}
}

func (c *statsCollector[T]) Collect(ch chan<- prometheus.Metric) {
	snap, ok := c.get()
	if !ok {
		return
	}
	v := reflect.ValueOf(snap)
	for i, r := range c.rows {
		kind := prometheus.CounterValue
		if r.gauge {
			kind = prometheus.GaugeValue
		}
		var labels []string
		if r.label != "" {
			labels = []string{r.value}
		}
		n := v.FieldByIndex(c.index[i]).Int()
		ch <- prometheus.MustNewConstMetric(c.descs[i], kind, float64(n), labels...)
	}
}

// WatchModProxy reports p's counters as gocacheplugin_modproxy_*.
func (s *Server) WatchModProxy(p *modproxy.Proxy) {
	s.reg.MustRegister(newStatsCollector(always(p.Stats), modProxyTable))
}

// WatchRevProxy reports p's counters as gocacheplugin_revproxy_*.
func (s *Server) WatchRevProxy(p *revproxy.Proxy) {
	s.reg.MustRegister(newStatsCollector(always(p.Stats), revProxyTable))
}

// WatchPrefetch reports m's counters as gocacheplugin_prefetch_*.
func (s *Server) WatchPrefetch(m *gobuild.Manifests) {
	s.reg.MustRegister(newStatsCollector(always(m.Stats), prefetchTable))
}

// always adapts a snapshot function for newStatsCollector.
func always[T any](get func() T) func() (T, bool) {
	return func() (T, bool) { return get(), true }
}

// storeTable is the store's counters; its gauges (upload queue, breaker
// state) depend on whether there is a remote tier and are collected in
// metrics.Collect.
var storeTable = statTable{
	rows: []statRow{
		{field: "local_hits", name: "store_local_hits_total", help: "Objects found in the local tier."},
		{field: "local_misses", name: "store_local_misses_total", help: "Objects not found in the local tier."},
		{field: "corrupt_local", name: "store_corrupt_local_total", help: "Local objects removed for failing their check."},
		{field: "writes", name: "store_writes_total", help: "Objects written to the local tier."},
		{field: "bytes_written", name: "store_written_bytes_total", help: "Bytes written to the local tier."},
		{field: "remote_hits", name: "store_remote_hits_total", help: "Local misses faulted in from the remote tier."},
		{field: "remote_misses", name: "store_remote_misses_total", help: "Local misses the remote tier did not have."},
		{field: "remote_errors", name: "store_remote_errors_total", help: "Remote calls that failed (counted as misses)."},
		{field: "remote_skipped", name: "store_remote_skipped_total", help: "Remote calls skipped while the breaker was open."},
		{field: "corrupt_remote", name: "store_corrupt_remote_total", help: "Remote objects rejected by verification."},
		{field: "bytes_down", name: "store_remote_read_bytes_total", help: "Bytes faulted in from the remote tier."},
		{field: "uploads", name: "store_uploads_total", help: "Objects written to the remote tier."},
		{field: "uploads_found", name: "store_uploads_found_total", help: "Uploads skipped: already in the remote tier."},
		{field: "upload_errors", name: "store_upload_errors_total", help: "Uploads that failed."},
		{field: "uploads_dropped", name: "store_uploads_dropped_total", help: "Uploads not attempted (breaker open or drain deadline)."},
		{field: "bytes_up", name: "store_uploaded_bytes_total", help: "Bytes uploaded to the remote tier."},
	},
	off: []string{"upload_queue", "uploads_skipped", "trims", "trimmed", "trimmed_bytes"},
}

// storeCollector returns the collector of st's counters, or of nothing
// before the server watches a store.
func (s *Server) storeCollector() *statsCollector[store.Stats] {
	return newStatsCollector(func() (store.Stats, bool) {
		s.mu.Lock()
		st := s.store
		s.mu.Unlock()
		if st == nil {
			return store.Stats{}, false
		}
		return st.Stats(), true
	}, storeTable)
}

var modProxyTable = statTable{
	rows: []statRow{
		{field: "requests", name: "modproxy_requests_total", help: "Requests received by the module proxy."},
		{field: "misses", name: "modproxy_upstream_requests_total", help: "Files the module proxy asked of its upstream."},
		{field: "stale", name: "modproxy_stale_total", help: "Answers served stale because the upstream failed."},
		{field: "not_found", name: "modproxy_not_found_total", help: "404 and 410 answers."},
		{field: "bad_requests", name: "modproxy_bad_requests_total", help: "Invalid paths and methods."},
		{field: "errors", name: "modproxy_errors_total", help: "5xx answers (upstream failures, refusals)."},
		{field: "verified", name: "modproxy_verified_total", help: "Module files checked against the checksum database."},
		{field: "refused", name: "modproxy_refused_total", help: "Module files refused: they do not match the checksum database, or it could not answer."},
		{field: "bytes_fetched", name: "modproxy_upstream_bytes_total", help: "Bytes read from the upstream."},
	},
	// Hits and bytes served are the "modproxy" front end's
	// (gocacheplugin_lookups_total, gocacheplugin_served_bytes_total).
	off: []string{"hits", "fills", "bytes_served"},
}

const (
	rpHitsHelp  = "Reverse proxy responses served from the cache, by where they were found."
	rpFillsHelp = "Reverse proxy fetches from origins, by outcome."
	rpConnHelp  = "CONNECT requests, by what was done with them."
	rpBytesHelp = "Body bytes, by direction: served from the cache, fetched from origins."
)

var revProxyTable = statTable{
	rows: []statRow{
		{field: "hits_local", name: "revproxy_hits_total", help: rpHitsHelp, label: "source", value: "local"},
		{field: "hits_bucket", name: "revproxy_hits_total", help: rpHitsHelp, label: "source", value: "bucket"},
		{field: "hits_memory", name: "revproxy_hits_total", help: rpHitsHelp, label: "source", value: "memory"},
		{field: "misses", name: "revproxy_misses_total", help: "Reverse proxy requests fetched from the origin to be cached."},
		{field: "bypassed", name: "revproxy_bypassed_total", help: "Reverse proxy requests passed through (not GET, ranges not cached, ...)."},
		{field: "waits", name: "revproxy_waits_total", help: "Reverse proxy requests that waited for another's fetch of their URL."},
		{field: "stored_disk", name: "revproxy_fills_total", help: rpFillsHelp, label: "result", value: "stored_disk"},
		{field: "stored_memory", name: "revproxy_fills_total", help: rpFillsHelp, label: "result", value: "stored_memory"},
		{field: "uncacheable", name: "revproxy_fills_total", help: rpFillsHelp, label: "result", value: "uncacheable"},
		{field: "aborted", name: "revproxy_fills_total", help: rpFillsHelp, label: "result", value: "aborted"},
		{field: "store_errors", name: "revproxy_fills_total", help: rpFillsHelp, label: "result", value: "store_error"},
		{field: "upstream_errors", name: "revproxy_upstream_errors_total", help: "Reverse proxy requests answered 502 or 504."},
		{field: "bad_requests", name: "revproxy_bad_requests_total", help: "Malformed or refused reverse proxy requests."},
		{field: "intercepts", name: "revproxy_connects_total", help: rpConnHelp, label: "kind", value: "intercept"},
		{field: "tunnels", name: "revproxy_connects_total", help: rpConnHelp, label: "kind", value: "tunnel"},
		{field: "refused", name: "revproxy_connects_total", help: rpConnHelp, label: "kind", value: "refused"},
		{field: "refused_local", name: "revproxy_refused_local_total", help: "Reverse proxy connections refused because they would reach a local address (loopback, link-local, this host's)."},
		{field: "tls_errors", name: "revproxy_tls_errors_total", help: "Failed TLS handshakes with clients."},
		{field: "open_tunnels", name: "revproxy_open_tunnels", help: "Tunnels open now.", gauge: true},
		{field: "bytes_served", name: "revproxy_bytes_total", help: rpBytesHelp, label: "direction", value: "served"},
		{field: "bytes_fetched", name: "revproxy_bytes_total", help: rpBytesHelp, label: "direction", value: "fetched"},
		{field: "memory_bytes", name: "revproxy_memory_bytes", help: "Bytes of the responses held in the memory tier.", gauge: true},
		{field: "memory_entries", name: "revproxy_memory_entries", help: "Responses held in the memory tier.", gauge: true},
	},
}

var prefetchTable = statTable{
	rows: []statRow{
		{field: "manifests_read", name: "prefetch_manifests_read_total", help: "Manifests read at the start of builds."},
		{field: "manifests_written", name: "prefetch_manifests_written_total", help: "Manifests written at the close of builds."},
		{field: "manifests_kept", name: "prefetch_manifests_kept_total", help: "Manifests left in place at the close of builds that asked for much less than they list."},
		{field: "prefetched", name: "prefetch_objects_total", help: "Outputs prefetched."},
		{field: "prefetched_bytes", name: "prefetch_bytes_total", help: "Bytes of the outputs prefetched."},
		{field: "prefetch_used", name: "prefetch_used_total", help: "Prefetched outputs the go command asked for."},
		{field: "prefetch_used_bytes", name: "prefetch_used_bytes_total", help: "Bytes of the prefetched outputs the go command asked for."},
		{field: "prefetch_wasted", name: "prefetch_wasted_total", help: "Prefetched outputs not asked for by the close of their build."},
		{field: "prefetch_wasted_bytes", name: "prefetch_wasted_bytes_total", help: "Bytes of the prefetched outputs not asked for."},
		{field: "prefetch_waited", name: "prefetch_waited_total", help: "Requests that waited for a prefetch in flight."},
		{field: "pack_reads", name: "prefetch_pack_reads_total", help: "Ranged reads of packs."},
		{field: "prefetch_packed", name: "prefetch_packed_total", help: "Outputs prefetched from packs."},
		{field: "packs_written", name: "prefetch_packs_written_total", help: "Packs written at the close of builds."},
	},
	// In --metrics and the status page only.
	off: []string{"manifest_entries", "prefetch_local", "prefetch_stopped", "answered_early", "prefetch_records", "pack_bytes_written"},
}
