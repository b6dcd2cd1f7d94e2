package cacheprog

import (
	"encoding/json"
	"testing"
	"time"
)

// appendResponse must write exactly what encoding/json writes.
func TestAppendResponseMatchesJSON(t *testing.T) {
	when := time.Date(2026, 11, 21, 6, 21, 0, 123456789, time.FixedZone("X", 5*3600+1800))
	utc := time.Unix(1700000000, 0).UTC()
	id := []byte("0123456789abcdef0123456789abcdef")
	for _, rsp := range []*Response{
		{ID: 0, KnownCommands: []string{CmdGet, CmdPut, CmdClose}},
		{ID: 1, Miss: true},
		{ID: 2, OutputID: id, Size: 12345, Time: &when, DiskPath: "/cache/output/ab/abcdef"},
		{ID: 3, OutputID: id, Time: &utc, DiskPath: "/tmp/dir with spaces/ünïcode/<&>"},
		{ID: 4, Err: "put 0011: body is \"wrong\"\n\ttab \\ and \x01 control"},
		{ID: 1 << 60, DiskPath: "x"},
		{ID: -5, Err: "\xff invalid utf-8"},
	} {
		want, err := json.Marshal(rsp)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		if got := appendResponse(nil, rsp); string(got) != string(want) {
			t.Errorf("appendResponse(%+v)\n got %s\nwant %s", rsp, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b", "<script>", "\u2028", "\xff\xfe", "tab\there"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}
