package configs

import (
	"fmt"
	"time"
)

// Retention configures message retention (Synapse's retention section):
// purge jobs delete the history of rooms older than each room's
// max_lifetime (package retention).
type Retention struct {
	// Enabled turns retention and the purge jobs on.
	// Default: false.
	Enabled bool `yaml:"enabled"`

	// DefaultPolicy is the policy of rooms without an m.room.retention
	// state event, and what an event without max_lifetime falls back to.
	// Default: min_lifetime 0, max_lifetime 0 (kept for ever).
	DefaultPolicy RetentionPolicy `yaml:"default_policy"`

	// AllowedLifetimeMin is the shortest max_lifetime a room may set;
	// shorter ones are raised to it. 0: no bound.
	// Default: 0.
	AllowedLifetimeMin Duration `yaml:"allowed_lifetime_min"`

	// AllowedLifetimeMax is the longest max_lifetime a room may set;
	// longer ones are lowered to it. 0: no bound.
	// Default: 0.
	AllowedLifetimeMax Duration `yaml:"allowed_lifetime_max"`

	// PurgeJobs are the purge jobs, each run every Interval over the rooms
	// whose effective max_lifetime lies in its range. At least one.
	// Default: one job over every room, once a day.
	PurgeJobs []PurgeJob `yaml:"purge_jobs"`
}

// RetentionPolicy is a default retention policy.
type RetentionPolicy struct {
	// MinLifetime is how long events are kept at least.
	// Default: 0.
	MinLifetime Duration `yaml:"min_lifetime"`
	// MaxLifetime is how long events are kept at most; 0: for ever.
	// Default: 0.
	MaxLifetime Duration `yaml:"max_lifetime"`
}

// PurgeJob is one entry of Retention.PurgeJobs.
type PurgeJob struct {
	// ShortestMaxLifetime and LongestMaxLifetime bound, inclusively, the
	// effective max_lifetime of the rooms the job purges; 0: unbounded.
	// Default: 0.
	ShortestMaxLifetime Duration `yaml:"shortest_max_lifetime"`
	// Default: 0.
	LongestMaxLifetime Duration `yaml:"longest_max_lifetime"`
	// Interval is how often the job runs. More than 0.
	// Default: 1d.
	Interval Duration `yaml:"interval"`
}

// DefaultRetention is Retention's default: off, one daily job over every
// room (Synapse's default purge job).
func DefaultRetention() Retention {
	return Retention{PurgeJobs: []PurgeJob{{Interval: Duration(24 * time.Hour)}}}
}

func (r *Retention) validate(lines map[string]int) []*FieldError {
	var problems []*FieldError
	bad := func(field, format string, args ...any) {
		problems = append(problems, &FieldError{Field: field, Line: lines[field], Err: fmt.Errorf(format, args...)})
	}
	if p := r.DefaultPolicy; p.MaxLifetime != 0 && p.MinLifetime > p.MaxLifetime {
		bad("retention.default_policy.min_lifetime", "%s is longer than max_lifetime %s", p.MinLifetime, p.MaxLifetime)
	}
	if r.AllowedLifetimeMax != 0 && r.AllowedLifetimeMin > r.AllowedLifetimeMax {
		bad("retention.allowed_lifetime_min", "%s is longer than allowed_lifetime_max %s", r.AllowedLifetimeMin, r.AllowedLifetimeMax)
	}
	if len(r.PurgeJobs) == 0 {
		bad("retention.purge_jobs", "is empty; list at least one job")
	}
	for i, j := range r.PurgeJobs {
		field := fmt.Sprintf("retention.purge_jobs[%d]", i)
		if j.Interval <= 0 {
			bad(field+".interval", "must be more than 0")
		}
		if j.LongestMaxLifetime != 0 && j.ShortestMaxLifetime > j.LongestMaxLifetime {
			bad(field+".shortest_max_lifetime", "%s is longer than longest_max_lifetime %s", j.ShortestMaxLifetime, j.LongestMaxLifetime)
		}
	}
	return problems
}
