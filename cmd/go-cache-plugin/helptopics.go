package main

import (
	"strings"

	"github.com/creachadair/command"
)

// helpTopics are the topics of "help": this tool's, and the reference
// tool's names for the same subjects, so that its users find them.
func helpTopics() []command.HelpTopic {
	return []command.HelpTopic{
		{Name: "environment", Help: ""}, // filled in by main, once the flags exist
		{Name: "configure", Help: configureHelp},
		{Name: "direct-mode", Help: directModeHelp},
		{Name: "serve-mode", Help: serveModeHelp},
		{Name: "debug", Help: debugHelp},            // debug.go
		{Name: "modproxy", Help: modProxyHelp},      // modproxy.go
		{Name: "module-proxy", Help: modProxyHelp},  // the reference tool's name
		{Name: "revproxy", Help: revProxyHelp},      // revproxy.go
		{Name: "reverse-proxy", Help: revProxyHelp}, // the reference tool's name
	}
}

// refuseUnknownTopics makes "help <topic>" a usage error (exit status 2,
// a message naming the topics) when the topic is neither a help topic nor
// a command. The command package prints a note and succeeds instead.
func refuseUnknownTopics(root *command.C) {
	help := root.FindSubcommand("help")
	run := help.Run
	help.Run = func(env *command.Env) error {
		args := env.Args
		if len(args) > 0 && (args[0] == "-a" || args[0] == "-all" || args[0] == "--all") {
			args = args[1:]
		}
		if len(args) > 0 && !findPath(root, args) && !findPath(help, args) {
			var names []string
			for _, c := range help.Commands {
				names = append(names, c.Name)
			}
			for _, c := range root.Commands {
				if c != help && !c.Unlisted {
					names = append(names, c.Name)
				}
			}
			return env.Usagef("unknown help topic %q; topics and commands: %s", strings.Join(args, " "), strings.Join(names, ", "))
		}
		return run(env)
	}
}

// findPath reports whether args name a chain of subcommands under c.
func findPath(c *command.C, args []string) bool {
	for _, a := range args {
		if c = c.FindSubcommand(a); c == nil {
			return false
		}
	}
	return true
}

// configureHelp is the "help configure" topic.
const configureHelp = `How to configure go-cache-plugin.

Every setting is a flag, and every flag has an environment variable that
sets its default (GOCACHE_*, the reference tool's names where it has one;
see "help environment"). A flag on the command line wins over its variable.

With no flags at all the cache works: the local directory is
<user cache dir>/go-cache-plugin and there is no bucket. --bucket (or
GOCACHE_S3_BUCKET) adds a shared S3 bucket; the S3 client takes its
credentials and region from the AWS SDK's usual sources (AWS_* variables,
~/.aws, the instance's role), and asks the bucket for its region when
--region is not given.

There are two ways to run it: the go command starts it for each build
("help direct-mode"), or one daemon serves every build on the host
("help serve-mode"). The daemon can also serve a Go module proxy
("help modproxy") and a caching HTTP(S) proxy ("help revproxy").`

// directModeHelp is the "help direct-mode" topic.
const directModeHelp = `Direct mode: the go command runs go-cache-plugin for each build.

   export GOCACHEPROG="go-cache-plugin --cache-dir=/var/cache/gocache --bucket=my-bucket"
   go build ./...

or, with the settings in the environment:

   export GOCACHE_DIR=/var/cache/gocache GOCACHE_S3_BUCKET=my-bucket
   export GOCACHEPROG=go-cache-plugin

The plugin talks the cache-prog protocol on stdin and stdout. At the end of
the build it drains pending uploads for --drain-timeout; --metrics prints
a summary. Unlike the reference tool, neither --cache-dir nor --bucket is
required: the default directory is under the user's cache directory, and
without a bucket the cache is local only.`

// serveModeHelp is the "help serve-mode" topic.
const serveModeHelp = `Serve mode: one daemon shared by every go command on the host.

   go-cache-plugin serve --plugin=5930 --cache-dir=/var/cache/gocache --bucket=my-bucket &
   export GOCACHEPROG="go-cache-plugin connect 5930"

--plugin takes a port, served on 127.0.0.1 only (the reference tool's
form), or the path of a Unix socket, created with mode 0600:

   go-cache-plugin serve --plugin=/run/go-cache-plugin/plugin.sock ...
   export GOCACHEPROG="go-cache-plugin connect /run/go-cache-plugin/plugin.sock"

Prefer the socket: connect hands the go command's pipes to the daemon, so
no byte is copied through it, and only users who can open the socket are
served. Only the daemon needs the bucket's credentials; the go commands
need none.

With --http=[host]:port the daemon also serves /metrics (Prometheus),
/healthz, /debug/pprof/ and a status page, and, with --modproxy or
--revproxy, the module proxy and the HTTP(S) proxy ("help modproxy",
"help revproxy"). The HTTP listener binds loopback unless a host is named.

On SIGTERM the daemon lets live sessions finish for --shutdown-timeout,
then drains uploads for --drain-timeout, and exits 0. A service manager
must wait longer than both: scripts/go-cache-plugin.service is a systemd
unit that does. "help serve" lists the flags; docs/operations.md has the
setup of a builder host shared by several CI users.`
