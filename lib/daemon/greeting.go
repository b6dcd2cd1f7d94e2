package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// refusalPrefix starts the line a daemon sends, in place of the
// capabilities, to a client it does not serve; JSON follows, then a
// newline. Like the client's own markers it starts with a NUL byte, which
// the capabilities line (JSON) never does.
const refusalPrefix = "\x00go-cache-plugin refused "

// maxGreeting bounds the first line a client reads from the daemon.
const maxGreeting = 4 << 10

// refusal is the JSON of a refusal line.
type refusal struct {
	Reason string `json:"reason"`
}

// refusalLine is the line that refuses a client for reason.
func refusalLine(reason string) []byte {
	if len(reason) > maxGreeting/2 {
		reason = reason[:maxGreeting/2] + "..."
	}
	js, _ := json.Marshal(refusal{Reason: reason}) // cannot fail on a string
	return append(append([]byte(refusalPrefix), js...), '\n')
}

// ErrRefused marks the error of a client the daemon does not serve.
var ErrRefused = errors.New("the go-cache-plugin daemon refused this client")

// A RefusedError is a daemon's refusal to serve a client, with the
// daemon's reason.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return ErrRefused.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// ReadGreeting reads the daemon's first line from r, which a client must
// do before it sends anything or hands its files over: the capabilities
// line, which it returns (with its newline) for the client to pass on to
// the go command, or a refusal, which it returns as a [*RefusedError].
// A daemon that hangs up first, or sends more than a line's worth
// without a newline, is an error too.
func ReadGreeting(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) && len(line) <= maxGreeting {
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("the daemon's first line is longer than %d bytes", maxGreeting)
		}
		if len(line) == 0 {
			return nil, fmt.Errorf("the daemon hung up before its first line: %w", err)
		}
		return nil, fmt.Errorf("the daemon's first line %.60q is cut off: %w", line, err)
	}
	js, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte{'\n'}), []byte(refusalPrefix))
	if !ok {
		return line, nil
	}
	var rf refusal
	if err := json.Unmarshal(js, &rf); err != nil || rf.Reason == "" {
		return nil, &RefusedError{Reason: fmt.Sprintf("(malformed refusal %.60q)", js)}
	}
	return nil, &RefusedError{Reason: rf.Reason}
}
