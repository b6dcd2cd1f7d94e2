// Command bench-replay measures a GOCACHEPROG program's hot path precisely:
// it records the protocol stream of a real go command session, then
// replays it against any GOCACHEPROG program, paced as the go command
// paces it, and reports how long the program took and how much CPU.
//
// Whole warm builds cannot show a small change on a shared machine: the
// build's own work dwarfs the cache's and varies more. A replay sends the
// cache program nothing but the session's requests.
//
// Record (bench-replay is the go command's GOCACHEPROG; it runs the real
// program and copies both directions, line by line, to the file):
//
//	GOCACHEPROG="bench-replay record -o /tmp/warm.stream -- go-cache-plugin --cache-dir=/tmp/dir" go build ./...
//
// Replay (against a warm directory: the one the recording was made with,
// or any that holds the same objects):
//
//	bench-replay replay -stream=/tmp/warm.stream -- go-cache-plugin --cache-dir=/tmp/dir
//
// The replay starts the program, waits for its first message, then sends
// the recorded requests in their order (a put with its body line), with at
// most -inflight requests awaiting their answer at once. The go command
// itself sends each request from the goroutine of the build action that
// needs it, so its requests in flight are bounded by the build's
// parallelism, -p, which defaults to the number of CPUs; so does -inflight.
// The recorded close is sent only once every other request has been
// answered, and the program must then exit. With -repeat=K the requests
// are sent K times over (renumbered) before the close, for a session long
// enough that the CPU time the operating system accounts in ticks is
// precise. It prints one line:
//
//	repeat=10 requests=11010 gets=10980 puts=30 errors=0 misses=30 inflight=2 startup=7.6ms total=344.7ms p50=40µs p99=192µs cpu=202.6ms user=82.7ms sys=119.9ms
//
// total runs from the first request sent to the answer to the last one
// before close; p50 and p99 are of the requests' latencies, each from its
// write to its answer; cpu is the program's user and system time over its
// whole life, from the operating system (ProcessState). startup is the
// wait for the first message. Errors are answers with an error; misses,
// answers that are misses (a warm replay should have none but those of the
// recording).
//
// A recorded stream replays against a directory holding the objects its
// gets found: the one it was recorded with, kept. Puts are replayed too, so
// the directory does not change between replays.
//
// The file holds one line per protocol line, "> " for what the go command
// sent and "< " for what the program answered. It is not part of
// go-cache-plugin; it lives under scripts/ for benchmarks.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "record":
		err = record(os.Args[2:])
	case "replay":
		err = replay(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-replay:", err)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  bench-replay record -o FILE -- PROGRAM [ARGS...]
  bench-replay replay -stream=FILE [-inflight=N] -- PROGRAM [ARGS...]`)
	os.Exit(2)
}

// command returns the program and arguments after the flags.
func command(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() == 0 {
		return nil, fmt.Errorf("%s: no program given after the flags", fs.Name())
	}
	return fs.Args(), nil
}

// start starts the program with pipes to its stdin and from its stdout;
// its stderr is ours.
func start(prog []string) (*exec.Cmd, io.WriteCloser, io.ReadCloser, error) {
	cmd := exec.Command(prog[0], prog[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, fmt.Errorf("start %s: %w", prog[0], err)
	}
	return cmd, in, out, nil
}

// record runs the program with this process's stdin and stdout, copying
// every line of both directions to the file.
func record(args []string) error {
	fs := flag.NewFlagSet("record", flag.ContinueOnError)
	out := fs.String("o", "", "file to write the stream to")
	prog, err := command(fs, args)
	if err != nil {
		return err
	}
	if *out == "" {
		return errors.New("record: -o is required")
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	rec := &recorder{w: bufio.NewWriterSize(f, 1<<20)}

	cmd, in, resp, err := start(prog)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() {
		errs[0] = rec.copy('>', in, os.Stdin)
		in.Close()
	})
	wg.Go(func() { errs[1] = rec.copy('<', os.Stdout, resp) })
	wg.Wait()
	werr := cmd.Wait()
	if err := rec.w.Flush(); err != nil {
		return fmt.Errorf("record: write %s: %w", *out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("record: write %s: %w", *out, err)
	}
	if werr != nil {
		return werr
	}
	return errors.Join(errs...)
}

// A recorder writes the lines of both directions to one file.
type recorder struct {
	mu sync.Mutex
	w  *bufio.Writer
}

// copy copies r to w line by line, recording each line with the prefix
// dir, until r ends.
func (rec *recorder) copy(dir byte, w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			rec.mu.Lock()
			rec.w.WriteByte(dir)
			rec.w.WriteByte(' ')
			rec.w.Write(line)
			if line[len(line)-1] != '\n' {
				rec.w.WriteByte('\n')
			}
			rec.mu.Unlock()
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// A request is one recorded request: its line and, for a put with a
// body, the body's line.
type request struct {
	id      int64
	command string
	data    []byte // the line or lines to send
	line    int    // length of the request's own line in data
}

// renumbered returns r with the ID id.
func (r request) renumbered(id int64) (request, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(r.data[:r.line], &fields); err != nil {
		return request{}, err
	}
	fields["ID"] = json.RawMessage(fmt.Sprint(id))
	line, err := json.Marshal(fields)
	if err != nil {
		return request{}, err
	}
	line = append(line, '\n')
	return request{id: id, command: r.command, data: append(line, r.data[r.line:]...), line: len(line)}, nil
}

// readStream reads the requests of a recorded stream.
func readStream(name string) ([]request, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var reqs []request
	bodyFor := -1 // index of the put whose body line comes next
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			break
		} else if err != nil && err != io.EOF {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(line) < 3 || line[1] != ' ' || line[0] != '>' && line[0] != '<' {
			return nil, fmt.Errorf("%s:%d: not a recorded line (want \"> \" or \"< \" and a protocol line)", name, n)
		}
		if line[0] == '<' {
			continue
		}
		msg := line[2:]
		if len(bytes.TrimSpace(msg)) == 0 {
			// The go command ends each request with an empty line:
			// send it along with the request it follows.
			if len(reqs) == 0 {
				return nil, fmt.Errorf("%s:%d: empty line before the first request", name, n)
			}
			reqs[len(reqs)-1].data = append(reqs[len(reqs)-1].data, msg...)
			continue
		}
		if bodyFor >= 0 {
			reqs[bodyFor].data = append(reqs[bodyFor].data, msg...)
			bodyFor = -1
			continue
		}
		var req struct {
			ID       int64
			Command  string
			BodySize int64
		}
		if err := json.Unmarshal(msg, &req); err != nil {
			return nil, fmt.Errorf("%s:%d: bad request: %v", name, n, err)
		}
		if req.Command == "" {
			return nil, fmt.Errorf("%s:%d: request %d has no command", name, n, req.ID)
		}
		reqs = append(reqs, request{id: req.ID, command: req.Command, data: slices.Clone(msg), line: len(msg)})
		if req.BodySize > 0 {
			bodyFor = len(reqs) - 1
		}
	}
	if bodyFor >= 0 {
		return nil, fmt.Errorf("%s: ends before the body of request %d", name, reqs[bodyFor].id)
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%s: no requests", name)
	}
	return reqs, nil
}

// replay sends a recorded stream's requests to the program and reports.
func replay(args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	stream := fs.String("stream", "", "recorded stream to replay")
	inflight := fs.Int("inflight", runtime.NumCPU(), "most requests awaiting an answer at once (the go command's -p default)")
	repeat := fs.Int("repeat", 1, "send the stream's requests this many times, renumbered, before the close")
	prog, err := command(fs, args)
	if err != nil {
		return err
	}
	if *stream == "" {
		return errors.New("replay: -stream is required")
	}
	if *repeat < 1 {
		return fmt.Errorf("replay: -repeat=%d: want at least 1", *repeat)
	}
	if *inflight < 1 {
		return fmt.Errorf("replay: -inflight=%d: want at least 1", *inflight)
	}
	reqs, err := readStream(*stream)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	var closeReq *request
	if last := &reqs[len(reqs)-1]; last.command == "close" {
		closeReq, reqs = last, reqs[:len(reqs)-1]
	}
	if *repeat > 1 {
		var maxID int64
		for _, r := range reqs {
			maxID = max(maxID, r.id)
		}
		if closeReq != nil {
			maxID = max(maxID, closeReq.id)
		}
		once := reqs
		for k := 1; k < *repeat; k++ {
			for _, r := range once {
				nr, err := r.renumbered(r.id + int64(k)*(maxID+1))
				if err != nil {
					return fmt.Errorf("replay: %s: request %d: %v", *stream, r.id, err)
				}
				reqs = append(reqs, nr)
			}
		}
	}
	sent := make(map[int64]int, len(reqs))
	for i, r := range reqs {
		if r.command == "close" {
			return fmt.Errorf("replay: %s: close (request %d) before the last request", *stream, r.id)
		}
		if _, dup := sent[r.id]; dup {
			return fmt.Errorf("replay: %s: request ID %d used twice", *stream, r.id)
		}
		sent[r.id] = i
	}

	begin := time.Now()
	cmd, in, out, err := start(prog)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer cmd.Process.Kill() // if we return early; a no-op after Wait

	responses := bufio.NewReaderSize(out, 64<<10)
	first, err := responses.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("replay: %s sent no first message: %v", prog[0], err)
	}
	var hello struct {
		ID            int64
		KnownCommands []string
	}
	if err := json.Unmarshal(first, &hello); err != nil || hello.ID != 0 || len(hello.KnownCommands) == 0 {
		return fmt.Errorf("replay: %s: first message %q is not the capabilities message", prog[0], bytes.TrimSpace(first))
	}
	startup := time.Since(begin)

	// The reader matches answers to requests; a slot of sem is held from
	// a request's write to its answer.
	sem := make(chan struct{}, *inflight)
	started := make([]time.Time, len(reqs))
	latency := make([]time.Duration, len(reqs))
	var mu sync.Mutex // guards started
	var errCount, misses int
	var readErr error           // why the reader stopped early
	dead := make(chan struct{}) // closed when the reader stops early
	allAnswered := make(chan struct{})
	closeAnswered := make(chan struct{})
	go func() {
		fail := func(err error) { readErr = err; close(dead) }
		left := len(reqs)
		for {
			line, err := responses.ReadBytes('\n')
			if err != nil {
				fail(fmt.Errorf("replay: reading answers (%d of %d requests outstanding): %v", left, len(reqs), err))
				return
			}
			now := time.Now()
			var res struct {
				ID   int64
				Err  string
				Miss bool
			}
			if err := json.Unmarshal(line, &res); err != nil {
				fail(fmt.Errorf("replay: bad answer %q: %v", bytes.TrimSpace(line), err))
				return
			}
			if closeReq != nil && res.ID == closeReq.id && left == 0 {
				close(closeAnswered)
				return
			}
			i, ok := sent[res.ID]
			mu.Lock()
			ok = ok && !started[i].IsZero() && latency[i] == 0
			if ok {
				latency[i] = max(now.Sub(started[i]), 1)
			}
			mu.Unlock()
			if !ok {
				fail(fmt.Errorf("replay: answer to request %d, which is not awaiting one", res.ID))
				return
			}
			if res.Err != "" {
				errCount++
			}
			if res.Miss {
				misses++
			}
			<-sem
			if left--; left == 0 {
				close(allAnswered)
			}
		}
	}()

	w := bufio.NewWriterSize(in, 64<<10)
	t0 := time.Now()
	for i, r := range reqs {
		select {
		case sem <- struct{}{}:
		case <-dead:
			return readErr
		}
		mu.Lock()
		started[i] = time.Now()
		mu.Unlock()
		w.Write(r.data)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("replay: writing request %d: %w", r.id, err)
		}
	}
	select {
	case <-allAnswered:
	case <-dead:
		return readErr
	}
	total := time.Since(t0)
	if closeReq != nil {
		w.Write(closeReq.data)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("replay: writing close: %w", err)
		}
		select {
		case <-closeAnswered:
		case <-dead:
			return readErr
		}
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("replay: %s: %w", prog[0], err)
	}

	var gets, puts int
	for _, r := range reqs {
		switch r.command {
		case "get":
			gets++
		case "put":
			puts++
		}
	}
	slices.Sort(latency)
	pct := func(p float64) time.Duration { return latency[int(p*float64(len(latency)-1))] }
	ps := cmd.ProcessState
	user, sys := ps.UserTime(), ps.SystemTime()
	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	fmt.Printf("repeat=%d requests=%d gets=%d puts=%d errors=%d misses=%d inflight=%d startup=%s total=%s p50=%s p99=%s cpu=%s user=%s sys=%s\n",
		*repeat, len(reqs), gets, puts, errCount, misses, *inflight, ms(startup), ms(total),
		pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), ms(user+sys), ms(user), ms(sys))
	return nil
}
