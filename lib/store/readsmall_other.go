//go:build !unix

package store

import (
	"fmt"
	"io"
	"os"
)

// readSmall returns the contents of the file at path, which must be at
// most max bytes.
func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: %w (more than %d bytes)", path, errTooLong, max)
	}
	return data, nil
}
