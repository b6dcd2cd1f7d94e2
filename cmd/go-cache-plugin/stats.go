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
	"github.com/go-cache-plugin/go-cache-plugin/lib/s3util"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
)

// statsConfig holds the flags of the stats command.
type statsConfig struct {
	JSON bool
}

func statsCommand(cfg *config) *command.C {
	sc := new(statsConfig)
	return &command.C{
		Name:  "stats",
		Usage: "[--bucket=<name> ...] [--json]",
		Help: `Report what the cache holds.

stats counts the objects in the cache directory by kind, with their bytes,
and by the age of their last use (use is recorded at most hourly; an action
record's last use is its output's). With --bucket (and the other S3 flags)
it does the same for the bucket, by the age of each object's upload, listing
the bucket page by page (a progress line shows on a terminal).

It changes nothing and does not wait for processes using the directory.
Files that are not the cache's are counted as "other files".`,
		SetFlags: func(_ *command.Env, fs *flag.FlagSet) {
			fs.BoolVar(&sc.JSON, "json", false, "print the report as JSON")
		},
		Run: func(env *command.Env) error {
			if len(env.Args) > 0 {
				return env.Usagef("stats takes no arguments, got %q", env.Args)
			}
			return failed(runStats(env, cfg, sc))
		},
	}
}

// statsReport is the output of stats --json.
type statsReport struct {
	Dir    string       `json:"dir"`
	Local  store.Usage  `json:"local"`
	Bucket *bucketUsage `json:"bucket,omitempty"`
}

type bucketUsage struct {
	Name   string      `json:"name"`
	Prefix string      `json:"prefix,omitempty"`
	Usage  store.Usage `json:"usage"`
}

func runStats(env *command.Env, cfg *config, sc *statsConfig) error {
	ctx := env.Context()
	dir, err := existingCacheDir(cfg.CacheDir)
	if err != nil {
		return err
	}
	local, err := store.Scan(ctx, dir, gobuild.Links)
	if err != nil {
		return err
	}
	rep := statsReport{Dir: dir, Local: local}
	if !sc.JSON {
		printUsage(os.Stdout, "cache directory "+dir, "last used", local)
	}

	if cfg.Bucket != "" {
		bu, err := bucketStats(env, cfg)
		if err != nil {
			return err
		}
		rep.Bucket = bu
		if !sc.JSON {
			title := "bucket " + bu.Name
			if bu.Prefix != "" {
				title += ", prefix " + bu.Prefix
			}
			fmt.Println()
			printUsage(os.Stdout, title, "written", bu.Usage)
		}
	}
	if sc.JSON {
		return writeJSON(os.Stdout, rep)
	}
	return nil
}

// bucketStats lists the bucket, with a progress line on stderr if it is a
// terminal.
func bucketStats(env *command.Env, cfg *config) (*bucketUsage, error) {
	ctx := env.Context()
	cli, err := s3util.New(ctx, s3util.Config{
		Bucket:    cfg.Bucket,
		Region:    cfg.Region,
		Endpoint:  cfg.Endpoint,
		PathStyle: cfg.PathStyle,
		Prefix:    cfg.Prefix,
	})
	if err != nil {
		return nil, err
	}
	progress := isTerminal(os.Stderr)
	tally := store.NewTally(time.Now())
	var n, bytes int64
	last := time.Now()
	show := func(final bool) {
		line := fmt.Sprintf("listing bucket %s: %d objects, %s", cfg.Bucket, n, formatBytes(bytes))
		if final {
			fmt.Fprintf(os.Stderr, "\r%s\r", strings.Repeat(" ", len(line)))
			return
		}
		fmt.Fprintf(os.Stderr, "\r%s", line)
	}
	err = cli.List(ctx, func(o s3util.ObjectInfo) error {
		n++
		bytes += o.Size
		if kind := store.BucketKind(o.Key); kind != "" {
			tally.Add(kind, o.Size, o.LastModified)
		} else {
			tally.Foreign(o.Size)
		}
		if progress && time.Since(last) >= 200*time.Millisecond {
			last = time.Now()
			show(false)
		}
		return nil
	})
	if progress {
		show(true)
	}
	if err != nil {
		return nil, err
	}
	return &bucketUsage{Name: cfg.Bucket, Prefix: strings.Trim(cfg.Prefix, "/"), Usage: tally.Usage()}, nil
}

// ageLabels says what the age buckets of a Usage mean.
var ageLabels = map[string]string{
	"1h":    "< 1 hour",
	"1d":    "< 1 day",
	"7d":    "< 7 days",
	"30d":   "< 30 days",
	"older": ">= 30 days",
}

// printUsage prints u as two small tables: by kind, and by age.
func printUsage(w io.Writer, title, ageTitle string, u store.Usage) {
	fmt.Fprintln(w, title)
	row := func(name string, c store.Count) {
		fmt.Fprintf(w, "  %-12s %10d %12s\n", name, c.Objects, formatBytes(c.Bytes))
	}
	fmt.Fprintf(w, "  %-12s %10s %12s\n", "kind", "objects", "size")
	for _, k := range u.Kinds {
		row(k.Kind, k.Count)
	}
	row("total", u.Total)
	fmt.Fprintf(w, "  %-12s %10s %12s\n", ageTitle, "objects", "size")
	for _, a := range u.Ages {
		label := ageLabels[a.Label]
		if label == "" {
			label = a.Label
		}
		row(label, a.Count)
	}
	var notes []string
	if u.Dangling.Objects > 0 {
		notes = append(notes, fmt.Sprintf("%d records naming a missing object (misses; removed by the next trim)", u.Dangling.Objects))
	}
	if u.Temp.Objects > 0 {
		notes = append(notes, fmt.Sprintf("%d temporary files (%s)", u.Temp.Objects, formatBytes(u.Temp.Bytes)))
	}
	if u.Foreign.Objects > 0 {
		notes = append(notes, fmt.Sprintf("%d other files (%s), not the cache's: left alone", u.Foreign.Objects, formatBytes(u.Foreign.Bytes)))
	}
	for _, n := range notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
}
