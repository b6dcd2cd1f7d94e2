package s3test_test

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
)

func TestServer(t *testing.T) {
	start := time.Now()
	srv := s3test.Start(t)
	t.Logf("minio ready at %s after %v", srv.Endpoint, time.Since(start))

	if !strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:") {
		t.Errorf("Endpoint = %q, want http://127.0.0.1:<port>", srv.Endpoint)
	}
	env := srv.Env()
	for _, want := range []string{
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_REGION=us-east-1",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("Env() = %q, missing %q", env, want)
		}
	}

	ctx := t.Context()
	const bucket = "s3test-bucket"
	if err := srv.CreateBucket(ctx, bucket); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}

	cli := srv.Client()
	objects := map[string]string{
		"alpha":       "first object",
		"dir/bravo":   "second object",
		"dir/charlie": strings.Repeat("x", 1<<20),
	}
	for key, body := range objects {
		if _, err := cli.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket),
			Key:    aws.String(key),
			Body:   strings.NewReader(body),
		}); err != nil {
			t.Fatalf("PutObject %q: %v", key, err)
		}
	}

	for key, want := range objects {
		if got := getObject(t, ctx, cli, bucket, key); got != want {
			t.Errorf("GetObject %q: got %d bytes %.20q, want %d bytes %.20q",
				key, len(got), got, len(want), want)
		}
	}

	rsp, err := cli.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: aws.String(bucket),
		Prefix: aws.String("dir/"),
	})
	if err != nil {
		t.Fatalf("ListObjectsV2: %v", err)
	}
	var keys []string
	for _, obj := range rsp.Contents {
		keys = append(keys, aws.ToString(obj.Key))
		if want := int64(len(objects[aws.ToString(obj.Key)])); aws.ToInt64(obj.Size) != want {
			t.Errorf("object %q: size %d, want %d", aws.ToString(obj.Key), aws.ToInt64(obj.Size), want)
		}
	}
	if want := []string{"dir/bravo", "dir/charlie"}; !slices.Equal(keys, want) {
		t.Errorf("ListObjectsV2 keys = %q, want %q", keys, want)
	}

	// A missing object is reported as an error, not as empty content.
	if _, err := cli.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(bucket),
		Key:    aws.String("no-such-key"),
	}); err == nil {
		t.Error("GetObject of a missing key succeeded")
	}

	// Closing is idempotent and the server stops answering.
	srv.Close()
	srv.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	noRetry := func(o *s3.Options) { o.RetryMaxAttempts = 1 }
	if _, err := cli.ListBuckets(cctx, &s3.ListBucketsInput{}, noRetry); err == nil {
		t.Error("ListBuckets succeeded after Close")
	}
}

func getObject(t *testing.T, ctx context.Context, cli *s3.Client, bucket, key string) string {
	t.Helper()
	rsp, err := cli.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(bucket),
		Key:    aws.String(key),
	})
	if err != nil {
		t.Fatalf("GetObject %q: %v", key, err)
	}
	defer rsp.Body.Close()
	data, err := io.ReadAll(rsp.Body)
	if err != nil {
		t.Fatalf("read object %q: %v", key, err)
	}
	return string(data)
}
