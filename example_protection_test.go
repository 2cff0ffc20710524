package biregister_test

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// A member that closes leaves gracefully; one whose lease is revoked from
// outside is lost. When most of a group is lost at once, the members lost
// stay suspects: the cache drops them, the gRPC resolver keeps serving
// them, until they register again or their hold ends.
func ExampleWithProtection() {
	const prefix = "/example/shop/"
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcdEndpoints})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	var leases []clientv3.LeaseID
	for _, name := range []string{"a", "b", "c", "d"} {
		lease, err := cli.Grant(context.Background(), 60)
		if err != nil {
			fmt.Println(err)
			return
		}
		leases = append(leases, lease.ID)
		if _, err := cli.Put(context.Background(), prefix+name, "10.0.0.1:80"+name, clientv3.WithLease(lease.ID)); err != nil {
			fmt.Println(err)
			return
		}
	}
	reg, err := biregister.NewRegister(etcdEndpoints, prefix, "e", "10.0.0.1:80e", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	w, err := biregister.NewWatcher(etcdEndpoints, prefix, 5,
		biregister.WithProtection(biregister.Protection{Hold: time.Minute}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	for range 5 {
		<-w.Changes() // the members present at start
	}

	reg.Close()
	c := <-w.Changes()
	fmt.Println(c.Op, c.Name, "left:", c.Left, "suspect:", c.Suspect)

	for _, lease := range leases[:3] { // three of the four left lost at once
		if _, err := cli.Revoke(context.Background(), lease); err != nil {
			fmt.Println(err)
			return
		}
	}
	for range 3 {
		c := <-w.Changes()
		fmt.Println(c.Op, c.Name, "left:", c.Left, "suspect:", c.Suspect)
	}
	st := w.Status()
	fmt.Println("members:", w.GetNames(), "suspects:", st.Suspects, "protected:", !st.Protected.IsZero())
	// Output:
	// DELETE e left: true suspect: false
	// DELETE a left: false suspect: true
	// DELETE b left: false suspect: true
	// DELETE c left: false suspect: true
	// members: [d] suspects: 3 protected: true
}
