package main

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// summary is the latency distribution and throughput of one measured phase.
// Percentiles use the nearest-rank method: pN is the smallest sample such
// that at least N% of samples are less than or equal to it. Every reported
// value is therefore a latency that was actually observed, never an
// interpolation between two samples.
type summary struct {
	Count      int           // successful operations
	Errors     int           // failed operations
	Elapsed    time.Duration // wall-clock time of the phase
	Throughput float64       // successful operations per second of Elapsed
	Mean       time.Duration
	P50        time.Duration
	P95        time.Duration
	P99        time.Duration
	Max        time.Duration
}

// summarize computes a summary of the given latencies. samples is sorted in
// place. elapsed is the wall-clock duration the samples were taken over; it
// is the denominator of Throughput (zero elapsed gives zero throughput).
func summarize(samples []time.Duration, errors int, elapsed time.Duration) summary {
	s := summary{Count: len(samples), Errors: errors, Elapsed: elapsed}
	if elapsed > 0 {
		s.Throughput = float64(len(samples)) / elapsed.Seconds()
	}
	if len(samples) == 0 {
		return s
	}
	slices.Sort(samples)
	var total time.Duration
	for _, d := range samples {
		total += d
	}
	s.Mean = total / time.Duration(len(samples))
	s.P50 = percentile(samples, 50)
	s.P95 = percentile(samples, 95)
	s.P99 = percentile(samples, 99)
	s.Max = samples[len(samples)-1]
	return s
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be sorted ascending. It returns 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// ms formats a duration as milliseconds with two decimals, the unit of every
// latency column in the report.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

// maxErrorBodies is how many failure descriptions a recorder keeps for the
// report; the rest are only counted.
const maxErrorBodies = 3

// recorder collects the outcome of each measured operation of a phase. It is
// safe for concurrent use by the goroutines of that phase.
type recorder struct {
	maxErrors int // errors after which exhausted reports true; <= 0 means never

	mu      sync.Mutex
	samples []time.Duration
	errors  int
	first   []string // first maxErrorBodies error descriptions
}

func newRecorder(capacity, maxErrors int) *recorder {
	return &recorder{maxErrors: maxErrors, samples: make([]time.Duration, 0, capacity)}
}

// ok records a successful operation that took d.
func (r *recorder) ok(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

// fail records a failed operation.
func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.errors++
	if len(r.first) < maxErrorBodies {
		r.first = append(r.first, err.Error())
	}
	r.mu.Unlock()
}

// exhausted reports whether the phase has seen so many errors that going on
// would only measure a broken server.
func (r *recorder) exhausted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxErrors > 0 && r.errors >= r.maxErrors
}

// summary summarizes what was recorded over elapsed. Call it after every
// goroutine recording into r has finished.
func (r *recorder) summary(elapsed time.Duration) summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return summarize(r.samples, r.errors, elapsed)
}

// firstErrors returns the first few error descriptions, for the report.
func (r *recorder) firstErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.first)
}
