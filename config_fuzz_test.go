package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadConfig checks that no YAML file makes loadConfig panic: it
// either returns a config or an error.
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{
		"upstream: http://app:8080\nwait: 80ms\n",
		"upstream: http://app:8080\nfragments:\n  - name: weather\n    match: /widgets/weather\n    share: true\n    ttl: 5m\n",
		"upstream: http://app\ncache_size: 256MiB\nallow_host: [cdn.example, 'api:8443']\n",
		"upstream: [1, 2]\nwait: -1s\nmax_depth: 1e99\n", "fragments: {a: b}\n", "bogus: 1\n", "- a\n- b\n", "&a [*a]\n",
		"upstream: http://app\nfragments:\n  - {name: '', match: ''}\n",
		"upstream: http://app\nallow_host: [ok, 'http://x', [1]]\ntrusted_proxy: 10.0.0.1/8\nfragments:\n  - {name: other, match: x, mach: y}\n",
		"upstream: http://app\npreserve_host: on\nscope_cookie: 'a b, c'\nfetch_queue: 0\ntls_cert: /nonexistent\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yaml []byte) {
		path := filepath.Join(dir, "fragcache.yaml")
		if err := os.WriteFile(path, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig([]string{"--config", path}, func(string) string { return "" }, nil)
		if err == nil && cfg == nil {
			t.Fatal("no config and no error")
		}
	})
}
