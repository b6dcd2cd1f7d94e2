package modproxy

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/modproxytest"
)

// benchEnv is a warm proxy holding example.com/big, whose zip is about
// 1 MiB (incompressible), and a client that keeps its connections.
func benchEnv(b *testing.B) (*testEnv, *http.Client) {
	b.Helper()
	data := make([]byte, 1<<20)
	rand.Read(data)
	mods := append(modproxytest.ExampleModules(), modproxytest.Module{Path: "example.com/big", Version: "v1.0.0", Files: map[string]string{
		"go.mod":   "module example.com/big\n\ngo 1.21\n",
		"big.go":   "package big\n",
		"data.bin": string(data),
	}})
	e := newEnv(b, modproxytest.Start(b, mods...), nil, func(c *Config) { c.Debugf = nil })
	e.mustGet(b, "/example.com/a/@v/v1.0.0.info", "")
	if r := e.mustGet(b, "/example.com/big/@v/v1.0.0.zip", ""); len(r.body) < 1<<20 {
		b.Fatalf("big zip: %d bytes", len(r.body))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	b.Cleanup(tr.CloseIdleConnections)
	return e, &http.Client{Transport: tr}
}

func fetch(c *http.Client, url string) (int64, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return n, err
}

// benchLatency requests path b.N times, one at a time, and reports the
// median and 99th percentile latency.
func benchLatency(b *testing.B, path string) {
	e, c := benchEnv(b)
	url := e.url + path
	if _, err := fetch(c, url); err != nil { // warm the connection
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	var size int64
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		n, err := fetch(c, url)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		size = n
	}
	b.StopTimer()
	b.SetBytes(size)
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkInfoHit is the latency of a cached .info over loopback.
func BenchmarkInfoHit(b *testing.B) { benchLatency(b, "/example.com/a/@v/v1.0.0.info") }

// BenchmarkZip1MiBHit is the latency of a cached 1 MiB zip over loopback.
func BenchmarkZip1MiBHit(b *testing.B) { benchLatency(b, "/example.com/big/@v/v1.0.0.zip") }

// benchConcurrent runs b.N requests for path from 32 clients at once and
// reports requests per second.
func benchConcurrent(b *testing.B, path string) {
	e, c := benchEnv(b)
	url := e.url + path
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := fetch(c, url); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/d.Seconds(), "req/s")
}

// BenchmarkInfoHit32 is the throughput of cached .info requests from 32
// concurrent clients.
func BenchmarkInfoHit32(b *testing.B) { benchConcurrent(b, "/example.com/a/@v/v1.0.0.info") }

// BenchmarkZip1MiBHit32 is the throughput of cached 1 MiB zips from 32
// concurrent clients.
func BenchmarkZip1MiBHit32(b *testing.B) { benchConcurrent(b, "/example.com/big/@v/v1.0.0.zip") }
