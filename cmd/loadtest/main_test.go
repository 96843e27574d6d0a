package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseScenarios(t *testing.T) {
	for in, want := range map[string][]string{
		"all":                       {"send", "concurrent", "sync", "backchat", "paginate", "initialsync"},
		"sync":                      {"sync"},
		"paginate, send,paginate,,": {"paginate", "send"},
	} {
		got, err := parseScenarios(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseScenarios(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ",", "send,bogus", "all,send"} {
		if got, err := parseScenarios(bad); err == nil {
			t.Errorf("parseScenarios(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseFlags(t *testing.T) {
	env := map[string]string{"LOADTEST_SHARED_SECRET": "from-env"}
	cfg, err := parseFlags([]string{"-url", "http://h:8008/", "-n", "7", "-scenarios", "sync,send", "-backchat-filter=false", "-pid", "42"},
		func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.N != 7 || cfg.iterations(defaultSendN) != 7 || cfg.BackchatFilter || !reflect.DeepEqual(cfg.PIDs, []int{42}) ||
		!reflect.DeepEqual(cfg.URLs, []string{"http://h:8008"}) ||
		!reflect.DeepEqual(cfg.Scenarios, []string{"sync", "send"}) || cfg.SharedSecret.reveal() != "from-env" ||
		!cfg.RegistrationToken.isZero() {
		t.Errorf("cfg = %+v", cfg)
	}

	def, err := parseFlags(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if def.iterations(defaultSyncN) != 500 || def.Senders != 8 || def.Messages != 20000 || def.History != 100000 ||
		def.Page != 1000 || def.Backchat != 50 || !def.BackchatFilter || def.SyncPark != 2*time.Millisecond ||
		def.DurationLimit != 10*time.Minute || def.PaginateFrom != "sync" || len(def.Scenarios) != len(scenarios) ||
		def.Rooms != 1 || def.InitialRooms != 200 || def.PIDs != nil ||
		!reflect.DeepEqual(def.URLs, []string{"http://127.0.0.1:8008"}) {
		t.Errorf("defaults = %+v", def)
	}

	for _, bad := range [][]string{
		{"-senders", "0"}, {"-url", "localhost:8008"}, {"-paginate-from", "start"}, {"-duration-limit", "0s"},
		{"-scenarios", "nope"}, {"extra"}, {"-n", "-1"}, {"-rooms", "0"}, {"-initial-rooms", "0"},
		{"-url", "http://a:1,localhost:2"}, {"-url", ","}, {"-pid", "12,x"}, {"-pid", "0"},
	} {
		if _, err := parseFlags(bad, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseFlagsSeveralProcesses(t *testing.T) {
	cfg, err := parseFlags([]string{"-url", "http://127.0.0.1:18448, http://127.0.0.1:18449/,", "-pid", "101,102",
		"-rooms", "50", "-initial-rooms", "20", "-scenarios", "concurrent,initialsync"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.URLs, []string{"http://127.0.0.1:18448", "http://127.0.0.1:18449"}) ||
		!reflect.DeepEqual(cfg.PIDs, []int{101, 102}) || cfg.Rooms != 50 || cfg.InitialRooms != 20 ||
		!reflect.DeepEqual(cfg.Scenarios, []string{"concurrent", "initialsync"}) {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestParseURLsAndPIDs(t *testing.T) {
	for in, want := range map[string][]string{
		"http://a:1":                 {"http://a:1"},
		" http://a:1/ ,http://b:2,,": {"http://a:1", "http://b:2"},
	} {
		if got, err := parseURLs(in); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseURLs(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", " , ", "http://a:1,http://a:1/", "http://a:1,a:2"} {
		if got, err := parseURLs(bad); err == nil {
			t.Errorf("parseURLs(%q) = %v, want an error", bad, got)
		}
	}
	for in, want := range map[string][]int{"": nil, "7": {7}, "7, 9,": {7, 9}} {
		if got, err := parsePIDs(in); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parsePIDs(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-3", "0", "7,7", "7;9"} {
		if got, err := parsePIDs(bad); err == nil {
			t.Errorf("parsePIDs(%q) = %v, want an error", bad, got)
		}
	}
}

func TestRSSNote(t *testing.T) {
	if got := rssNote([]int{5}, []int64{1024}, []int64{2048}); got != "" {
		t.Errorf("one process: %q, want none (the table has it)", got)
	}
	want := "rss MiB per process: pid 5 1.0 -> 2.0, pid 6 3.0 -> 3.5"
	if got := rssNote([]int{5, 6}, []int64{1024, 3072}, []int64{2048, 3584}); got != want {
		t.Errorf("rssNote = %q, want %q", got, want)
	}
	if sum([]int64{1024, 3072}) != 4096 || sum(nil) != 0 {
		t.Error("sum")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\thomeserver\nVmPeak:\t  812344 kB\nVmRSS:\t   123456 kB\nRssAnon:\t  100000 kB\n"
	if got, err := parseVmRSS([]byte(status)); err != nil || got != 123456 {
		t.Errorf("parseVmRSS = %d, %v; want 123456", got, err)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n"} {
		if got, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("parseVmRSS(%q) = %d, want an error", bad, got)
		}
	}
}

func TestWriteTable(t *testing.T) {
	ok := &result{Scenario: "send", Summary: summarize([]time.Duration{1500 * time.Microsecond, 2500 * time.Microsecond}, 0, time.Second),
		RSSBefore: 102400, RSSAfter: 104448}
	bad := &result{Scenario: "paginate", Incomplete: true}
	bad.fail("%d missing", 3)
	var out strings.Builder
	writeTable(&out, []*result{ok, bad}, true)
	got := out.String()
	lines := strings.Split(got, "\n")
	if len(lines) < 4 {
		t.Fatalf("table:\n%s", got)
	}
	if !strings.HasPrefix(strings.TrimSpace(lines[1]), "send    ") || !strings.HasPrefix(strings.TrimSpace(lines[2]), "paginate ") {
		t.Errorf("scenario names not left-aligned:\n%s", got)
	}
	for i, want := range []string{
		"send 2 0 ok 2.0 2.00 1.50 2.50 2.50 2.50 100.0 102.0 2.0",
		"paginate 0 0 1 failed 0.0 0.00 0.00 0.00 0.00 0.00 0.0 0.0 0.0",
		"paginate: FAIL: 3 missing",
	} {
		if f := strings.Join(strings.Fields(lines[i+1]), " "); f != want {
			t.Errorf("line %d = %q, want %q", i+1, f, want)
		}
	}
	if ok.passed() != true || bad.passed() != false {
		t.Errorf("passed: ok %v, bad %v", ok.passed(), bad.passed())
	}
}
