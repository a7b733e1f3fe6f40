package l2

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// EventKind is how a lock holder ended, as published on the event channel
// and as Acquire's waiters learn it.
type EventKind uint8

// The event kinds.
const (
	// Filled: the holder stored an entry (or tried: a purge may have
	// refused it); read it with Get.
	Filled EventKind = iota + 1
	// Failed: the holder's fetch failed; it recorded a failure hint.
	Failed
	// Bypassed: the holder's answer was uncacheable; it recorded a bypass
	// hint, and each waiting replica fetches for its own waiters.
	Bypassed
	// Abandoned: the holder gave up without an answer (its context ended,
	// it shuts down); a waiter takes the lock over at once.
	Abandoned
)

var eventNames = [...]string{"", "filled", "failed", "bypassed", "abandoned"}

// String returns the event kind's name.
func (k EventKind) String() string {
	if int(k) < len(eventNames) && k > 0 {
		return eventNames[k]
	}
	return "unknown"
}

// Outcome is what a holder tells Release.
type Outcome struct {
	Kind EventKind
	// For is how long the Failed or Bypassed hint lasts (the backoff, or
	// --fragment-ttl for a bypass); 0 records no hint. Ignored for Filled
	// and Abandoned.
	For time.Duration
}

// Acquired is the answer of Acquire: either the lock, or why waiting for
// another holder ended.
type Acquired struct {
	// Lock is the fill lock when this caller holds it: read the key once
	// more (DESIGN rule 26), fetch, Set, then Release.
	Lock *Lock
	// Woken, when Lock is nil, is how the other holder ended: Filled (Get
	// the key), Failed (back off until Until) or Bypassed (fetch without
	// storing until Until).
	Woken EventKind
	// Until ends the backoff or bypass of Failed and Bypassed, on the
	// local clock.
	Until time.Time
}

// Lock is a held fill lock of one key (`SET <prefix>:v1:l:<hash> <token>
// NX PX 3000`). While held it is renewed in the background every second,
// until Release, the end of the context given to Acquire, or Close; a
// holder that stops renewing loses it within LockTTL. Its methods are
// safe for concurrent use.
type Lock struct {
	c     *Client
	key   string
	h     keyHash
	lk    string // the lock's Redis key
	token string
	epoch string

	// Start is the Redis server time at which the lock was taken: the
	// start of the fetch, the StoredAt of what Set stores, and the time
	// every purge is fenced against.
	Start time.Time

	released atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{} // closed when the renewal goroutine ended
}

// pollUnsubscribed bounds a wait while the subscription is down: events
// may be lost, so the waiter looks at Redis this often.
const pollUnsubscribed = 100 * time.Millisecond

// Acquire takes the fill lock of key, or waits for the process holding it
// to finish, cluster-wide. It returns at once with the lock when it is
// free. Otherwise it waits for the holder's event on the channel (woken by
// this process's one subscriber, never a connection of its own), re-trying
// when the holder's lock would expire, and returns with Woken set; when
// the holder went away it takes the lock over. ctx bounds the whole wait
// and the renewals of the lock it returns; each Redis request is also
// bounded by Config.Timeout.
//
// An error means no lock and no answer: ErrBreakerOpen, ErrTimeout or
// another Redis failure (fetch without the L2), ctx's error, or ErrClosed.
func (c *Client) Acquire(ctx context.Context, key string) (Acquired, error) {
	if len(key) > MaxKeySize {
		return Acquired{}, ErrKeyTooLong
	}
	h := hashKey(key)
	w := c.w.add(h) // before the first attempt, so that no event slips by
	defer c.w.remove(w)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	waited := false
	end := func(r WaitResult) {
		if waited {
			c.obs.LockWait(r)
		}
	}
	for {
		l, ttl, err := c.tryLock(ctx, key, h)
		if err != nil {
			end(WaitTimeout)
			return Acquired{}, err
		}
		if l != nil {
			end(WaitExpired)
			return Acquired{Lock: l}, nil
		}
		waited = true
		ev, err := c.await(ctx, w, t, ttl)
		if err != nil {
			end(WaitTimeout)
			return Acquired{}, err
		}
		switch ev.kind {
		case Filled:
			end(WaitFilled)
			return Acquired{Woken: Filled}, nil
		case Failed:
			end(WaitFailed)
			return Acquired{Woken: Failed, Until: time.Now().Add(ev.d)}, nil
		case Bypassed:
			end(WaitFilled)
			return Acquired{Woken: Bypassed, Until: time.Now().Add(ev.d)}, nil
		case Abandoned:
			continue
		}
		// The holder's lock is about to expire, or events may have been
		// lost (the subscription was re-established, or is down): look at
		// what Redis holds before trying to take over. A stale entry is
		// not an answer: it is what a refresh is waiting to replace.
		lk, err := c.get(ctx, key, h)
		if err != nil {
			end(WaitTimeout)
			return Acquired{}, err
		}
		switch {
		case lk.Status == Hit:
			end(WaitFilled)
			return Acquired{Woken: Filled}, nil
		case lk.Hint.Kind == HintFailed:
			end(WaitFailed)
			return Acquired{Woken: Failed, Until: lk.Hint.Until}, nil
		case lk.Hint.Kind == HintBypass:
			end(WaitFilled)
			return Acquired{Woken: Bypassed, Until: lk.Hint.Until}, nil
		}
	}
}

// await waits for an event of w, for the holder's lock to expire (ttl), or
// while the subscription is down for pollUnsubscribed; the last two answer
// evRecheck.
func (c *Client) await(ctx context.Context, w *watcher, t *time.Timer, ttl time.Duration) (event, error) {
	d := ttl + time.Millisecond
	if !c.subUp.Load() {
		d = min(d, pollUnsubscribed)
	}
	t.Reset(d)
	select {
	case <-ctx.Done():
		return event{}, ctx.Err()
	case <-c.life.Done():
		return event{}, ErrClosed
	case <-t.C:
		return event{kind: evRecheck}, nil
	case <-w.sig:
		t.Stop()
		return c.w.take(w), nil
	}
}

// tryLock runs lockScript once: a held Lock (its renewal started), or the
// holder's remaining TTL.
func (c *Client) tryLock(ctx context.Context, key string, h keyHash) (*Lock, time.Duration, error) {
	lk := c.ks.key(kindLock, h)
	token := randomHex(16)
	var vals []string
	_, err := c.call(ctx, OpLock, func(ctx context.Context) (Result, error) {
		var err error
		vals, err = c.sc.lock.Run(ctx, c.rdb, []string{lk, c.ks.epoch}, token, LockTTL.Milliseconds(), randomHex(8)).StringSlice()
		if err == nil && len(vals) != 3 {
			err = fmt.Errorf("lock script answered %d values", len(vals))
		}
		return ResultOK, err
	})
	if err != nil {
		return nil, 0, err
	}
	n, err := strconv.ParseInt(vals[1], 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("l2 lock: bad answer: %w", err)
	}
	if vals[0] != "1" {
		// -2: gone meanwhile, -1: no TTL (someone else's doing): retry soon.
		return nil, max(time.Duration(n)*time.Millisecond, time.Millisecond), nil
	}
	l := &Lock{
		c: c, key: key, h: h, lk: lk, token: token, epoch: vals[2],
		Start: time.UnixMicro(n),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if !c.goOwned(func() { l.renew(ctx) }) {
		close(l.done)
	}
	return l, 0, nil
}

// renew extends the lock every renewEvery until Release, the end of hold,
// Close, or the lock turns out to be gone.
func (l *Lock) renew(hold context.Context) {
	defer close(l.done)
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-hold.Done():
			return
		case <-l.c.life.Done():
			return
		case <-t.C:
		}
		var held int64
		_, err := l.c.call(l.c.life, OpLock, func(ctx context.Context) (Result, error) {
			var err error
			held, err = l.c.sc.renew.Run(ctx, l.c.rdb, []string{l.lk}, l.token, LockTTL.Milliseconds()).Int64()
			return ResultOK, err
		})
		if err == nil && held == 0 {
			return // expired and maybe taken by another: nothing to renew
		}
	}
}

// Release ends the holding: it stops the renewal, deletes the lock if it is
// still this holder's (compare and delete: never someone else's), records
// the Failed or Bypassed hint and publishes the outcome to every replica's
// waiters, in one request. Only the first call does anything. On an error
// the lock expires by itself within LockTTL, and waiters find the entry
// when they look then.
func (l *Lock) Release(ctx context.Context, o Outcome) error {
	if !l.released.CompareAndSwap(false, true) {
		return nil
	}
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	c := l.c
	kind, ttl := "", int64(0)
	if o.For > 0 {
		switch o.Kind {
		case Failed:
			kind = "f"
		case Bypassed:
			kind = "b"
		}
		ttl = max(o.For.Milliseconds(), 1)
	}
	msg := appendKeyEvent(nil, o.Kind, l.h, o.For)
	_, err := c.call(ctx, OpUnlock, func(ctx context.Context) (Result, error) {
		return ResultOK, c.sc.release.Run(ctx, c.rdb, []string{l.lk, c.ks.key(kindHint, l.h)},
			l.token, kind, ttl, c.ks.channel, msg).Err()
	})
	return err
}
