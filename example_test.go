// The examples of the package documentation. They run against the etcd at
// etcdEndpoints, which TestMain (main_test.go) starts in this process.

package biregister_test

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

func ExampleNewRegister() {
	reg, err := biregister.NewRegister(etcdEndpoints, "/example/api/", "node-1", "10.0.0.1:8080", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close() // revokes the lease: the others see node-1 leave at once

	fmt.Println(reg.MyKey(), "leads:", reg.AmILeader())
	// Output: /example/api/node-1 leads: true
}

func ExampleNewWatcher() {
	for _, name := range []string{"b", "a"} {
		reg, err := biregister.NewRegister(etcdEndpoints, "/example/web/", name, "addr-"+name, 5)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer reg.Close()
	}

	w, err := biregister.NewWatcher(etcdEndpoints, "/example/web", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()

	leader, _ := w.GetLeader()
	fmt.Println("members, oldest first:", w.GetNames(), "leader:", leader)
	fmt.Println("a is at", w.GetValueByName("a"))
	// Output:
	// members, oldest first: [b a] leader: b
	// a is at addr-a
}

func ExampleWatcher_Changes() {
	w, err := biregister.NewWatcher(etcdEndpoints, "/example/jobs/", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() {
		reg, err := biregister.NewRegister(etcdEndpoints, "/example/jobs/", "worker-1", "idle", 5)
		if err != nil {
			return
		}
		_ = reg.SetValue(context.Background(), "busy")
		reg.Close()
	}()

	for c := range w.Changes() { // ends when w is closed
		fmt.Println(c.Op, c.Name, c.Value)
		if c.Op == biregister.OpDelete {
			w.Close()
		}
	}
	// Output:
	// PUT worker-1 idle
	// PUT worker-1 busy
	// DELETE worker-1 busy
}

func ExampleRegister_WaitLeader() {
	first, err := biregister.NewRegister(etcdEndpoints, "/example/cron/", "first", "", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	second, err := biregister.NewRegister(etcdEndpoints, "/example/cron/", "second", "", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer second.Close()

	go first.Close() // the leader leaves

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := second.WaitLeader(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("second leads:", second.AmILeader())
	// Output: second leads: true
}

// Fence makes a leader-only write fail once this registration is gone,
// whatever the process believes: a leader paused past its lease cannot
// overwrite its successor's work. The fence is taken when the member
// decides to act, before it asks AmILeader: taken after the work, it would
// be that of a registration made meanwhile.
func ExampleRegister_Fence() {
	reg, err := biregister.NewRegister(etcdEndpoints, "/example/billing/", "node-1", "", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	fence := reg.Fence()
	if !reg.AmILeader() {
		return
	}
	// … the leader-only work, however long it takes …
	cli := reg.EtcdClient()
	resp, err := cli.Txn(context.Background()).
		If(fence).
		Then(clientv3.OpPut("/example/billing-owner", reg.MyName())).
		Commit()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("written:", resp.Succeeded)
	// Output: written: true
}

// Lead runs leader-only work once per term. The work runs under its term, a
// context that ends before anyone else can lead, and guards its writes to
// etcd with the term's fence, so that a write made after the term ended
// fails even if the process was paused in between.
func ExampleRegister_Lead() {
	reg, err := biregister.NewRegister(etcdEndpoints, "/example/scheduler/", "node-1", "", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	ctx, stop := context.WithCancel(context.Background())
	err = reg.Lead(ctx, func(term *biregister.Term) {
		defer stop() // one term is enough for the example
		resp, err := reg.EtcdClient().Txn(term).
			If(term.Fence()).
			Then(clientv3.OpPut("/example/schedule", "run at 03:00")).
			Commit()
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("leader wrote the schedule:", resp.Succeeded)
	})
	fmt.Println("Lead returned:", err)
	// Output:
	// leader wrote the schedule: true
	// Lead returned: context canceled
}
