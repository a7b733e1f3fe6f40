// Command vulndb converts the OSV reports shipped in the golang.org/x/vulndb
// module (data/osv/GO-*.json) into a Go vulnerability database in the v1
// layout (https://go.dev/security/vuln/database#api), which govulncheck
// reads with -db file:///path:
//
//	index/db.json       {"modified": T}
//	index/modules.json  [{"path": M, "vulns": [{"id", "modified", "fixed"}]}]
//	index/vulns.json    [{"id", "modified", "aliases"}]
//	ID/<GO-ID>.json     the OSV entry
//
// Usage:
//
//	go mod download -json golang.org/x/vulndb@VERSION | go run . -out DIR
//
// The input is the JSON that `go mod download -json` prints for the module;
// its Dir locates the reports and its Info file gives the commit time.
// The reports in data/osv carry a zero "modified" time (upstream fills it in
// from git history when it publishes the database), so entries with a zero
// time get the commit time of the module version instead. Everything else in
// an entry is passed through unchanged.
//
// Only the standard library is used, so this stays independent of the
// project's go.mod.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	out := flag.String("out", "", "directory to write the database to (must not exist or be empty)")
	in := flag.String("in", "-", "output of `go mod download -json golang.org/x/vulndb@VERSION` (- for stdin)")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go mod download -json golang.org/x/vulndb@VERSION | vulndb -out DIR")
		os.Exit(2)
	}
	n, err := run(*in, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "vulndb: wrote %d entries to %s\n", n, *out)
}

// download is the subset of `go mod download -json` output used here.
type download struct {
	Path, Version, Dir, Info, Error string
}

func run(in, out string) (int, error) {
	var r io.Reader = os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		r = f
	}
	var d download
	if err := json.NewDecoder(r).Decode(&d); err != nil {
		return 0, fmt.Errorf("reading go mod download output: %v", err)
	}
	if d.Error != "" {
		return 0, fmt.Errorf("go mod download %s@%s: %s", d.Path, d.Version, d.Error)
	}
	if d.Dir == "" || d.Info == "" {
		return 0, errors.New("go mod download output lacks Dir or Info")
	}
	var info struct{ Time time.Time }
	b, err := os.ReadFile(d.Info)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return 0, fmt.Errorf("%s: %v", d.Info, err)
	}
	if info.Time.IsZero() {
		return 0, fmt.Errorf("%s: no commit time", d.Info)
	}
	return build(filepath.Join(d.Dir, "data", "osv"), out, info.Time.UTC())
}

// entry is the part of an OSV report the indexes are computed from.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string  `json:"type"`
	Events []event `json:"events"`
}

type event struct {
	Introduced string `json:"introduced"`
	Fixed      string `json:"fixed"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

func build(src, out string, snapshot time.Time) (int, error) {
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("no OSV reports in %s", src)
	}
	if err := emptyDir(out); err != nil {
		return 0, err
	}
	idDir := filepath.Join(out, "ID")
	indexDir := filepath.Join(out, "index")
	for _, dir := range []string{idDir, indexDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
	}

	var (
		dbModified time.Time
		modules    = map[string]*module{}
		vulns      []vuln
		seen       = map[string]bool{}
	)
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return 0, err
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return 0, fmt.Errorf("%s: %v", file, err)
		}
		if e.ID == "" || filepath.Base(file) != e.ID+".json" {
			return 0, fmt.Errorf("%s: file name does not match id %q", file, e.ID)
		}
		if seen[e.ID] {
			return 0, fmt.Errorf("%s: duplicate id", e.ID)
		}
		seen[e.ID] = true

		if e.Modified.IsZero() {
			e.Modified = snapshot
			if raw, err = setModified(raw, snapshot); err != nil {
				return 0, fmt.Errorf("%s: %v", file, err)
			}
		}
		e.Modified = e.Modified.UTC()
		if e.Modified.After(dbModified) {
			dbModified = e.Modified
		}
		if err := os.WriteFile(filepath.Join(idDir, e.ID+".json"), raw, 0o644); err != nil {
			return 0, err
		}
		vulns = append(vulns, vuln{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})

		// One index record per (module, id). An entry may list a module
		// more than once (e.g. per package); the records are merged so that
		// "fixed" still means "no version at or above it is affected".
		perModule := map[string]string{}
		var order []string
		for _, a := range e.Affected {
			path := a.Package.Name
			if path == "" {
				return 0, fmt.Errorf("%s: affected package without name", e.ID)
			}
			fixed := nonSupersededFix(a.Ranges)
			prev, ok := perModule[path]
			switch {
			case !ok:
				order = append(order, path)
			case prev == "" || fixed == "":
				fixed = ""
			case less(fixed, prev):
				fixed = prev
			}
			perModule[path] = fixed
		}
		for _, path := range order {
			m := modules[path]
			if m == nil {
				m = &module{Path: path}
				modules[path] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: perModule[path]})
		}
	}

	mods := make([]*module, 0, len(modules))
	for _, m := range modules {
		sort.Slice(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	sort.Slice(vulns, func(i, j int) bool { return vulns[i].ID < vulns[j].ID })

	for name, v := range map[string]any{
		"db.json": struct {
			Modified time.Time `json:"modified"`
		}{dbModified},
		"modules.json": mods,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(indexDir, name), b, 0o644); err != nil {
			return 0, err
		}
	}
	return len(vulns), nil
}

// setModified returns the report with its "modified" field set to t,
// keeping every other field as it is.
func setModified(raw []byte, t time.Time) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	ts, err := json.Marshal(t.Format(time.RFC3339))
	if err != nil {
		return nil, err
	}
	fields["modified"] = ts
	return json.Marshal(fields)
}

func emptyDir(dir string) error {
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(des) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// nonSupersededFix returns the highest "fixed" version of the SEMVER ranges,
// or "" if the vulnerability is re-introduced after it (or never fixed).
// It is the rule govulncheck and the published database use for the
// "fixed" field of index/modules.json.
func nonSupersededFix(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && less(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && less(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// less reports whether semantic version a sorts before b. Versions are
// written without a "v" prefix, as in OSV. As in golang.org/x/mod/semver,
// an invalid version sorts before every valid one.
func less(a, b string) bool {
	return compare(a, b) < 0
}

func compare(a, b string) int {
	va, oka := parse(a)
	vb, okb := parse(b)
	switch {
	case !oka && !okb:
		return 0
	case !oka:
		return -1
	case !okb:
		return 1
	}
	for i := 0; i < 3; i++ {
		if c := compareNum(va.core[i], vb.core[i]); c != 0 {
			return c
		}
	}
	return comparePre(va.pre, vb.pre)
}

type version struct {
	core [3]string
	pre  string
}

// parse accepts MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] (semver 2.0.0),
// with an optional "v" prefix.
func parse(s string) (version, bool) {
	var v version
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		if !idents(s[i+1:], false) {
			return v, false
		}
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.pre = s[i+1:]
		if !idents(v.pre, true) {
			return v, false
		}
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		if !isNum(p) || (len(p) > 1 && p[0] == '0') {
			return v, false
		}
		v.core[i] = p
	}
	return v, true
}

// idents reports whether s is a non-empty dot-separated list of
// identifiers [0-9A-Za-z-]+; for prereleases, numeric identifiers must not
// have leading zeros.
func idents(s string, pre bool) bool {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return false
		}
		for _, c := range id {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return false
			}
		}
		if pre && isNum(id) && len(id) > 1 && id[0] == '0' {
			return false
		}
	}
	return true
}

func isNum(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// compareNum compares decimal strings without leading zeros.
func compareNum(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// comparePre compares prerelease strings; no prerelease sorts last.
func comparePre(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, y := as[i], bs[i]
		if x == y {
			continue
		}
		xn, yn := isNum(x), isNum(y)
		switch {
		case xn && yn:
			return compareNum(x, y)
		case xn:
			return -1
		case yn:
			return 1
		default:
			return strings.Compare(x, y)
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}
