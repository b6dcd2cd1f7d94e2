package store

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-cache-plugin/go-cache-plugin/internal/counters"
)

// storeCounters are the store's live metrics, the twins of [Stats]'s
// counters (see internal/counters).
type storeCounters struct {
	localHits, localMisses, corruptLocal atomic.Int64
	writes, bytesWritten                 atomic.Int64

	remoteHits, remoteMisses, remoteErrors, remoteSkipped atomic.Int64
	corruptRemote, bytesDown                              atomic.Int64

	uploads, uploadsFound, uploadErrors, uploadsDropped, bytesUp atomic.Int64
	uploadsSkipped                                               atomic.Int64

	trims, trimmed, trimmedBytes atomic.Int64
}

// Stats is a snapshot of a store's metrics since it was opened. Local
// hits and misses count lookups through [Store.Get] and [Store.GetLocal]
// (for the build cache, outputs); remote hits and misses count every object
// asked of the remote tier, small records included.
type Stats struct {
	LocalHits    int64 `json:"local_hits"`    // objects found in the local tier
	LocalMisses  int64 `json:"local_misses"`  // objects not found locally
	CorruptLocal int64 `json:"corrupt_local"` // local objects removed for failing their check
	Writes       int64 `json:"writes"`        // objects written to the local tier
	BytesWritten int64 `json:"bytes_written"` // bytes written to the local tier

	RemoteHits    int64 `json:"remote_hits"`    // local misses faulted in from the remote tier
	RemoteMisses  int64 `json:"remote_misses"`  // local misses the remote tier did not have
	RemoteErrors  int64 `json:"remote_errors"`  // remote calls that failed (counted as misses)
	RemoteSkipped int64 `json:"remote_skipped"` // remote calls skipped while the breaker was open
	CorruptRemote int64 `json:"corrupt_remote"` // remote objects rejected by verification
	BytesDown     int64 `json:"bytes_down"`     // bytes faulted in

	Uploads        int64 `json:"uploads"`         // objects written to the remote tier
	UploadsFound   int64 `json:"uploads_found"`   // uploads skipped: already in the remote tier
	UploadErrors   int64 `json:"upload_errors"`   // uploads that failed
	UploadsDropped int64 `json:"uploads_dropped"` // uploads not attempted (breaker open or close deadline)
	UploadQueue    int64 `json:"upload_queue"`    // uploads waiting or in flight
	BytesUp        int64 `json:"bytes_up"`        // bytes uploaded
	UploadsSkipped int64 `json:"uploads_skipped"` // uploads not made: the remote tier is read-only

	Trims        int64 `json:"trims"`         // trims of the local directory run by this store
	Trimmed      int64 `json:"trimmed"`       // objects those trims removed
	TrimmedBytes int64 `json:"trimmed_bytes"` // bytes those trims removed

	Remote   bool   `json:"remote"`    // whether there is a remote tier
	ReadOnly bool   `json:"read_only"` // whether the remote tier is read-only
	Breaker  string `json:"breaker"`   // remote breaker state: "closed", "open" or "half-open"
}

// Stats returns a snapshot of the store's metrics.
func (s *Store) Stats() Stats {
	st := counters.Snapshot[Stats](&s.stats)
	st.ReadOnly = s.readOnly
	if s.remote != nil {
		st.Remote = true
		st.UploadQueue = s.remote.queueLen()
		st.Breaker = s.remote.breaker.state()
	}
	return st
}

// String formats the snapshot as one line of key=value pairs, for logs.
func (st Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "local_hits=%d local_misses=%d corrupt_local=%d writes=%d bytes_written=%d",
		st.LocalHits, st.LocalMisses, st.CorruptLocal, st.Writes, st.BytesWritten)
	if st.Trims > 0 {
		fmt.Fprintf(&b, " trims=%d trimmed=%d trimmed_bytes=%d", st.Trims, st.Trimmed, st.TrimmedBytes)
	}
	if st.Remote {
		fmt.Fprintf(&b, " remote_hits=%d remote_misses=%d remote_errors=%d remote_skipped=%d corrupt_remote=%d bytes_down=%d",
			st.RemoteHits, st.RemoteMisses, st.RemoteErrors, st.RemoteSkipped, st.CorruptRemote, st.BytesDown)
		fmt.Fprintf(&b, " uploads=%d uploads_found=%d upload_errors=%d uploads_dropped=%d upload_queue=%d bytes_up=%d breaker=%s",
			st.Uploads, st.UploadsFound, st.UploadErrors, st.UploadsDropped, st.UploadQueue, st.BytesUp, st.Breaker)
		if st.ReadOnly {
			fmt.Fprintf(&b, " read_only=true uploads_skipped=%d", st.UploadsSkipped)
		}
	}
	return b.String()
}

// A Recorder counts a front end's lookups and stores for metrics; every
// front end (the build cache's handler, the module proxy, the reverse
// proxy) reports through one, so that they are counted one way.
type Recorder interface {
	// Lookup is called after each request served: hit if it was served
	// from the store without asking further, the bytes served, any error
	// and how long it took.
	Lookup(hit bool, size int64, err error, d time.Duration)
	// Store is called after each object written to the store (or not,
	// with an error; a refusal wraps [ErrMismatch]).
	Store(size int64, err error, d time.Duration)
}
