package cacheprog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// A Handler does the storage work behind a [Server]. Its methods are called
// concurrently, up to the server's concurrency limit.
type Handler interface {
	// Get reports the entry stored for actionID. A miss is (Entry{}, false,
	// nil); an error fails the go command's build, so it is for local
	// faults only.
	Get(ctx context.Context, actionID []byte) (Entry, bool, error)

	// Put stores req.Body as the output for req.ActionID and reports the
	// path of a file holding it. See [PutRequest] for how Body must be read.
	Put(ctx context.Context, req PutRequest) (diskPath string, err error)

	// Close is called once, after the last request of the session has been
	// answered (but before the reply to close), to flush and release
	// resources.
	Close(ctx context.Context) error
}

// A FastGetter is a [Handler] that can answer some gets at once, without
// blocking (from a local disk, say). The server calls GetFast on the
// goroutine that reads requests and answers there, saving the hand-off to a
// handler goroutine on the hot path of a build; what GetFast cannot answer
// goes to Get as usual.
type FastGetter interface {
	Handler

	// GetFast reports whether it could answer the get for actionID
	// without blocking (answered) and, if so, whether the action was found
	// and its entry.
	GetFast(actionID []byte) (e Entry, found, answered bool)
}

// ErrNoClose is returned by [Server.Serve] when the input ended without a
// close request (the client went away).
var ErrNoClose = errors.New("input ended without a close request")

// Server serves the cache-prog protocol for one session.
type Server struct {
	Handler Handler

	// MaxConcurrency bounds the requests handled at once; if zero,
	// runtime.NumCPU() is used.
	MaxConcurrency int

	// Logf, if set, receives one line per request and response.
	Logf func(format string, args ...any)
}

// session is the state of one call to Serve.
type session struct {
	srv  *Server
	ctx  context.Context
	out  *responseWriter
	fast FastGetter // nil if the handler is not one
	sem  chan struct{}
	wg   sync.WaitGroup
	busy atomic.Int64 // dispatched requests not yet answered

	mu       sync.Mutex
	inFlight map[int64]bool

	lastRead int64 // ID of the last request read, for error messages
}

// Serve runs one protocol session: it advertises the known commands on out,
// reads requests from in until a close request or the end of input, and
// answers each on out. It returns nil after answering close, ErrNoClose if
// the input ended first, and otherwise an error describing why the stream
// could not be read. In every case, requests in flight are answered (as far
// as out allows) and the handler is closed before Serve returns.
func (s *Server) Serve(ctx context.Context, in io.Reader, out io.Writer) error {
	n := s.MaxConcurrency
	if n <= 0 {
		n = runtime.NumCPU()
	}
	ss := &session{
		srv:      s,
		ctx:      ctx,
		out:      &responseWriter{w: out},
		sem:      make(chan struct{}, n),
		inFlight: make(map[int64]bool),
	}
	ss.fast, _ = s.Handler.(FastGetter)

	ss.out.write(&Response{ID: 0, KnownCommands: []string{CmdGet, CmdPut, CmdClose}})
	closeReq, readErr := ss.readLoop(bufio.NewReaderSize(in, MaxRequestLine))
	ss.wg.Wait()

	herr := s.Handler.Close(ctx)
	if closeReq != nil {
		rsp := &Response{ID: closeReq.ID}
		if herr != nil {
			rsp.Err = herr.Error()
		}
		s.logf("response %d: close err=%q", rsp.ID, rsp.Err)
		ss.out.write(rsp)
	}
	werr := ss.out.error()
	switch {
	case readErr != nil:
		return readErr
	case herr != nil:
		return fmt.Errorf("close: %w", herr)
	case werr != nil:
		return fmt.Errorf("write responses: %w", werr)
	case closeReq == nil:
		return ErrNoClose
	}
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// responseWriter writes responses, one at a time, each flushed at once:
// the go command waits for each answer, so latency matters more than
// batching. After a write error it discards further responses, so that
// handlers never block on a dead client, and remembers the error.
type responseWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	err error
}

func (rw *responseWriter) write(rsp *Response) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil {
		return
	}
	rw.buf = appendResponse(rw.buf[:0], rsp)
	_, rw.err = rw.w.Write(rw.buf)
}

func (rw *responseWriter) error() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.err
}

// readLoop reads requests and dispatches them until close (returned), the
// end of input (nil, nil) or a framing error.
func (ss *session) readLoop(br *bufio.Reader) (*Request, error) {
	for {
		line, err := readLine(br)
		if err == io.EOF {
			return nil, nil
		} else if err != nil {
			return nil, fmt.Errorf("after request %d: %w", ss.lastRead, err)
		}
		req := new(Request)
		if err := json.Unmarshal(line, req); err != nil {
			return nil, fmt.Errorf("malformed request after request %d: %v: %.80q", ss.lastRead, err, line)
		}
		if req.ID <= 0 {
			return nil, fmt.Errorf("malformed request %d: IDs must be positive", req.ID)
		}
		ss.lastRead = req.ID
		if !ss.begin(req.ID) {
			return nil, fmt.Errorf("malformed request %d: ID already in flight", req.ID)
		}
		if ss.srv.Logf != nil {
			ss.srv.Logf("request %d: %s action=%s output=%s size=%d", req.ID, req.Command,
				ShortID(req.ActionID), ShortID(req.OutputID), req.BodySize)
		}

		switch req.Command {
		case CmdClose:
			ss.end(req.ID)
			return req, nil
		case CmdGet:
			if err := checkID("ActionID", req.ActionID); err != nil {
				ss.reject(req, err)
				continue
			}
			// Answer inline only when nothing earlier is still running,
			// so that a get never overtakes the put it might depend on.
			if ss.fast != nil && ss.busy.Load() == 0 {
				if e, found, answered := ss.fast.GetFast(req.ActionID); answered {
					if found {
						ss.respond(hit(req.ID, e))
					} else {
						ss.respond(&Response{ID: req.ID, Miss: true})
					}
					continue
				}
			}
			ss.dispatch(func() *Response { return ss.get(req) })
		case CmdPut:
			if err := ss.put(br, req); err != nil {
				return nil, err
			}
		default:
			err := fmt.Errorf("unknown command %q", req.Command)
			if req.BodySize > 0 {
				// Keep the stream in step: a body follows.
				if ferr := ss.skipBody(br, req, err); ferr != nil {
					return nil, ferr
				}
				continue
			}
			ss.reject(req, err)
		}
	}
}

// readLine returns the next non-blank line, without its newline.
func readLine(br *bufio.Reader) ([]byte, error) {
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("malformed request: line longer than %d bytes", MaxRequestLine)
		}
		if err == io.EOF && len(bytes.TrimSpace(line)) > 0 {
			err = nil // a last line without its newline
		}
		if err != nil {
			return nil, err
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return line, nil
		}
	}
}

// put validates a put request, hands its body to the handler and waits
// until the body has been consumed from the stream. It returns an error only
// if the stream is out of step.
func (ss *session) put(br *bufio.Reader, req *Request) error {
	err := checkID("ActionID", req.ActionID)
	if err == nil {
		err = checkID("OutputID", req.OutputID)
	}
	if err == nil && req.BodySize < 0 {
		err = fmt.Errorf("negative BodySize %d", req.BodySize)
	}
	if err != nil {
		if req.BodySize > 0 {
			return ss.skipBody(br, req, err)
		}
		ss.reject(req, err)
		return nil
	}

	body := newBodyReader(br, req.ID, req.BodySize)
	if req.BodySize == 0 {
		body.finish(nil)
	}
	ss.dispatch(func() *Response {
		path, err := ss.srv.Handler.Put(ss.ctx, PutRequest{
			ActionID: req.ActionID,
			OutputID: req.OutputID,
			Size:     req.BodySize,
			Body:     body,
		})
		// Whatever the handler did, the body must leave the stream, and a
		// malformed body fails the request.
		if berr := body.drain(); berr != nil {
			err = berr
		}
		rsp := &Response{ID: req.ID, DiskPath: path}
		if err != nil {
			rsp = &Response{ID: req.ID, Err: fmt.Sprintf("put %s: %v", ShortID(req.ActionID), err)}
		}
		return rsp
	})
	<-body.released
	if body.fatal() {
		return body.err
	}
	return nil
}

// skipBody reads and discards the body of a request that is being rejected
// with err, then answers it.
func (ss *session) skipBody(br *bufio.Reader, req *Request, err error) error {
	body := newBodyReader(br, req.ID, req.BodySize)
	if berr := body.drain(); body.fatal() {
		ss.end(req.ID)
		return berr
	}
	ss.reject(req, err)
	return nil
}

// get answers a get request.
func (ss *session) get(req *Request) *Response {
	e, ok, err := ss.srv.Handler.Get(ss.ctx, req.ActionID)
	switch {
	case err != nil:
		return &Response{ID: req.ID, Err: fmt.Sprintf("get %s: %v", ShortID(req.ActionID), err)}
	case !ok:
		return &Response{ID: req.ID, Miss: true}
	}
	return hit(req.ID, e)
}

// hit is the response for a get that found e.
func hit(id int64, e Entry) *Response {
	t := e.Time
	return &Response{ID: id, OutputID: e.OutputID, Size: e.Size, Time: &t, DiskPath: e.DiskPath}
}

// dispatch runs fn on its own goroutine once a concurrency slot is free and
// queues its response.
func (ss *session) dispatch(fn func() *Response) {
	ss.sem <- struct{}{}
	ss.wg.Add(1)
	ss.busy.Add(1)
	go func() {
		defer ss.wg.Done()
		rsp := fn()
		ss.respond(rsp)
		ss.busy.Add(-1)
		<-ss.sem
	}()
}

// reject answers req with an error at once.
func (ss *session) reject(req *Request, err error) {
	ss.respond(&Response{ID: req.ID, Err: fmt.Sprintf("request %d (%s): %v", req.ID, req.Command, err)})
}

func (ss *session) respond(rsp *Response) {
	ss.end(rsp.ID)
	if ss.srv.Logf != nil {
		ss.srv.Logf("response %d: miss=%v size=%d err=%q", rsp.ID, rsp.Miss, rsp.Size, rsp.Err)
	}
	ss.out.write(rsp)
}

func (ss *session) begin(id int64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.inFlight[id] {
		return false
	}
	ss.inFlight[id] = true
	return true
}

func (ss *session) end(id int64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.inFlight, id)
}

func checkID(name string, id []byte) error {
	switch len(id) {
	case IDSize:
		return nil
	case 0:
		return fmt.Errorf("missing %s", name)
	}
	return fmt.Errorf("%s is %d bytes, want %d", name, len(id), IDSize)
}
