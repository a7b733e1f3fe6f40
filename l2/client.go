package l2

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of requests. Callers degrade on any error (L1 and their own
// fetches, never an error page); these are the ones worth telling apart.
var (
	// ErrBreakerOpen: the request was not sent because the breaker holds
	// Redis for down. It costs nothing.
	ErrBreakerOpen = errors.New("l2: redis unavailable (breaker open)")
	// ErrTimeout: Redis did not answer within Config.Timeout.
	ErrTimeout = errors.New("l2: redis timed out")
	// ErrClosed: the Client is closed.
	ErrClosed = errors.New("l2: client closed")
	// ErrTooLarge: Lock.Set was given a body over Config.MaxBodySize.
	ErrTooLarge = errors.New("l2: body over the size limit")
	// ErrTooManyTags: Lock.Set was given more than MaxTags tags, or Purge
	// more than MaxPurgeTags.
	ErrTooManyTags = errors.New("l2: too many tags")
	// ErrKeyTooLong: the key is longer than MaxKeySize.
	ErrKeyTooLong = errors.New("l2: key too long")
)

// Breaker probe intervals: the first probe after the breaker opens waits
// probeMin, each failed probe doubles the wait up to probeMax. Redis that
// comes back is used again within probeMax plus one request.
const (
	probeMin = 50 * time.Millisecond
	probeMax = time.Second
)

// Client is fragcache's shared second cache tier on one Redis. It is safe
// for concurrent use. New starts its goroutines (the breaker's prober and
// the one subscriber); Close stops them and waits for them.
type Client struct {
	cfg Config
	rdb *redis.Client
	ks  keyspace
	sc  scripts
	obs Observer
	log *slog.Logger

	life     context.Context // ends at Close
	cancel   context.CancelFunc
	closing  atomic.Bool
	once     sync.Once
	closeErr error

	// open is the breaker: while true no request is sent. kick wakes the
	// prober when it opens.
	open atomic.Bool
	kick chan struct{}

	subUp atomic.Bool // the subscription is confirmed and live
	w     waiters

	// mu protects ps and the adding of goroutines to wg once Close began.
	mu sync.Mutex
	ps *redis.PubSub
	wg sync.WaitGroup
}

// New returns a Client for cfg. It sends nothing before returning: the
// breaker starts open and its first probe, sent at once in the background,
// closes it; until then requests answer ErrBreakerOpen (Up reports false).
func New(cfg Config) (*Client, error) {
	cfg, opt, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:  cfg,
		rdb:  redis.NewClient(opt),
		ks:   newKeyspace(cfg.Prefix),
		sc:   newScripts(),
		obs:  cfg.Observer,
		log:  cfg.Logger,
		kick: make(chan struct{}, 1),
		w:    waiters{m: map[keyHash][]*watcher{}},
	}
	c.life, c.cancel = context.WithCancel(context.Background())
	c.open.Store(true)
	c.obs.Up(false)
	c.goOwned(c.probe)
	c.goOwned(c.subscribe)
	return c, nil
}

// Close stops the client's goroutines (renewals of held locks included:
// those locks expire within LockTTL), waits for them and closes the
// connections. Requests after Close answer ErrClosed. It is idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closing.Store(true)
		ps := c.ps
		c.mu.Unlock()
		c.cancel()
		if ps != nil {
			_ = ps.Close() // ends a blocked receive at once
		}
		c.wg.Wait()
		c.closeErr = c.rdb.Close()
	})
	return c.closeErr
}

// Up reports whether the breaker is closed: requests are being sent to
// Redis. It says nothing about the subscription (see Listener).
func (c *Client) Up() bool { return !c.open.Load() }

// goOwned runs f in a goroutine that Close waits for; after Close began it
// runs nothing and reports false.
func (c *Client) goOwned(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// call sends one request of kind op: it skips it while the breaker is open,
// bounds it by Config.Timeout, reports it to the Observer and opens the
// breaker when Redis failed. fn returns the result of an answered request
// (ResultOK, or a get's hit/stale/miss/corrupt) or the error of a failed
// one.
func (c *Client) call(ctx context.Context, op Op, fn func(ctx context.Context) (Result, error)) (Result, error) {
	if c.closing.Load() {
		return ResultError, ErrClosed
	}
	if c.open.Load() {
		c.obs.Request(op, ResultBreakerOpen, 0)
		return ResultBreakerOpen, ErrBreakerOpen
	}
	octx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	start := time.Now()
	r, err := fn(octx)
	d := time.Since(start)
	cancel()
	if err != nil {
		r, err = c.failed(ctx, op, err)
	}
	c.obs.Request(op, r, d)
	return r, err
}

// failed classifies the error of a request and opens the breaker when it
// says Redis is unreachable, hung or unable to serve. A caller's own
// context ending first is not held against Redis.
func (c *Client) failed(parent context.Context, op Op, err error) (Result, error) {
	if perr := parent.Err(); perr != nil {
		return ResultTimeout, fmt.Errorf("l2 %s: %w", op, perr)
	}
	if isTimeout(err) {
		c.trip(op, err)
		return ResultTimeout, fmt.Errorf("%w: %s after %v", ErrTimeout, op, c.cfg.Timeout)
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !unavailableReply(err) {
		// Redis answered (out of memory under noeviction, a script error,
		// a refused ACL): it is up, the request alone failed.
		return ResultError, fmt.Errorf("l2 %s: %w", op, err)
	}
	c.trip(op, err)
	return ResultError, fmt.Errorf("l2 %s: %w", op, err)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unavailableReply reports error replies that mean "this Redis cannot serve
// now" rather than "this request is wrong".
func unavailableReply(err error) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// trip opens the breaker.
func (c *Client) trip(op Op, err error) {
	if c.closing.Load() || !c.open.CompareAndSwap(false, true) {
		return
	}
	c.log.Warn("l2: redis unreachable, serving without it until a probe answers", "op", op.String(), "err", err)
	c.obs.Up(false)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// probe is the breaker's prober: while the breaker is open it PINGs Redis,
// at once at start, then after probeMin, doubling up to probeMax; the first
// answer closes the breaker.
func (c *Client) probe() {
	wait := time.Duration(0)
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		if !c.open.Load() {
			select {
			case <-c.life.Done():
				return
			case <-c.kick:
			}
			wait = probeMin
			continue
		}
		if wait > 0 {
			t.Reset(wait)
			select {
			case <-c.life.Done():
				return
			case <-t.C:
			}
		}
		ctx, cancel := context.WithTimeout(c.life, c.cfg.Timeout)
		err := c.rdb.Ping(ctx).Err()
		cancel()
		if c.life.Err() != nil {
			return
		}
		if err == nil {
			c.open.Store(false)
			c.log.Info("l2: redis reachable")
			c.obs.Up(true)
			wait = probeMin
			continue
		}
		wait = min(max(2*wait, probeMin), probeMax)
	}
}

// safely runs a caller-supplied callback and keeps the client's goroutine
// alive if it panics.
func (c *Client) safely(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("l2: callback panicked", "callback", what, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	f()
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// DriverLog adapts a slog.Logger to go-redis's process-wide logger, which
// otherwise prints the driver's own lines (a failed dial at each breaker
// probe while Redis is down, for example) to stderr. The driver offers no
// per-client logger, so l2 never installs it itself: main may, once, with
// redis.SetLogger(l2.DriverLog{L: logger}). Lines go out at debug level.
type DriverLog struct{ L *slog.Logger }

// Printf logs one driver line.
func (d DriverLog) Printf(ctx context.Context, format string, v ...any) {
	d.L.DebugContext(ctx, "redis driver", "line", fmt.Sprintf(format, v...))
}
