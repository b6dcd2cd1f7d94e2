// Package ops is the daemon's HTTP operations surface: Prometheus metrics,
// a health check, the Go profiler and a status page a person can read at a
// glance. The module proxy and the reverse proxy mount onto the same
// listener (see [Server.Handle] and [Server.HandleProxy]).
//
// # Layout
//
//	/               status page: hit ratio and bytes served per front end,
//	                sessions, local and remote tier, uptime, version
//	/status.json    the same, as JSON
//	/metrics        Prometheus text exposition
//	/healthz        "ok" (200), or "shutting down" (503) once shutdown starts
//	/debug/pprof/   net/http/pprof (unless [Access] turns it off)
//
// # Access
//
// [Server.SetAccess] sets an optional token, which every request but
// /healthz must carry (401 without, 407 for proxy requests), and whether
// pprof is served; see [Access].
//
// # Metrics
//
// Every metric is named gocacheplugin_*. Per front end (label frontend,
// "build" for the build cache): lookups_total{result=hit|miss|error},
// served_bytes_total, stores_total{result=ok|error}, stored_bytes_total and
// request_duration_seconds{op=lookup|store} (a histogram). The store:
// store_*_total counters mirroring [store.Stats], store_upload_queue, and
// remote_breaker_state{state} (1 for the current state). The remote tier:
// remote_request_duration_seconds{op=get|put|exists,result=ok|not_found|error}.
// Sessions: sessions_live, sessions_accepted_total, sessions_closed_total,
// sessions_dropped_total{reason}. Also build_info{version,goversion},
// start_time_seconds, and the Go runtime and process collectors. With
// [Server.WatchModProxy], [Server.WatchRevProxy] and [Server.WatchPrefetch]:
// modproxy_*, revproxy_* and prefetch_* counters.
//
// The counters of the store and of those front ends are read from their
// Stats structs by one table-driven collector (statsmetrics.go), keyed by
// the structs' json tags: a new counter is a live atomic.Int64 field and a
// Stats field of the same name in its package (internal/counters copies
// one into the other and checks they pair up) and a row in its table, and
// a test fails on a field in neither the table nor the table's list of
// fields kept off /metrics.
//
// # Log format
//
// The package logs nothing itself; [Server.Serve] returns the listener's
// error to the caller.
package ops

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the HTTP operations surface. Create one with [New].
type Server struct {
	version string
	start   time.Time
	reg     *prometheus.Registry
	mux     *rawMux // an http.ServeMux, and HandleRaw's prefixes (rawpath.go)
	metrics *metrics

	mu        sync.Mutex
	frontEnds []*FrontEnd
	store     *store.Store
	sessions  func() daemon.Stats
	proxy     http.Handler
	access    Access // see SetAccess
	accessSet bool
	tokenSum  []byte // SHA-256 of access.Token, nil without one

	draining atomic.Bool
	httpSrv  *http.Server // set by New
}

// New returns a server reporting version (on the status page and in
// gocacheplugin_build_info).
func New(version string) *Server {
	s := &Server{
		version: version,
		start:   time.Now(),
		reg:     prometheus.NewRegistry(),
		mux:     newRawMux(),
	}
	s.metrics = newMetrics(s)
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.metrics,
		s.storeCollector(),
		s.metrics.frontDur,
		s.metrics.remoteDur,
	)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /{$}", s.statusPage)
	s.mux.HandleFunc("GET /status.json", s.statusJSON)
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	return s
}

// Handle mounts h on the listener at pattern (an [http.ServeMux] pattern,
// "/mod/" for the module proxy, say).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleProxy sends the requests of HTTP proxy clients to h: CONNECT
// requests and requests in absolute form ("GET http://host/path"). Without
// it they are served as any other request.
func (s *Server) HandleProxy(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proxy = h
}

// Registry is the Prometheus registry behind /metrics, for front ends that
// add metrics of their own.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// WatchStore reports st's metrics and state.
func (s *Server) WatchStore(st *store.Store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store = st
}

// WatchSessions reports the sessions stats returns (a daemon's Stats).
func (s *Server) WatchSessions(stats func() daemon.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = stats
}

// SetDraining marks the daemon as shutting down: /healthz fails from now on.
func (s *Server) SetDraining() { s.draining.Store(true) }

// ServeHTTP implements [http.Handler].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	proxy := s.proxy
	s.mu.Unlock()
	isProxy := proxy != nil && (r.Method == http.MethodConnect || r.URL.IsAbs())
	if !s.admit(w, r, isProxy) {
		return
	}
	if isProxy {
		proxy.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("shutting down\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

// ListenAddr resolves the --http address "[host]:port" (or a bare port):
// without a host it is the loopback address 127.0.0.1.
func ListenAddr(addr string) (string, error) {
	if _, err := strconv.Atoi(addr); err == nil {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", errors.New("bad port " + strconv.Quote(port))
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Listen listens on the --http address addr (see [ListenAddr]).
func Listen(addr string) (net.Listener, error) {
	a, err := ListenAddr(addr)
	if err != nil {
		return nil, errors.New("bad HTTP address " + strconv.Quote(addr) + ": " + err.Error())
	}
	return net.Listen("tcp", a)
}

// Serve serves HTTP on l until [Server.Shutdown]; then it returns nil.
func (s *Server) Serve(l net.Listener) error {
	if err := s.httpSrv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the listener and waits for requests in progress until ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.httpSrv.Shutdown(ctx) }

// goVersion is the toolchain that built the binary.
var goVersion = strings.TrimPrefix(runtime.Version(), "go")
