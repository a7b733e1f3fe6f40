package main

import (
	"go/build"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestImportDirection holds the import direction of DESIGN "The house":
// main -> proxy -> {fragment, cachestore, l2, metrics}; the leaves import
// none of each other and not proxy. internal packages are test support
// and may be imported by tests only.
func TestImportDirection(t *testing.T) {
	const mod = "fragcache/"
	allowed := map[string][]string{
		"proxy":      {"fragment", "cachestore", "l2", "metrics"},
		"fragment":   {},
		"cachestore": {},
		"l2":         {},
		"metrics":    {},
	}
	dirs, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, d := range dirs {
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			continue
		}
		pkg, err := build.ImportDir(d.Name(), 0)
		if err != nil {
			continue // not a Go package (deploy, docs)
		}
		seen++
		ok, known := allowed[d.Name()]
		for _, imp := range pkg.Imports { // non-test imports only
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			switch {
			case strings.HasPrefix(dep, "internal/"):
				t.Errorf("%s imports %s: internal packages are for tests", d.Name(), imp)
			case !known:
				t.Errorf("%s is not in DESIGN's house; add it to this test with its allowed imports", d.Name())
			case !slices.Contains(ok, dep):
				t.Errorf("%s imports %s: against DESIGN's import direction", d.Name(), imp)
			}
		}
	}
	if seen < len(allowed) {
		t.Errorf("found %d packages, want at least %d: is the test run from the module root?", seen, len(allowed))
	}
	root, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range root.Imports {
		if strings.HasPrefix(imp, mod+"internal/") {
			t.Errorf("main imports %s: internal packages are for tests", imp)
		}
	}
}
