package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// otherUser is the setting for builds run as the user nobody: a
// directory everyone may search, holding the plugin binary, nobody's home
// and a module, and the module's directory.
type otherUser struct {
	base, bin, home, module string
	uid, gid                int
	group                   string // nobody's primary group
}

// newOtherUser sets up builds as nobody. The test's own temporary
// directories are private to root, so it makes its own under the
// system's temporary directory and removes it at the end.
func newOtherUser(t *testing.T) *otherUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("builds as another user (runuser -u nobody) need root")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Fatalf("no runuser: %v", err)
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	o := &otherUser{}
	o.uid, _ = strconv.Atoi(u.Uid)
	o.gid, _ = strconv.Atoi(u.Gid)
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	o.group = g.Name
	if o.base, err = os.MkdirTemp("", "gcp-users"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(o.base) })
	if err := os.Chmod(o.base, 0o755); err != nil {
		t.Fatal(err)
	}
	o.bin = filepath.Join(o.base, "go-cache-plugin")
	if err := os.Link(pluginBin, o.bin); err != nil {
		data, err := os.ReadFile(pluginBin)
		if err == nil {
			err = os.WriteFile(o.bin, data, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	o.home = filepath.Join(o.base, "home")
	if err := os.Mkdir(o.home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(o.home, o.uid, o.gid); err != nil {
		t.Fatal(err)
	}
	// Two packages, one importing the other, and nothing of the standard
	// library: a cold build compiles two packages.
	o.module = filepath.Join(o.base, "module")
	writeFiles(t, o.module, map[string]string{
		"go.mod":  "module example.com/users\n\ngo 1.26\n",
		"a/a.go":  "package a\n\n// A is one.\nfunc A() int { return 1 }\n",
		"b/b.go":  "package b\n\nimport \"example.com/users/a\"\n\n// B is two.\nfunc B() int { return a.A() + 1 }\n",
		"c/c.txt": "not a package",
	})
	return o
}

// dir makes a directory under the base with mode perm.
func (o *otherUser) dir(t *testing.T, name string, perm fs.FileMode) string {
	t.Helper()
	d := filepath.Join(o.base, name)
	if err := os.Mkdir(d, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, perm); err != nil {
		t.Fatal(err)
	}
	return d
}

// build runs "go build -x ./..." on the module as nobody, with
// GOCACHEPROG=prog, and returns its output and the number of packages
// compiled.
func (o *otherUser) build(t *testing.T, prog string) (string, int, error) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-u", "nobody", "--", "env", "-i",
		"PATH=" + filepath.Dir(goBin) + ":/usr/bin:/bin",
		"HOME=" + o.home,
		"GOCACHE=" + filepath.Join(o.home, "gocache"),
		"GOPATH=" + filepath.Join(o.home, "go"),
		"GOENV=off", "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local", "GO111MODULE=on",
		"GOCACHEPROG=" + prog,
		goBin, "build", "-x", "./...",
	}
	cmd := exec.Command("runuser", args...)
	cmd.Dir = o.module
	out, err := cmd.CombinedOutput()
	return string(out), len(compileRE.FindAllString(string(out), -1)), err
}

// rawAs sends msgs to the daemon's TCP port as nobody, without waiting
// for the daemon's first line (bash's /dev/tcp), and returns what the
// daemon sent back.
func (o *otherUser) rawAs(t *testing.T, port, msgs string) []byte {
	t.Helper()
	cmd := exec.Command("runuser", "-u", "nobody", "--", "bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/"$1"; cat >&3; cat <&3`, "raw", port)
	cmd.Stdin = strings.NewReader(msgs)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("raw client as nobody: %v", err)
	}
	return out
}

// actionPath is where the daemon's store keeps the action record of
// action (named as putMsg names it).
func actionPath(cacheDir, action string) string {
	a := sha256.Sum256([]byte(action))
	h := hex.EncodeToString(a[:])
	return filepath.Join(cacheDir, "action", h[:2], h)
}

// rawTCP puts body under action through the daemon's TCP port as this
// process's user, and closes the session.
func rawTCP(t *testing.T, port, action string, body []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	for _, msg := range []string{"", putMsg(1, action, body), `{"ID":2,"Command":"close"}` + "\n"} {
		if msg != "" {
			if _, err := conn.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
		}
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, `{"ID":`) || strings.Contains(line, "Err") {
			t.Fatalf("raw session as root: %q, %v", line, err)
		}
	}
}

// TestServeOtherUserRefused runs a daemon as root that serves only root,
// and a build and a raw client as nobody over TCP: the build fails with
// the daemon's reason (never a silent rebuild), the raw client's puts
// write no record (a put of root's own does, as the control), and
// connect --fallback builds in-process instead.
func TestServeOtherUserRefused(t *testing.T) {
	o := newOtherUser(t)
	cacheDir := filepath.Join(o.dir(t, "daemon", 0o755), "cache")
	d := startDaemon(t, cacheDir, "0")
	port := d.target

	out, _, err := o.build(t, o.bin+" connect "+port)
	if err == nil {
		t.Fatalf("a build as nobody through a daemon that serves only root succeeded:\n%s", out)
	}
	for _, want := range []string{
		"the go-cache-plugin daemon refused this client: user nobody (uid " + strconv.Itoa(o.uid) + ") is not served: this daemon serves its own user root",
		"--allow-users=nobody",
		"add --fallback",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the refused build does not say %q:\n%s", want, out)
		}
	}
	d.waitLine(t, regexp.MustCompile(`session \d+: refused 127\.0\.0\.1:\d+ uid `+strconv.Itoa(o.uid)+`: user nobody`))

	// A client that does not wait to be told, and puts a record.
	got := o.rawAs(t, port, putMsg(1, "poison", []byte("poisoned output"))+getMsg(2, "poison")+`{"ID":3,"Command":"close"}`+"\n")
	if !bytes.HasPrefix(got, []byte("\x00go-cache-plugin refused {\"reason\":\"user nobody")) || bytes.Contains(got, []byte(`"ID":1`)) {
		t.Errorf("the raw client as nobody got %q, want only a refusal", got)
	}
	rawTCP(t, port, "control", []byte("root's own output"))
	if _, err := os.Stat(actionPath(cacheDir, "control")); err != nil {
		t.Fatalf("root's put wrote no record: %v", err)
	}
	refusals := regexp.MustCompile(`session \d+: refused .* uid ` + strconv.Itoa(o.uid))
	waitFor(t, "two refusals in the daemon's log", func() bool { return len(refusals.FindAllString(d.log(), -1)) == 2 })
	if _, err := os.Stat(actionPath(cacheDir, "poison")); !os.IsNotExist(err) {
		t.Errorf("the refused client's put left a record: %v", err)
	}
	var records []string
	filepath.WalkDir(filepath.Join(cacheDir, "action"), func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			records = append(records, path)
		}
		return nil
	})
	if len(records) != 1 || records[0] != actionPath(cacheDir, "control") {
		t.Errorf("action records %q, want root's only", records)
	}
	if n := d.metric(t, "gocacheplugin_sessions_dropped_total", "reason", "refused"); n != 2 {
		t.Errorf("%v sessions counted as refused, want 2", n)
	}

	// --fallback: nobody's own cache, in-process.
	fallback := filepath.Join(o.home, "cache")
	out, n, err := o.build(t, o.bin+" connect --fallback --cache-dir="+fallback+" "+port)
	if err != nil {
		t.Fatalf("a build with --fallback failed: %v\n%s", err, out)
	}
	if n != 2 || !strings.Contains(out, "refused this client") || !strings.Contains(out, "caching in-process (--fallback)") {
		t.Errorf("a build with --fallback compiled %d packages (want 2) and said:\n%s", n, out)
	}
	out, n, err = o.build(t, o.bin+" connect --fallback --cache-dir="+fallback+" "+port)
	if err != nil || n != 0 {
		t.Errorf("a second build with --fallback compiled %d packages (%v), want 0 from nobody's cache:\n%s", n, err, out)
	}
}

// TestServeOtherUserUnreadable allows nobody on a daemon whose cache dir
// nobody cannot reach (under a directory private to root), on a Unix
// socket: the build fails with the path and what to change.
func TestServeOtherUserUnreadable(t *testing.T) {
	o := newOtherUser(t)
	socket := filepath.Join(o.dir(t, "run", 0o755), "gcp.sock")
	cacheDir := filepath.Join(o.dir(t, "private", 0o700), "cache")
	d := startDaemon(t, cacheDir, socket, "--allow-users=nobody")
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket for other users: %v, %v; want mode 0666", fi.Mode(), err)
	}
	out, n, err := o.build(t, o.bin+" connect "+socket)
	if err == nil || n != 0 {
		t.Fatalf("a build as nobody that cannot read the cache succeeded (%d compiled):\n%s", n, out)
	}
	want := "user nobody (uid " + strconv.Itoa(o.uid) + ") is allowed but could not read the cache: it cannot search " +
		filepath.Join(o.base, "private") + " (drwx------, owner root, group root); make it and every directory above it searchable"
	if !strings.Contains(out, want) {
		t.Errorf("the refused build does not say %q:\n%s", want, out)
	}
	d.waitLine(t, regexp.MustCompile(`session \d+: refused pid \d+ uid `+strconv.Itoa(o.uid)+`: user nobody .* is allowed but could not read`))
}

// TestServeOtherUserServed allows nobody, by name over TCP and by group
// on a Unix socket, on a cache dir it can read: its builds go through the
// daemon, and a rebuild compiles nothing (so every output the daemon named
// was read).
func TestServeOtherUserServed(t *testing.T) {
	o := newOtherUser(t)
	cacheDir := filepath.Join(o.dir(t, "daemon", 0o755), "cache")

	tcp := startDaemon(t, cacheDir, "0", "--allow-users=nobody")
	tcp.waitLine(t, regexp.MustCompile(`serving other users: its own user root, nobody$`))
	out, n, err := o.build(t, o.bin+" connect "+tcp.target)
	if err != nil || n != 2 {
		t.Fatalf("a cold build as nobody over TCP compiled %d packages (%v), want 2:\n%s", n, err, out)
	}
	out, n, err = o.build(t, o.bin+" connect "+tcp.target)
	if err != nil || n != 0 {
		t.Errorf("a warm build as nobody over TCP compiled %d packages (%v), want 0:\n%s", n, err, out)
	}
	tcp.waitLine(t, regexp.MustCompile(`session \d+: opened from 127\.0\.0\.1:\d+ uid `+strconv.Itoa(o.uid)+`$`))
	if err := tcp.stop(t); err != nil {
		t.Fatal(err)
	}

	socket := filepath.Join(o.dir(t, "run", 0o755), "gcp.sock")
	unix := startDaemon(t, cacheDir, socket, "--allow-group="+o.group)
	fi, err := os.Stat(socket)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != uint32(o.gid) {
		t.Errorf("socket for group %s: %v, %v; want mode 0660 in the group", o.group, fi.Mode(), err)
	}
	hits := unix.buildHits(t)
	out, n, err = o.build(t, o.bin+" connect "+socket)
	if err != nil || n != 0 {
		t.Errorf("a warm build as nobody on the socket compiled %d packages (%v), want 0:\n%s", n, err, out)
	}
	if after := unix.buildHits(t); after < hits+2 {
		t.Errorf("hits went from %v to %v over a warm build of two packages", hits, after)
	}
	unix.waitLine(t, regexp.MustCompile(`session \d+: serving the client's own stdin and stdout \(handed over\)`))
	unix.waitLine(t, regexp.MustCompile(`session \d+: opened from pid \d+ uid `+strconv.Itoa(o.uid)+`$`))
}
