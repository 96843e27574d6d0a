package main

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	// 1..100 ms: pN is exactly N ms under nearest rank.
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", []time.Duration{7}, 50, 7},
		{"single p99", []time.Duration{7}, 99, 7},
		{"two p50 is the lower", []time.Duration{1, 2}, 50, 1},
		{"two p51 is the upper", []time.Duration{1, 2}, 51, 2},
		{"four p50", []time.Duration{1, 2, 3, 4}, 50, 2},
		{"four p75", []time.Duration{1, 2, 3, 4}, 75, 3},
		{"four p76", []time.Duration{1, 2, 3, 4}, 76, 4},
		{"hundred p50", hundred, 50, 50 * time.Millisecond},
		{"hundred p95", hundred, 95, 95 * time.Millisecond},
		{"hundred p99", hundred, 99, 99 * time.Millisecond},
		{"hundred p100", hundred, 100, 100 * time.Millisecond},
		{"tiny p clamps to first", hundred, 0.001, time.Millisecond},
		{"ten p99 is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	// Shuffled 1..1000 µs: summarize must sort before taking ranks.
	var samples []time.Duration
	for i := 1; i <= 1000; i++ {
		samples = append(samples, time.Duration(i)*time.Microsecond)
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(samples), func(i, j int) { samples[i], samples[j] = samples[j], samples[i] })

	s := summarize(samples, 3, 2*time.Second)
	want := summary{
		Count: 1000, Errors: 3, Elapsed: 2 * time.Second, Throughput: 500,
		Mean: 500500 * time.Nanosecond, // (1+1000)/2 µs
		P50:  500 * time.Microsecond, P95: 950 * time.Microsecond, P99: 990 * time.Microsecond,
		Max: 1000 * time.Microsecond,
	}
	if s != want {
		t.Errorf("summarize =\n %+v\nwant\n %+v", s, want)
	}
}

func TestSummarizeEmpty(t *testing.T) {
	s := summarize(nil, 5, 0)
	if s != (summary{Errors: 5}) {
		t.Errorf("summarize(nil) = %+v, want only Errors 5", s)
	}
}

func TestRecorder(t *testing.T) {
	rec := newRecorder(0, 4)
	rec.ok(3 * time.Millisecond)
	rec.ok(time.Millisecond)
	for i := range 4 {
		if rec.exhausted() {
			t.Fatalf("exhausted after %d errors, want after 4", i)
		}
		rec.fail(errors.New("boom"))
	}
	if !rec.exhausted() {
		t.Error("not exhausted after 4 errors")
	}
	if got := rec.firstErrors(); len(got) != maxErrorBodies {
		t.Errorf("kept %d error descriptions, want %d", len(got), maxErrorBodies)
	}
	s := rec.summary(time.Second)
	if s.Count != 2 || s.Errors != 4 || s.P50 != time.Millisecond || s.Max != 3*time.Millisecond {
		t.Errorf("summary = %+v", s)
	}
	if unlimited := newRecorder(0, 0); func() bool {
		for range 1000 {
			unlimited.fail(errors.New("x"))
		}
		return unlimited.exhausted()
	}() {
		t.Error("recorder with maxErrors 0 became exhausted")
	}
}

func TestMS(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                         "0.00",
		1234567 * time.Nanosecond: "1.23",
		999 * time.Microsecond:    "1.00",
		2 * time.Second:           "2000.00",
	} {
		if got := ms(d); got != want {
			t.Errorf("ms(%v) = %q, want %q", d, got, want)
		}
	}
}
