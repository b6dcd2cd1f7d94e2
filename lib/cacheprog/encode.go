package cacheprog

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
)

// appendResponse appends the JSON encoding of rsp and a newline to b. It
// writes what encoding/json would (field names, omitempty, base64 bytes,
// RFC 3339 times) without reflection, since every request pays for it.
func appendResponse(b []byte, rsp *Response) []byte {
	b = append(b, `{"ID":`...)
	b = strconv.AppendInt(b, rsp.ID, 10)
	if rsp.Err != "" {
		b = append(b, `,"Err":`...)
		b = appendString(b, rsp.Err)
	}
	if len(rsp.KnownCommands) > 0 {
		b = append(b, `,"KnownCommands":[`...)
		for i, c := range rsp.KnownCommands {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, c)
		}
		b = append(b, ']')
	}
	if rsp.Miss {
		b = append(b, `,"Miss":true`...)
	}
	if len(rsp.OutputID) > 0 {
		b = append(b, `,"OutputID":"`...)
		b = base64.StdEncoding.AppendEncode(b, rsp.OutputID)
		b = append(b, '"')
	}
	if rsp.Size != 0 {
		b = append(b, `,"Size":`...)
		b = strconv.AppendInt(b, rsp.Size, 10)
	}
	if rsp.Time != nil {
		b = append(b, `,"Time":"`...)
		b = rsp.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if rsp.DiskPath != "" {
		b = append(b, `,"DiskPath":`...)
		b = appendString(b, rsp.DiskPath)
	}
	return append(b, "}\n"...)
}

// appendString appends s as a JSON string. Plain ASCII, the usual case, is
// copied; anything else is left to encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
