package ops

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// Access is who may use the listener and what it shows.
type Access struct {
	// Token, if set, guards every request but GET /healthz. Requests to
	// the listener carry it as "Authorization: Bearer <token>", or Basic
	// with the token as password (or as user name, with no password).
	// Proxy requests (CONNECT, absolute form) carry it the same way in
	// Proxy-Authorization, which is what clients send for a proxy URL
	// "http://user:<token>@host:port". Without it: 401, or 407 for proxy
	// requests. Tokens are compared in constant time.
	Token string
	// Pprof serves /debug/pprof/; without it those paths are 404.
	Pprof bool
}

// SetAccess sets who may use the listener and what it shows. Without a
// call, there is no token and pprof is served.
func (s *Server) SetAccess(a Access) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access = a
	s.accessSet = true
	if a.Token != "" {
		sum := sha256.Sum256([]byte(a.Token))
		s.tokenSum = sum[:]
	} else {
		s.tokenSum = nil
	}
}

// CheckToken reports what is wrong with tok as a token: it must be
// non-empty and printable, without spaces (it travels in headers and in
// proxy URLs).
func CheckToken(tok string) error {
	if tok == "" {
		return errors.New("empty token")
	}
	for _, r := range tok {
		if r <= ' ' || r == 0x7f {
			return errors.New("the token holds a space or a control character")
		}
	}
	return nil
}

// ReadTokenFile reads a token from file: its content, less surrounding
// white space.
func ReadTokenFile(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read the token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %v", file, err)
	}
	return tok, nil
}

// IsLoopback reports whether addr, a listener's address, accepts only
// connections from this host.
func IsLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// admit checks r against the access settings; if it may not pass, it
// answers it and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, proxy bool) bool {
	s.mu.Lock()
	a, sum, set := s.access, s.tokenSum, s.accessSet
	s.mu.Unlock()
	if !proxy && set && !a.Pprof && strings.HasPrefix(r.URL.Path, "/debug/pprof") {
		http.Error(w, "pprof is off on this listener (it is reachable beyond this host); --http-pprof turns it on", http.StatusNotFound)
		return false
	}
	if sum == nil {
		return true
	}
	if !proxy && r.Method == http.MethodGet && r.URL.Path == "/healthz" {
		return true
	}
	header := "Authorization"
	if proxy {
		header = "Proxy-Authorization"
	}
	ok := false
	for _, v := range r.Header.Values(header) {
		if tokenMatches(v, sum) {
			ok = true
		}
	}
	if proxy {
		r.Header.Del("Proxy-Authorization") // never passed on
	}
	if ok {
		return true
	}
	if proxy {
		w.Header().Set("Proxy-Authenticate", `Basic realm="go-cache-plugin"`)
		http.Error(w, "go-cache-plugin: this proxy needs a token: Proxy-Authorization: Bearer <token>, or a proxy URL http://user:<token>@host:port", http.StatusProxyAuthRequired)
		return false
	}
	w.Header().Add("WWW-Authenticate", `Bearer realm="go-cache-plugin"`)
	w.Header().Add("WWW-Authenticate", `Basic realm="go-cache-plugin"`)
	http.Error(w, "go-cache-plugin: this listener needs a token: Authorization: Bearer <token>", http.StatusUnauthorized)
	return false
}

// tokenMatches reports whether the credentials of an Authorization or
// Proxy-Authorization value v are the token whose SHA-256 is sum. The
// digests are compared in constant time, so neither the token's length
// nor its content leaks through timing.
func tokenMatches(v string, sum []byte) bool {
	scheme, cred, _ := strings.Cut(strings.TrimSpace(v), " ")
	cred = strings.TrimSpace(cred)
	var got string
	switch strings.ToLower(scheme) {
	case "bearer":
		got = cred
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return false
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		got = pass
		if pass == "" {
			got = user
		}
	default:
		return false
	}
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], sum) == 1
}
