// Command results reads `go test -json` output on stdin, writes one JSON
// line per leaf test ({"name","result","elapsed","package"}) to the file
// named by -out, and prints "N passed, M failed, K skipped".
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type result struct {
	Name    string  `json:"name"`
	Result  string  `json:"result"`
	Elapsed float64 `json:"elapsed"`
	Package string  `json:"package"`
	Reason  string  `json:"reason,omitempty"`
}

func main() {
	out := flag.String("out", "results.jsonl", "where to write one line per test")
	flag.Parse()
	results := map[string]*result{}
	output := map[string]*strings.Builder{}
	parents := map[string]bool{}
	var order []string
	pkgFail := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if e.Test == "" {
			if e.Action == "fail" {
				pkgFail = true
			}
			if e.Action == "output" {
				fmt.Print(e.Output)
			}
			continue
		}
		if i := strings.LastIndex(e.Test, "/"); i > 0 {
			for p := e.Test[:i]; ; {
				parents[p] = true
				j := strings.LastIndex(p, "/")
				if j < 0 {
					break
				}
				p = p[:j]
			}
		}
		switch e.Action {
		case "run":
			if _, ok := results[e.Test]; !ok {
				results[e.Test] = &result{Name: e.Test, Result: "fail", Package: e.Package}
				output[e.Test] = &strings.Builder{}
				order = append(order, e.Test)
			}
		case "output":
			if b := output[e.Test]; b != nil && !strings.HasPrefix(strings.TrimSpace(e.Output), "=== ") && !strings.HasPrefix(strings.TrimSpace(e.Output), "--- ") {
				b.WriteString(strings.TrimSpace(e.Output) + " ")
			}
		case "pass", "fail", "skip":
			if r := results[e.Test]; r != nil {
				r.Result, r.Elapsed = e.Action, e.Elapsed
			}
		}
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	counts := map[string]int{}
	var failed []string
	sort.SliceStable(order, func(i, j int) bool { return false })
	for _, name := range order {
		if parents[name] {
			continue // count leaves only
		}
		r := results[name]
		if r.Result != "pass" {
			r.Reason = strings.TrimSpace(output[name].String())
			if len(r.Reason) > 500 {
				r.Reason = r.Reason[:500] + "..."
			}
		}
		if r.Result == "fail" {
			failed = append(failed, name)
		}
		counts[r.Result]++
		_ = enc.Encode(r)
	}
	if len(failed) > 0 {
		fmt.Println("Failing tests:")
		for _, n := range failed {
			fmt.Println("  " + n)
		}
	}
	if pkgFail && len(failed) == 0 {
		fmt.Println("the test binary failed outside any test (build error, deployment error or timeout)")
		counts["fail"]++
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", counts["pass"], counts["fail"], counts["skip"])
}
