package ops

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAccess(t *testing.T) {
	s := New("test")
	var proxied []string
	s.HandleProxy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied = append(proxied, r.Header.Get("Proxy-Authorization"))
		w.WriteHeader(299)
	}))
	do := func(method, target string, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}

	// Without SetAccess: open, pprof served.
	if rec := do("GET", "/debug/pprof/"); rec.Code != 200 {
		t.Errorf("pprof by default: %d", rec.Code)
	}
	if rec := do("GET", "/metrics"); rec.Code != 200 {
		t.Errorf("/metrics without a token set: %d", rec.Code)
	}

	const tok = "s3cret-T0ken"
	s.SetAccess(Access{Token: tok})
	for _, c := range []struct {
		method, target string
		hdr            []string
		code           int
	}{
		{"GET", "/healthz", nil, 200},
		{"GET", "/metrics", nil, 401},
		{"GET", "/", nil, 401},
		{"GET", "/status.json", []string{"Authorization", "Bearer wrong"}, 401},
		{"GET", "/status.json", []string{"Authorization", "Bearer " + tok + "x"}, 401},
		{"GET", "/status.json", []string{"Authorization", "Bearer " + tok[:len(tok)-1]}, 401},
		{"GET", "/status.json", []string{"Proxy-Authorization", "Bearer " + tok}, 401}, // the wrong header for the listener
		{"GET", "/status.json", []string{"Authorization", "Bearer " + tok}, 200},
		{"GET", "/status.json", []string{"Authorization", "bearer  " + tok}, 200},
		{"GET", "/status.json", []string{"Authorization", basic("ci", tok)}, 200},
		{"GET", "/status.json", []string{"Authorization", basic(tok, "")}, 200},
		{"GET", "/status.json", []string{"Authorization", basic("ci", "nope")}, 401},
		{"GET", "/status.json", []string{"Authorization", "Basic !!!"}, 401},
		{"GET", "/status.json", []string{"Authorization", "Digest " + tok}, 401},
		{"POST", "/healthz", nil, 401},
		{"CONNECT", "registry.test:443", nil, 407},
		{"CONNECT", "registry.test:443", []string{"Authorization", "Bearer " + tok}, 407}, // the wrong header for a proxy
		{"CONNECT", "registry.test:443", []string{"Proxy-Authorization", basic("ci", "nope")}, 407},
		{"CONNECT", "registry.test:443", []string{"Proxy-Authorization", basic("ci", tok)}, 299},
		{"GET", "http://registry.test/x.tgz", nil, 407},
		{"GET", "http://registry.test/healthz", nil, 407},
		{"GET", "http://registry.test/x.tgz", []string{"Proxy-Authorization", "Bearer " + tok}, 299},
		{"GET", "/debug/pprof/", []string{"Authorization", "Bearer " + tok}, 404}, // pprof off
	} {
		rec := do(c.method, c.target, c.hdr...)
		if rec.Code != c.code {
			t.Errorf("%s %s %q: %d, want %d", c.method, c.target, c.hdr, rec.Code, c.code)
		}
		switch rec.Code {
		case 401:
			if rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", c.method, c.target)
			}
		case 407:
			if rec.Header().Get("Proxy-Authenticate") == "" {
				t.Errorf("%s %s: 407 without Proxy-Authenticate", c.method, c.target)
			}
		}
	}
	for _, v := range proxied {
		if v != "" {
			t.Errorf("the proxy handler saw Proxy-Authorization %q", v)
		}
	}

	s.SetAccess(Access{Pprof: true})
	if rec := do("GET", "/debug/pprof/"); rec.Code != 200 {
		t.Errorf("pprof on, no token: %d", rec.Code)
	}
}

func TestCheckToken(t *testing.T) {
	for tok, ok := range map[string]bool{"abc": true, "a-b_c.d~e+f/g=": true, "": false, "a b": false, "a\tb": false, "a\x7f": false, "a\nb": false} {
		if err := CheckToken(tok); (err == nil) != ok {
			t.Errorf("CheckToken(%q): %v", tok, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "127.1.2.3:1": true, "0.0.0.0:1": false, "[::]:1": false, "10.0.0.1:1": false} {
		ta, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := IsLoopback(ta); got != want {
			t.Errorf("IsLoopback(%s) = %v", addr, got)
		}
	}
}
