package ops

import (
	"net/http"
	"strings"
	"sync"
)

// rawMux is the listener's ServeMux, with path prefixes whose requests it
// hands over before the ServeMux cleans their paths. The ServeMux answers
// a path with dot segments or doubled slashes with a redirect to the
// cleaned path (so "/mod/../../etc/passwd" would be sent to "/etc/passwd");
// a front end under a raw prefix sees the path as the client sent it and
// can refuse it.
type rawMux struct {
	*http.ServeMux

	mu  sync.RWMutex
	raw map[string]http.Handler // by prefix
}

func newRawMux() *rawMux {
	return &rawMux{ServeMux: http.NewServeMux(), raw: map[string]http.Handler{}}
}

func (m *rawMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		m.mu.RLock()
		for prefix, h := range m.raw {
			if strings.HasPrefix(r.URL.Path, prefix) {
				m.mu.RUnlock()
				h.ServeHTTP(w, r)
				return
			}
		}
		m.mu.RUnlock()
	}
	m.ServeMux.ServeHTTP(w, r)
}

// HandleRaw mounts h on every path that starts with prefix ("/mod/"),
// as the client sent it: the listener does not clean the path or redirect
// first, so h must check it (the module proxy answers a dot segment with
// 400). Prefixes must not overlap one another.
func (s *Server) HandleRaw(prefix string, h http.Handler) {
	s.mux.mu.Lock()
	defer s.mux.mu.Unlock()
	s.mux.raw[prefix] = h
}
