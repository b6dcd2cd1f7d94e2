package s3test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// ReadOnlyEnv returns environment entries, like [Server.Env], for
// temporary credentials that may read bucket and nothing else: they come
// from the server's STS AssumeRole with a session policy allowing
// s3:GetObject, s3:ListBucket and s3:GetBucketLocation on the bucket. This
// is the policy docs/operations.md gives for untrusted builds.
func (s *Server) ReadOnlyEnv(ctx context.Context, bucket string) ([]string, error) {
	policy, err := json.Marshal(map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{{
			"Effect":   "Allow",
			"Action":   []string{"s3:ListBucket", "s3:GetBucketLocation"},
			"Resource": []string{"arn:aws:s3:::" + bucket},
		}, {
			"Effect":   "Allow",
			"Action":   []string{"s3:GetObject"},
			"Resource": []string{"arn:aws:s3:::" + bucket + "/*"},
		}},
	})
	if err != nil {
		return nil, err
	}
	cli := sts.New(sts.Options{
		Region:       s.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		BaseEndpoint: aws.String(s.Endpoint),
	})
	out, err := cli.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String("arn:xxx:xxx:xxx:xxxx"), // MinIO ignores it
		RoleSessionName: aws.String("read-only"),
		Policy:          aws.String(string(policy)),
		DurationSeconds: aws.Int32(3600),
	})
	if err != nil {
		return nil, fmt.Errorf("s3test: read-only credentials: %w", err)
	}
	c := out.Credentials
	return []string{
		"AWS_ACCESS_KEY_ID=" + aws.ToString(c.AccessKeyId),
		"AWS_SECRET_ACCESS_KEY=" + aws.ToString(c.SecretAccessKey),
		"AWS_SESSION_TOKEN=" + aws.ToString(c.SessionToken),
		"AWS_REGION=" + s.Region,
	}, nil
}
