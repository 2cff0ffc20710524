package etcdtest

import (
	"errors"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/testcerts"
)

const (
	testRootPassword = "root-pw"
	testSvcPassword  = "svc-pw"
)

func testAuth() *Auth {
	return &Auth{
		RootPassword: testRootPassword,
		Users:        []User{{Name: "svc", Password: testSvcPassword, Prefix: "/svc/"}},
	}
}

// userClient returns a client of c that authenticates as user, with tls.
func userClient(t *testing.T, c *Cluster, user, password string, opts ...testcerts.ClientOption) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: dialTimeout,
		TLS:         c.Certs().ClientTLS(opts...),
		Username:    user,
		Password:    password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// wantDenied fails t unless err is etcd's permission denied.
func wantDenied(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("got %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
}

// TestStartWithMutualTLSAndAuth checks a member that requires client
// certificates and has auth on: Client is root, a user is confined to its
// prefix, and both survive a restart; a wipe sets the users up again.
func TestStartWithMutualTLSAndAuth(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := StartWith(t, Options{TLS: MutualTLS, Auth: testAuth()})
	if ep := c.Endpoint(0); !strings.HasPrefix(ep, "https://") {
		t.Fatalf("endpoint %q, want https", ep)
	}
	root := c.Client(t)
	mustPut(t, root, "/elsewhere", "v")
	svc := userClient(t, c, "svc", testSvcPassword, testcerts.ClientCert)
	mustPut(t, svc, "/svc/a", "1")
	_, err := svc.Put(testContext(t), "/elsewhere", "v")
	wantDenied(t, err)
	// The certificate alone names a user that does not exist.
	anonymous := userClient(t, c, "", "", testcerts.ClientCert)
	_, err = anonymous.Get(testContext(t), "/svc/a")
	wantDenied(t, err)

	c.Stop(t, 0)
	c.Restart(t, 0)
	// A new client: etcd 3.4 holds the requests of one that logged in
	// before the restart (see Auth). The data and the users are still there.
	svc = userClient(t, c, "svc", testSvcPassword, testcerts.ClientCert)
	wantValue(t, mustGet(t, svc, "/svc/a"), "1")
	_, err = svc.Get(testContext(t), "/elsewhere")
	wantDenied(t, err)

	c.Wipe(t)
	// New clients: the old ones hold tokens of an index that the new
	// cluster may never reach (see Wipe).
	svc = userClient(t, c, "svc", testSvcPassword, testcerts.ClientCert)
	if resp := mustGet(t, svc, "/svc/a"); len(resp.Kvs) != 0 {
		t.Fatalf("key survived the wipe: %v", resp.Kvs)
	}
	mustPut(t, svc, "/svc/a", "2")
	_, err = svc.Put(testContext(t), "/elsewhere", "v")
	wantDenied(t, err)
	mustPut(t, c.Client(t), "/elsewhere", "w")
}

// TestStartWithServerTLS checks a three-member cluster that serves TLS
// without asking for client certificates, with auth on.
func TestStartWithServerTLS(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := StartWith(t, Options{Members: 3, TLS: ServerTLS, Auth: testAuth()})
	svc := userClient(t, c, "svc", testSvcPassword)
	mustPut(t, svc, "/svc/a", "1")
	for i := range 3 {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{c.Endpoint(i)},
			DialTimeout: dialTimeout,
			TLS:         c.Certs().ClientTLS(),
			Username:    RootUser,
			Password:    testRootPassword,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		wantValue(t, mustGet(t, cli, "/svc/a"), "1")
		cli.Close()
	}
	c.Stop(t, 1)
	c.Restart(t, 1)
	mustPut(t, svc, "/svc/a", "2")
}

// TestStartWithOptions checks that bad options fail the test before
// anything starts.
func TestStartWithOptions(t *testing.T) {
	for _, opts := range []Options{
		{Members: -1},
		{TLS: MutualTLS + 1},
		{Auth: &Auth{}},
		{Auth: &Auth{RootPassword: "pw", Users: []User{{Name: RootUser, Password: "pw"}}}},
		{Auth: &Auth{RootPassword: "pw", Users: []User{{Name: "u"}}}},
	} {
		if err := opts.check(); err == nil {
			t.Errorf("%+v accepted", opts)
		}
	}
	if err := (Options{TLS: MutualTLS, Auth: testAuth()}).check(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}
