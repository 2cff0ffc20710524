// Splitting the work of building or comparing a big cache across the
// processors.

package biregister

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelMin is the group size from which building or comparing a cache
// is split across the processors: below it, handing out the work costs more
// than it saves.
const parallelMin = 20000

// inParallel calls work(i) for every i in [0, n), on the calling goroutine
// and up to GOMAXPROCS-1 others, and returns once every call returned.
func inParallel(n int, work func(i int)) {
	var next atomic.Int64
	take := func() {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			work(i)
		}
	}
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			take()
		}()
	}
	take()
	wg.Wait()
}
