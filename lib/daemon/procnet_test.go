package daemon

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

// A socket table as a little-endian Linux host prints it: a listener on
// 127.0.0.1:8080, a client socket of uid 1000 connected to it, the
// server's accepted end (root), a time-wait socket and an orphan on the
// same addresses as a second client, which must not count.
const tcpTable = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 656 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 51234 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 51235 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:0000012B 00000000     0        0 0 3 0000000000000000
   4: 0100007F:C352 0100007F:1F90 05 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
`

// An IPv6 table: a dual-stack client socket of uid 1001 with v4-mapped
// addresses, and one on ::1.
const tcp6Table = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:C353 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 61234 1 0000000000000000 20 4 30 10 -1
   1: 00000000000000000000000001000000:C354 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 61235 1 0000000000000000 20 4 30 10 -1
`

func TestFindSocketOwner(t *testing.T) {
	server := netip.MustParseAddrPort("127.0.0.1:8080")
	server6 := netip.MustParseAddrPort("[::1]:8080")
	for _, tc := range []struct {
		name, table   string
		local, remote netip.AddrPort
		uid           int
		found         bool
	}{
		{"client", tcpTable, netip.MustParseAddrPort("127.0.0.1:50000"), server, 1000, true},
		{"server end", tcpTable, server, netip.MustParseAddrPort("127.0.0.1:50000"), 0, true},
		{"swapped by mistake", tcpTable, netip.MustParseAddrPort("127.0.0.1:50000"), netip.MustParseAddrPort("127.0.0.1:8081"), 0, false},
		{"time-wait", tcpTable, netip.MustParseAddrPort("127.0.0.1:50001"), server, 0, false},
		{"orphan", tcpTable, netip.MustParseAddrPort("127.0.0.1:50002"), server, 0, false},
		{"v4-mapped", tcp6Table, netip.MustParseAddrPort("127.0.0.1:50003"), server, 1001, true},
		{"v4-mapped asked as such", tcp6Table, netip.MustParseAddrPort("[::ffff:127.0.0.1]:50003"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080"), 1001, true},
		{"ipv6 loopback", tcp6Table, netip.MustParseAddrPort("[::1]:50004"), server6, 1002, true},
		{"header only", "  sl  local_address rem_address\n", netip.MustParseAddrPort("127.0.0.1:50000"), server, 0, false},
		{"empty", "", netip.MustParseAddrPort("127.0.0.1:50000"), server, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid, found, err := findSocketOwner(strings.NewReader(tc.table), binary.LittleEndian, tc.local, tc.remote)
			if err != nil || uid != tc.uid || found != tc.found {
				t.Errorf("got uid %d, found %v, %v; want %d, %v", uid, found, err, tc.uid, tc.found)
			}
		})
	}
}

// TestFindSocketOwnerBigEndian reads a table as a big-endian host prints
// it: each word of an address in network order.
func TestFindSocketOwnerBigEndian(t *testing.T) {
	table := "header\n   0: 7F000001:C350 7F000001:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 51234 1\n"
	uid, found, err := findSocketOwner(strings.NewReader(table), binary.BigEndian,
		netip.MustParseAddrPort("127.0.0.1:50000"), netip.MustParseAddrPort("127.0.0.1:8080"))
	if err != nil || !found || uid != 1000 {
		t.Errorf("got uid %d, found %v, %v; want 1000", uid, found, err)
	}
}

func TestFindSocketOwnerMalformed(t *testing.T) {
	good := "   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 51234 1"
	for _, tc := range []struct{ line, want string }{
		{"   1: 0100007F:C350", "line 2: 2 fields, want at least 10"},
		{strings.Replace(good, "1:", "1", 1), `line 2: slot "1" does not end in a colon`},
		{strings.Replace(good, "0100007F:C350", "0100007F", 1), `line 2: local address: "0100007F" has no port`},
		{strings.Replace(good, "0100007F:C350", "0100007:C350", 1), "line 2: local address: \"0100007:C350\": address of 7 hex digits, want 8 or 32"},
		{strings.Replace(good, "0100007F:C350", "0100007G:C350", 1), "line 2: local address: \"0100007G:C350\": encoding/hex: invalid byte"},
		{strings.Replace(good, "0100007F:1F90", "0100007F:1F9", 1), "line 2: remote address: \"0100007F:1F9\": port of 3 hex digits, want 4"},
		{strings.Replace(good, "0100007F:1F90", "0100007F:1F9X", 1), "line 2: remote address: \"0100007F:1F9X\": port is not hex"},
		{strings.Replace(good, " 01 ", " 1G ", 1), `line 2: state "1G": not a hex byte`},
		{strings.Replace(good, " 1000 ", " -1 ", 1), `line 2: uid "-1": not a number`},
		{strings.Replace(good, "51234", "x", 1), `line 2: inode "x": not a number`},
	} {
		_, _, err := findSocketOwner(strings.NewReader("header\n"+tc.line+"\n"), binary.LittleEndian,
			netip.MustParseAddrPort("127.0.0.1:50000"), netip.MustParseAddrPort("127.0.0.1:8080"))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.line, err, tc.want)
		}
	}
}

// FuzzFindSocketOwner feeds arbitrary tables to the parser: it must not
// panic, and whatever it reports found must be a live socket with the
// addresses asked for, on a line that parses.
func FuzzFindSocketOwner(f *testing.F) {
	f.Add(tcpTable, "127.0.0.1:50000", "127.0.0.1:8080")
	f.Add(tcp6Table, "[::1]:50004", "[::1]:8080")
	f.Add("h\n 0: 0100007F:C350 0100007F:1F90 01 x x x 5 0 1 1\n", "127.0.0.1:50000", "127.0.0.1:8080")
	f.Fuzz(func(t *testing.T, table, local, remote string) {
		l, err1 := netip.ParseAddrPort(local)
		r, err2 := netip.ParseAddrPort(remote)
		if err1 != nil || err2 != nil {
			return
		}
		uid, found, err := findSocketOwner(strings.NewReader(table), binary.LittleEndian, l, r)
		if err != nil || !found {
			return
		}
		if uid < 0 {
			t.Fatalf("uid %d", uid)
		}
		// The first matching line of the table must say so on its own.
		for i, line := range strings.Split(table, "\n") {
			if i == 0 {
				continue
			}
			e, err := parseSocketLine([]byte(line), binary.LittleEndian)
			if err != nil {
				t.Fatalf("found uid %d, but line %d does not parse: %v", uid, i+1, err)
			}
			if unmapAddrPort(e.Local) == unmapAddrPort(l) && unmapAddrPort(e.Remote) == unmapAddrPort(r) && e.Inode != 0 && e.State != tcpTimeWait {
				if e.UID != uid {
					t.Fatalf("found uid %d, line %d says %d", uid, i+1, e.UID)
				}
				return
			}
		}
		t.Fatalf("found uid %d in a table with no such socket", uid)
	})
}
