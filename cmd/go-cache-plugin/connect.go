package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
)

// connectConfig holds the flags of the connect command.
type connectConfig struct {
	Fallback bool

	envErrs []error
}

// connectEnv lists the environment variables of the connect command's flags.
var connectEnv = []envVar{
	{"fallback", "GOCACHE_CONNECT_FALLBACK"},
}

func (c *connectConfig) bind(fs *flag.FlagSet) {
	fs.BoolVar(&c.Fallback, "fallback", false, "if the daemon is unreachable or refuses this user, run the cache in-process (direct mode, global flags) instead of failing")
	c.envErrs = applyEnv(fs, connectEnv)
}

// dialTimeout bounds the connection to the daemon.
const dialTimeout = 5 * time.Second

func connectCommand(cfg *config) *command.C {
	cc := new(connectConfig)
	return &command.C{
		Name:  "connect",
		Usage: "[--fallback] <port|socket>",
		Help: `Bridge the go command to a daemon started with "serve".

The go command starts connect as its GOCACHEPROG program; connect copies the
protocol between its stdin and stdout and the daemon's port (on 127.0.0.1).
On a Unix socket it hands its stdin and stdout over to the daemon instead,
which then talks to the go command directly, with nothing copied between:

   export GOCACHEPROG="go-cache-plugin connect 5930"

If no daemon is listening, connect says so and fails, and so does the go
command. A daemon serves only its own user and root unless told otherwise
("serve --allow-users", "--allow-group"); if it refuses this user, or this
user could not read its cache, connect prints the daemon's reason and fails.
With --fallback it serves the cache itself instead, in direct mode with the
global flags (set --cache-dir and the S3 flags as the daemon has them), so
that a dead or refusing daemon never fails a build.`,
		SetFlags: func(_ *command.Env, fs *flag.FlagSet) { cc.bind(fs) },
		Run: func(env *command.Env) error {
			if len(cc.envErrs) > 0 {
				return env.Usagef("%v", cc.envErrs[0])
			}
			if len(env.Args) != 1 {
				return env.Usagef("connect takes one argument, the daemon's port or socket path")
			}
			addr, err := daemon.ParseAddr(env.Args[0])
			if err != nil {
				return env.Usagef("%v", err)
			}
			return failed(runConnect(env, cfg, cc, addr))
		},
	}
}

// runConnect bridges stdin and stdout to the daemon at addr.
func runConnect(env *command.Env, cfg *config, cc *connectConfig, addr daemon.Addr) error {
	ctx, cancel := context.WithTimeout(env.Context(), dialTimeout)
	conn, err := daemon.Dial(ctx, addr)
	cancel()
	if err != nil {
		if cc.Fallback {
			logger(cfg.Verbose)("%v; caching in-process (--fallback)", err)
			return runDirect(env, cfg)
		}
		if errors.Is(err, daemon.ErrNoDaemon) {
			arg := env.Args[0]
			return fmt.Errorf("%v\n\tstart one with \"go-cache-plugin serve --plugin=%s\", or add --fallback to cache in-process when it is down", err, arg)
		}
		return err
	}
	// The daemon's first line says whether it serves us. Nothing has been
	// read from the go command yet, so a fallback still has its requests.
	br := bufio.NewReader(conn)
	caps, err := daemon.ReadGreeting(br)
	if err != nil {
		conn.Close()
		if cc.Fallback {
			logger(true)("%v; caching in-process (--fallback)", err)
			return runDirect(env, cfg)
		}
		if errors.Is(err, daemon.ErrRefused) {
			return fmt.Errorf("%v\n\t(add --fallback to cache in-process when the daemon refuses)", err)
		}
		return fmt.Errorf("daemon at %s: %w", addr, err)
	}
	opts := sessionOptions(cfg)
	if uc, ok := conn.(*net.UnixConn); ok && daemon.CanHandOver(os.Stdin, os.Stdout) {
		return handOver(uc, br, os.Stdin, os.Stdout, opts)
	}
	if err := daemon.WriteOptions(conn, opts); err != nil {
		conn.Close()
		return err
	}
	if _, err := os.Stdout.Write(caps); err != nil {
		conn.Close()
		return fmt.Errorf("write to the go command: %w", err)
	}
	return bridge(conn, br, os.Stdin, os.Stdout)
}

// handOver passes in and out to the daemon, which serves the session on
// them itself, and waits for the daemon to end the session (r, the rest
// of conn, ends): nothing is copied through this process.
func handOver(conn *net.UnixConn, r io.Reader, in, out *os.File, opts daemon.SessionOptions) error {
	defer conn.Close()
	if err := daemon.HandOver(conn, in, out, opts); err != nil {
		return err
	}
	in.Close()
	out.Close()
	// The socket carries nothing more that matters; it ends with the session.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("connection to the daemon: %w", err)
	}
	return nil
}

// bridge copies in to conn and r (the rest of conn) to out. When in ends,
// it half-closes conn, so that the daemon sees the end of the requests and
// still sends the rest of its responses; it returns when the daemon closes
// its end.
func bridge(conn net.Conn, r io.Reader, in io.Reader, out io.Writer) error {
	defer conn.Close()
	go func() {
		copyStream(conn, in)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	if err := copyStream(out, r); err != nil {
		return fmt.Errorf("connection to the daemon: %w", err)
	}
	return nil
}

// copyStream copies r to w until r ends, writing whatever each read
// returns at once: the protocol is request and response, so nothing may
// wait in a buffer. (It is io.Copy without the ReaderFrom and WriterTo
// paths, whose splicing is not made for a pipe at one end and a socket at
// the other.)
func copyStream(w io.Writer, r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
