package daemon

import (
	"encoding/json"

	"github.com/go-cache-plugin/go-cache-plugin/lib/cacheprog"
)

// handOverMarker is the data of the message with which a client hands its
// standard input and output over to the daemon (as SCM_RIGHTS on a Unix
// socket; see [HandOver]). A stream client's first byte is never NUL.
const handOverMarker = "\x00go-cache-plugin hand-over\n"

// capsLine is the first line of every session, as [cacheprog.Server]
// writes it. On a Unix socket the daemon writes it before it knows whether
// the client streams or hands over (a stream client waits for it).
var capsLine = func() []byte {
	b, err := json.Marshal(cacheprog.Response{ID: 0, KnownCommands: []string{cacheprog.CmdGet, cacheprog.CmdPut, cacheprog.CmdClose}})
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}()

// skipLine drops everything written to it up to the end of the first line
// (the capabilities, which the daemon has sent already), then writes to w.
type skipLine struct {
	writeDeadliner
	skipped bool
}

func (s *skipLine) Write(p []byte) (int, error) {
	if s.skipped {
		return s.writeDeadliner.Write(p)
	}
	for i, c := range p {
		if c == '\n' {
			s.skipped = true
			n, err := s.writeDeadliner.Write(p[i+1:])
			return i + 1 + n, err
		}
	}
	return len(p), nil
}
