package revproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// An AddrRule names destinations the proxy may connect to although they
// are local (see [DialPolicy]): an IP address or a prefix, with a port or
// any port.
type AddrRule struct {
	Prefix netip.Prefix
	Port   uint16 // 0: any port
}

func (r AddrRule) String() string {
	s := r.Prefix.String()
	if r.Prefix.IsSingleIP() {
		s = r.Prefix.Addr().String()
	}
	if r.Port == 0 {
		return s
	}
	if r.Prefix.Addr().Is6() {
		s = "[" + s + "]"
	}
	return s + ":" + strconv.Itoa(int(r.Port))
}

func (r AddrRule) match(ap netip.AddrPort) bool {
	return r.Prefix.Contains(ap.Addr().Unmap()) && (r.Port == 0 || r.Port == ap.Port())
}

// ParseAddrRules parses a list of [AddrRule]s: "127.0.0.1", "127.0.0.1:9000",
// "::1", "[::1]:9000", "169.254.0.0/16", "[fe80::/10]:80". Host names are
// refused: the policy decides on the address actually dialled. Empty
// entries are ignored.
func ParseAddrRules(list []string) ([]AddrRule, error) {
	var rules []AddrRule
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		r, err := parseAddrRule(s)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseAddrRule(s string) (AddrRule, error) {
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return AddrRule{}, errors.New(`missing "]"`)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			p, ok := strings.CutPrefix(port, ":")
			if !ok || p == "" {
				return AddrRule{}, errors.New(`want "[addr]:port"`)
			}
			port = p
		}
	case strings.Count(s, ":") == 1: // IPv4 address or prefix with a port
		host, port, _ = strings.Cut(s, ":")
		if port == "" {
			return AddrRule{}, errors.New("empty port")
		}
	}
	var r AddrRule
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return AddrRule{}, fmt.Errorf("bad port %q", port)
		}
		r.Port = uint16(n)
	}
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return AddrRule{}, errors.New("want an IP address or prefix (1.2.3.0/24), with an optional port; host names are not allowed")
		}
		if p.Addr().Is4In6() {
			return AddrRule{}, errors.New("write an IPv4 prefix in IPv4 form")
		}
		r.Prefix = p.Masked()
		return r, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return AddrRule{}, errors.New("want an IP address or prefix (1.2.3.0/24), with an optional port; host names are not allowed")
	}
	a = a.Unmap().WithZone("")
	r.Prefix = netip.PrefixFrom(a, a.BitLen())
	return r, nil
}

// metadataAddrs are cloud metadata services outside the link-local
// ranges (AWS's IPv6 endpoint).
var metadataAddrs = []netip.Addr{netip.MustParseAddr("fd00:ec2::254")}

// A DialPolicy decides which addresses the proxy connects to, for
// tunnels and for requests to its targets alike. It is checked on the
// address actually dialled, after name resolution, so a name that
// resolves to a refused address is refused too (and a DNS answer cannot
// change between the check and the connection).
//
// Refused unless an [AddrRule] in Allow matches: loopback addresses
// (127.0.0.0/8, ::1), link-local addresses (169.254.0.0/16, where cloud
// metadata services live, and fe80::/10), the unspecified addresses
// (0.0.0.0, ::, which reach this host), multicast and broadcast
// addresses, the AWS metadata service's IPv6 address (fd00:ec2::254),
// and every address of this host's own interfaces. Other addresses,
// private ranges included, are allowed: an origin on the internal
// network is an ordinary use.
type DialPolicy struct {
	// Allow names local destinations that are allowed all the same.
	Allow []AddrRule
	// LocalAddrs lists this host's addresses; nil means the addresses of
	// its network interfaces, read at each check (they change).
	LocalAddrs func() ([]netip.Addr, error)
}

// A RefusedAddrError is the error of a connection the [DialPolicy]
// refused.
type RefusedAddrError struct {
	Addr   netip.AddrPort
	Reason string // "a loopback address", ...
}

func (e *RefusedAddrError) Error() string {
	return fmt.Sprintf("refused to connect to %s: %s; the proxy connects to loopback, link-local and this host's own addresses only if they are allowed (--revproxy-allow-local)", e.Addr, e.Reason)
}

// Check returns a *[RefusedAddrError] if the policy refuses ap, nil if it
// allows it.
func (p *DialPolicy) Check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap().WithZone("")
	ap = netip.AddrPortFrom(a, ap.Port())
	for _, r := range p.Allow {
		if r.match(ap) {
			return nil
		}
	}
	reason := ""
	switch {
	case !a.IsValid():
		reason = "not an IP address"
	case a.IsLoopback():
		reason = "a loopback address"
	case a.IsLinkLocalUnicast():
		reason = "a link-local address (where cloud metadata services live)"
	case a.IsUnspecified():
		reason = "the unspecified address, which reaches this host"
	case a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		reason = "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		reason = "the broadcast address"
	}
	for _, m := range metadataAddrs {
		if a == m {
			reason = "a cloud metadata service's address"
		}
	}
	if reason == "" {
		local, err := p.localAddrs()
		if err != nil {
			// Not knowing this host's addresses, allow nothing that
			// could be one of them.
			return &RefusedAddrError{Addr: ap, Reason: fmt.Sprintf("this host's addresses are unknown (%v)", err)}
		}
		for _, l := range local {
			if l.Unmap().WithZone("") == a {
				reason = "an address of this host"
				break
			}
		}
	}
	if reason == "" {
		return nil
	}
	return &RefusedAddrError{Addr: ap, Reason: reason}
}

func (p *DialPolicy) localAddrs() ([]netip.Addr, error) {
	if p.LocalAddrs != nil {
		return p.LocalAddrs()
	}
	return InterfaceAddrs()
}

// InterfaceAddrs returns the addresses of this host's network interfaces.
func InterfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list this host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if na, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, na.Unmap())
		}
	}
	return out, nil
}

// Dialer returns a dialer that applies the policy to every address it
// connects to, after name resolution.
func (p *DialPolicy) Dialer(d *net.Dialer) *net.Dialer {
	nd := *d
	nd.ControlContext = func(_ context.Context, network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("refused to connect to %q: not an IP address and port", address)
		}
		return p.Check(ap)
	}
	return &nd
}

// refusedAddr returns the policy's refusal in err, if it is one.
func refusedAddr(err error) (*RefusedAddrError, bool) {
	var re *RefusedAddrError
	ok := errors.As(err, &re)
	return re, ok
}
