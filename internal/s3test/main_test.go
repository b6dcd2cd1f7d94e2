package s3test_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/internal/s3test"
)

func TestMain(m *testing.M) {
	if err := s3test.Prepare(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
