package s3util

// SetListPageSize sets the page size of listings until the returned
// function is called.
func SetListPageSize(n int32) (restore func()) {
	old := listPageSize
	listPageSize = n
	return func() { listPageSize = old }
}
