package cachestore

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// getGuard lets Close wait for the ristretto Gets that lookups have in
// progress before it closes ristretto: a Get racing with ristretto's Close
// may send on a closed channel and panic. Lookups must not pay for this
// with a shared counter, which two cores would bounce between them on every
// hit, so the count is striped: sync.Pool hands each P (mostly) its own
// slot, and each slot sits on its own cache line. The pool holds pointers
// into the fixed slots array, so it never allocates.
//
// A lookup increments its slot and then checks Store.closing; Close sets
// closing and then waits for every slot to be zero. Go's atomics are
// sequentially consistent, so either the lookup sees closing and backs out,
// or Close sees the increment and waits.
type getGuard struct {
	slots [guardSlots]guardSlot
	next  atomic.Uint32
	pool  sync.Pool
}

const guardSlots = 64

type guardSlot struct {
	n atomic.Int64
	_ [56]byte // keep slots on separate cache lines
}

func (g *getGuard) init() {
	g.pool.New = func() any {
		return &g.slots[g.next.Add(1)%guardSlots]
	}
}

// enter counts a Get in progress, or returns nil when closing is set.
func (g *getGuard) enter(closing *atomic.Bool) *guardSlot {
	sl := g.pool.Get().(*guardSlot)
	sl.n.Add(1)
	if closing.Load() {
		sl.n.Add(-1)
		g.pool.Put(sl)
		return nil
	}
	return sl
}

// leave ends the Get counted by enter.
func (g *getGuard) leave(sl *guardSlot) {
	sl.n.Add(-1)
	g.pool.Put(sl)
}

// drain waits until no Get is in progress. closing must be set.
func (g *getGuard) drain() {
	for i := range g.slots {
		for g.slots[i].n.Load() != 0 {
			runtime.Gosched()
		}
	}
}
