package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// liveConfig is the part of the running configuration that Reload
// changes (DESIGN rule 35), with what is derived from it: the hosts
// fragment URLs may reach, the fragment rules with their metrics, and the
// srcs resolved under both. It is immutable once stored. A page request
// loads it once, when its composition starts, and a fragment fetch once,
// when it starts, so that each runs to its end under the settings it
// began with, however many reloads happen meanwhile.
type liveConfig struct {
	// Config is the whole configuration as it runs now: the live fields
	// (LiveFields) from the last Reload, every other one as New got it.
	Config
	// env is what the pages composed under this configuration use: its
	// limits, and sources with the hosts and rules of Config (and a table
	// of resolutions of its own, which depend on both).
	env *composeEnv
}

// LiveFields names the Config fields that Reload applies to the running
// Proxy; a change to any other field takes effect only when a new Proxy
// is built. fragcache's command line marks the flags that set them as
// live (the README's reload column).
func LiveFields() []string {
	return []string{
		"AllowHosts", "ESICookies", "Fragments",
		"Wait", "MaxWait", "StreamBudget", "FragmentTTL", "StaleTTL",
		"CacheSize", "MaxPageSize", "MaxFragmentSize", "MaxDepth", "MaxIncludes",
	}
}

// applyLive copies the fields LiveFields names from src to dst, lists
// copied so that dst shares no memory with src.
func applyLive(dst, src *Config) {
	dst.AllowHosts = slices.Clone(src.AllowHosts)
	dst.ESICookies = slices.Clone(src.ESICookies)
	dst.Fragments = slices.Clone(src.Fragments)
	dst.Wait, dst.MaxWait, dst.StreamBudget = src.Wait, src.MaxWait, src.StreamBudget
	dst.FragmentTTL, dst.StaleTTL = src.FragmentTTL, src.StaleTTL
	dst.CacheSize, dst.MaxPageSize, dst.MaxFragmentSize = src.CacheSize, src.MaxPageSize, src.MaxFragmentSize
	dst.MaxDepth, dst.MaxIncludes = src.MaxDepth, src.MaxIncludes
}

// newLive builds the snapshot of cfg with the hosts of r; the fragment
// rules take the metrics children their names have now.
func (p *Proxy) newLive(cfg Config, r *reach) *liveConfig {
	return &liveConfig{Config: cfg, env: &composeEnv{
		store:  p.store,
		purges: p.purges,
		src:    newSources(r, &cfg, p.m, p.fw, p.hints),
		scopes: &p.scopes,
		fw:     p.fw,
		m:      p.m,
		act:    p.act,
		limits: composeLimits{
			maxIncludes: cfg.MaxIncludes,
			maxDepth:    cfg.MaxDepth,
			wait:        cfg.Wait,
			maxWait:     cfg.MaxWait,
			stream:      cfg.StreamBudget,
			maxPageSize: cfg.MaxPageSize,
		},
		esiCookies:   cfg.ESICookies,
		markOutcomes: cfg.MarkOutcomes,
	}}
}

// Reload applies the live fields of cfg (LiveFields) to the running
// Proxy: every page request and fragment fetch that starts afterwards
// uses them, and those in flight finish under the settings they started
// with. cfg is checked whole first, as New checks it (defaults applied to
// zero fields), and a cfg with any problem changes nothing: the problems
// are returned as New returns them. Fields that are not live are ignored;
// the running values stay. Logger, Metrics and Version are New's.
//
// The metrics follow the fragment rules: the series of a name no rule
// uses any more are deleted, and a name whose rules changed (match,
// share, ttl, language) starts its series again from zero; the fragments
// cached under such a rule are soft-purged (its rule:<name> tag), so that
// each is fetched once more under the rule as it is now.
//
// Reload is safe for concurrent use with serving; concurrent Reloads are
// applied one after the other.
func (p *Proxy) Reload(cfg Config) error {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	if p.closed.Load() {
		return errors.New("proxy: reload: the proxy is closed")
	}
	cfg.Logger, cfg.Metrics, cfg.Version = p.cfg.Logger, p.cfg.Metrics, p.cfg.Version
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	cur := p.live.Load()
	next := cur.Config
	applyLive(&next, &cfg)
	r, err := newReach(next.Upstream, next.AllowHosts)
	if err != nil {
		return fmt.Errorf("proxy: reload: %w", err)
	}
	r.lookup = p.reach.lookup

	if next.CacheSize != p.store.MaxCost() {
		if err := p.store.SetMaxCost(next.CacheSize); err != nil {
			return fmt.Errorf("proxy: reload: %w", err)
		}
		p.m.CacheMaxCost.Set(float64(next.CacheSize))
	}
	names, fresh := ruleClasses(cur.Fragments, next.Fragments)
	p.m.SetFragments(names, fresh)
	hosts := make([]string, 0, len(r.entries))
	for _, e := range r.entries {
		hosts = append(hosts, e.name)
	}
	p.m.AddUpstreams(hosts)
	p.purges.setStaleTTL(next.StaleTTL)
	p.live.Store(p.newLive(next, r))
	p.purgeRules(fresh)
	return nil
}

// purgeRules soft-purges the rule:<name> tag of each rule that changed
// (DESIGN rule 35), after the new rules are live: a fetch that started
// under an old rule started before the purge, so it is fenced too.
func (p *Proxy) purgeRules(names []string) {
	if len(names) == 0 {
		return
	}
	tags := make([]string, len(names))
	for i, n := range names {
		tags[i] = tagRule + n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.cfg.RedisTimeout)
	defer cancel()
	_, _ = p.Purge(ctx, PurgeRequest{Tags: tags, Source: "reload"}) // logged there; tags this short are never refused
}

// ruleClasses returns the metrics names the rules of next use, and those
// of them whose rules differ from old's under the same name: their series
// start again, since their counts no longer describe the same fragments.
// Unnamed rules count as "other", which is never restarted.
func ruleClasses(old, next []FragmentRule) (names, fresh []string) {
	byName := func(rules []FragmentRule) map[string][]FragmentRule {
		m := map[string][]FragmentRule{}
		for _, r := range rules {
			if r.Name != "" {
				m[r.Name] = append(m[r.Name], r)
			}
		}
		return m
	}
	was, now := byName(old), byName(next)
	for _, r := range next {
		rs, ok := now[r.Name]
		if !ok || slices.Contains(names, r.Name) {
			continue
		}
		names = append(names, r.Name)
		if prev, existed := was[r.Name]; existed && !slices.Equal(prev, rs) {
			fresh = append(fresh, r.Name)
		}
	}
	return names, fresh
}
