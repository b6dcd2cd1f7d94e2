// Command bench-latency is a loopback HTTP proxy that adds a fixed delay to
// every request, and optionally limits the bandwidth of the responses, for
// benchmarking the plugin against a distant bucket.
//
// It is a helper of scripts/bench-build.sh (section D):
//
//	bench-latency -target=http://127.0.0.1:9000 -delay=20ms
//	bench-latency -target=http://127.0.0.1:9000 -delay=20ms -rate=12.5M
//
// It prints the proxy's URL ("http://127.0.0.1:<port>") on a line of its
// own on stdout, then forwards every request to target after the delay
// (internal/faultproxy in its Slow mode) until SIGINT or SIGTERM.
//
// With -rate, the response bodies of all requests together, across all
// connections, are sent at no more than that many bytes per second, as over
// one shared network link: a plain decimal number, optionally followed by
// k, M or G for 1000-based multiples (-rate=12.5M is 12,500,000 bytes/s,
// about 100 Mbit/s); 0, the default, means unlimited. Each write of at most
// 64 KiB first reserves its transfer time on a shared clock, after the
// previous reservation, and is sent when that time has passed, so a body of
// n bytes on an idle link takes n/rate seconds. (The later writes of a body
// may start up to 5ms before now, so that the time between two writes of a
// body being sent alone does not add up.) Request bodies (uploads) and
// headers are not limited.
//
// It is not part of go-cache-plugin; it lives under scripts/ only for the
// benchmark script.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/faultproxy"
)

func main() {
	var rate byteRate
	target := flag.String("target", "", "base URL to forward to")
	delay := flag.Duration("delay", 20*time.Millisecond, "delay added to every request")
	flag.Var(&rate, "rate", "limit of the response bytes per second of all requests together: a decimal number\n"+
		"with an optional k, M or G suffix (1000-based), e.g. 12.5M; 0 means unlimited")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "bench-latency: -target is required")
		os.Exit(2)
	}
	p, err := faultproxy.New(*target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-latency:", err)
		os.Exit(1)
	}
	p.Set(faultproxy.Fault{Mode: faultproxy.Slow, Delay: *delay})
	url := p.URL
	var srv *http.Server
	if rate > 0 {
		// Serve the proxy's handler behind the limit on a listener of
		// our own; faultproxy's own listener stays unused.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-latency:", err)
			os.Exit(1)
		}
		url = "http://" + ln.Addr().String()
		lim := &limiter{rate: float64(rate)}
		srv = &http.Server{
			Handler:           lim.handler(p),
			ErrorLog:          log.New(io.Discard, "", 0),
			ReadHeaderTimeout: 30 * time.Second,
		}
		go srv.Serve(ln)
	}
	fmt.Println(url)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	<-sigs
	if srv != nil {
		srv.Close() // first, so that no handler waits on a client
	}
	p.Close()
	fmt.Fprintf(os.Stderr, "bench-latency: %d requests\n", p.Requests())
}

// byteRate is the value of -rate, in bytes per second.
type byteRate float64

func (r *byteRate) String() string { return strconv.FormatFloat(float64(*r), 'f', -1, 64) }

func (r *byteRate) Set(s string) error {
	num, mult := s, 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		num, mult = s[:len(s)-1], 1e3
	case strings.HasSuffix(s, "M"):
		num, mult = s[:len(s)-1], 1e6
	case strings.HasSuffix(s, "G"):
		num, mult = s[:len(s)-1], 1e9
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return errors.New("want a decimal number of bytes per second with an optional k, M or G suffix")
	}
	v *= mult
	if v != 0 && v < 1 {
		return errors.New("want 0 (unlimited) or at least 1 byte per second")
	}
	*r = byteRate(v)
	return nil
}

// maxChunk is the most a single write sends before waiting on the limiter
// again.
const maxChunk = 64 << 10

// slack is how far before now the reservation of a body's later chunk may
// start, if the link has been idle: the time its writer spent between two
// chunks, up to slack, counts as sending time.
const slack = 5 * time.Millisecond

// A limiter shares a rate of bytes per second between all writers: each
// chunk reserves its transfer time after the end of the previous
// reservation (or now, if the link is idle; or up to slack before now, for
// a body's later chunk).
type limiter struct {
	rate float64 // bytes per second

	mu   sync.Mutex
	next time.Time // end of the last reservation
}

// wait reserves the time to send n bytes and sleeps until it has passed,
// or until ctx ends. more says that the bytes continue a body.
func (l *limiter) wait(ctx context.Context, n int, more bool) error {
	d := time.Duration(float64(n) / l.rate * float64(time.Second))
	l.mu.Lock()
	now := time.Now()
	earliest := now
	if more {
		earliest = now.Add(-slack)
	}
	start := l.next
	if start.Before(earliest) {
		start = earliest
	}
	end := start.Add(d)
	l.next = end
	l.mu.Unlock()
	t := time.NewTimer(end.Sub(now))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handler wraps h so that the response bodies it writes go through l.
func (l *limiter) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&limitedWriter{ResponseWriter: w, lim: l, ctx: r.Context()}, r)
	})
}

// limitedWriter is an http.ResponseWriter whose body writes wait on a
// limiter. It hides the io.ReaderFrom of the writer it wraps, which would
// bypass the limit; flushing and the rest of http.ResponseController work
// through Flush and Unwrap.
type limitedWriter struct {
	http.ResponseWriter
	lim  *limiter
	ctx  context.Context
	more bool // some of the body was written
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), maxChunk)]
		if err := w.lim.wait(w.ctx, len(chunk), w.more); err != nil {
			return written, err
		}
		w.more = true
		n, err := w.ResponseWriter.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		b = b[len(chunk):]
	}
	return written, nil
}

func (w *limitedWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *limitedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
