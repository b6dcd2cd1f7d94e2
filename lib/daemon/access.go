package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A Policy decides which local users a daemon serves; its Admit method is
// meant for [Server.Admit]. The daemon's own user and root are always
// served; others only if named, by user or by group. A user who is served
// must also be able to read what the daemon hands it: the go command reads
// each output by the path the daemon gives, so if it cannot, it rebuilds
// in silence. Admit checks that when the policy names a cache directory,
// and refuses, saying what to change, a user who could not.
type Policy struct {
	// Self is the daemon's own user ID.
	Self int
	// Users are further user IDs served.
	Users []int
	// Groups are group IDs whose members are served: users whose primary
	// group it is or whom the group database lists.
	Groups []int
	// AnyUser serves every local user (the behaviour of a daemon with no
	// policy), still subject to the CacheDir check.
	AnyUser bool
	// UnixOwnerOnly says that the Unix socket admits only Self and root
	// (its mode is 0600): a Unix-socket peer whose user the system does
	// not tell is then served. Any other peer of unknown user is refused.
	UnixOwnerOnly bool

	// CacheDir, if set, is the daemon's cache directory, whose objects
	// (under CacheDir/output) a served user other than Self and root must
	// be able to reach and read.
	CacheDir string
	// Umask is the daemon's file mode creation mask, which decides the
	// modes of the objects and directories it creates; Egid is its
	// effective group, theirs unless a directory is setgid.
	Umask fs.FileMode
	Egid  int

	// LookupUser returns a user's name and groups; if nil, the system's
	// user database (os/user) is asked.
	LookupUser func(uid int) (name string, gids []int, err error)
}

// Admit returns nil if p serves peer, and otherwise an error that says
// why not and what to change, addressed to the refused user.
func (p *Policy) Admit(peer Peer) error {
	if peer.UID < 0 {
		switch {
		case p.AnyUser:
			return nil
		case peer.Network == "unix" && p.UnixOwnerOnly:
			return nil
		}
		return fmt.Errorf("the daemon cannot tell which user connected (%v); use its Unix socket", peer.Err)
	}
	if peer.UID == p.Self || peer.UID == 0 {
		return nil
	}
	name, gids, err := p.lookupUser(peer.UID)
	who, flagValue := fmt.Sprintf("user %s (uid %d)", name, peer.UID), name
	if err != nil {
		who, flagValue = fmt.Sprintf("uid %d", peer.UID), strconv.Itoa(peer.UID)
	}
	allowed := p.AnyUser || slices.Contains(p.Users, peer.UID)
	for _, g := range p.Groups {
		allowed = allowed || slices.Contains(gids, g)
	}
	if !allowed {
		return fmt.Errorf("%s is not served: this daemon serves %s; to serve it, restart the daemon with --allow-users=%s or --allow-group=<a group of the user>",
			who, p, flagValue)
	}
	if p.CacheDir == "" {
		return nil
	}
	if err := p.checkReadable(peer.UID, gids); err != nil {
		return fmt.Errorf("%s is allowed but could not read the cache: %w", who, err)
	}
	return nil
}

// String lists whom p serves.
func (p *Policy) String() string {
	if p.AnyUser {
		return "every local user"
	}
	parts := []string{"its own user " + userName(p.Self)}
	if p.Self != 0 {
		parts = append(parts, "root")
	}
	for _, u := range p.Users {
		parts = append(parts, userName(u))
	}
	for _, g := range p.Groups {
		parts = append(parts, "members of group "+groupName(g))
	}
	return strings.Join(parts, ", ")
}

func (p *Policy) lookupUser(uid int) (string, []int, error) {
	if p.LookupUser != nil {
		return p.LookupUser(uid)
	}
	return LookupUserGroups(uid)
}

// LookupUserGroups returns the name and groups of the user with ID uid
// from the system's user database.
func LookupUserGroups(uid int) (name string, gids []int, err error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return "", nil, fmt.Errorf("look up uid %d: %w", uid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		ids = []string{u.Gid}
	}
	for _, s := range append(ids, u.Gid) {
		if g, err := strconv.Atoi(s); err == nil && !slices.Contains(gids, g) {
			gids = append(gids, g)
		}
	}
	return u.Username, gids, nil
}

// ParseUsers parses a comma-separated list of user names and numeric
// user IDs, as the --allow-users flag takes it, into user IDs. A name
// the user database does not know is an error.
func ParseUsers(s string) ([]int, error) {
	return parseIDs(s, "user", func(name string) (string, error) {
		u, err := user.Lookup(name)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
}

// ParseGroups parses a comma-separated list of group names and numeric
// group IDs, as the --allow-group flag takes it, into group IDs. A name
// the group database does not know is an error.
func ParseGroups(s string) ([]int, error) {
	return parseIDs(s, "group", func(name string) (string, error) {
		g, err := user.LookupGroup(name)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	})
}

// parseIDs parses a comma-separated list of numeric IDs and names of
// what (a user or a group), each name resolved to its ID by lookup.
func parseIDs(s, what string, lookup func(name string) (id string, err error)) ([]int, error) {
	var ids []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if n, err := strconv.Atoi(f); err == nil && n >= 0 {
			ids = append(ids, n)
			continue
		}
		id, err := lookup(f)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, f, err)
		}
		n, err := strconv.Atoi(id)
		if err != nil {
			return nil, fmt.Errorf("%s %q has a non-numeric ID %q", what, f, id)
		}
		ids = append(ids, n)
	}
	return ids, nil
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// Permission bits, for the owner; shifted right by 3 for the group and 6
// for others.
const (
	permRead   = 0o400
	permSearch = 0o100
)

// checkReadable reports whether a user (uid, in groups gids) can reach
// and read the objects under p.CacheDir/output, those there now and those
// the daemon will create with its umask: every directory from the root
// down must be searchable by it, and new files readable. The user is not
// the owner of what the daemon creates (that is Self), so its group or
// others' bits decide. (Access control lists are not looked at.)
func (p *Policy) checkReadable(uid int, gids []int) error {
	dir, err := filepath.Abs(p.CacheDir)
	if err != nil {
		return err
	}
	var chain []string
	for d := dir; ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	slices.Reverse(chain)
	fix := "make it and every directory above it searchable by the user (chmod o+x, or g+x for a group the user is in), or choose a --cache-dir it can reach"
	search := func(d string) (fs.FileInfo, error) {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("check the cache directory: %w", err)
		}
		if !permits(fi, uid, gids, permSearch) {
			return nil, fmt.Errorf("it cannot search %s (%s); %s", d, describeFile(fi), fix)
		}
		return fi, nil
	}
	var top fs.FileInfo
	for _, d := range chain {
		if top, err = search(d); err != nil {
			return err
		}
	}
	// The outputs' directory and its shards; what is not there yet, the
	// daemon will create, in the group of the directory above it if that
	// is setgid.
	outputs := filepath.Join(dir, "output")
	if _, err := os.Stat(outputs); errors.Is(err, fs.ErrNotExist) {
		if err := p.checkNew(dir, top, gids, 0o755, permSearch, "directory"); err != nil {
			return err
		}
		return p.checkNew(dir, top, gids, 0o666, permRead, "object")
	}
	ofi, err := search(outputs)
	if err != nil {
		return err
	}
	if err := p.checkNew(outputs, ofi, gids, 0o755, permSearch, "directory"); err != nil {
		return err
	}
	ents, err := os.ReadDir(outputs)
	if err != nil {
		return fmt.Errorf("check the cache directory: %w", err)
	}
	shards := 0
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		shard := filepath.Join(outputs, e.Name())
		fi, err := search(shard)
		if err != nil {
			return err
		}
		if err := p.checkNew(shard, fi, gids, 0o666, permRead, "object"); err != nil {
			return err
		}
		shards++
	}
	if shards == 0 {
		return p.checkNew(outputs, ofi, gids, 0o666, permRead, "object")
	}
	return nil
}

// checkNew reports whether a user in groups gids could use (bit, given
// for the owner) a file the daemon creates, with mode perm less its umask,
// in the directory path, whose information is dir. (The daemon, not the
// user, owns what it creates.)
func (p *Policy) checkNew(path string, dir fs.FileInfo, gids []int, perm, bit fs.FileMode, what string) error {
	gid := p.Egid
	if dir.Mode()&fs.ModeSetgid != 0 {
		if st, ok := fileOwner(dir); ok {
			gid = st.gid
		}
	}
	mode := perm &^ p.Umask
	member := slices.Contains(gids, gid)
	shift, class := 6, "others"
	if member {
		shift = 3
	}
	if mode&(bit>>shift) != 0 {
		return nil
	}
	if member {
		class = "group " + groupName(gid)
	}
	return fmt.Errorf("the daemon creates each new %s in %s with mode %04o (umask %04o) in group %s, and the user falls under %s; "+
		"run the daemon with umask 0022, or with umask 0027 and --allow-group, the cache directory in that group and its directories setgid (chgrp -R <group> DIR; find DIR -type d -exec chmod g+s {} +)",
		what, path, mode, p.Umask, groupName(gid), class)
}

// permits reports whether a user (uid, in groups gids) has bit (given for
// the owner) on fi, by the file's owner, group and mode: the owner's bits
// apply to the owner only, the group's to other members of the group.
func permits(fi fs.FileInfo, uid int, gids []int, bit fs.FileMode) bool {
	st, ok := fileOwner(fi)
	if !ok {
		return true // cannot tell: let the go command find out
	}
	m := fi.Mode().Perm()
	switch {
	case st.uid == uid:
		return m&bit != 0
	case slices.Contains(gids, st.gid):
		return m&(bit>>3) != 0
	}
	return m&(bit>>6) != 0
}

func describeFile(fi fs.FileInfo) string {
	st, ok := fileOwner(fi)
	if !ok {
		return fi.Mode().String()
	}
	return fmt.Sprintf("%s, owner %s, group %s", fi.Mode(), userName(st.uid), groupName(st.gid))
}

type owner struct{ uid, gid int }
