package cachestore

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	want := Config{
		MaxCost:        DefaultMaxCost,
		MaxLoads:       DefaultMaxLoads,
		LoadQueue:      DefaultLoadQueue,
		RefreshQueue:   DefaultRefreshQueue,
		RefreshWorkers: DefaultRefreshWorkers,
		LoadTimeout:    DefaultLoadTimeout,
		BackoffMin:     DefaultBackoffMin,
		BackoffMax:     DefaultBackoffMax,
	}
	if got != want {
		t.Fatalf("defaults = %+v, want %+v", got, want)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []error
	}{
		{"negative sizes", Config{MaxCost: -1, MaxLoads: -1, LoadQueue: -1, RefreshQueue: -1, RefreshWorkers: -1},
			[]error{ErrNegativeMaxCost, ErrNegativeMaxLoads, ErrNegativeLoadQueue, ErrNegativeRefreshQueue, ErrNegativeRefreshWorkers}},
		{"negative timeout", Config{LoadTimeout: -time.Second}, []error{ErrNegativeLoadTimeout}},
		{"backoff min above max", Config{BackoffMin: time.Minute, BackoffMax: time.Second}, []error{ErrBadBackoff}},
		{"negative backoff", Config{BackoffMin: -time.Second}, []error{ErrBadBackoff}},
		{"refresh ahead of 1", Config{RefreshAhead: 1}, []error{ErrBadRefreshAhead}},
		{"refresh ahead NaN", Config{RefreshAhead: math.NaN()}, []error{ErrBadRefreshAhead}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg, &fakeLoader{}, nil)
			if s != nil {
				s.Close()
				t.Fatalf("New(%+v) returned a store", tc.cfg)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("New(%+v) = %v, want it to include %v", tc.cfg, err, w)
				}
			}
		})
	}
}

func TestNilLoader(t *testing.T) {
	if _, err := New[any, any](Config{MaxCost: -1}, nil, nil); !errors.Is(err, ErrNilLoader) || !errors.Is(err, ErrNegativeMaxCost) {
		t.Fatalf("New with a nil loader and a bad config = %v, want both problems", err)
	}
}

func TestBackoffMinAboveDefaultMax(t *testing.T) {
	got, err := Config{BackoffMin: 2 * time.Minute}.withDefaults()
	if err != nil || got.BackoffMax != 2*time.Minute {
		t.Fatalf("BackoffMin 2m alone = %v, %v; want BackoffMax 2m", got.BackoffMax, err)
	}
}
