package biregister_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// waitFor bounds every wait of the tests: generous, since it only turns a hang
// into a failure.
const waitFor = 15 * time.Second

// startEtcd checks the test for leaked goroutines and starts one etcd member.
func startEtcd(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	leakcheck.VerifyNoLeaks(t)
	return etcdtest.Start(t, 1)
}

// recv returns the next change, failing the test if none comes in time.
func recv(t *testing.T, changes <-chan biregister.Change) biregister.Change {
	t.Helper()
	select {
	case c, ok := <-changes:
		if !ok {
			t.Fatal("Changes closed")
		}
		return c
	case <-time.After(waitFor):
		t.Fatal("no change in time")
	}
	return biregister.Change{}
}

// recvUntil returns changes until one satisfies stop (included).
func recvUntil(t *testing.T, changes <-chan biregister.Change, stop func(biregister.Change) bool) []biregister.Change {
	t.Helper()
	var got []biregister.Change
	for {
		c := recv(t, changes)
		got = append(got, c)
		if stop(c) {
			return got
		}
	}
}

// startWatcher starts a Watcher of prefix with ttl 5, closed when the test
// ends.
func startWatcher(t *testing.T, endpoints []string, prefix string, opts ...biregister.Option) biregister.Watcher {
	t.Helper()
	w, err := biregister.NewWatcher(endpoints, prefix, 5, opts...)
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

// startRegister registers name under prefix, closed when the test ends.
func startRegister(t *testing.T, endpoints []string, prefix, name, value string, ttl int64, opts ...biregister.Option) biregister.Register {
	t.Helper()
	r, err := biregister.NewRegister(endpoints, prefix, name, value, ttl, opts...)
	if err != nil {
		t.Fatalf("NewRegister(%q): %v", name, err)
	}
	t.Cleanup(r.Close)
	return r
}

// stressCount returns normal, or stress in the suite's stress mode
// (BIREGISTER_STRESS=1, make stress), which repeats the fault tests that
// guard a guarantee by timing many more times.
func stressCount(normal, stress int) int {
	if os.Getenv("BIREGISTER_STRESS") == "1" {
		return stress
	}
	return normal
}

// requireReturnsClosed runs call, named what, in a goroutine, closes r, and
// requires call to return ErrClosed.
func requireReturnsClosed(t *testing.T, r biregister.Register, what string, call func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	r.Close()
	select {
	case err := <-done:
		require.ErrorIs(t, err, biregister.ErrClosed)
	case <-time.After(waitFor):
		t.Fatalf("%s did not return on Close", what)
	}
}
