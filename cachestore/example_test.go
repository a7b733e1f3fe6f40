package cachestore_test

import (
	"context"
	"fmt"
	"time"

	"fragcache/cachestore"
)

// A loader that builds each entry from its key and the name of the user
// whose request started the load; the proxy's fetches an upstream fragment
// instead.
type greeter struct{}

func (greeter) Load(ctx context.Context, key string, user string, refresh bool) (cachestore.Entry[string], error) {
	now := time.Now()
	return cachestore.Entry[string]{
		Value:      fmt.Sprintf("hello from %s (for %s)", key, user),
		Cost:       64,
		FreshUntil: now.Add(time.Minute),
		StaleUntil: now.Add(10 * time.Minute),
	}, nil
}

func Example() {
	store, err := cachestore.New[string, string](cachestore.Config{MaxCost: 64 << 20}, greeter{}, nil)
	if err != nil {
		panic(err)
	}
	defer store.Close()

	// A page request (group 1): look the fragment up, and wait for it at
	// most for the page's own budget. detach copies what the load needs out
	// of the request; it runs only when this lookup starts the load.
	user := "ada"
	r := store.LookupIn(1, "/widgets/greeting", func() string { return user })
	fmt.Println(r.Status)
	if r.Flight != nil {
		budget := time.NewTimer(time.Second)
		select {
		case <-r.Flight.Done():
			budget.Stop()
			e, err := r.Flight.Result()
			fmt.Println(e.Value, err)
		case <-budget.C:
			fmt.Println("placeholder") // the load goes on for the next request
		}
	}

	// The next request finds it.
	r = store.LookupIn(2, "/widgets/greeting", nil)
	fmt.Println(r.Status, r.Entry.Value)
	// Output:
	// miss
	// hello from /widgets/greeting (for ada) <nil>
	// hit hello from /widgets/greeting (for ada)
}

// A page that waits on several flights at once learns of each the moment
// it ends through one channel, with no goroutine per flight.
func ExampleFlight_Notify() {
	store, err := cachestore.New[string, string](cachestore.Config{}, greeter{}, nil)
	if err != nil {
		panic(err)
	}
	defer store.Close()

	keys := []string{"/widgets/a", "/widgets/b", "/widgets/c"}
	arrived := make(chan int, len(keys)) // room for every flight: a send never blocks
	flights := make([]*cachestore.Flight[string, string], len(keys))
	pending := 0
	for i, k := range keys {
		r := store.LookupIn(1, k, func() string { return "ada" })
		if r.Flight == nil {
			continue
		}
		flights[i] = r.Flight
		pending++
		if !r.Flight.Notify(func() { arrived <- i }) {
			arrived <- i // it has already ended
		}
	}
	budget := time.NewTimer(time.Second)
	defer budget.Stop()
	got := make([]string, len(keys))
wait:
	for pending > 0 {
		select {
		case i := <-arrived:
			pending--
			e, _ := flights[i].Result()
			got[i] = e.Value
		case <-budget.C:
			break wait // render what arrived, placeholders for the rest
		}
	}
	for _, v := range got {
		fmt.Println(v)
	}
	// Output:
	// hello from /widgets/a (for ada)
	// hello from /widgets/b (for ada)
	// hello from /widgets/c (for ada)
}
