// Package revproxy is a caching HTTP(S) proxy for the downloads of other
// ecosystems (npm tarballs, Python distributions, Debian packages, crates,
// jars), built on the tiered [store.Store]: each file crosses the internet
// once per fleet, then comes from the local directory or the shared bucket.
//
// # Requests
//
// A [Proxy] is the handler of an HTTP proxy's requests. For its target hosts
// ([Config.Targets]) it serves requests in absolute form ("GET
// http://host/path") and CONNECT requests: it answers the CONNECT, terminates
// TLS with a leaf certificate for the host (generated on demand, kept in
// memory, signed by the [CA]) and serves the HTTP/1.1 requests inside,
// kept alive, through the cache. The server name a client sends must be the
// CONNECT's host, and each request's Host too (else 421). CONNECTs to other
// hosts are tunnelled unchanged if [Config.Tunnel] is set, refused with 403
// otherwise; absolute-form requests for other hosts get 502. Requests that
// carry this proxy's Via token are refused (508): a target that leads back
// to the proxy would otherwise loop.
//
// Every connection the proxy makes, tunnel or fetch for a target, passes
// its [DialPolicy] ([Config.Policy]) on the address actually dialled: by
// default loopback, link-local (cloud metadata) and this host's own
// addresses are refused (403, with the reason), so that neither a client
// nor a DNS name pointing at 127.0.0.1 can use the proxy to reach the
// host's local services. [AddrRule]s allow named ones.
//
// # What is cached
//
// GET responses with status 200, unless the response says no-store or
// private, sets a cookie, varies on "*", or answers a request with
// Authorization without saying public. Of those:
//
//   - responses immutable by their headers (Cache-Control: immutable, or a
//     max-age or s-maxage of at least [Config.LongMaxAge]) or by their path
//     ([Rule], [DefaultRules]; URLs with a query are not matched by rules)
//     go to the store, forever (subject to the store's limits);
//   - other responses with a positive max-age go to a memory tier bounded
//     by [Config.MemoryBytes], for their max-age (at most
//     [Config.MemoryMaxAge]), unless they say no-cache.
//
// The key is the full origin URL (scheme, host, port unless default, path,
// query); the store key is kind "revproxy" and the hex SHA-256 of the URL,
// so the bucket holds "<prefix>/revproxy/<xx>/<sha256(url)>". A stored
// response keeps its Cache-Control, Content-Disposition, Content-Encoding,
// Content-Type, ETag, Expires, Last-Modified and Vary headers, and the
// values of the request headers it varies on (other than Accept-Encoding):
// a request with other values, or not accepting the stored content
// coding, goes to the origin instead.
//
// Only GET requests fill the cache. HEAD and range requests are served
// from it when it has the response (with the bucket), and passed through
// otherwise. A request with Cache-Control or Pragma no-cache skips the
// memory tier. Other methods are passed through. Conditional requests on a
// hit are answered by the proxy (304), as are ranges (206).
//
// # Misses and concurrency
//
// The first request for a URL not in the cache looks in the bucket, then
// asks the origin (without its range or conditions), and streams the
// response to its client and to the store at once (a store.Writer, whose
// temporary file is renamed into place only at commit), in
// 256 KiB chunks: memory does not grow with the response. Requests for
// the same URL meanwhile wait for that fetch and are then served from the
// cache. Only a complete response is committed (its length checked against
// Content-Length; a chunked body must end properly), then written behind to
// the bucket. If the origin fails mid-body the client's response is cut
// (the connection is closed, so the client sees an error, not a short
// file) and nothing is stored; if the client goes away the fetch is
// abandoned and nothing is stored, and a waiting request takes over.
// Errors from the origin are passed on, never cached; an origin that
// fails gets 502, one that does not answer in [Config.UpstreamTimeout]
// 504 (the same timeout bounds each read of a body). Every response
// carries X-Cache (hit or miss) and X-Cache-Source (local, bucket, memory
// or origin).
//
// # Stored objects
//
// Each object in the store (and the bucket) is the body followed by its
// metadata, so that a response can be written as it arrives:
//
//	<body: size bytes>
//	<metadata: one line of JSON, ending in "\n">
//	<footer: "gcp-revproxy/1 " + 16 lower-case hex digits + "\n", 32 bytes>
//
// The footer's digits are the length of the metadata line, newline
// included (at most 64 KiB). The metadata is a [Meta]: the URL, the status
// (200), the body's size and hex SHA-256, the kept headers, the varying
// request headers, and when it was stored. [ParseObject] checks the
// framing (the footer, the metadata, and that the body's length is the
// metadata's size) on every hit; [VerifyObject] also hashes the body, and
// is the check of every object faulted in from the bucket, so a corrupt or
// truncated object there is never installed nor served. Objects this
// process writes are hashed as they stream and their framing checked
// before they are installed.
//
// # CA
//
// [LoadOrCreateCA] keeps the CA in a directory (the serve command uses
// <cache-dir>/revproxy): ca.pem, the certificate clients must trust, and
// ca-key.pem, its ECDSA P-256 key, mode 0600. It is made once and reused;
// two processes starting at once agree on one. [TrustStore.Install] adds
// it to a Debian/Ubuntu system trust store. [WriteBundle] writes
// bundle.pem next to it: the system's roots and the CA, for clients that
// trust one file of CAs only (npm's cafile).
//
// # Log format
//
// Lines start "revproxy: ". The rule is the module proxy's: what loses
// data or refuses a client is always said; decisions, and failures that
// cost no client anything, only when asked.
//
// [Config.Logf] (the daemon logs them always) gets the failures that lose
// data (a response not stored, a stored object found corrupt) or refuse a
// client (a response cut short, a 403, a 5xx, a failed TLS handshake):
//
//	revproxy: GET <url>: not cached: <error> after <n> bytes
//	revproxy: GET <url>: served, but not stored: <error>
//	revproxy: GET <url>: stored object <key>: <error>: removing it
//	revproxy: GET <url>: <error reading the store>
//	revproxy: <method> <url>: <502|503|504>: <error>
//	revproxy: CONNECT <host:port>: TLS handshake with the client failed (does it trust the proxy's CA?): <error>
//	revproxy: CONNECT <host:port>: refused to connect to <ip:port>: <reason>; ...
//	revproxy: <method> <url>: 403: refused to connect to <ip:port>: <reason>; ...
//
// [Config.Verbosef] (the daemon's -v) gets decisions, one line each:
//
//	revproxy: GET <url>: stored <n> bytes as revproxy/<xx>/<key> (<reason>) in <duration>
//	revproxy: GET <url>: not cached: the client went away after <n> bytes: <error>
//
// With [Config.Debugf] (the daemon's --debug), one line per request:
//
//	revproxy: <method> <url>: hit (<local|bucket|memory>), <n> bytes in <duration>
//	revproxy: GET <url>: miss, kept in memory for <ttl> (<reason>), <n> bytes in <duration>
//	revproxy: <method> <url>: <status>, <miss, not cached: reason|bypass: reason>, <n> bytes in <duration>
//	revproxy: GET <url>: waiting for the fetch in progress
//	revproxy: CONNECT <host:port>: <TLS terminated|tunnel|refused: ...>
//	revproxy: <method> <url>: refused: not a target
package revproxy
