package cachestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Side table bounds (see recentTable).
const (
	recentSlots    = 1024
	recentCostFrac = 16 // the side table holds at most MaxCost/recentCostFrac
)

// Store is the fragment store: it holds values of type V under string
// keys and loads missing ones through a Loader whose calls take an argument
// of type A (what the load needs beyond the key, detached from the request
// that started it). Create it with New and stop it with Close. It is safe
// for concurrent use; it must not be copied.
//
// A Store owns every goroutine it runs: ristretto's, the refresh workers
// started by New, and one goroutine per load of a missing key, started
// under the load limit. Close stops and waits for all of them.
//
// ristretto is the L1, and its writes are neither immediate nor certain: a
// new key becomes visible only once ristretto's goroutine applied the Set,
// and the Set may be dropped (buffer contention) or refused (admission
// policy). A load therefore hands its entry to its waiters directly, and
// also puts it in a small side table, bounded to 1024 entries and
// MaxCost/16 bytes, that lookups consult when ristretto misses. So the next
// lookup finds a loaded entry at once, and keeps finding it for a while
// even when ristretto refused it. Under memory pressure newer entries push
// older ones out of the side table, ristretto keeps evicting and refusing,
// and lookups turn into misses (and loads), never into errors; refusals,
// drops and evictions are reported to the Observer.
//
// Entries stay in ristretto until their StaleUntil (its TTL), and are
// served fresh, then stale, by the store's own monotonic clock.
type Store[V, A any] struct {
	cfg    Config
	loader Loader[V, A]
	obs    Observer[A]
	cache  *ristretto.Cache[string, *item[V]]
	epoch  time.Time // the store's clock counts nanoseconds from here
	// maxCost is ristretto's budget: Config.MaxCost, then SetMaxCost's.
	// It is an atomic of the store's own so that code holding mu reads it
	// without calling ristretto.
	maxCost atomic.Int64

	life   context.Context // ends when Close starts
	cancel context.CancelFunc
	wg     sync.WaitGroup // refresh workers, miss loads, refresh sends

	sem      chan struct{}      // one token per running load
	refreshQ chan *Flight[V, A] // queued refreshes
	queued   atomic.Int64       // refreshQ slots taken, including sends in progress

	closing   atomic.Bool // set when Close starts
	closeOnce sync.Once
	gets      getGuard // ristretto Gets of lookups in progress

	// mu protects closed, flights, recent, fails, failSweep, failBytes,
	// bypass, bypassSweep and bypassBytes. No ristretto call is made while holding it: ristretto's
	// goroutine calls back into the store and takes it.
	mu          sync.Mutex
	closed      bool
	flights     map[string]*Flight[V, A] // running or queued loads by looked-up key
	recent      recentTable[V]
	fails       map[string]*failure
	failSweep   int
	bypass      map[string]int64 // uncacheable keys, until when
	bypassSweep int
	waiting     loadQueue[V, A] // cold loads waiting for a load token
	failBytes   int64           // the keys of fails and their records' cost
	bypassBytes int64           // likewise for bypass
}

// New validates cfg, applies its defaults, and starts the store: ristretto
// and Config.RefreshWorkers refresh workers. Values come from l; events go
// to obs, which may be nil (no events). Problems in cfg are returned
// joined, each wrapping one of the ErrNegative*, ErrBad* or ErrNilLoader
// errors.
func New[V, A any](cfg Config, l Loader[V, A], obs Observer[A]) (*Store[V, A], error) {
	cfg, err := cfg.withDefaults()
	if l == nil {
		err = errors.Join(err, ErrNilLoader)
	}
	if err != nil {
		return nil, err
	}
	if obs == nil {
		obs = nopObserver[A]{}
	}
	s := &Store[V, A]{
		cfg:         cfg,
		loader:      l,
		obs:         obs,
		epoch:       time.Now(),
		sem:         make(chan struct{}, cfg.MaxLoads),
		refreshQ:    make(chan *Flight[V, A], cfg.RefreshQueue),
		flights:     make(map[string]*Flight[V, A]),
		recent:      newRecentTable[V](recentSlots, max(1, cfg.MaxCost/recentCostFrac)),
		fails:       make(map[string]*failure),
		failSweep:   minSweep,
		bypass:      make(map[string]int64),
		bypassSweep: minSweep,
	}
	s.cache, err = ristretto.NewCache(&ristretto.Config[string, *item[V]]{
		// Ten counters per entry expected when full, assuming entries of
		// about 4 KiB, as ristretto advises.
		NumCounters: min(max(cfg.MaxCost/4096*10, 1000), 10_000_000),
		MaxCost:     cfg.MaxCost,
		BufferItems: 64,
		OnEvict:     s.onEvict,
		OnReject:    s.onReject,
	})
	if err != nil {
		return nil, err
	}
	s.maxCost.Store(cfg.MaxCost)
	s.gets.init()
	s.life, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(cfg.RefreshWorkers)
	for range cfg.RefreshWorkers {
		go s.refreshWorker()
	}
	return s, nil
}

// MaxCost is the store's budget: Config.MaxCost, or the last SetMaxCost.
func (s *Store[V, A]) MaxCost() int64 { return s.maxCost.Load() }

// SetMaxCost changes the budget of the running store (a configuration
// reload). Entries beyond a lowered budget are evicted as new writes are
// applied, not at once, so the cost held may stay above it for a while. The
// side table's share (MaxCost/16) follows at its next write. ristretto's
// admission counters keep the size New gave them from Config.MaxCost: a
// budget raised far above it admits less accurately until a restart.
// n must be positive. Safe for concurrent use.
func (s *Store[V, A]) SetMaxCost(n int64) error {
	if n <= 0 {
		return fmt.Errorf("cachestore: SetMaxCost: the budget must be positive (got %d)", n)
	}
	if s.closing.Load() {
		return ErrClosed
	}
	s.maxCost.Store(n)
	s.cache.UpdateMaxCost(n)
	s.mu.Lock()
	s.recent.maxCost = max(1, n/recentCostFrac)
	s.mu.Unlock()
	return nil
}

// now returns the store's clock: nanoseconds since s.epoch, on the
// monotonic clock.
func (s *Store[V, A]) now() int64 { return int64(time.Since(s.epoch)) }

// at converts t to the store's clock.
func (s *Store[V, A]) at(t time.Time) int64 { return int64(t.Sub(s.epoch)) }

// LookupIn answers at once with what the store holds for key, looked up
// on behalf of group; it never blocks (see Status for the answers). When
// no fresh entry exists it makes sure exactly one load of key runs: it
// starts one, joins the running one, or queues a refresh of the stale
// entry. group names the caller (fragcache: one page request): when every
// load slot is taken, cold loads wait in a queue that serves groups in
// turn (Config.LoadQueue).
//
// detach is called at most once, synchronously, and only when this lookup
// starts a load or queues a refresh; what it returns is passed to the
// Loader as arg. It must return values that share no memory with the
// caller's request, and must not call the Store. LookupIn does not retain
// detach, so a stack closure costs no allocation. detach may be nil (arg is
// then A's zero value).
//
// LookupIn is safe for concurrent use. A fresh hit allocates nothing.
func (s *Store[V, A]) LookupIn(group uint64, key string, detach func() A) Result[V, A] {
	g := s.gets.enter(&s.closing)
	if g == nil {
		return Result[V, A]{Status: Shed, Err: ErrClosed}
	}
	it, ok := s.cache.Get(key)
	s.gets.leave(g)
	if ok {
		now := s.now()
		if now < it.refreshAt && it.expired() == Keep {
			return Result[V, A]{Status: Hit, Entry: it.entry}
		}
		if r, ok := s.serve(key, it, now, detach); ok {
			return r
		}
	}
	return s.lookupSlow(group, key, detach)
}

// Peek answers like LookupIn when the store holds a usable entry for key
// (a stale one queues its refresh, with detach, as LookupIn would), and
// otherwise answers Miss with a nil Flight: it never starts or joins a
// load. A caller that looks a value up under one of several keys peeks at
// the first and looks up the last. A fresh hit allocates nothing.
//
// Peek asks ristretto only, never the side table of writes ristretto has
// not applied yet: a miss then takes no lock, which matters because a
// page's includes that are not shared peek on every view. An entry stored
// a moment ago can be missed; the proxy's per-URL hint covers that window.
func (s *Store[V, A]) Peek(key string, detach func() A) Result[V, A] {
	g := s.gets.enter(&s.closing)
	if g == nil {
		return Result[V, A]{Status: Miss}
	}
	it, ok := s.cache.Get(key)
	s.gets.leave(g)
	now := s.now()
	if ok {
		if r, ok := s.serve(key, it, now, detach); ok {
			return r
		}
	}
	return Result[V, A]{Status: Miss}
}

// serve answers from an item found at now, queueing a refresh when the
// item asks for one. It reports false when the item is past StaleUntil or
// expired hard; an item expired soft is served as one past FreshUntil.
func (s *Store[V, A]) serve(key string, it *item[V], now int64, detach func() A) (Result[V, A], bool) {
	exp := it.expired()
	switch {
	case exp == ExpireHard:
		return Result[V, A]{}, false
	case exp == Keep && now < it.refreshAt:
		return Result[V, A]{Status: Hit, Entry: it.entry}, true
	case exp == Keep && now < it.fresh: // refresh-ahead window
		if now >= it.retryAt.Load() && it.refreshing.CompareAndSwap(false, true) {
			s.queueRefresh(key, it, now, detach)
		}
		return Result[V, A]{Status: Hit, Entry: it.entry}, true
	case now < it.stale:
		st := Updating
		if now < it.retryAt.Load() {
			st = Stale
		} else if it.refreshing.CompareAndSwap(false, true) {
			st = s.queueRefresh(key, it, now, detach)
		}
		return Result[V, A]{Status: st, Entry: it.entry}, true
	}
	return Result[V, A]{}, false
}

// queueRefresh queues a refresh of it, whose refreshing flag the caller
// has just set. It returns Updating when a refresh is queued or already
// running, Stale when none can run.
func (s *Store[V, A]) queueRefresh(key string, it *item[V], now int64, detach func() A) Status {
	// Re-check the backoff now that the flag is ours: a refresh that
	// failed in between set retryAt before clearing the flag.
	if now < it.retryAt.Load() {
		it.refreshing.Store(false)
		return Stale
	}
	if !s.reserveRefresh() {
		it.refreshing.Store(false)
		s.obs.RefreshShed()
		return Stale
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.queued.Add(-1)
		it.refreshing.Store(false)
		return Stale
	}
	if _, ok := s.flights[key]; ok {
		// A load of the key already runs (the item was out of sight when
		// it started). It replaces the item when it succeeds.
		s.mu.Unlock()
		s.queued.Add(-1)
		it.refreshing.Store(false)
		return Updating
	}
	f := newFlight[V, A](key, true, it)
	s.flights[key] = f
	s.wg.Add(1) // Close drains the queue only after this send
	s.mu.Unlock()
	if detach != nil {
		f.arg = detach()
	}
	s.refreshQ <- f // never blocks: reserveRefresh took a slot
	s.wg.Done()
	s.obs.RefreshQueueLen(len(s.refreshQ))
	return Updating
}

// reserveRefresh takes a slot in the refresh queue, or reports false when
// all Config.RefreshQueue slots are taken.
func (s *Store[V, A]) reserveRefresh() bool {
	for {
		n := s.queued.Load()
		if n >= int64(s.cfg.RefreshQueue) {
			return false
		}
		if s.queued.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// lookupSlow answers a lookup that found nothing usable in ristretto.
func (s *Store[V, A]) lookupSlow(group uint64, key string, detach func() A) Result[V, A] {
	now := s.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Result[V, A]{Status: Shed, Err: ErrClosed}
	}
	if it := s.recent.get(key, now); it != nil {
		s.mu.Unlock()
		r, _ := s.serve(key, it, now, detach) // usable: get checked
		return r
	}
	st := Miss
	if until, ok := s.bypass[key]; ok {
		if now < until {
			st = Bypass
		} else {
			s.delBypass(key)
		}
	}
	if f := s.flights[key]; f != nil {
		s.mu.Unlock()
		return Result[V, A]{Status: st, Flight: f, Joined: true}
	}
	if fl := s.fails[key]; fl != nil && now < fl.until {
		err := fl.err
		s.mu.Unlock()
		return Result[V, A]{Status: Failed, Err: err}
	}
	f := newFlight[V, A](key, false, nil)
	select {
	case s.sem <- struct{}{}:
	default:
		if s.waiting.n >= s.cfg.LoadQueue {
			s.mu.Unlock()
			s.obs.LoadShed()
			return Result[V, A]{Status: Shed, Err: ErrShed}
		}
		// Every load slot is taken: wait in the queue, as a flight that
		// others join. detach runs under mu here, as the load may be
		// taken from the queue as soon as mu is released.
		if detach != nil {
			f.arg = detach()
		}
		s.flights[key] = f
		s.waiting.push(group, f)
		n := s.waiting.n
		s.mu.Unlock()
		s.obs.LoadQueueLen(n)
		return Result[V, A]{Status: st, Flight: f}
	}
	s.flights[key] = f
	s.wg.Add(1)
	s.mu.Unlock()
	if detach != nil {
		f.arg = detach()
	}
	go s.runLoads(f)
	return Result[V, A]{Status: st, Flight: f}
}

// runLoads runs f, then the queued loads, holding one load token, which
// it gives back once the queue is empty.
func (s *Store[V, A]) runLoads(f *Flight[V, A]) {
	defer s.wg.Done()
	for f != nil {
		s.load(f)
		f = s.nextLoad()
	}
}

// nextLoad takes the next queued load for a goroutine that holds a load
// token, or gives the token back when none waits. Taking and giving back
// happen under mu, where lookups decide between a token and the queue, so
// no load is left in the queue with nobody to run it.
func (s *Store[V, A]) nextLoad() *Flight[V, A] {
	s.mu.Lock()
	f := s.waiting.pop()
	n := s.waiting.n
	if f == nil {
		<-s.sem
	}
	s.mu.Unlock()
	if f != nil {
		s.obs.LoadQueueLen(n)
	}
	return f
}

// refreshWorker runs queued refreshes until Close.
func (s *Store[V, A]) refreshWorker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.life.Done():
			return
		case f := <-s.refreshQ:
			s.queued.Add(-1)
			s.obs.RefreshQueueLen(len(s.refreshQ))
			select {
			case s.sem <- struct{}{}:
			case <-s.life.Done():
				s.abandon(f)
				return
			}
			s.load(f)
			// The token may go to a queued cold load instead.
			if next := s.nextLoad(); next != nil {
				s.wg.Add(1)
				go s.runLoads(next)
			}
		}
	}
}
