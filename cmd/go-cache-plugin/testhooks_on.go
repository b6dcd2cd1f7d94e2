//go:build testhooks

package main

import (
	"context"
	"net"
	"os"

	"github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"
)

// revProxyTestDialEnv names the IP address every connection to a target's
// origin goes to (keeping the port), so that the end-to-end tests can use
// made-up host names for their local origin: the daemon resolves target
// names itself, and nothing short of editing /etc/hosts makes such names
// resolve to loopback. These connections bypass --revproxy-allow-local;
// tunnels are not affected.
//
// This file is built only with -tags testhooks, which the cmd tests' own
// build (TestMain) sets and no release does: a shipped binary ignores the
// variable (TestShippedBinaryHasNoTestHooks).
const revProxyTestDialEnv = "GOCACHE_REVPROXY_TEST_ONLY_DIAL"

func applyRevProxyTestHooks(rc *revproxy.Config, logf func(string, ...any)) {
	ip := os.Getenv(revProxyTestDialEnv)
	if ip == "" {
		return
	}
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(ip, port)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	logf("revproxy: TEST ONLY: every origin connection goes to %s (%s is set)", ip, revProxyTestDialEnv)
}
