package biregister_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// NewRegister registers while etcd's leader is killed: a request lost in
// the leader change is asked again within the constructor's ttl, as the
// registration loop does, and the cluster recovers well within it.
func TestNewRegisterDuringLeaderChange(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 3)
	for round := range 3 {
		makeRole(t, etcd, 0, true)
		regs := make([]biregister.Register, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range regs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				regs[i], errs[i] = biregister.NewRegister(etcd.Endpoints(), "/leader-change", fmt.Sprintf("r%d-%d", round, i), "v", 5)
			}()
		}
		etcd.Stop(t, 0)
		wg.Wait()
		for i, r := range regs {
			if errs[i] == nil {
				r.Close()
			}
		}
		for i := range regs {
			require.NoError(t, errs[i], "round %d", round)
		}
		etcd.Restart(t, 0)
	}
}
