package l2

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Listener receives what the subscription brings besides lock events. Its
// methods are called one at a time, in order, from the client's one
// subscriber goroutine: they must be quick and must not block (hand work to
// a goroutine of your own), and must not wait for the Client. A panic in
// one is recovered and logged.
type Listener interface {
	// Purged is called for every purge published on the channel, this
	// process's own included.
	Purged(p PurgeEvent)
	// Synced is called each time the subscription is (re)established,
	// with a snapshot of the purge set read after the subscription was
	// confirmed: from then on until Desynced, every purge reaches Purged,
	// so the mirror built from s and the events is complete (DESIGN rule
	// 27: re-check before serving an L1 entry as fresh again). An Epoch
	// other than the last one seen means Redis lost its data: treat every
	// entry stored before s.Now as soft-purged.
	Synced(s PurgeSnapshot)
	// Desynced is called when an established subscription is lost: purges
	// may be missed from now until the next Synced.
	Desynced()
}

type nopListener struct{}

func (nopListener) Purged(PurgeEvent)    {}
func (nopListener) Synced(PurgeSnapshot) {}
func (nopListener) Desynced()            {}

// Subscriber timing.
const (
	// pingEvery: a subscription silent this long is pinged; one that stays
	// silent as long again is taken for dead and replaced.
	pingEvery = time.Second
	// syncRetry: how soon a failed snapshot read after (re)subscribing is
	// tried again.
	syncRetry = 100 * time.Millisecond
	// resubMin, resubMax: the wait before subscribing again after a lost
	// subscription, doubling from resubMin up to resubMax.
	resubMin = 50 * time.Millisecond
	resubMax = time.Second
)

// Event kinds that are not published: what Acquire's wait learns from the
// client itself.
const (
	evRecheck EventKind = 100 + iota // look at Redis: the holder's lock should have expired
	evResync                         // the subscription was re-established: events may have been lost
)

// event is what wakes a waiter.
type event struct {
	kind EventKind
	d    time.Duration // Failed, Bypassed: how long the hint lasts
}

// rank orders events that arrive for a waiter before it looks: an answer
// beats a hand-over, which beats a resync.
func rank(k EventKind) int {
	switch k {
	case Filled, Failed, Bypassed:
		return 3
	case Abandoned:
		return 2
	case evResync:
		return 1
	}
	return 0
}

// watcher is one Acquire waiting for events of its key.
type watcher struct {
	h   keyHash
	sig chan struct{} // capacity 1: "ev changed"
	ev  event         // guarded by waiters.mu
}

// waiters fans the subscriber's events out to the Acquire calls of this
// process. It holds exactly the watchers of running Acquire calls.
type waiters struct {
	mu sync.Mutex
	m  map[keyHash][]*watcher // guarded by mu
}

func (ws *waiters) add(h keyHash) *watcher {
	w := &watcher{h: h, sig: make(chan struct{}, 1)}
	ws.mu.Lock()
	ws.m[h] = append(ws.m[h], w)
	ws.mu.Unlock()
	return w
}

func (ws *waiters) remove(w *watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	list := ws.m[w.h]
	for i, x := range list {
		if x == w {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(ws.m, w.h)
	} else {
		ws.m[w.h] = list
	}
}

// take returns and clears w's pending event.
func (ws *waiters) take(w *watcher) event {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ev := w.ev
	w.ev = event{}
	return ev
}

// notify hands ev to every watcher of h.
func (ws *waiters) notify(h keyHash, ev event) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.m[h] {
		w.post(ev)
	}
}

// notifyAll hands ev to every watcher.
func (ws *waiters) notifyAll(ev event) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, list := range ws.m {
		for _, w := range list {
			w.post(ev)
		}
	}
}

// len returns the number of watchers.
func (ws *waiters) len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	n := 0
	for _, list := range ws.m {
		n += len(list)
	}
	return n
}

// post merges ev into w's pending event; the caller holds waiters.mu.
func (w *watcher) post(ev event) {
	if rank(ev.kind) >= rank(w.ev.kind) {
		w.ev = ev
	}
	select {
	case w.sig <- struct{}{}:
	default:
	}
}

// The messages on <prefix>:v1:events, one line of ASCII each:
//
//	F <key hash>          filled
//	X <key hash> <ms>     failed, backing off for ms
//	B <key hash> <ms>     bypassed for ms
//	A <key hash>          abandoned
//	P <s|h> <µs> <epoch> <tag>,<tag>,…   purge at µs (Redis time)
//
// key hash: 64 hex digits of SHA-256 of the full key; tag: 32 hex digits.
// Unknown messages are ignored, so later versions may add kinds.
var eventLetters = [...]byte{Filled: 'F', Failed: 'X', Bypassed: 'B', Abandoned: 'A'}

// appendKeyEvent appends the message of a lock outcome.
func appendKeyEvent(b []byte, k EventKind, h keyHash, d time.Duration) string {
	if k < Filled || k > Abandoned {
		return ""
	}
	b = append(b, eventLetters[k], ' ')
	b = hex.AppendEncode(b, h[:])
	if k == Failed || k == Bypassed {
		b = append(b, ' ')
		b = strconv.AppendInt(b, max(d.Milliseconds(), 0), 10)
	}
	return string(b)
}

// parseKeyEvent decodes a lock outcome message.
func parseKeyEvent(m string) (keyHash, event, bool) {
	var ev event
	if len(m) < 2+64 || m[1] != ' ' {
		return keyHash{}, ev, false
	}
	switch m[0] {
	case 'F':
		ev.kind = Filled
	case 'X':
		ev.kind = Failed
	case 'B':
		ev.kind = Bypassed
	case 'A':
		ev.kind = Abandoned
	default:
		return keyHash{}, ev, false
	}
	h, ok := parseKeyHash(m[2:66])
	if !ok {
		return h, ev, false
	}
	rest := m[66:]
	if ev.kind == Failed || ev.kind == Bypassed {
		if len(rest) < 2 || rest[0] != ' ' {
			return h, ev, false
		}
		ms, err := strconv.ParseInt(rest[1:], 10, 64)
		if err != nil || ms < 0 {
			return h, ev, false
		}
		ev.d = time.Duration(ms) * time.Millisecond
	} else if rest != "" {
		return h, ev, false
	}
	return h, ev, true
}

// parsePurgeEvent decodes a purge message.
func parsePurgeEvent(m string) (PurgeEvent, bool) {
	var p PurgeEvent
	f := strings.SplitN(m, " ", 5)
	if len(f) != 5 || f[0] != "P" {
		return p, false
	}
	switch f[1] {
	case "s":
		p.Mode = Soft
	case "h":
		p.Mode = Hard
	default:
		return p, false
	}
	us, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || us < 0 {
		return p, false
	}
	p.At, p.Epoch = time.UnixMicro(us), f[3]
	if f[4] == "" {
		return p, false
	}
	n := strings.Count(f[4], ",") + 1
	if n > MaxPurgeTags {
		return p, false
	}
	p.Tags = make([]Tag, 0, n)
	for s := range strings.SplitSeq(f[4], ",") {
		t, ok := parseTag(s)
		if !ok {
			return PurgeEvent{}, false
		}
		p.Tags = append(p.Tags, t)
	}
	return p, true
}

// dispatch routes one message of the channel.
func (c *Client) dispatch(m string) {
	if m == "" {
		return
	}
	if m[0] == 'P' {
		if p, ok := parsePurgeEvent(m); ok {
			c.safely("Purged", func() { c.cfg.Listener.Purged(p) })
		}
		return
	}
	if h, ev, ok := parseKeyEvent(m); ok {
		c.w.notify(h, ev)
	}
}

// subscribe is the one subscriber of the process: it keeps a subscription
// to the channel, replacing it when it fails or falls silent, until Close.
func (c *Client) subscribe() {
	wait := resubMin
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for c.life.Err() == nil {
		ps := c.rdb.Subscribe(c.life, c.ks.channel)
		c.mu.Lock()
		if c.closing.Load() {
			c.mu.Unlock()
			_ = ps.Close()
			return
		}
		c.ps = ps
		c.mu.Unlock()

		confirmed := c.receive(ps)

		c.mu.Lock()
		c.ps = nil
		c.mu.Unlock()
		_ = ps.Close()
		if c.subUp.Swap(false) {
			c.log.Warn("l2: subscription lost; purges may be missed until it is back")
			c.safely("Desynced", c.cfg.Listener.Desynced)
			c.w.notifyAll(event{kind: evResync}) // waiters switch to polling
		}
		if confirmed {
			wait = resubMin
		}
		t.Reset(wait)
		select {
		case <-c.life.Done():
			return
		case <-t.C:
		}
		wait = min(2*wait, resubMax)
	}
}

// receive reads ps until it fails, falls silent past a ping, or the client
// closes. It reports whether the subscription was confirmed.
func (c *Client) receive(ps *redis.PubSub) (confirmed bool) {
	synced := false
	pinged := false
	last := time.Now()
	for {
		if confirmed && !synced && c.Up() {
			// Not while the breaker is open: at start the subscription can
			// be confirmed before the first probe has closed it, and the
			// read would only be turned away (and counted breaker_open).
			synced = c.sync()
		}
		timeout := pingEvery
		if confirmed && !synced {
			timeout = syncRetry
		}
		msg, err := ps.ReceiveTimeout(c.life, timeout)
		if c.life.Err() != nil {
			return confirmed
		}
		if err != nil {
			if !isTimeout(err) {
				return confirmed
			}
			if time.Since(last) < pingEvery {
				continue
			}
			if pinged {
				return confirmed // no answer to a ping within pingEvery: dead
			}
			ctx, cancel := context.WithTimeout(c.life, c.cfg.Timeout)
			err := ps.Ping(ctx)
			cancel()
			if err != nil {
				return confirmed
			}
			pinged = true
			last = time.Now()
			continue
		}
		pinged, last = false, time.Now()
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == c.ks.channel {
				confirmed, synced = true, false
				c.subUp.Store(true)
				c.log.Info("l2: subscribed", "channel", c.ks.channel)
				c.w.notifyAll(event{kind: evResync})
			}
		case *redis.Message:
			c.dispatch(m.Payload)
		}
	}
}

// sync reads the purge set for Listener.Synced; false if it could not.
// While the breaker is open (at start, before the first probe answered,
// the subscription often confirms first) it does not try: a request not
// sent would be counted as breaker_open for nothing, and the next try
// comes within syncRetry.
func (c *Client) sync() bool {
	if c.open.Load() {
		// The breaker's first probe has not answered yet (or Redis is
		// down): retry after syncRetry rather than count a request that
		// was never sent.
		return false
	}
	s, err := c.ReadPurges(c.life)
	if err != nil {
		return false
	}
	c.safely("Synced", func() { c.cfg.Listener.Synced(s) })
	return true
}
