package s3util_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/internal/faultproxy"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
	"github.com/go-cache-plugin/go-cache-plugin/lib/s3util"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// srv is the MinIO server shared by the tests of the package, with one
// bucket, testBucket.
var srv *s3test.Server

const testBucket = "s3util-test"

var _ store.Remote = (*s3util.Client)(nil)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "s3util-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	// The SDK's default chain must find the server's credentials, and
	// nothing of the machine's: no shared files, no instance metadata.
	for _, kv := range append(clearSDKEnv(), sdkIsolation(tmp)...) {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	srv, err = s3test.StartServer(filepath.Join(tmp, "minio"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	if err := srv.CreateBucket(context.Background(), testBucket); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// clearSDKEnv clears the SDK variables that could point it elsewhere.
func clearSDKEnv() []string {
	return []string{"AWS_PROFILE=", "AWS_DEFAULT_REGION=", "AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_S3=", "AWS_ROLE_ARN=", "AWS_WEB_IDENTITY_TOKEN_FILE="}
}

func sdkIsolation(dir string) []string {
	return []string{
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// seq makes key prefixes unique, so that tests may run again (-count)
// against the same bucket.
var seq atomic.Int64

// unique returns name with a suffix no other call returns.
func unique(name string) string { return fmt.Sprintf("%s-%d", name, seq.Add(1)) }

// newClient returns a client for bucket on the test server.
func newClient(t *testing.T, bucket, prefix string) *s3util.Client {
	t.Helper()
	c, err := s3util.New(t.Context(), s3util.Config{
		Bucket:    bucket,
		Region:    srv.Region,
		Endpoint:  srv.Endpoint,
		PathStyle: true,
		Prefix:    prefix,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// rawHead reports whether the bucket holds an object at the raw key.
func rawHead(t *testing.T, bucket, key string) bool {
	t.Helper()
	_, err := srv.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	return err == nil
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return data
}

func TestPutGetExists(t *testing.T) {
	ctx := t.Context()
	prefix := unique("team/ci")
	c := newClient(t, testBucket, "/"+prefix+"/") // slashes are trimmed
	const key = "output/ab/abcdef"
	data := []byte("the output bytes")

	if c.Bucket() != testBucket {
		t.Errorf("Bucket() = %q, want %q", c.Bucket(), testBucket)
	}
	if got, want := c.Key(key), prefix+"/"+key; got != want {
		t.Errorf("Key(%q) = %q, want %q", key, got, want)
	}
	if ok, err := c.Exists(ctx, key); err != nil || ok {
		t.Fatalf("Exists before Put = %v, %v; want false, nil", ok, err)
	}
	if err := c.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if ok, err := c.Exists(ctx, key); err != nil || !ok {
		t.Fatalf("Exists after Put = %v, %v; want true, nil", ok, err)
	}
	rc, size, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got := readAll(t, rc); !bytes.Equal(got, data) || size != int64(len(data)) {
		t.Errorf("Get = %q (size %d), want %q (size %d)", got, size, data, len(data))
	}

	// The object is in the bucket under the prefix, and only there.
	if !rawHead(t, testBucket, prefix+"/"+key) {
		t.Errorf("no object at %q in the bucket", prefix+"/"+key)
	}
	if rawHead(t, testBucket, key) {
		t.Errorf("object stored at %q, without the prefix", key)
	}

	// Without a prefix, keys are the store's keys.
	bare := newClient(t, testBucket, "")
	if ok, err := bare.Exists(ctx, key); err != nil || ok {
		t.Errorf("Exists without prefix = %v, %v; want false, nil", ok, err)
	}
	if ok, err := bare.Exists(ctx, prefix+"/"+key); err != nil || !ok {
		t.Errorf("Exists of the full key without prefix = %v, %v; want true, nil", ok, err)
	}
}

func TestGetMissing(t *testing.T) {
	prefix := unique("missing")
	c := newClient(t, testBucket, prefix)
	_, _, err := c.Get(t.Context(), "action/00/00112233")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get of a missing key: %v, want an error wrapping fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), prefix+"/action/00/00112233") {
		t.Errorf("error %q does not name the bucket key", err)
	}
}

func TestMultipartUpload(t *testing.T) {
	ctx := t.Context()
	c := newClient(t, testBucket, unique("big"))
	const size = s3util.MultipartSize + 1<<20 // 65 MiB: five parts

	// A sparse file with distinct marks in every part, so that a part
	// stored in the wrong place would change the hash.
	f, err := os.Create(filepath.Join(t.TempDir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += s3util.PartSize / 2 {
		if _, err := f.WriteAt(fmt.Appendf(nil, "mark at %d", off), off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt([]byte("the end"), size-7); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		t.Fatal(err)
	}
	want := h.Sum(nil)

	const key = "output/bb/bbbb"
	if err := c.Put(ctx, key, f, size); err != nil {
		t.Fatalf("Put: %v", err)
	}
	head, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(c.Key(key))})
	if err != nil {
		t.Fatalf("HeadObject: %v", err)
	}
	// A multipart object's ETag ends in "-<number of parts>".
	if etag := aws.ToString(head.ETag); !strings.HasSuffix(strings.Trim(etag, `"`), "-5") {
		t.Errorf("ETag %s: not a five-part upload", etag)
	}

	rc, n, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	h.Reset()
	got, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if n != size || got != size || !bytes.Equal(h.Sum(nil), want) {
		t.Errorf("Get: %d bytes (size %d), SHA-256 %x; want %d bytes, %x", got, n, h.Sum(nil), int64(size), want)
	}
}

func TestCheck(t *testing.T) {
	if err := newClient(t, testBucket, "").Check(t.Context()); err != nil {
		t.Errorf("Check of an existing bucket: %v", err)
	}
	err := newClient(t, "no-such-bucket", "").Check(t.Context())
	if err == nil || !strings.Contains(err.Error(), `"no-such-bucket" does not exist`) {
		t.Errorf("Check of a missing bucket: %v, want it to say the bucket does not exist", err)
	}
}

func TestWrongCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "not-the-key")
	c := newClient(t, testBucket, "")
	mentionsCredentials := func(err error) bool {
		msg := strings.ToLower(fmt.Sprint(err))
		return strings.Contains(msg, "access denied") && strings.Contains(msg, "credentials")
	}
	if err := c.Check(t.Context()); err == nil || !mentionsCredentials(err) {
		t.Errorf("Check with wrong credentials: %v, want access denied naming the credentials", err)
	}
	_, _, err := c.Get(t.Context(), "action/00/0011")
	if err == nil || errors.Is(err, fs.ErrNotExist) || !mentionsCredentials(err) {
		t.Errorf("Get with wrong credentials: %v, want access denied (not a miss)", err)
	}
	if _, err := c.Exists(t.Context(), "action/00/0011"); err == nil || !mentionsCredentials(err) {
		t.Errorf("Exists with wrong credentials: %v, want access denied (not a miss)", err)
	}
	data := []byte("x")
	if err := c.Put(t.Context(), "action/00/0011", bytes.NewReader(data), 1); err == nil || !mentionsCredentials(err) {
		t.Errorf("Put with wrong credentials: %v, want access denied", err)
	}
}

func TestRegion(t *testing.T) {
	ctx := t.Context()
	prefix := unique("region")
	// The proxy counts the requests New makes.
	p := faultproxy.Start(t, srv.Endpoint)
	newWith := func(region string) *s3util.Client {
		t.Helper()
		c, err := s3util.New(ctx, s3util.Config{Bucket: testBucket, Region: region, Endpoint: p.URL, PathStyle: true, Prefix: prefix})
		if err != nil {
			t.Fatalf("New(region %q): %v", region, err)
		}
		return c
	}

	// An explicit region wins over the environment.
	t.Setenv("AWS_REGION", "ap-south-1")
	if got := newWith("eu-west-3").Region(); got != "eu-west-3" {
		t.Errorf("Region() with an explicit region = %q, want eu-west-3", got)
	}
	// Without one, the SDK's chain supplies it.
	if got := newWith("").Region(); got != "ap-south-1" {
		t.Errorf("Region() from AWS_REGION = %q, want ap-south-1", got)
	}

	// With neither, an S3-compatible endpoint gets us-east-1, without a
	// network call, and works.
	t.Setenv("AWS_REGION", "")
	c := newWith("")
	if got := c.Region(); got != "us-east-1" {
		t.Errorf("Region() with an endpoint and no region = %q, want us-east-1", got)
	}
	if n := p.Requests(); n != 0 {
		t.Errorf("New made %d requests; want none", n)
	}
	data := []byte("regionless")
	if err := c.Put(ctx, "action/11/1122", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	rc, _, err := c.Get(ctx, "action/11/1122")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got := readAll(t, rc); !bytes.Equal(got, data) {
		t.Errorf("Get = %q, want %q", got, data)
	}
	if p.Requests() == 0 {
		t.Error("Put and Get did not go through the endpoint given")
	}
}

func TestNewNoBucket(t *testing.T) {
	if _, err := s3util.New(t.Context(), s3util.Config{Endpoint: srv.Endpoint}); err == nil {
		t.Error("New without a bucket succeeded")
	}
}
