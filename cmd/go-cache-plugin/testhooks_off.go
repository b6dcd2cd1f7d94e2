//go:build !testhooks

package main

import "github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"

// applyRevProxyTestHooks does nothing: the hooks of testhooks_on.go exist
// only in the binary the cmd tests build with -tags testhooks.
func applyRevProxyTestHooks(*revproxy.Config, func(string, ...any)) {}
