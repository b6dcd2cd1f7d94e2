// Package cacheprog implements the wire protocol the go command speaks to a
// GOCACHEPROG program: JSON requests on the program's stdin, JSON responses on
// its stdout. It knows nothing about disks or buckets; a [Handler] supplied by
// the caller does the storage work.
//
// # Wire format
//
// The program first writes its capabilities:
//
//	{"ID":0,"KnownCommands":["get","put","close"]}
//
// The go command then writes one JSON [Request] per line. A "put" with
// BodySize > 0 is followed by the body as a JSON string holding standard
// base64, on a line of its own:
//
//	{"ID":7,"Command":"put","ActionID":"<base64>","OutputID":"<base64>","BodySize":5}
//	"aGVsbG8="
//
// Each request is answered by one [Response] carrying the same ID, in any
// order. After answering "close" the program exits.
//
// # Streaming and limits
//
// A request line may be at most [MaxRequestLine] bytes. Put bodies are never
// held in memory: the base64 text is decoded as it is read and handed to the
// handler as an [io.Reader], so memory does not grow with object size.
//
// # Errors
//
// A request that is well framed but wrong (an unknown command, an ID of the
// wrong length, a body whose length differs from BodySize, invalid base64)
// is answered with an error response and the session goes on. A stream that
// can no longer be framed (a line that is not JSON, a body cut off by end of
// input, a reused request ID) ends the session: [Server.Serve] waits for the
// requests in flight, closes the handler and returns an error naming the
// request.
//
// # Log format
//
// With [Server.Logf] set (the binary's --debug), the server logs one line
// per request as it is read and one per response as it is written; it logs
// nothing else. IDs and sizes are as on the wire, action and output IDs in
// hex (empty where the request has none):
//
//	request 7: put action=3f1c… output=9a02… size=5
//	response 7: miss=false size=5 err=""
//	response 9: close err=""
//
// Errors that end a session are not logged here: [Server.Serve] returns
// them, and its caller says them.
package cacheprog

import (
	"encoding/hex"
	"io"
	"time"
)

// Command names, as the go command sends them.
const (
	CmdGet   = "get"
	CmdPut   = "put"
	CmdClose = "close"
)

// IDSize is the length in bytes of action and output IDs (SHA-256 sums).
const IDSize = 32

// MaxRequestLine is the longest request line accepted, in bytes. Real
// requests are a few hundred bytes; the bound keeps a broken client from
// making the server buffer without limit.
const MaxRequestLine = 64 << 10

// Request is one message from the go command. The body of a put is not part
// of the JSON object; see the package documentation.
type Request struct {
	ID       int64
	Command  string
	ActionID []byte `json:",omitempty"`
	OutputID []byte `json:",omitempty"`
	BodySize int64  `json:",omitempty"`
}

// Response is one message to the go command.
type Response struct {
	ID            int64
	Err           string     `json:",omitempty"`
	KnownCommands []string   `json:",omitempty"`
	Miss          bool       `json:",omitempty"`
	OutputID      []byte     `json:",omitempty"`
	Size          int64      `json:",omitempty"`
	Time          *time.Time `json:",omitempty"`
	DiskPath      string     `json:",omitempty"`
}

// An Entry is a cache hit: the output stored for an action.
type Entry struct {
	OutputID []byte    // SHA-256 of the output
	Size     int64     // size of the output in bytes
	Time     time.Time // when the entry was put; the go command uses it to expire test results
	DiskPath string    // absolute path of a file holding the output
}

// A PutRequest asks the handler to store an output for an action.
type PutRequest struct {
	ActionID []byte
	OutputID []byte
	Size     int64

	// Body yields exactly Size bytes. It reads from the protocol stream, so
	// the handler must read it (or return) before the next request can be
	// read; an error from Body means the request was malformed and the put
	// must be abandoned.
	Body io.Reader
}

// ShortID is a short printable form of an ID for logs.
func ShortID(id []byte) string {
	if len(id) > 8 {
		id = id[:8]
	}
	return hex.EncodeToString(id)
}
