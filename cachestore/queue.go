package cachestore

// loadQueue holds the cold loads that wait for one of Config.MaxLoads
// (DESIGN.md, precise rule 22). Loads are taken round-robin by group (the
// page request that looked them up), so one page with a thousand includes
// never delays another page's first load by more than one turn. Guarded
// by Store.mu.
type loadQueue[V, A any] struct {
	byGroup map[uint64][]*Flight[V, A]
	order   []uint64 // groups with queued loads, in turn order
	n       int
}

func (q *loadQueue[V, A]) push(group uint64, f *Flight[V, A]) {
	if q.byGroup == nil {
		q.byGroup = make(map[uint64][]*Flight[V, A])
	}
	fs := q.byGroup[group]
	if len(fs) == 0 {
		q.order = append(q.order, group)
	}
	q.byGroup[group] = append(fs, f)
	q.n++
}

// pop returns the next load, or nil when none waits.
func (q *loadQueue[V, A]) pop() *Flight[V, A] {
	if q.n == 0 {
		return nil
	}
	g := q.order[0]
	q.order[0] = 0
	q.order = q.order[1:]
	fs := q.byGroup[g]
	f := fs[0]
	fs[0] = nil
	if fs = fs[1:]; len(fs) == 0 {
		delete(q.byGroup, g)
	} else {
		q.byGroup[g] = fs
		q.order = append(q.order, g)
	}
	q.n--
	if q.n == 0 {
		q.order = nil // let the backing array go
	}
	return f
}
