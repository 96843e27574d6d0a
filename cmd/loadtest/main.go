// Command loadtest measures a Matrix homeserver through the standard
// client-server API, so it works against any homeserver (this one, Synapse,
// Dendrite). Each scenario registers its own users and rooms; the tool
// prints latency percentiles and throughput per scenario and exits non-zero
// if any request failed or any check did not hold.
//
//	loadtest -url http://127.0.0.1:8008 -scenarios send,sync -pid $(pidof homeserver)
//
// -url may list several processes serving one homeserver (behind no load
// balancer): each test user is registered on, and then only talks to, one of
// them, round robin.
//
// Exit status: 0 all passed, 1 errors, failed checks or an incomplete run,
// 2 bad flags or no usable server.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// config is the whole configuration of a run, from the command line.
type config struct {
	// URLs are the base URLs, without /_matrix, of the processes serving
	// one homeserver; test users are spread over them round robin. From
	// -url, comma-separated. Default http://127.0.0.1:8008.
	URLs []string
	// Scenarios to run, in this order. Default: all of them.
	Scenarios []string
	// N is the iteration count of send, sync and backchat. 0, the
	// default, means each one's own: 2000, 500 and 200.
	N int
	// Senders is how many users send at once in concurrent and in
	// paginate's fill. Default 8.
	Senders int
	// Rooms is how many rooms concurrent's senders send to. Default 1.
	Rooms int
	// InitialRooms is how many rooms initialsync's user is in. Default 200.
	InitialRooms int
	// Messages is how many messages concurrent sends in total. Default
	// 20000.
	Messages int
	// History is how many messages paginate puts in its room. Default
	// 100000.
	History int
	// Page is the /messages limit of paginate. Default 1000.
	Page int
	// PaginateFrom is where paginate starts: "sync" from the prev_batch
	// of a sync, "none" without a from token (spec v1.3 and later).
	// Default "sync".
	PaginateFrom string
	// Backchat is the timeline limit of backchat's first sync. Default 50.
	Backchat int
	// BackchatFilter makes backchat's first sync ask for Backchat events;
	// false sends no filter, to measure the server's default. Default true.
	BackchatFilter bool
	// SyncPark is how long sync waits after issuing the receiver's
	// long-poll before sending (see runSync). Default 2ms.
	SyncPark time.Duration
	// PIDs are the server processes' IDs; if set, their VmRSS is sampled
	// before and after each scenario. From -pid, comma-separated. Default
	// none: not sampled.
	PIDs []int
	// JSON also prints each result row as a JSON line. Default false.
	JSON bool
	// DurationLimit bounds the whole run. Default 10m.
	DurationLimit time.Duration
	// MaxErrors stops a phase after that many failed requests; 0 never
	// stops. Default 100.
	MaxErrors int
	// SharedSecret, if set, registers users through Synapse's
	// shared-secret admin API and lifts their rate limits. From
	// -shared-secret or $LOADTEST_SHARED_SECRET.
	SharedSecret secret
	// RegistrationToken completes an m.login.registration_token stage of
	// open registration. From -registration-token or
	// $LOADTEST_REGISTRATION_TOKEN.
	RegistrationToken secret
}

// iterations returns -n if given, else def.
func (c config) iterations(def int) int {
	if c.N > 0 {
		return c.N
	}
	return def
}

const usageText = `loadtest measures a Matrix homeserver through the client-server API.

Each scenario registers fresh users (loadtest_<random>_<n>) and rooms:
  send        one user sends -n messages (default 2000), one after another
  concurrent  -senders users send -messages messages at once, to -rooms
              rooms (default 1)
  sync        delay from a send's response to another user's pending
              /sync long-poll returning the event, -n times (default 500);
              with several -url, sender and receiver are on different ones
  backchat    a fresh user joins a room with history and does its first
              /sync, -n times (default 200); checks the timeline holds the
              -backchat most recent events
  paginate    fills a room with -history messages, then pages back with
              /messages and checks every message comes back exactly once
  initialsync a user in -initial-rooms rooms (default 200), each with some
              history, does a full initial /sync -n times (default 50);
              checks every room is there with its newest event

-url may list several processes of one homeserver, comma-separated: each
test user talks to one of them, round robin; -pid then lists their process
IDs, and the rss columns add them up (each process in a note).

Registration uses open registration (m.login.dummy), or Synapse's admin API
with -shared-secret. Rate limits on the server turn into errors: raise them,
or give -shared-secret on Synapse to lift them per test user.

Flags:
`

// parseFlags parses the command line. getenv supplies the secrets' fallback
// environment variables.
func parseFlags(args []string, getenv func(string) string, output io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprint(output, usageText)
		fs.PrintDefaults()
	}
	urlList := fs.String("url", "http://127.0.0.1:8008", "homeserver base URL; several processes of one homeserver comma-separated")
	scenarioList := fs.String("scenarios", "all", "all, or a comma-separated list of send,concurrent,sync,backchat,paginate,initialsync")
	fs.IntVar(&cfg.N, "n", 0, "iterations of send, sync, backchat and initialsync (0: 2000, 500, 200 and 50)")
	fs.IntVar(&cfg.Senders, "senders", 8, "concurrent senders in concurrent and paginate's fill")
	fs.IntVar(&cfg.Rooms, "rooms", 1, "rooms concurrent's senders send to")
	fs.IntVar(&cfg.InitialRooms, "initial-rooms", 200, "rooms of initialsync's user")
	fs.IntVar(&cfg.Messages, "messages", 20000, "messages sent by concurrent")
	fs.IntVar(&cfg.History, "history", 100000, "messages in paginate's room")
	fs.IntVar(&cfg.Page, "page", 1000, "page size (limit) of paginate's /messages requests")
	fs.StringVar(&cfg.PaginateFrom, "paginate-from", "sync", "paginate's first from token: sync (a sync's prev_batch) or none (omitted, spec v1.3+)")
	fs.IntVar(&cfg.Backchat, "backchat", 50, "timeline limit of backchat's first sync")
	fs.BoolVar(&cfg.BackchatFilter, "backchat-filter", true, "send the -backchat timeline limit as a filter; false measures the server's default")
	fs.DurationVar(&cfg.SyncPark, "sync-park", 2*time.Millisecond, "wait between issuing the long-poll and sending, in sync")
	pidList := fs.String("pid", "", "server process IDs, comma-separated: sample their VmRSS around each scenario (Linux)")
	fs.BoolVar(&cfg.JSON, "json", false, "also print results as JSON lines")
	fs.DurationVar(&cfg.DurationLimit, "duration-limit", 10*time.Minute, "deadline of the whole run")
	fs.IntVar(&cfg.MaxErrors, "max-errors", 100, "stop a phase after this many failed requests (0: never)")
	sharedSecret := fs.String("shared-secret", "", "Synapse registration_shared_secret (or $LOADTEST_SHARED_SECRET)")
	regToken := fs.String("registration-token", "", "registration token for open registration (or $LOADTEST_REGISTRATION_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.SharedSecret = newSecret(firstNonEmpty(*sharedSecret, getenv("LOADTEST_SHARED_SECRET")))
	cfg.RegistrationToken = newSecret(firstNonEmpty(*regToken, getenv("LOADTEST_REGISTRATION_TOKEN")))

	var err error
	if cfg.Scenarios, err = parseScenarios(*scenarioList); err != nil {
		return config{}, err
	}
	if cfg.URLs, err = parseURLs(*urlList); err != nil {
		return config{}, err
	}
	if cfg.PIDs, err = parsePIDs(*pidList); err != nil {
		return config{}, err
	}
	for _, c := range []struct {
		name string
		v    int
		min  int
	}{
		{"n", cfg.N, 0}, {"senders", cfg.Senders, 1}, {"messages", cfg.Messages, 1}, {"history", cfg.History, 1},
		{"page", cfg.Page, 1}, {"backchat", cfg.Backchat, 1}, {"max-errors", cfg.MaxErrors, 0},
		{"rooms", cfg.Rooms, 1}, {"initial-rooms", cfg.InitialRooms, 1},
	} {
		if c.v < c.min {
			return config{}, fmt.Errorf("-%s must be at least %d", c.name, c.min)
		}
	}
	if cfg.PaginateFrom != "sync" && cfg.PaginateFrom != "none" {
		return config{}, fmt.Errorf("-paginate-from must be sync or none, not %q", cfg.PaginateFrom)
	}
	if cfg.DurationLimit <= 0 || cfg.SyncPark < 0 {
		return config{}, errors.New("-duration-limit must be positive and -sync-park not negative")
	}
	return cfg, nil
}

// firstNonEmpty returns the first non-empty string.
func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// parseURLs parses -url: one or more comma-separated base URLs, each at
// most once. It returns them without trailing slashes.
func parseURLs(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		u, err := baseURL(f)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, u) {
			return nil, fmt.Errorf("-url lists %s twice", u)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("-url is empty")
	}
	return out, nil
}

// parsePIDs parses -pid: empty, or comma-separated positive process IDs,
// each at most once.
func parsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pid: %q is not a process ID", f)
		}
		if slices.Contains(out, pid) {
			return nil, fmt.Errorf("-pid lists %d twice", pid)
		}
		out = append(out, pid)
	}
	return out, nil
}

// parseScenarios parses -scenarios: "all" or a comma-separated list of
// scenario names, run in the order given, each once.
func parseScenarios(s string) ([]string, error) {
	var names []string
	for _, sc := range scenarios {
		names = append(names, sc.name)
	}
	if strings.TrimSpace(s) == "all" {
		return names, nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(names, f) {
			return nil, fmt.Errorf("unknown scenario %q (have all, %s)", f, strings.Join(names, ", "))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-scenarios is empty")
	}
	return out, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the configured scenarios, prints the report and returns the
// exit status.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, cancel := context.WithTimeout(ctx, cfg.DurationLimit)
	defer cancel()
	// One connection per sender, plus the sync scenario's two, setup's
	// registrations and slack, to each process.
	hss, err := newHomeservers(cfg.URLs, cfg.Senders+setupParallelism+8)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 2
	}
	var versions []string
	for _, hs := range hss {
		if versions, err = hs.versions(ctx); err != nil {
			fmt.Fprintf(stderr, "loadtest: %s does not answer as a Matrix homeserver: %v\n", hs.base, err)
			return 2
		}
	}
	r := &runner{cfg: cfg, hs: hss, log: log, runID: randomHex(4), password: newSecret(randomHex(16))}
	log.Info("starting", "url", strings.Join(cfg.URLs, ","), "versions", strings.Join(versions, ","), "run", r.runID,
		"scenarios", strings.Join(cfg.Scenarios, ","), "deadline", cfg.DurationLimit)
	if !cfg.SharedSecret.isZero() {
		r.admin = setupAdmin(ctx, r)
	}

	var results []*result
	for _, name := range cfg.Scenarios {
		if ctx.Err() != nil {
			res := &result{Scenario: name, Incomplete: true}
			res.note("skipped: run stopped (-duration-limit reached or interrupted)")
			results = append(results, res)
			continue
		}
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
		log.Info("scenario starting", "scenario", name)
		start := time.Now()
		before, beforeErr := r.rss()
		rows, err := scenarios[i].run(ctx, r)
		after, afterErr := r.rss()
		perProcess := rssNote(cfg.PIDs, before, after)
		if err != nil {
			res := &result{Scenario: name}
			res.fail("setup: %v", err)
			rows = append(rows, res)
		}
		stopped := ctx.Err() != nil
		for _, row := range rows {
			row.Incomplete = row.Incomplete || stopped
			row.RSSBefore, row.RSSAfter = sum(before), sum(after)
			if err := errors.Join(beforeErr, afterErr); err != nil {
				row.note("VmRSS: %v", err)
			}
			if perProcess != "" {
				row.note("%s", perProcess)
			}
		}
		if stopped {
			rows[len(rows)-1].note("stopped early: -duration-limit reached or interrupted")
		}
		log.Info("scenario done", "scenario", name, "took", time.Since(start).Round(time.Millisecond))
		results = append(results, rows...)
	}

	writeTable(stdout, results, len(cfg.PIDs) > 0)
	if cfg.JSON {
		writeJSON(stdout, results)
	}
	for _, res := range results {
		if !res.passed() {
			return 1
		}
	}
	return 0
}

// setupAdmin registers a Synapse server admin and checks that it can lift
// rate limits. Without that (other servers have no such API) it returns nil
// and the server's rate limits apply.
func setupAdmin(ctx context.Context, r *runner) *session {
	name := fmt.Sprintf("loadtest_%s_admin", r.runID)
	var admin *session
	err := withRetry(ctx, func() error {
		var err error
		admin, err = r.hs[0].registerShared(ctx, r.cfg.SharedSecret, name, r.password, true, "lt"+r.runID)
		return err
	})
	if err == nil {
		err = admin.overrideRatelimit(ctx, admin.user)
	}
	if err != nil {
		r.log.Warn("cannot lift rate limits; the server's apply", "err", err)
		return nil
	}
	return admin
}

// rss samples the VmRSS of each -pid process in KiB, in -pid's order; 0
// for a process it could not read.
func (r *runner) rss() ([]int64, error) {
	out := make([]int64, len(r.cfg.PIDs))
	var errs []error
	for i, pid := range r.cfg.PIDs {
		kib, err := readRSS(pid)
		if err != nil {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
		out[i] = kib
	}
	return out, errors.Join(errs...)
}

func sum(v []int64) int64 {
	var t int64
	for _, x := range v {
		t += x
	}
	return t
}

// rssNote describes each process's VmRSS before and after a scenario when
// there are several (the table shows their sum); "" for one or none.
func rssNote(pids []int, before, after []int64) string {
	if len(pids) < 2 {
		return ""
	}
	parts := make([]string, len(pids))
	for i, pid := range pids {
		parts[i] = fmt.Sprintf("pid %d %s -> %s", pid, mib(before[i]), mib(after[i]))
	}
	return "rss MiB per process: " + strings.Join(parts, ", ")
}

// randomHex returns 2n random lowercase hex digits, valid in user IDs.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// maxFailNotes is how many failed checks a result describes; the rest are
// only counted.
const maxFailNotes = 5

// result is one row of the report: one measured phase of a scenario.
type result struct {
	Scenario   string
	Summary    summary
	Failures   int      // failed checks
	Notes      []string // errors, failed checks and context, for people
	Incomplete bool     // cut short by -duration-limit or a signal
	RSSBefore  int64    // server VmRSS in KiB before the scenario; 0 if not sampled
	RSSAfter   int64    // and after it
}

// newResult makes a row from a recorder's samples over elapsed.
func newResult(name string, rec *recorder, elapsed time.Duration) *result {
	res := &result{Scenario: name, Summary: rec.summary(elapsed)}
	res.addErrors(rec)
	return res
}

// addErrors notes the recorder's first errors and whether it gave up.
func (res *result) addErrors(rec *recorder) {
	for _, e := range rec.firstErrors() {
		res.note("error: %s", e)
	}
	if rec.exhausted() {
		res.note("stopped after %d errors (-max-errors)", rec.maxErrors)
	}
}

func (res *result) note(format string, args ...any) {
	res.Notes = append(res.Notes, fmt.Sprintf(format, args...))
}

// fail records a failed check.
func (res *result) fail(format string, args ...any) {
	res.Failures++
	if res.Failures <= maxFailNotes {
		res.note("FAIL: "+format, args...)
	} else if res.Failures == maxFailNotes+1 {
		res.note("FAIL: further failures only counted")
	}
}

func (res *result) passed() bool {
	return res.Summary.Errors == 0 && res.Failures == 0 && !res.Incomplete
}

func (res *result) checks() string {
	switch {
	case res.Failures > 0:
		return fmt.Sprintf("%d failed", res.Failures)
	case res.Incomplete:
		return "incomplete"
	}
	return "ok"
}

// writeTable prints the results as a table, then the notes of each row.
func writeTable(w io.Writer, results []*result, withRSS bool) {
	// Numbers align right; the scenario column is padded by hand to align left.
	width := len("scenario")
	for _, res := range results {
		width = max(width, len(res.Scenario))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := fmt.Sprintf("%-*s\t", width, "scenario") + "count\terrors\tchecks\tthroughput/s\tmean ms\tp50 ms\tp95 ms\tp99 ms\tmax ms\t"
	if withRSS {
		header += "rss MiB before\tafter\tdelta\t"
	}
	fmt.Fprintln(tw, header)
	for _, res := range results {
		s := res.Summary
		fmt.Fprintf(tw, "%-*s\t%d\t%d\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t",
			width, res.Scenario, s.Count, s.Errors, res.checks(), s.Throughput, ms(s.Mean), ms(s.P50), ms(s.P95), ms(s.P99), ms(s.Max))
		if withRSS {
			fmt.Fprintf(tw, "%s\t%s\t%s\t", mib(res.RSSBefore), mib(res.RSSAfter), mib(res.RSSAfter-res.RSSBefore))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, res := range results {
		for _, n := range res.Notes {
			fmt.Fprintf(w, "%s: %s\n", res.Scenario, n)
		}
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// writeJSON prints one JSON object per result.
func writeJSON(w io.Writer, results []*result) {
	enc := json.NewEncoder(w)
	for _, res := range results {
		s := res.Summary
		enc.Encode(struct {
			Scenario    string   `json:"scenario"`
			Count       int      `json:"count"`
			Errors      int      `json:"errors"`
			Failures    int      `json:"failed_checks"`
			Incomplete  bool     `json:"incomplete"`
			Throughput  float64  `json:"throughput_per_s"`
			ElapsedS    float64  `json:"elapsed_s"`
			MeanMS      float64  `json:"mean_ms"`
			P50MS       float64  `json:"p50_ms"`
			P95MS       float64  `json:"p95_ms"`
			P99MS       float64  `json:"p99_ms"`
			MaxMS       float64  `json:"max_ms"`
			RSSBeforeKB int64    `json:"rss_before_kib,omitempty"`
			RSSAfterKB  int64    `json:"rss_after_kib,omitempty"`
			Notes       []string `json:"notes,omitempty"`
		}{
			res.Scenario, s.Count, s.Errors, res.Failures, res.Incomplete, s.Throughput, s.Elapsed.Seconds(),
			msf(s.Mean), msf(s.P50), msf(s.P95), msf(s.P99), msf(s.Max), res.RSSBefore, res.RSSAfter, res.Notes,
		})
	}
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
