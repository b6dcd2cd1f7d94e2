// Command bench-latency is a loopback HTTP proxy that adds a fixed delay to
// every request, for benchmarking the plugin against a distant bucket.
//
// It is a helper of scripts/bench-build.sh (section D):
//
//	bench-latency -target=http://127.0.0.1:9000 -delay=20ms
//
// It prints the proxy's URL ("http://127.0.0.1:<port>") on a line of its
// own on stdout, then forwards every request to target after the delay
// (internal/faultproxy in its Slow mode) until SIGINT or SIGTERM.
//
// It is not part of go-cache-plugin; it lives under scripts/ only for the
// benchmark script.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/faultproxy"
)

func main() {
	target := flag.String("target", "", "base URL to forward to")
	delay := flag.Duration("delay", 20*time.Millisecond, "delay added to every request")
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
	fmt.Println(p.URL)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	<-sigs
	p.Close()
	fmt.Fprintf(os.Stderr, "bench-latency: %d requests\n", p.Requests())
}
