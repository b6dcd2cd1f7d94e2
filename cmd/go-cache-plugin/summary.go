package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/metricsfile"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// The metrics file (see lib/metricsfile): with --metrics-file, each
// direct-mode process appends a line of its metrics at exit, and the
// summary command totals the file, for a CI job's summary.

// bindMetricsFile defines --metrics-file on fs.
func (c *config) bindMetricsFile(fs *flag.FlagSet) {
	fs.StringVar(&c.MetricsFile, "metrics-file", "", "direct mode: append one JSON line of this process's metrics to this file at exit (see go-cache-plugin help summary)")
}

func init() {
	globalEnv = append(globalEnv, envVar{"metrics-file", "GOCACHE_METRICS_FILE"})
}

// appendMetricsFile appends the process's record to cfg.MetricsFile, if
// set. A failure is reported, never fatal: the build has succeeded.
func appendMetricsFile(cfg *config, start time.Time, cache *gobuild.Cache, st *store.Store, m *gobuild.Manifests, names []string) {
	if cfg.MetricsFile == "" {
		return
	}
	err := metricsfile.Append(cfg.MetricsFile, metricsfile.Record{
		Start:     start,
		End:       time.Now(),
		PID:       os.Getpid(),
		Manifests: names,
		Cache:     cache.Stats(),
		Store:     st.Stats(),
		Prefetch:  m.Stats(),
	})
	if err != nil {
		warnf("%v", err)
	}
}

// summaryConfig holds the flags of the summary command.
type summaryConfig struct {
	Markdown bool
}

func summaryCommand() *command.C {
	sc := new(summaryConfig)
	return &command.C{
		Name:  "summary",
		Usage: "[--markdown] FILE",
		Help: `Total the metrics file of a CI job's go commands.

With --metrics-file=FILE (GOCACHE_METRICS_FILE), each go-cache-plugin the go
command starts in direct mode appends one JSON line of its metrics to FILE
as it exits. summary adds them up: the build cache's hits and misses, what
came from the bucket (objects and bytes, prefetches included), how much of
the prefetched bytes the builds used, the uploads, and the time the
processes ran. With --markdown it prints a table for $GITHUB_STEP_SUMMARY.

Lines it cannot parse (a line cut short, another version's) are skipped
and counted. A missing FILE is an error; an empty one reports no go
commands.`,
		SetFlags: func(_ *command.Env, fs *flag.FlagSet) {
			fs.BoolVar(&sc.Markdown, "markdown", false, "print a Markdown table")
		},
		Run: func(env *command.Env) error {
			if len(env.Args) != 1 {
				return env.Usagef("summary takes one metrics file")
			}
			return failed(runSummary(os.Stdout, env.Args[0], sc))
		},
	}
}

func runSummary(w io.Writer, path string, sc *summaryConfig) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	defer f.Close()
	recs, bad, err := metricsfile.Read(f)
	if err != nil {
		return fmt.Errorf("summary: %s: %w", path, err)
	}
	for i, e := range bad {
		if i == 3 {
			warnf("summary: %s: %d more lines not understood", path, len(bad)-i)
			break
		}
		warnf("summary: %s: %v", path, e)
	}
	t := metricsfile.Total(recs)
	if sc.Markdown {
		writeSummaryMarkdown(w, t, len(bad))
		return nil
	}
	writeSummaryText(w, t, len(bad))
	return nil
}

// writeSummaryText prints the totals as key=value pairs, one group a line.
func writeSummaryText(w io.Writer, t metricsfile.Totals, bad int) {
	fmt.Fprintf(w, "processes=%d with_bucket=%d read_only_processes=%d bad_lines=%d busy=%s span=%s\n",
		t.Processes, t.Remote, t.ReadOnly, bad, t.Busy.Round(time.Millisecond), t.Last.Sub(t.First).Round(time.Millisecond))
	c := t.Cache
	fmt.Fprintf(w, "gets=%d hits=%d misses=%d puts=%d put_bytes=%d\n", c.Gets, c.Hits, t.Misses(), c.Puts, c.PutBytes)
	st := t.Store
	st.Remote = t.Remote > 0
	st.ReadOnly = t.ReadOnly > 0
	st.Breaker = "-"
	fmt.Fprintf(w, "store %v\n", st)
	fmt.Fprintf(w, "prefetch %v\n", t.Prefetch)
}

// writeSummaryMarkdown prints the totals as a Markdown table.
func writeSummaryMarkdown(w io.Writer, t metricsfile.Totals, bad int) {
	fmt.Fprintf(w, "### go-cache-plugin\n\n")
	if t.Processes == 0 {
		fmt.Fprintf(w, "No go command used the cache in this job.\n")
		if bad > 0 {
			fmt.Fprintf(w, "\n%d lines of the metrics file were not understood.\n", bad)
		}
		return
	}
	pct := func(n, of int64) string {
		if of == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
	}
	c, st, p := t.Cache, t.Store, t.Prefetch
	bucket := "none (local cache only)"
	switch {
	case t.Remote == t.Processes && t.ReadOnly == t.Processes:
		bucket = "read-only"
	case t.Remote == t.Processes && t.ReadOnly == 0:
		bucket = "read and write"
	case t.Remote > 0:
		bucket = fmt.Sprintf("in %d of %d processes, %d of them read-only", t.Remote, t.Processes, t.ReadOnly)
	}
	rows := [][2]string{
		{"go commands", fmt.Sprintf("%d", t.Processes)},
		{"bucket", bucket},
		{"cache hits", fmt.Sprintf("%d of %d lookups (%s)", c.Hits, c.Gets, pct(c.Hits, c.Gets))},
		{"cache misses", fmt.Sprintf("%d; %d outputs stored (%s)", t.Misses(), c.Puts, formatBytes(c.PutBytes))},
	}
	if t.Remote > 0 {
		rows = append(rows,
			[2]string{"from the bucket", fmt.Sprintf("%d objects, %s (prefetches included); %d not there", st.RemoteHits, formatBytes(st.BytesDown), st.RemoteMisses)},
			[2]string{"prefetch", fmt.Sprintf("%d outputs, %s: used %s (%s), wasted %s",
				p.Prefetched, formatBytes(p.PrefetchedBytes), formatBytes(p.UsedBytes), pct(p.UsedBytes, p.PrefetchedBytes), formatBytes(p.WastedBytes))},
		)
		up := fmt.Sprintf("%d objects, %s; %d already there", st.Uploads, formatBytes(st.BytesUp), st.UploadsFound)
		if st.UploadErrors+st.UploadsDropped > 0 {
			up += fmt.Sprintf("; %d failed, %d dropped", st.UploadErrors, st.UploadsDropped)
		}
		if st.UploadsSkipped > 0 {
			up += fmt.Sprintf("; %d not made (read-only)", st.UploadsSkipped)
		}
		rows = append(rows, [2]string{"uploads", up})
		if n := st.RemoteErrors + st.RemoteSkipped + st.CorruptRemote; n > 0 {
			rows = append(rows, [2]string{"bucket problems", fmt.Sprintf("%d errors, %d calls skipped (breaker open), %d corrupt objects", st.RemoteErrors, st.RemoteSkipped, st.CorruptRemote)})
		}
		if len(t.Manifests) > 0 {
			rows = append(rows, [2]string{"manifests", fmt.Sprintf("%s: %d read, %d written", strings.Join(t.Manifests, ", "), p.ManifestsRead, p.ManifestsWritten)})
		}
	}
	rows = append(rows, [2]string{"time", fmt.Sprintf("%s in the cache processes, %s from the first start to the last exit",
		t.Busy.Round(time.Millisecond), t.Last.Sub(t.First).Round(time.Millisecond))})
	if bad > 0 {
		rows = append(rows, [2]string{"not understood", fmt.Sprintf("%d lines of the metrics file", bad)})
	}
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s |\n", r[0], strings.ReplaceAll(r[1], "|", `\|`))
	}
}
