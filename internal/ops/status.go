package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/lib/daemon"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// Status is what the status page shows; /status.json serves it as is.
type Status struct {
	Version       string          `json:"version"`
	GoVersion     string          `json:"go_version"`
	Start         time.Time       `json:"start"`
	UptimeSeconds float64         `json:"uptime_seconds"`
	ShuttingDown  bool            `json:"shutting_down"`
	FrontEnds     []FrontEndStats `json:"frontends"`
	Sessions      *daemon.Stats   `json:"sessions,omitempty"`
	Store         *StoreStatus    `json:"store,omitempty"`
}

// StoreStatus is the state of the store's tiers.
type StoreStatus struct {
	Dir            string      `json:"dir"`
	RemoteState    string      `json:"remote_state"` // "none", "healthy", "failing", "probing"
	RemoteHitRatio float64     `json:"remote_hit_ratio"`
	Stats          store.Stats `json:"stats"`
}

// Status returns the server's current status.
func (s *Server) Status() Status {
	s.mu.Lock()
	fronts := append([]*FrontEnd(nil), s.frontEnds...)
	st, sessions := s.store, s.sessions
	s.mu.Unlock()

	now := time.Now()
	out := Status{
		Version:       s.version,
		GoVersion:     goVersion,
		Start:         s.start,
		UptimeSeconds: now.Sub(s.start).Seconds(),
		ShuttingDown:  s.draining.Load(),
		FrontEnds:     []FrontEndStats{},
	}
	for _, f := range fronts {
		out.FrontEnds = append(out.FrontEnds, f.Stats())
	}
	if sessions != nil {
		ds := sessions()
		out.Sessions = &ds
	}
	if st != nil {
		ss := st.Stats()
		out.Store = &StoreStatus{
			Dir:            st.Dir(),
			RemoteState:    remoteState(ss),
			RemoteHitRatio: ratio(ss.RemoteHits, ss.RemoteHits+ss.RemoteMisses+ss.RemoteErrors+ss.RemoteSkipped),
			Stats:          ss,
		}
	}
	return out
}

func ratio(n, d int64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

func remoteState(ss store.Stats) string {
	switch {
	case !ss.Remote:
		return "none"
	case ss.Breaker == "open":
		return "failing"
	case ss.Breaker == "half-open":
		return "probing"
	}
	return "healthy"
}

func (s *Server) statusJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(s.Status())
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := statusTmpl().Execute(&buf, s.Status()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// humanBytes formats n bytes with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n), 0
	for v >= unit && exp < 5 {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[exp-1])
}

// humanDuration formats d to the second, with days.
func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if days := d / (24 * time.Hour); days > 0 {
		return fmt.Sprintf("%dd %v", days, d-days*24*time.Hour)
	}
	return d.String()
}

// statusTmpl is parsed on first use, not at start-up: every go command
// starts this binary, and most never serve a page.
var statusTmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("status").Funcs(template.FuncMap{
		"bytes":   humanBytes,
		"percent": func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) },
		"uptime":  func(sec float64) string { return humanDuration(time.Duration(sec * float64(time.Second))) },
		"age":     func(t time.Time) string { return humanDuration(time.Since(t)) },
		"stamp":   func(t time.Time) string { return t.Format("2006-01-02 15:04:05 MST") },
	}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10">
<title>go-cache-plugin</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
.meta { color: #666; } .big { font-size: 1.6em; font-weight: 600; }
table { border-collapse: collapse; } td, th { padding: .2em .9em .2em 0; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
th { border-bottom: 1px solid #ccc; font-weight: 600; }
.ok { color: #17702a; font-weight: 600; } .bad { color: #b00020; font-weight: 600; } .warn { color: #a15c00; font-weight: 600; }
a { color: #0645ad; }
</style></head>
<body>
<h1>go-cache-plugin</h1>
<div class="meta">version <span id="version">{{.Version}}</span> · go{{.GoVersion}} ·
up <span id="uptime">{{uptime .UptimeSeconds}}</span> (since {{stamp .Start}})
{{if .ShuttingDown}}· <span class="bad">shutting down</span>{{end}}</div>

<h2>Front ends</h2>
{{if .FrontEnds}}<table id="frontends">
<tr><th>front end</th><th class="n">hit ratio</th><th class="n">lookups</th><th class="n">hits</th><th class="n">bytes served</th><th class="n">stored</th><th class="n">bytes stored</th><th class="n">errors</th></tr>
{{range .FrontEnds}}<tr><td>{{.Name}}</td><td class="n big">{{percent .HitRatio}}</td><td class="n">{{.Lookups}}</td><td class="n">{{.Hits}}</td>
<td class="n">{{bytes .BytesServed}}</td><td class="n">{{.Stores}}</td><td class="n">{{bytes .BytesStored}}</td>
<td class="n">{{if or .LookupErrors .StoreErrors}}<span class="bad">{{.LookupErrors}} / {{.StoreErrors}}</span>{{else}}0{{end}}</td></tr>
{{end}}</table>{{else}}<p>none</p>{{end}}

{{with .Store}}
<h2>Remote tier</h2>
<p id="remote">{{if eq .RemoteState "none"}}none: local cache only
{{else if eq .RemoteState "healthy"}}<span class="ok">healthy</span>
{{else if eq .RemoteState "failing"}}<span class="bad">failing: skipped until it recovers</span>
{{else}}<span class="warn">probing after failures</span>{{end}}</p>
{{if .Stats.Remote}}<table>
<tr><td>hit ratio of local misses</td><td class="n">{{percent .RemoteHitRatio}}</td></tr>
<tr><td>fetched</td><td class="n">{{.Stats.RemoteHits}} ({{bytes .Stats.BytesDown}})</td></tr>
<tr><td>not there / errors / skipped</td><td class="n">{{.Stats.RemoteMisses}} / {{.Stats.RemoteErrors}} / {{.Stats.RemoteSkipped}}</td></tr>
<tr><td>upload queue</td><td class="n">{{.Stats.UploadQueue}}</td></tr>
<tr><td>uploaded / already there</td><td class="n">{{.Stats.Uploads}} ({{bytes .Stats.BytesUp}}) / {{.Stats.UploadsFound}}</td></tr>
<tr><td>upload errors / dropped</td><td class="n">{{.Stats.UploadErrors}} / {{.Stats.UploadsDropped}}</td></tr>
<tr><td>rejected by verification</td><td class="n">{{.Stats.CorruptRemote}}</td></tr>
</table>{{end}}

<h2>Local tier</h2>
<table>
<tr><td>directory</td><td><code>{{.Dir}}</code></td></tr>
<tr><td>written</td><td class="n">{{.Stats.Writes}} ({{bytes .Stats.BytesWritten}})</td></tr>
<tr><td>removed as corrupt</td><td class="n">{{.Stats.CorruptLocal}}</td></tr>
</table>
{{end}}

{{with .Sessions}}
<h2>Sessions</h2>
<p><span id="sessions-live">{{.Live}}</span> live · {{.Accepted}} since start · {{.Closed}} closed normally ·
dropped: {{range $k, $v := .Dropped}}{{$k}} {{$v}} {{else}}none{{end}}</p>
{{if .Sessions}}<table>
<tr><th class="n">session</th><th>peer</th><th class="n">age</th><th class="n">requests</th></tr>
{{range .Sessions}}<tr><td class="n">{{.ID}}</td><td>{{.Peer}}</td><td class="n">{{age .Start}}</td><td class="n">{{.Requests}}</td></tr>
{{end}}</table>{{end}}
{{end}}

<p class="meta"><a href="/metrics">metrics</a> · <a href="/status.json">status.json</a> · <a href="/healthz">healthz</a> · <a href="/debug/pprof/">pprof</a></p>
</body></html>
`))
})
