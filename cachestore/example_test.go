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

	// A page request: look the fragment up, and wait for it at most for the
	// page's own budget. detach copies what the load needs out of the
	// request; it runs only when this lookup starts the load.
	user := "ada"
	r := store.Lookup("/widgets/greeting", func() string { return user })
	fmt.Println(r.Status)
	if r.Flight != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		e, err := r.Flight.Wait(ctx)
		cancel()
		if err != nil {
			fmt.Println("placeholder") // the load goes on for the next request
		} else {
			fmt.Println(e.Value)
		}
	}

	// The next request finds it.
	r = store.Lookup("/widgets/greeting", nil)
	fmt.Println(r.Status, r.Entry.Value)
	// Output:
	// miss
	// hello from /widgets/greeting (for ada)
	// hit hello from /widgets/greeting (for ada)
}
