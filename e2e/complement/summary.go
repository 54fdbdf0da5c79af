// Package complement summarises Complement runs: it reads the `go test -json` streams of the
// Complement packages run against Atoll's image, decides each test's result, groups the
// failures by their first error message, and writes results.tsv and summary.md.
package complement

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Results of one test.
const (
	Pass = "pass"
	Fail = "fail"
	Skip = "skip"
	// NoResult is a test that started but never reported: its package timed out or crashed.
	NoResult = "noresult"
)

// Test is one test or subtest of a run.
type Test struct {
	Package string
	Name    string // TestFoo or TestFoo/sub/case
	Result  string
	Elapsed float64 // seconds
	// Failure is the first error message of a failed test (for a parent test whose own
	// output has none, the first of its failed subtests), normalised for grouping.
	Failure string
	// File is the Complement source file defining the top-level test (the feature area).
	File   string
	output []string
}

// TopLevel reports whether t is a top-level test.
func (t *Test) TopLevel() bool { return !strings.Contains(t.Name, "/") }

// Package is one package's run.
type Package struct {
	Name    string
	Result  string // pass or fail
	Elapsed float64
	Output  []string // package-level output (timeouts, panics, build errors)
}

// Run is everything read from the streams.
type Run struct {
	Packages []*Package
	Tests    []*Test
	// NotFound counts requests answered 404, by method and path template.
	NotFound map[string]int
	// ServerErrors counts requests answered 5xx, by method and path template.
	ServerErrors map[string]int
	Start        time.Time
	End          time.Time
	expected     map[string][]string // package -> top-level tests it has (go test -list)
}

// Expect records the top-level tests a package has; those that never report a result are
// counted as failures with the reason "never started".
func (r *Run) Expect(pkg string, tests []string) {
	if r.expected == nil {
		r.expected = map[string][]string{}
	}
	r.expected[pkg] = tests
	seen := map[string]bool{}
	for _, t := range r.Tests {
		if t.Package == pkg {
			seen[t.Name] = true
		}
	}
	for _, name := range tests {
		if !seen[name] {
			r.Tests = append(r.Tests, &Test{Package: pkg, Name: name, Result: NoResult,
				Failure: "never started: an earlier test crashed the package and reruns did not reach it"})
		}
	}
}

// NeverStarted lists the expected top-level tests that never started.
func (r *Run) NeverStarted() []string {
	var out []string
	for _, t := range r.Tests {
		if t.TopLevel() && t.Result == NoResult && strings.HasPrefix(t.Failure, "never started") {
			out = append(out, shortPkg(t.Package)+"."+t.Name)
		}
	}
	return out
}

type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// Read parses one `go test -json` stream into r.
func (r *Run) Read(in io.Reader) error {
	if r.NotFound == nil {
		r.NotFound, r.ServerErrors = map[string]int{}, map[string]int{}
	}
	tests := map[string]*Test{}
	pkgs := map[string]*Package{}
	for _, t := range r.Tests {
		tests[t.Package+"\x00"+t.Name] = t
	}
	for _, p := range r.Packages {
		pkgs[p.Name] = p
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			continue // a line of non-JSON output
		}
		if !e.Time.IsZero() {
			if r.Start.IsZero() || e.Time.Before(r.Start) {
				r.Start = e.Time
			}
			if e.Time.After(r.End) {
				r.End = e.Time
			}
		}
		if e.Package == "" {
			continue
		}
		if e.Test == "" {
			p := pkgs[e.Package]
			if p == nil {
				p = &Package{Name: e.Package}
				pkgs[e.Package] = p
				r.Packages = append(r.Packages, p)
			}
			switch e.Action {
			case "pass", "fail", "skip":
				// A package may be run in several passes (reruns after a crash).
				if p.Result != Fail {
					p.Result = e.Action
				}
				p.Elapsed += e.Elapsed
			case "output":
				p.Output = append(p.Output, e.Output)
			}
			continue
		}
		key := e.Package + "\x00" + e.Test
		t := tests[key]
		if t == nil {
			t = &Test{Package: e.Package, Name: e.Test, Result: NoResult}
			tests[key] = t
			r.Tests = append(r.Tests, t)
		}
		switch e.Action {
		case "pass", "fail", "skip":
			t.Result, t.Elapsed = e.Action, e.Elapsed
		case "output":
			t.output = append(t.output, e.Output)
			if m := csapiLine.FindStringSubmatch(e.Output); m != nil {
				switch {
				case m[3] == "404":
					r.NotFound[m[1]+" "+PathTemplate(m[2])]++
				case m[3][0] == '5':
					r.ServerErrors[m[1]+" "+PathTemplate(m[2])+" "+m[3]]++
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	failed := func(t *Test) bool { return t.Result == Fail || t.Result == NoResult }
	for _, t := range r.Tests {
		if failed(t) {
			t.Failure = assertionFailure(t.output)
		}
	}
	// A parent without an assertion of its own takes its first failed child's; what is
	// left gets the first line that looks like an error (Complement prints the container's
	// log into a failed test's output, so this comes last).
	for _, t := range r.Tests {
		if !failed(t) || t.Failure != "" {
			continue
		}
		for _, c := range r.Tests {
			if c.Package == t.Package && strings.HasPrefix(c.Name, t.Name+"/") && c.Failure != "" {
				t.Failure = c.Failure
				break
			}
		}
		if t.Failure == "" {
			t.Failure = errorLine(t.output)
		}
		if t.Result == NoResult && t.Failure == "" {
			t.Failure = "no result: the package ended (timeout or crash) while the test ran"
		}
	}
	return nil
}

// [CSAPI] GET hs1/_matrix/client/v3/sync => 404 Not Found (3ms)
var csapiLine = regexp.MustCompile(`\[CSAPI\] ([A-Z]+) [^/\s]*(/\S*) => (\d{3})`)

const ansiRed = "\x1b[31m"

var (
	ansi       = regexp.MustCompile("\x1b\\[[0-9;]*m")
	fileLine   = regexp.MustCompile(`^\s*[\w./-]+\.go:\d+: `)
	urlHost    = regexp.MustCompile(`https?://[^/\s]+`)
	matrixIDs  = regexp.MustCompile(`[!@$#][A-Za-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?|\$[A-Za-z0-9_\-+/]{20,}`)
	longTokens = regexp.MustCompile(`\b[A-Za-z0-9_\-]{24,}\b`)
	numbers    = regexp.MustCompile(`\b\d+(\.\d+)?(ms|s|µs)?\b`)
	byteList   = regexp.MustCompile(`contents=\[[0-9 ]*\]`)
	bodyTail   = regexp.MustCompile(`(?s)( - body:| body:| => ).*$`)
	spaces     = regexp.MustCompile(`\s+`)
	errcode    = regexp.MustCompile(`"errcode":\s*"([A-Z_]+)"`)
	statusWord = regexp.MustCompile(`\b(status|want|code) ([1-5]\d\d)\b`)
	httpStatus = regexp.MustCompile(`\b([1-5]\d\d) ([A-Z][a-z]+)`)
	statusMark = regexp.MustCompile(`HTTP_(\d+)_`)
)

// assertionFailure returns a test's first assertion failure, normalised: Complement prints
// its own in red; a test's plain t.Errorf/t.Fatalf is the last line from a _test.go file
// that is not one of Complement's progress messages.
func assertionFailure(out []string) string {
	for _, l := range out {
		if strings.Contains(l, ansiRed) {
			return Normalise(l)
		}
	}
	for i := len(out) - 1; i >= 0; i-- {
		l := out[i]
		if !testFileLine.MatchString(l) {
			continue
		}
		noise := false
		for _, n := range []string{"Deploy times", "WARNING:", "waiting for", "Making ", "Request body", "[CSAPI]", "[SSAPI]", "Sharing ", "Using host mounts", "joined room ID", "Creating room"} {
			if strings.Contains(l, n) {
				noise = true
				break
			}
		}
		if !noise {
			return Normalise(l)
		}
	}
	return ""
}

var testFileLine = regexp.MustCompile(`^\s+\w+_test\.go:\d+: `)

// errorLine returns the first output line that looks like an error, normalised.
func errorLine(out []string) string {
	for _, l := range out {
		low := strings.ToLower(l)
		if strings.HasPrefix(strings.TrimSpace(l), "---") || strings.HasPrefix(strings.TrimSpace(l), "===") || strings.Contains(l, "[CSAPI]") {
			continue
		}
		if strings.Contains(low, "error") || strings.Contains(low, "fail") || strings.Contains(low, "panic") || strings.Contains(low, "timed out") {
			return Normalise(l)
		}
	}
	return ""
}

// Normalise strips what differs between runs of the same failure: colours, file positions,
// hosts and ports, Matrix IDs, tokens, numbers and trailing response bodies.
func Normalise(s string) string {
	s = ansi.ReplaceAllString(s, "")
	s = fileLine.ReplaceAllString(s, "")
	s = urlHost.ReplaceAllString(s, "")
	s = byteList.ReplaceAllString(s, "contents=[…]")
	s = PathsToTemplates(s)
	s = matrixIDs.ReplaceAllString(s, "<id>")
	s = longTokens.ReplaceAllString(s, "<token>")
	if i := strings.Index(s, "returned non-2xx code: "); i >= 0 {
		// Keep the request and the status, not the body.
		rest := s[i+len("returned non-2xx code: "):]
		if j := strings.Index(rest, " - "); j >= 0 {
			rest = rest[:j]
		}
		s = s[:i] + "returned non-2xx code: " + rest
	} else if i := strings.Index(s, " => {"); i >= 0 {
		// MatchResponse: keep the request, the statuses and the error code of the body.
		tail := ""
		if m := errcode.FindStringSubmatch(s[i:]); m != nil {
			tail = " => " + m[1]
		}
		s = s[:i] + tail
	} else {
		s = bodyTail.ReplaceAllStringFunc(s, func(m string) string {
			if len(m) > 160 {
				return m[:160] + "…"
			}
			return m
		})
	}
	// HTTP statuses ("404 Not Found") survive the number folding.
	s = httpStatus.ReplaceAllString(s, "HTTP_${1}_ $2")
	s = statusWord.ReplaceAllString(s, "$1 HTTP_${2}_")
	s = numbers.ReplaceAllString(s, "N")
	s = statusMark.ReplaceAllString(s, "$1")
	s = strings.TrimSpace(spaces.ReplaceAllString(s, " "))
	if len(s) > 240 {
		s = s[:240] + "…"
	}
	return s
}

var matrixPath = regexp.MustCompile(`/_(matrix|synapse)/[^\s"']*`)

// PathsToTemplates replaces every Matrix API path in s by its template.
func PathsToTemplates(s string) string {
	return matrixPath.ReplaceAllStringFunc(s, PathTemplate)
}

// PathTemplate turns a request path into its route shape: segments that look like Matrix
// IDs, numbers or random tokens become {}.
func PathTemplate(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if variableSegment(s) {
			segs[i] = "{}"
		}
	}
	return strings.Join(segs, "/")
}

func variableSegment(s string) bool {
	if s == "" {
		return false
	}
	if strings.ContainsAny(s, "!@$#%:") {
		return true
	}
	digits, letters := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letters++
		}
	}
	if digits > 0 && letters == 0 {
		return true
	}
	// Random tokens: long, mixed letters and digits, no dots (event types have them).
	return len(s) >= 10 && digits > 0 && letters > 0 && !strings.ContainsAny(s, "._")
}

// Totals counts results.
type Totals struct{ Pass, Fail, Skip, NoResult int }

// Add counts one result.
func (t *Totals) Add(result string) {
	switch result {
	case Pass:
		t.Pass++
	case Fail:
		t.Fail++
	case Skip:
		t.Skip++
	default:
		t.NoResult++
	}
}

// Total is the number of tests counted.
func (t Totals) Total() int { return t.Pass + t.Fail + t.Skip + t.NoResult }

// Count returns the totals of top-level tests and of subtests, for pkg or (empty) all.
func (r *Run) Count(pkg string) (top, sub Totals) {
	for _, t := range r.Tests {
		if pkg != "" && t.Package != pkg {
			continue
		}
		if t.TopLevel() {
			top.Add(t.Result)
		} else {
			sub.Add(t.Result)
		}
	}
	return top, sub
}

// Group is failed top-level tests sharing a first failure message.
type Group struct {
	Failure string
	Tests   []string
}

// FailureGroups groups failed and unfinished top-level tests by failure, largest first.
func (r *Run) FailureGroups() []Group {
	byMsg := map[string]*Group{}
	var out []*Group
	for _, t := range r.Tests {
		if !t.TopLevel() || (t.Result != Fail && t.Result != NoResult) {
			continue
		}
		msg := t.Failure
		if msg == "" {
			msg = "(no error message captured)"
		}
		g := byMsg[msg]
		if g == nil {
			g = &Group{Failure: msg}
			byMsg[msg] = g
			out = append(out, g)
		}
		g.Tests = append(g.Tests, shortPkg(t.Package)+"."+t.Name)
	}
	slices.SortStableFunc(out, func(a, b *Group) int { return len(b.Tests) - len(a.Tests) })
	res := make([]Group, len(out))
	for i, g := range out {
		res[i] = *g
	}
	return res
}

func shortPkg(p string) string {
	return strings.TrimPrefix(p, "github.com/matrix-org/complement/")
}

// WriteTSV writes one line per test: package, test, result, seconds, failure.
func (r *Run) WriteTSV(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "package\ttest\tresult\tseconds\tfailure")
	tests := slices.Clone(r.Tests)
	slices.SortStableFunc(tests, func(a, b *Test) int {
		if c := strings.Compare(a.Package, b.Package); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, t := range tests {
		fmt.Fprintf(bw, "%s\t%s\t%s\t%.2f\t%s\n", shortPkg(t.Package), t.Name, t.Result, t.Elapsed, strings.ReplaceAll(t.Failure, "\t", " "))
	}
	return bw.Flush()
}

// SkipEntry is one test of the skip list and why it is skipped.
type SkipEntry struct{ Pattern, Reason string }

// ReadSkipList reads a skip list: one `Pattern  # reason` a line; blank lines and lines
// starting with # are ignored. A pattern without a reason is an error.
func ReadSkipList(path string) ([]SkipEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []SkipEntry
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pat, reason, ok := strings.Cut(line, "#")
		pat, reason = strings.TrimSpace(pat), strings.TrimSpace(reason)
		if !ok || reason == "" || pat == "" {
			return nil, fmt.Errorf("%s:%d: want `TestName  # reason`", path, i+1)
		}
		out = append(out, SkipEntry{Pattern: pat, Reason: reason})
	}
	return out, nil
}

var testFunc = regexp.MustCompile(`(?m)^func (Test\w+)\(`)

// ReadSources sets each test's File from the Complement module source at dir (the module
// root): the _test.go file of pkg that defines its top-level test.
func (r *Run) ReadSources(dir string) error {
	files := map[string]string{} // package + "\x00" + top-level name -> file
	for _, t := range r.Tests {
		pkgDir := dir + "/" + strings.TrimPrefix(shortPkg(t.Package), "github.com/matrix-org/complement")
		if _, ok := files[t.Package+"\x00"]; ok {
			continue
		}
		files[t.Package+"\x00"] = ""
		ents, err := os.ReadDir(pkgDir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			b, err := os.ReadFile(pkgDir + "/" + e.Name())
			if err != nil {
				return err
			}
			for _, m := range testFunc.FindAllStringSubmatch(string(b), -1) {
				files[t.Package+"\x00"+m[1]] = e.Name()
			}
		}
	}
	for _, t := range r.Tests {
		top, _, _ := strings.Cut(t.Name, "/")
		t.File = files[t.Package+"\x00"+top]
	}
	return nil
}

// Area is the top-level results of one Complement source file.
type Area struct {
	Package, File string
	Totals        Totals
}

// Areas returns the top-level totals per source file, most failures first.
func (r *Run) Areas() []Area {
	idx := map[string]int{}
	var out []Area
	for _, t := range r.Tests {
		if !t.TopLevel() || t.File == "" {
			continue
		}
		k := t.Package + "\x00" + t.File
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Area{Package: shortPkg(t.Package), File: t.File})
		}
		out[i].Totals.Add(t.Result)
	}
	slices.SortStableFunc(out, func(a, b Area) int {
		fa, fb := a.Totals.Fail+a.Totals.NoResult, b.Totals.Fail+b.Totals.NoResult
		if fa != fb {
			return fb - fa
		}
		return strings.Compare(a.Package+a.File, b.Package+b.File)
	})
	return out
}
