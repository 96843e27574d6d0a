package retention

import (
	"testing"
	"time"
)

func TestEffective(t *testing.T) {
	const h = time.Hour
	p := Policy{DefaultMin: h, DefaultMax: 10 * h, AllowedMin: 2 * h, AllowedMax: 100 * h}
	for _, c := range []struct {
		name    string
		content string
		want    Lifetimes
	}{
		{"no event", "", Lifetimes{h, 10 * h}},
		{"in range", `{"max_lifetime": 18000000}`, Lifetimes{h, 5 * h}},
		{"below the allowed min", `{"max_lifetime": 1000}`, Lifetimes{h, 2 * h}},
		{"above the allowed max", `{"max_lifetime": 3600000000}`, Lifetimes{h, 100 * h}},
		{"min too", `{"max_lifetime": 18000000, "min_lifetime": 10800000}`, Lifetimes{3 * h, 5 * h}},
		{"min above max", `{"max_lifetime": 18000000, "min_lifetime": 36000000}`, Lifetimes{5 * h, 5 * h}},
		{"no max: the default", `{"min_lifetime": 7200000}`, Lifetimes{2 * h, 10 * h}},
		{"string", `{"max_lifetime": "18000000"}`, Lifetimes{h, 10 * h}},
		{"negative", `{"max_lifetime": -1}`, Lifetimes{h, 10 * h}},
		{"fraction", `{"max_lifetime": 1.5}`, Lifetimes{h, 10 * h}},
		{"huge", `{"max_lifetime": 1e30}`, Lifetimes{h, 10 * h}},
		{"not an object", `[]`, Lifetimes{h, 10 * h}},
	} {
		var content []byte
		if c.content != "" {
			content = []byte(c.content)
		}
		if got := p.Effective(content); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	// No default and no bounds: kept for ever unless the room says.
	if got := (Policy{}).Effective(nil); got.Max != 0 {
		t.Errorf("no policy: %+v", got)
	}
	if got := (Policy{}).Effective([]byte(`{"max_lifetime": 1}`)); got.Max != time.Millisecond {
		t.Errorf("unbounded: %+v", got)
	}
}

func TestJobCovers(t *testing.T) {
	const h = time.Hour
	for _, c := range []struct {
		job  Job
		max  time.Duration
		want bool
	}{
		{Job{}, 0, false}, {Job{}, h, true},
		{Job{Shortest: h, Longest: 3 * h}, h, true}, {Job{Shortest: h, Longest: 3 * h}, 3 * h, true},
		{Job{Shortest: h, Longest: 3 * h}, 59 * time.Minute, false}, {Job{Shortest: h, Longest: 3 * h}, 4 * h, false},
		{Job{Shortest: h}, 1000 * h, true}, {Job{Longest: h}, time.Minute, true},
	} {
		if got := c.job.covers(c.max); got != c.want {
			t.Errorf("%+v covers %v = %v", c.job, c.max, got)
		}
	}
}
