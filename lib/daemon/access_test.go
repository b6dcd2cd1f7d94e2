//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeerOf checks the user and process the system reports for both ends
// of a real connection, over TCP (the socket table) and a Unix socket
// (SO_PEERCRED).
func TestPeerOf(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(shortTemp(t), "s")
			}
			l, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			c, err := net.Dial(network, l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			p := PeerOf(s)
			if p.Err != nil || p.UID != os.Geteuid() || p.Network != network {
				t.Errorf("PeerOf = %+v, want uid %d on %s", p, os.Geteuid(), network)
			}
			if network == "unix" && p.PID != os.Getpid() {
				t.Errorf("PeerOf = %+v, want pid %d", p, os.Getpid())
			}
			if network == "tcp" && p.Addr != c.LocalAddr().String() {
				t.Errorf("PeerOf = %+v, want address %s", p, c.LocalAddr())
			}
		})
	}
}

// TestPeerOfGone checks that a TCP client that hung up before the daemon
// looked is of unknown user, not root (the kernel lists what is left of
// its socket as root's).
func TestPeerOfGone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.Close()
	if p := PeerOf(s); p.UID != -1 || p.Err == nil || !strings.Contains(p.Err.Error(), "no live socket") {
		t.Errorf("PeerOf a closed client = %+v, want an unknown user", p)
	}
}

// testUsers is a user database for policies: uid 1001 (alice, groups 100
// and 2000), 1002 (bob, group 100).
func testUsers(uid int) (string, []int, error) {
	switch uid {
	case 1001:
		return "alice", []int{100, 2000}, nil
	case 1002:
		return "bob", []int{100}, nil
	}
	return "", nil, errors.New("no such user")
}

func TestPolicyAdmit(t *testing.T) {
	unix := func(uid int) Peer { return Peer{Network: "unix", UID: uid} }
	unknown := Peer{Network: "tcp", UID: -1, Err: errors.New("gone")}
	for _, tc := range []struct {
		name   string
		policy Policy
		peer   Peer
		want   string // "" to admit, else part of the refusal
	}{
		{"self", Policy{Self: 43210}, unix(43210), ""},
		{"root", Policy{Self: 43210}, unix(0), ""},
		{"other", Policy{Self: 43210}, unix(1001), "user alice (uid 1001) is not served: this daemon serves its own user 43210, root; to serve it, restart the daemon with --allow-users=alice or --allow-group="},
		{"unknown uid named by number", Policy{Self: 43210}, unix(4242), "uid 4242 is not served"},
		{"listed", Policy{Self: 43210, Users: []int{1001}}, unix(1001), ""},
		{"listed, another", Policy{Self: 43210, Users: []int{1001}}, unix(1002), "user bob (uid 1002) is not served"},
		{"group member", Policy{Self: 43210, Groups: []int{2000}}, unix(1001), ""},
		{"not a member", Policy{Self: 43210, Groups: []int{2000}}, unix(1002), "is not served: this daemon serves its own user 43210, root, members of group 2000"},
		{"any", Policy{Self: 43210, AnyUser: true}, unix(1002), ""},
		{"user not told over TCP", Policy{Self: 43210}, unknown, "the daemon cannot tell which user connected (gone); use its Unix socket"},
		{"user not told on an owner-only socket", Policy{Self: 43210, UnixOwnerOnly: true}, Peer{Network: "unix", UID: -1}, ""},
		{"user not told on an owner-only socket, TCP", Policy{Self: 43210, UnixOwnerOnly: true}, unknown, "cannot tell"},
		{"user not told, any", Policy{Self: 43210, AnyUser: true}, unknown, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.policy.LookupUser = testUsers
			err := tc.policy.Admit(tc.peer)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("admitted, want a refusal saying %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("refusal %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestPolicyReadable checks that a served user who could not reach or
// read the cache is refused, with the path and what to change, by the
// modes of real directories. (The checks compute access from modes; they
// run as any user.)
func TestPolicyReadable(t *testing.T) {
	self := os.Geteuid()
	// A tree whose parents anyone may search, as the test's own are not.
	base := t.TempDir()
	for d := base; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()) && d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o711); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(t *testing.T, mode fs.FileMode) string {
		dir, err := os.MkdirTemp(base, "c")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{dir, filepath.Join(dir, "output"), filepath.Join(dir, "output", "ab")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, mode); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// The directories are in the test's group, of which alice is a member
	// here; the daemon's own group is another, 43211, unless said.
	dirGroup := os.Getegid()
	aliceIn := func(uid int) (string, []int, error) { return "alice", []int{100, dirGroup}, nil }
	alice := Peer{Network: "unix", UID: 1001}
	for _, tc := range []struct {
		name    string
		mode    fs.FileMode
		umask   fs.FileMode
		inGroup bool // alice is in the directories' group
		fresh   bool
		want    string
	}{
		{"world-searchable", 0o755, 0o022, false, false, ""},
		{"fresh, world-searchable", 0o755, 0o022, false, true, ""},
		{"private dir", 0o700, 0o022, false, false, "user alice (uid 1001) is allowed but could not read the cache: it cannot search "},
		{"group dir, not a member", 0o750, 0o022, false, false, "it cannot search "},
		{"umask 077", 0o755, 0o077, false, false, "the daemon creates each new directory in"},
		{"umask 077, fresh", 0o755, 0o077, false, true, "with mode 0700 (umask 0077)"},
		{"group only, setgid dirs", 0o750 | fs.ModeSetgid, 0o027, true, false, ""},
		{"group only, fresh, setgid dirs", 0o750 | fs.ModeSetgid, 0o027, true, true, ""},
		{"group only, not setgid", 0o750, 0o027, true, false, "and the user falls under others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mk(t, tc.mode)
			if tc.fresh {
				os.RemoveAll(filepath.Join(dir, "output"))
			}
			p := Policy{Self: self, Users: []int{1001}, CacheDir: dir, Umask: tc.umask, Egid: 43211, LookupUser: testUsers}
			if tc.inGroup {
				p.LookupUser = aliceIn
			}
			err := p.Admit(alice)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("admitted, want a refusal saying %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("refusal %q does not say %q", err, tc.want)
			}
			// Its own user and root are not checked.
			if err := p.Admit(Peer{Network: "unix", UID: self}); err != nil {
				t.Errorf("own user refused: %v", err)
			}
		})
	}
}

// BenchmarkPolicyAdmitReadable measures the check made for each session
// of a served user other than the daemon's own, on a cache directory with
// all 256 output shards.
func BenchmarkPolicyAdmitReadable(b *testing.B) {
	dir := b.TempDir()
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, "output", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for d := dir; d != filepath.Clean(os.TempDir()) && d != filepath.Dir(d); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	p := Policy{Self: os.Geteuid(), Users: []int{1001}, CacheDir: dir, Umask: 0o022, Egid: os.Getegid(), LookupUser: testUsers}
	for b.Loop() {
		if err := p.Admit(Peer{Network: "unix", UID: 1001}); err != nil {
			b.Fatal(err)
		}
	}
}
