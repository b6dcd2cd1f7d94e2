// Package s3util is the S3 remote tier of go-cache-plugin: a [store.Remote]
// on an S3 bucket, on AWS or any S3-compatible server.
//
// # Bucket layout
//
// Every key the store uses, "<kind>/<xx>/<name>", is stored in the bucket as
//
//	[<prefix>/]<kind>/<xx>/<name>
//
// so, for the front ends of go-cache-plugin:
//
//	<prefix>/action/<xx>/<action-id>   "<output-id> <unix-nanos>" (the build cache)
//	<prefix>/output/<xx>/<output-id>   the output's bytes
//	<prefix>/module/<xx>/<sha256(name)>   module proxy files
//	<prefix>/revproxy/<xx>/<sha256(url)>  reverse proxy responses
//
// with IDs in lower-case hex and <xx> their first two digits. This is the
// layout of the reference tool, so either can read a bucket the other wrote.
// [Client.List] streams a listing of the prefix, page by page (for
// "go-cache-plugin stats"). Nothing here deletes objects: lifecycle rules on
// the bucket do (see docs/operations.md).
//
// # Failure policy
//
// Credentials and region come from the AWS SDK's default chain. Every call
// is short-circuited by tight connection and response-header timeouts and
// at most one retry, because the store treats any failure as a cache miss:
// a slow answer is worth less than a quick miss. Objects of [MultipartSize]
// bytes or more are uploaded in parts, streamed from the local file.
package s3util

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Config describes a bucket.
type Config struct {
	Bucket    string
	Region    string // if empty: from the SDK's chain, else asked of the bucket
	Endpoint  string // for S3-compatible servers; empty for AWS
	PathStyle bool   // path-style requests, as most S3-compatible servers need
	Prefix    string // prefix of every key, without a trailing slash
}

// Timeouts and sizes of the S3 client.
const (
	DialTimeout           = 3 * time.Second
	ResponseHeaderTimeout = 5 * time.Second
	MultipartSize         = 64 << 20 // objects this large are uploaded in parts
	PartSize              = 16 << 20
)

// Client is a bucket, used as a [store.Remote].
type Client struct {
	s3     *s3.Client
	bucket string
	prefix string
	region string
}

// New returns a client for the bucket in cfg. If no region is configured
// or found in the SDK's chain, it asks the bucket for its location (that
// is the only network call New makes).
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket given")
	}
	hc := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = DialTimeout }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = ResponseHeaderTimeout
			tr.MaxIdleConnsPerHost = 64
		})
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(hc)}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}
	region := awsCfg.Region
	if region == "" && cfg.Endpoint != "" {
		region = "us-east-1" // what S3-compatible servers expect unless told otherwise
	}
	newClient := func(region string) *s3.Client {
		return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
			o.Region = region
			o.UsePathStyle = cfg.PathStyle
			if cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(cfg.Endpoint)
			}
			o.RetryMaxAttempts = 2
			// We verify content ourselves (SHA-256); the SDK's extra
			// checksums are not understood by every S3-compatible server.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		})
	}
	if region == "" {
		loc, err := newClient("us-east-1").GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: &cfg.Bucket})
		if err != nil {
			return nil, fmt.Errorf("s3: find the region of bucket %q (set --region): %w", cfg.Bucket, describe(err))
		}
		region = string(loc.LocationConstraint)
		if region == "" {
			region = "us-east-1"
		}
	}
	return &Client{
		s3:     newClient(region),
		bucket: cfg.Bucket,
		prefix: strings.Trim(cfg.Prefix, "/"),
		region: region,
	}, nil
}

// Region returns the region the client signs requests for.
func (c *Client) Region() string { return c.region }

// Bucket returns the name of the bucket.
func (c *Client) Bucket() string { return c.bucket }

// Key returns the bucket key of a store key.
func (c *Client) Key(key string) string {
	if c.prefix == "" {
		return key
	}
	return path.Join(c.prefix, key)
}

// Check verifies that the bucket exists and the credentials can read it,
// and says what is wrong if not.
func (c *Client) Check(ctx context.Context) error {
	_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &c.bucket})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NotFound" {
		return fmt.Errorf("bucket %q does not exist", c.bucket)
	} else if err != nil {
		return fmt.Errorf("bucket %q: %w", c.bucket, describe(err))
	}
	return nil
}

// listPageSize is the number of keys asked for per page of a listing (a
// variable for tests).
var listPageSize int32 = 1000

// An ObjectInfo describes an object listed by [Client.List].
type ObjectInfo struct {
	Key          string // the store key, "<kind>/<xx>/<name>": the bucket key without the prefix
	Size         int64
	LastModified time.Time
}

// List calls fn for every object under the client's prefix, in key order,
// as the listing's pages (of up to 1000 keys) arrive: memory does not grow
// with the size of the bucket. It stops at the first error, fn's included.
func (c *Client) List(ctx context.Context, fn func(ObjectInfo) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &c.bucket, MaxKeys: aws.Int32(listPageSize)}
	strip := ""
	if c.prefix != "" {
		strip = c.prefix + "/"
		in.Prefix = aws.String(strip)
	}
	p := s3.NewListObjectsV2Paginator(c.s3, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3 list %s: %w", c.bucket+"/"+strip, describe(err))
		}
		for _, o := range page.Contents {
			info := ObjectInfo{Key: strings.TrimPrefix(aws.ToString(o.Key), strip), Size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				info.LastModified = *o.LastModified
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Get implements [store.Remote].
func (c *Client) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	out, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &c.bucket, Key: aws.String(c.Key(key))})
	if err != nil {
		return nil, 0, c.wrap("get", key, err)
	}
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return out.Body, size, nil
}

// GetRange implements [store.Remote]. A range that starts past the
// end of the object is reported as missing (fs.ErrNotExist).
func (c *Client) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("s3: get %s: bad range %d+%d", key, off, n)
	}
	rng := fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	out, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &c.bucket, Key: aws.String(c.Key(key)), Range: &rng})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange" {
		// The object is shorter than the caller thinks: for it, the
		// bytes it wants are not there.
		return nil, fmt.Errorf("s3: get %s %s: %w", key, rng, fs.ErrNotExist)
	}
	if err != nil {
		return nil, c.wrap("get", key, err)
	}
	// A body shorter than n (the object ends inside the range) is the
	// caller's to notice.
	return out.Body, nil
}

// Exists implements [store.Remote].
func (c *Client) Exists(ctx context.Context, key string) (bool, error) {
	_, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &c.bucket, Key: aws.String(c.Key(key))})
	if err == nil {
		return true, nil
	}
	if err := c.wrap("head", key, err); !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return false, nil
}

// Put implements [store.Remote]. Objects of MultipartSize bytes or more
// are uploaded in parts if r is also an [io.ReaderAt] (a file).
func (c *Client) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if ra, ok := r.(io.ReaderAt); ok && size >= MultipartSize {
		return c.putMultipart(ctx, key, ra, size)
	}
	_, err := c.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &c.bucket,
		Key:           aws.String(c.Key(key)),
		Body:          r,
		ContentLength: aws.Int64(size),
	})
	if err != nil {
		return c.wrap("put", key, err)
	}
	return nil
}

// putMultipart uploads r in parts of PartSize, one at a time, so memory
// use stays flat. A failed upload is aborted.
func (c *Client) putMultipart(ctx context.Context, key string, r io.ReaderAt, size int64) (err error) {
	bkey := aws.String(c.Key(key))
	up, err := c.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &c.bucket, Key: bkey})
	if err != nil {
		return c.wrap("put", key, err)
	}
	defer func() {
		if err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			c.s3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &c.bucket, Key: bkey, UploadId: up.UploadId})
		}
	}()
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < size; off, n = off+PartSize, n+1 {
		length := min(PartSize, size-off)
		out, err := c.s3.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:        &c.bucket,
			Key:           bkey,
			UploadId:      up.UploadId,
			PartNumber:    aws.Int32(n),
			Body:          io.NewSectionReader(r, off, length),
			ContentLength: aws.Int64(length),
		})
		if err != nil {
			return c.wrap(fmt.Sprintf("put part %d of", n), key, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = c.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &c.bucket,
		Key:             bkey,
		UploadId:        up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return c.wrap("complete", key, err)
	}
	return nil
}

// wrap describes an error from an operation on key; a missing object
// wraps fs.ErrNotExist.
func (c *Client) wrap(op, key string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("s3 %s %s: %w", op, c.Key(key), fs.ErrNotExist)
		}
	}
	return fmt.Errorf("s3 %s %s: %w", op, c.Key(key), describe(err))
}

// describe turns common S3 failures into messages that name the problem.
func describe(err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchBucket":
			return fmt.Errorf("no such bucket: %w", err)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "ExpiredToken":
			return fmt.Errorf("access denied: check the credentials (%s): %w", apiErr.ErrorCode(), err)
		case "NotFound":
			return fmt.Errorf("not found: %w", err)
		}
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("endpoint unreachable: %w", err)
	}
	return err
}
