package proxy

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// applyLive copies exactly the fields LiveFields names, and every Config
// field is either live or not: a new field is not silently left out of
// reloads, nor silently made live.
func TestApplyLiveCopiesTheLiveFields(t *testing.T) {
	var src, dst Config
	sv := reflect.ValueOf(&src).Elem()
	for i := range sv.NumField() {
		f := sv.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		default:
			t.Fatalf("Config.%s: kind %s not covered by this test", sv.Type().Field(i).Name, f.Kind())
		}
	}
	applyLive(&dst, &src)
	live := LiveFields()
	dv := reflect.ValueOf(&dst).Elem()
	for i := range dv.NumField() {
		name := dv.Type().Field(i).Name
		copied := !dv.Field(i).IsZero()
		if want := slices.Contains(live, name); copied != want {
			t.Errorf("Config.%s: copied by applyLive %v, in LiveFields %v", name, copied, want)
		}
	}
	for _, name := range live {
		if _, ok := dv.Type().FieldByName(name); !ok {
			t.Errorf("LiveFields names %s, which Config does not have", name)
		}
	}
	src.Fragments[0].Name = "changed"
	if dst.Fragments[0].Name == "changed" {
		t.Error("applyLive shares the Fragments list with its source")
	}
}

// Reload applies the live fields to the snapshot new requests load and
// keeps every other field; a config with a problem changes nothing.
func TestReloadAppliesLiveFieldsOnly(t *testing.T) {
	p := newTestProxy(t)
	before := p.live.Load()
	wait, includes := before.Wait, before.MaxIncludes

	bad := DefaultConfig()
	bad.Upstream = "http://app:8080"
	bad.Wait = 2 * time.Second
	bad.MaxDepth = -1
	bad.AllowHosts = []string{"bad host"}
	if err := p.Reload(bad); err == nil {
		t.Fatal("Reload of a config with a negative MaxDepth and a bad host succeeded")
	}
	if p.live.Load() != before {
		t.Fatal("a refused Reload replaced the running configuration")
	}

	next := DefaultConfig()
	next.Upstream = "http://elsewhere:9090" // needs a restart
	next.FetchConcurrency = 3               // needs a restart
	next.Wait = 2 * time.Second
	next.MaxIncludes = 7
	next.CacheSize = 8 << 20
	next.MaxFragmentSize = 4 << 10
	next.AllowHosts = []string{"cdn.example"}
	next.Fragments = []FragmentRule{{Name: "news", Match: "/news/"}}
	if err := p.Reload(next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	lv := p.live.Load()
	if lv == before {
		t.Fatal("Reload kept the old snapshot")
	}
	if lv.Wait != 2*time.Second || lv.MaxIncludes != 7 || lv.MaxFragmentSize != 4<<10 {
		t.Errorf("live Wait %s, MaxIncludes %d, MaxFragmentSize %d; want 2s, 7, 4KiB", lv.Wait, lv.MaxIncludes, lv.MaxFragmentSize)
	}
	if lv.Upstream != "http://app:8080" || lv.FetchConcurrency != DefaultConfig().FetchConcurrency {
		t.Errorf("live Upstream %q, FetchConcurrency %d: a restart setting was applied", lv.Upstream, lv.FetchConcurrency)
	}
	if before.Wait != wait || before.MaxIncludes != includes {
		t.Error("Reload changed the snapshot requests in flight hold")
	}
	if got := p.store.MaxCost(); got != 8<<20 {
		t.Errorf("store budget %d after reloading CacheSize, want 8MiB", got)
	}
	if got := testutil.ToFloat64(p.m.CacheMaxCost); got != 8<<20 {
		t.Errorf("fragcache_cache_max_cost_bytes = %v, want 8MiB", got)
	}

	// The new hosts and rules decide where srcs go, the old ones stay
	// with the old snapshot.
	page := func() string { return "/" }
	if rs := lv.env.src.resolveSrc("http://cdn.example/x", page); rs.err != nil {
		t.Errorf("a src on a newly allowed host: %v", rs.err)
	}
	if rs := before.env.src.resolveSrc("http://cdn.example/x", page); rs.err == nil {
		t.Error("the old snapshot reaches a host allowed only by the reload")
	}
	if rs := lv.env.src.resolveSrc("/news/top", page); rs.rule == nil || rs.frag.Name != "news" {
		t.Errorf("/news/top under the new rules: rule %v, metrics %q; want the news rule", rs.rule, rs.frag.Name)
	}
	if p.m.Upstream("cdn.example") == nil {
		t.Error("a newly allowed host has no upstream series")
	}

	// The fragment client follows --max-fragment-size; its breaker stays.
	tg := &target{scheme: "http", addr: "cdn.example:80", label: "cdn.example"}
	old, br, err := p.fetch.client(tg, before.MaxFragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	hc, br2, err := p.fetch.client(tg, lv.MaxFragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	if hc == old || hc.MaxResponseBodySize != 4<<10 || br2 != br {
		t.Errorf("after the reload: new client %v, MaxResponseBodySize %d, same breaker %v; want a new client, 4KiB, the same breaker",
			hc != old, hc.MaxResponseBodySize, br2 == br)
	}
}

// ruleClasses names the classes of the new rules and, among them, those
// whose rules changed under the same name.
func TestRuleClasses(t *testing.T) {
	old := []FragmentRule{
		{Name: "news", Match: "/news/"},
		{Name: "cart", Match: "/cart/"},
		{Name: "cart", Match: "/basket/"},
		{Name: "gone", Match: "/gone/"},
		{Match: "/unnamed/"},
	}
	next := []FragmentRule{
		{Name: "news", Match: "/news/"},
		{Name: "cart", Match: "/cart/", Share: true},
		{Name: "cart", Match: "/basket/"},
		{Name: "new", Match: "/new/"},
		{Match: "/other-unnamed/"},
	}
	names, fresh := ruleClasses(old, next)
	if want := []string{"news", "cart", "new"}; !slices.Equal(names, want) {
		t.Errorf("names = %q, want %q", names, want)
	}
	if want := []string{"cart"}; !slices.Equal(fresh, want) {
		t.Errorf("fresh = %q, want %q", fresh, want)
	}
}
