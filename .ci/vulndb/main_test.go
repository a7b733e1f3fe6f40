package main

import "testing"

func TestCompare(t *testing.T) {
	// Each version sorts strictly before the next (semver.org example
	// order plus Go pseudo-versions).
	order := []string{
		"not-a-version",
		"0.0.0-20190101000000-abcdefabcdef",
		"0.0.0-20220906165146-f3363e06e74c",
		"0.0.1",
		"1.0.0-alpha",
		"1.0.0-alpha.1",
		"1.0.0-alpha.beta",
		"1.0.0-beta",
		"1.0.0-beta.2",
		"1.0.0-beta.11",
		"1.0.0-rc.1",
		"1.0.0",
		"1.2.0",
		"1.10.0",
		"1.19.0-0",
		"1.19.1",
		"1.71.1-0.20260101000000-abcdefabcdef",
		"1.72.0",
		"10.0.0",
	}
	for i := range order {
		for j := range order {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := compare(order[i], order[j]); got != want {
				t.Errorf("compare(%q, %q) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	if compare("1.0.0+build", "1.0.0") != 0 {
		t.Error("build metadata must not affect order")
	}
	for _, bad := range []string{"", "1", "1.2", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3-a..b", "1.2.3+"} {
		if _, ok := parse(bad); ok {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestNonSupersededFix(t *testing.T) {
	r := func(events ...[2]string) osvRange {
		var or osvRange
		or.Type = "SEMVER"
		for _, e := range events {
			or.Events = append(or.Events, event{Introduced: e[0], Fixed: e[1]})
		}
		return or
	}
	for _, tc := range []struct {
		ranges []osvRange
		want   string
	}{
		{[]osvRange{r([2]string{"0", ""}, [2]string{"", "1.2.0"})}, "1.2.0"},
		{[]osvRange{r([2]string{"0", ""}, [2]string{"", "1.18.6"}, [2]string{"1.19.0-0", ""}, [2]string{"", "1.19.1"})}, "1.19.1"},
		{[]osvRange{r([2]string{"0", ""})}, ""},
		{[]osvRange{r([2]string{"0", ""}, [2]string{"", "1.2.0"}, [2]string{"2.0.0", ""})}, ""},
	} {
		if got := nonSupersededFix(tc.ranges); got != tc.want {
			t.Errorf("nonSupersededFix(%v) = %q, want %q", tc.ranges, got, tc.want)
		}
	}
}
