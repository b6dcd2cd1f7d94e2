package daemon

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// A socketEntry is one line of the kernel's table of TCP sockets
// (/proc/net/tcp or /proc/net/tcp6 on Linux).
type socketEntry struct {
	Local, Remote netip.AddrPort
	State         int    // TCP state, as the kernel numbers them (1 established, 6 time-wait, ...)
	UID           int    // the owner of the socket
	Inode         uint64 // 0 for a socket no process holds (time-wait, orphaned)
}

// tcpTimeWait is the kernel's number for the TIME_WAIT state.
const tcpTimeWait = 6

// findSocketOwner returns the owner of the live socket whose local and
// remote addresses are local and remote, from a table in the format of
// /proc/net/tcp or tcp6 whose address words are in byte order order (the
// host's). It reports found false if there is none. Sockets that no
// process holds any more are skipped: the kernel shows them as owned by
// root, which would let a client that hung up be taken for root.
func findSocketOwner(r io.Reader, order binary.ByteOrder, local, remote netip.AddrPort) (uid int, found bool, err error) {
	local = unmapAddrPort(local)
	remote = unmapAddrPort(remote)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 64<<10)
	for n := 1; sc.Scan(); n++ {
		if n == 1 {
			continue // the header
		}
		e, err := parseSocketLine(sc.Bytes(), order)
		if err != nil {
			return 0, false, fmt.Errorf("line %d: %w", n, err)
		}
		if e.Inode == 0 || e.State == tcpTimeWait {
			continue
		}
		if unmapAddrPort(e.Local) == local && unmapAddrPort(e.Remote) == remote {
			return e.UID, true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, false, err
	}
	return 0, false, nil
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// parseSocketLine parses one line of the socket table:
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ...
//	 0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 51234 1 ...
//
// Addresses are 4 (IPv4) or 16 (IPv6) bytes in hex, written as 32-bit
// words in the host's byte order, then a colon and the port in hex.
func parseSocketLine(line []byte, order binary.ByteOrder) (socketEntry, error) {
	var e socketEntry
	f := bytes.Fields(line)
	if len(f) < 10 {
		return e, fmt.Errorf("%d fields, want at least 10", len(f))
	}
	if !bytes.HasSuffix(f[0], []byte(":")) {
		return e, fmt.Errorf("slot %.20q does not end in a colon", f[0])
	}
	var err error
	if e.Local, err = parseSocketAddr(f[1], order); err != nil {
		return e, fmt.Errorf("local address: %w", err)
	}
	if e.Remote, err = parseSocketAddr(f[2], order); err != nil {
		return e, fmt.Errorf("remote address: %w", err)
	}
	st, err := strconv.ParseUint(string(f[3]), 16, 8)
	if err != nil {
		return e, fmt.Errorf("state %.20q: not a hex byte", f[3])
	}
	e.State = int(st)
	uid, err := strconv.ParseUint(string(f[7]), 10, 32)
	if err != nil {
		return e, fmt.Errorf("uid %.20q: not a number", f[7])
	}
	e.UID = int(uid)
	if e.Inode, err = strconv.ParseUint(string(f[9]), 10, 64); err != nil {
		return e, fmt.Errorf("inode %.20q: not a number", f[9])
	}
	return e, nil
}

// parseSocketAddr parses "0100007F:1F90" or its 32-digit IPv6 form.
func parseSocketAddr(s []byte, order binary.ByteOrder) (netip.AddrPort, error) {
	host, port, ok := bytes.Cut(s, []byte(":"))
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%.40q has no port", s)
	}
	if len(host) != 8 && len(host) != 32 {
		return netip.AddrPort{}, fmt.Errorf("%.40q: address of %d hex digits, want 8 or 32", s, len(host))
	}
	raw := make([]byte, len(host)/2)
	if _, err := hex.Decode(raw, host); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%.40q: %v", s, err)
	}
	// Each word was printed as a number: put its bytes back in memory order.
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		order.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	if len(port) != 4 {
		return netip.AddrPort{}, fmt.Errorf("%.40q: port of %d hex digits, want 4", s, len(port))
	}
	p, err := strconv.ParseUint(string(port), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%.40q: port is not hex", s)
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr, uint16(p)), nil
}
