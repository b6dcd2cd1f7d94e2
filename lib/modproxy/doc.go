// Package modproxy is a caching Go module proxy (the GOPROXY protocol) and
// checksum-database proxy on the tiered store (lib/store), that verifies
// module files against the checksum database before it caches or serves
// them, and keeps serving what it has when the upstream is down.
//
// # Protocol
//
// A Proxy serves, relative to its mount point ("/mod/" in the daemon; use
// http.StripPrefix):
//
//	<module>/@v/list                 versions, one per line
//	<module>/@v/<version>.info       JSON {"Version", "Time"}
//	<module>/@v/<version>.mod        the go.mod file
//	<module>/@v/<version>.zip        the module zip (with Range support)
//	<module>/@latest                 JSON, like .info
//	sumdb/<name>/supported           200 for a proxied database, 404 for others
//	sumdb/<name>/latest              the database's signed tree head
//	sumdb/<name>/lookup/<module>@<version>
//	sumdb/<name>/tile/<H>/<L>/<NNN>[.p/<W>]
//
// Module paths and versions are case-encoded ("!" before an upper-case
// letter) and checked with golang.org/x/mod/module before anything else
// happens: a bad path or version is a 400 or 404 with a message, never an
// upstream request nor a file. A dot segment ("." or "..", also when it was
// percent-encoded) is a 400: mount the proxy where the path reaches it as
// sent (an [http.ServeMux] answers such paths with a redirect to the
// cleaned path before any handler runs). A database that is not configured is a 404,
// so that the go command falls back to its next proxy or to the database
// itself, as it does for any proxy that does not support it.
//
// # Upstream
//
// Everything is fetched from Config.Upstream, the databases from
// <Upstream>/sumdb/<name>/. A 404 or 410 is passed on and remembered for
// Config.NegativeTTL; any other failure is a 502, or a 504 for a timeout,
// never a 404. Every upstream request is bounded (Config.Timeout, and
// Config.ZipTimeout for a zip). Concurrent requests for one file make one
// upstream request, which is not cut short when the client that started it
// goes away.
//
// # Caching
//
// Immutable files are cached for good: .info, .mod and .zip of canonical
// versions, database lookups and full tiles. Mutable files (list, @latest,
// the .info of a query that is not a canonical version, the database's
// latest and partial tiles) are kept in memory and in the store with the
// time they were fetched; they are served for Config.TTL, then asked of the
// upstream again. If the upstream fails, the last copy is served, with the
// header "X-Cache: stale" (fresh answers have "X-Cache: hit" or "miss").
// A daemon that has not seen a mutable file yet looks for it in the store,
// local directory then bucket, so a restarted daemon, or a second one on
// the same bucket, can serve it stale with the upstream down.
//
// The memory copies are bounded by bytes, Config.MemoryBytes
// (DefaultMemoryBytes, 64 MiB, if unset), least recently used first out; a
// file of more than a quarter of the bound is read from the store each
// time. The remembered 404s and 410s get a sixteenth of the bound more.
// What memory drops is still in the store.
//
// Every file is one store object, named after the escaped request path:
//
//	name = the path under the mount point, no leading slash,
//	       "github.com/!azure/go-autorest/@v/v1.0.0.zip",
//	       "sumdb/<name>/tile/8/0/001"
//	key  = store.Key{Kind: "module", Name: hex(sha256(name))}
//	local file   <cache-dir>/module/<xx>/<sha256(name)>
//	bucket key   [<prefix>/]module/<xx>/<sha256(name)>
//
// where <xx> is the first two hex digits: the layout of the reference tool.
// Immutable files are stored as they are served and written to the bucket
// behind the request (store.Upload). A mutable file is stored as a line
// holding the Unix time of its fetch in nanoseconds, 20 decimal digits, then
// the body; it is written over the bucket's copy at once (behind the
// request). The latest signed tree the verifying client has checked is the
// object named "sumdb/<name>/config/latest".
//
// # Verification
//
// Before a .mod or .zip is stored it is hashed (golang.org/x/mod/sumdb/dirhash,
// as go.sum does) and compared with the first database of Config.SumDBs,
// read through a golang.org/x/mod/sumdb client whose reads go through the
// proxy's own cache, and which checks the signed tree and the inclusion
// proofs. The check runs on the complete temporary file (store.Check.Verify),
// both for files from the upstream and for files faulted in from the bucket.
// A mismatch, or a database that cannot answer, is a 502 whose body says
// why; nothing is cached. So is a file from the upstream larger than the
// bound of its kind (16 MiB, 500 MiB for a .zip): the store refuses it as
// it arrives (store.Check.MaxSize), so it is never visible in the cache
// directory. The proxy tells a refusal from a local fault by
// store.ErrMismatch.
//
// Config.SumDBs takes verifier keys. [SumDBKeys] selects them from a list
// of names or keys (the daemon's --sumdb) and GOSUMDB, taking a name's key
// from GOSUMDB or from the well-known keys compiled in ([KnownKey]), as
// the go command does for its default database. Module paths matching Config.NoSumDB (the
// GONOSUMDB syntax) are not checked; with no database, nothing is.
//
// # Logs
//
// Lines start with "modproxy: ". The rule is the reverse proxy's: what
// loses data or refuses a client is always said; decisions, and failures
// that cost no client anything, only when asked. Config.Logf (the daemon
// logs them always) gets refusals and the failures that lose data:
//
//	modproxy: refused <name>: <reason>
//	modproxy: SECURITY ERROR: checksum database <db>: <message>
//	modproxy: storing <name>: <error>
//	modproxy: <name>: bad cached copy <path>: ignored
//	modproxy: checksum database <db>: storing the latest tree: <error>
//
// Config.Verbosef (the daemon's -v) gets decisions, and failures that the
// local copy covers:
//
//	modproxy: fill <name>: <bytes> bytes from the upstream in <duration>
//	modproxy: refresh <name>: <bytes> bytes from the upstream in <duration>
//	modproxy: stale <name> (<age> old): <upstream error>
//	modproxy: writing <name> to the bucket: <error>
//
// Config.Debugf gets one line per request:
//
//	modproxy: <method> <path> <status> <X-Cache> <bytes> bytes <duration>
package modproxy
