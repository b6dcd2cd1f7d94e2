package s3util_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/lib/s3util"
)

// TestList lists a prefix over several pages.
func TestList(t *testing.T) {
	defer s3util.SetListPageSize(2)()
	ctx := t.Context()
	prefix := unique("list")
	c := newClient(t, testBucket, prefix)
	var want []string
	for i := range 5 {
		key := fmt.Sprintf("output/0%d/0%d%02x", i, i, i)
		data := bytes.Repeat([]byte("x"), i+1)
		if err := c.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("%s:%d", key, i+1))
	}
	// Beside the prefix: not listed.
	if err := newClient(t, testBucket, prefix+"x").Put(ctx, "output/00/00", strings.NewReader("no"), 2); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := c.List(ctx, func(o s3util.ObjectInfo) error {
		if o.LastModified.IsZero() {
			t.Errorf("%s: no LastModified", o.Key)
		}
		got = append(got, fmt.Sprintf("%s:%d", o.Key, o.Size))
		return nil
	})
	if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("List = %q, %v; want %q", got, err, want)
	}

	stop := errors.New("stop")
	n := 0
	if err := c.List(ctx, func(s3util.ObjectInfo) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("List stopped by its callback: %v after %d objects", err, n)
	}
	if err := newClient(t, "no-such-bucket-here", "").List(ctx, func(s3util.ObjectInfo) error { return nil }); err == nil || !strings.Contains(err.Error(), "no such bucket") {
		t.Errorf("List of a missing bucket: %v", err)
	}
}

// TestReadOnlyCredentials: with the read-only policy of
// docs/operations.md, reads work (a missing object is a plain miss, not
// access denied) and writes are refused.
func TestReadOnlyCredentials(t *testing.T) {
	ctx := t.Context()
	prefix := unique("ro")
	const key = "output/ab/abcdef"
	if err := newClient(t, testBucket, prefix).Put(ctx, key, strings.NewReader("trusted"), 7); err != nil {
		t.Fatal(err)
	}
	env, err := srv.ReadOnlyEnv(ctx, testBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	c := newClient(t, testBucket, prefix)
	if err := c.Check(ctx); err != nil {
		t.Errorf("Check: %v", err)
	}
	rc, _, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got := readAll(t, rc); string(got) != "trusted" {
		t.Errorf("Get = %q", got)
	}
	if _, _, err := c.Get(ctx, "output/cd/cdef"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a missing object: %v; want a miss", err)
	}
	if ok, err := c.Exists(ctx, "output/cd/cdef"); ok || err != nil {
		t.Errorf("Exists of a missing object: %v, %v", ok, err)
	}
	if err := c.List(ctx, func(s3util.ObjectInfo) error { return nil }); err != nil {
		t.Errorf("List: %v", err)
	}
	if err := c.Put(ctx, "output/ef/ef01", strings.NewReader("untrusted"), 9); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("Put with read-only credentials: %v; want access denied", err)
	}
	if _, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(prefix + "/output/ef/ef01")}); err == nil {
		t.Error("the read-only credentials wrote an object")
	}
}
