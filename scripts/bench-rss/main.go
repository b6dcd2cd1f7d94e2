// Command bench-rss runs a command and records its peak resident set size.
//
// It is a helper of scripts/bench-build.sh, used as the first word of
// GOCACHEPROG so that the go command starts the plugin through it:
//
//	GOCACHEPROG="bench-rss OUTFILE go-cache-plugin --cache-dir=..."
//
// The command inherits stdin, stdout and stderr (the cache-prog protocol
// passes through untouched). When it exits, bench-rss appends one line
//
//	maxrss_kib=<peak RSS in KiB> wall_s=<seconds> user_s=<s> sys_s=<s> exit=<status>
//
// to OUTFILE and exits with the command's status. The peak comes from the
// kernel's accounting of the waited-for child (getrusage/wait4 ru_maxrss),
// so no sampling is involved and short peaks are not missed.
//
// It is not part of go-cache-plugin; it lives under scripts/ only for the
// benchmark script.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: bench-rss OUTFILE COMMAND [ARGS...]")
		os.Exit(2)
	}
	out, args := os.Args[1], os.Args[2:]

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr

	// Pass termination signals on to the command rather than dying first.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)

	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "bench-rss: %v\n", err)
		os.Exit(127)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)

	code := 0
	var xerr *exec.ExitError
	if errors.As(err, &xerr) {
		code = xerr.ExitCode()
		if code < 0 {
			code = 1 // killed by a signal
		}
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "bench-rss: %v\n", err)
		code = 1
	}

	var maxrss int64 = -1
	var user, sys time.Duration
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			maxrss = int64(ru.Maxrss) // KiB on Linux
		}
		user, sys = ps.UserTime(), ps.SystemTime()
	}
	line := fmt.Sprintf("maxrss_kib=%d wall_s=%.3f user_s=%.3f sys_s=%.3f exit=%d\n",
		maxrss, wall.Seconds(), user.Seconds(), sys.Seconds(), code)
	f, ferr := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if ferr == nil {
		_, ferr = f.WriteString(line)
		if cerr := f.Close(); ferr == nil {
			ferr = cerr
		}
	}
	if ferr != nil {
		fmt.Fprintf(os.Stderr, "bench-rss: record: %v\n", ferr)
	}
	os.Exit(code)
}
