package biregister_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
	"github.com/biregister/biregister/internal/testcerts"
)

// The secured tests run against real etcd members that serve TLS, require
// client certificates or have authentication enabled (internal/etcdtest's
// StartWith), with certificates made for the run (internal/testcerts).

const (
	securePrefix = "/secure/"

	// The passwords are distinctive, so that finding one in a log or an
	// error cannot be a coincidence.
	rootPassword   = "root-pw-Qz81vRt"
	svcUser        = "svc"
	svcPassword    = "svc-pw-Xk42mWd"
	nobodyUser     = "nobody"
	nobodyPassword = "nobody-pw-Jt93pLs"
	otherUser      = "other"
	otherPassword  = "other-pw-Hn27cYe"
	badPassword    = "wrong-pw-Vb57sGa"

	// secureRejectTTL is the ttl of constructors that are expected to
	// fail: short, since a connection that never comes costs all of it.
	secureRejectTTL = 1
	// secureRejectSlack is how much longer than its ttl a failing
	// constructor may take: it has to close its client, on a slow,
	// race-instrumented machine.
	secureRejectSlack = 3 * time.Second
	// secureLiveTTL is the ttl of registrations that must disappear because
	// Close revoked them: long enough that expiry cannot pass for a revoke.
	secureLiveTTL = 60
)

// secureAuth has svc, who may use securePrefix only; nobody, who may use no
// key; and other, who may use another prefix only.
func secureAuth() *etcdtest.Auth {
	return &etcdtest.Auth{
		RootPassword: rootPassword,
		Users: []etcdtest.User{
			{Name: svcUser, Password: svcPassword, Prefix: securePrefix},
			{Name: nobodyUser, Password: nobodyPassword},
			{Name: otherUser, Password: otherPassword, Prefix: "/other/"},
		},
	}
}

// startSecureEtcd checks the test for leaked goroutines and starts one
// secured etcd member.
func startSecureEtcd(t *testing.T, opts etcdtest.Options) *etcdtest.Cluster {
	t.Helper()
	leakcheck.VerifyNoLeaks(t)
	return etcdtest.StartWith(t, opts)
}

// secureLogger returns a logger that writes everything, Debug included, to a
// new sink.
func secureLogger() (*slog.Logger, *syncbuf.Buffer) {
	sink := &syncbuf.Buffer{}
	return slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug})), sink
}

// assertNoSecret fails t if any password appears in the logs or in err.
func assertNoSecret(t *testing.T, logs string, err error) {
	t.Helper()
	for _, secret := range []string{rootPassword, svcPassword, nobodyPassword, otherPassword, badPassword} {
		assert.NotContains(t, logs, secret, "a password in the logs")
		if err != nil {
			assert.NotContains(t, err.Error(), secret, "a password in the error")
		}
	}
}

// checkSecureGroup proves that a group works with opts: a member registers,
// a watcher sees it, it leads, a nameless member queues behind it, and Close
// revokes a lease at once, handing leadership on.
func checkSecureGroup(t *testing.T, eps []string, opts ...biregister.Option) {
	t.Helper()
	logger, logs := secureLogger()
	opts = append(opts, biregister.WithLogger(logger))

	w := startWatcher(t, eps, securePrefix, opts...)
	changes := w.Changes()
	a, err := biregister.NewRegister(eps, securePrefix, "a", "addr-a", secureLiveTTL, opts...)
	require.NoError(t, err)
	defer a.Close()
	recvUntil(t, changes, func(c biregister.Change) bool { return c.Op == biregister.OpPut && c.Name == "a" })
	assert.Equal(t, "addr-a", w.GetValueByName("a"))

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, a.WaitLeader(ctx))
	name, val := w.GetLeader()
	assert.Equal(t, "a", name)
	assert.Equal(t, "addr-a", val)

	// A nameless registration reads the revision under the prefix and
	// compares the whole prefix in its transaction: both need the range.
	b, err := biregister.NewRegisterNoName(eps, securePrefix, "addr-b", secureLiveTTL, opts...)
	require.NoError(t, err)
	defer b.Close()
	recvUntil(t, changes, func(c biregister.Change) bool { return c.Op == biregister.OpPut && c.Name == b.MyName() })
	assert.False(t, b.AmILeader())
	assert.Equal(t, []string{"a", b.MyName()}, w.GetNames())

	// Close revokes the lease: the member is gone at once, not after ttl.
	start := time.Now()
	a.Close()
	recvUntil(t, changes, func(c biregister.Change) bool { return c.Op == biregister.OpDelete && c.Name == "a" })
	assert.Less(t, time.Since(start), secureLiveTTL*time.Second/4, "Close did not revoke the lease")
	require.NoError(t, b.WaitLeader(ctx))

	b.Close()
	recvUntil(t, changes, func(c biregister.Change) bool { return c.Op == biregister.OpDelete && c.Name == b.MyName() })
	assert.NotContains(t, logs.String(), "revoke lease failed")
	assertNoSecret(t, logs.String(), nil)
}

// secureConstructors are the three ways to join or follow a group, each
// returning only its error.
var secureConstructors = []struct {
	name string
	new  func(eps []string, ttl int64, opts ...biregister.Option) error
}{
	{"NewWatcher", func(eps []string, ttl int64, opts ...biregister.Option) error {
		w, err := biregister.NewWatcher(eps, securePrefix, ttl, opts...)
		if err == nil {
			w.Close()
		}
		return err
	}},
	{"NewRegister", func(eps []string, ttl int64, opts ...biregister.Option) error {
		r, err := biregister.NewRegister(eps, securePrefix, "a", "addr-a", ttl, opts...)
		if err == nil {
			r.Close()
		}
		return err
	}},
	{"NewRegisterNoName", func(eps []string, ttl int64, opts ...biregister.Option) error {
		r, err := biregister.NewRegisterNoName(eps, securePrefix, "addr-a", ttl, opts...)
		if err == nil {
			r.Close()
		}
		return err
	}},
}

// checkRejected runs every constructor with opts, logging at Debug level,
// and checks that each fails within about ttl seconds with no secret in its
// error or the logs, that it leaves no goroutine behind, and that check
// accepts its error. The constructors run side by side: a connection that
// never comes costs each of them all of ttl.
func checkRejected(t *testing.T, eps []string, ttl int64, check func(t *testing.T, err error), opts ...biregister.Option) {
	t.Helper()
	// Everything that runs now is the cluster's; a failed constructor must
	// add nothing that outlives it.
	leakcheck.VerifyNoLeaks(t)
	type outcome struct {
		err  error
		took time.Duration
		logs *syncbuf.Buffer
	}
	outcomes := make([]outcome, len(secureConstructors))
	var wg sync.WaitGroup
	for i, ctor := range secureConstructors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logger, logs := secureLogger()
			start := time.Now()
			err := ctor.new(eps, ttl, append(opts, biregister.WithLogger(logger))...)
			outcomes[i] = outcome{err, time.Since(start), logs}
		}()
	}
	wg.Wait()
	for i, ctor := range secureConstructors {
		t.Run(ctor.name, func(t *testing.T) {
			o := outcomes[i]
			t.Logf("failed after %v: %v", o.took.Round(time.Millisecond), o.err)
			require.Error(t, o.err)
			assert.Less(t, o.took, time.Duration(ttl)*time.Second+secureRejectSlack, "the constructor took too long")
			check(t, o.err)
			assertNoSecret(t, o.logs.String(), o.err)
		})
	}
}

// clientCertRefused is how an error can read when the server refused the
// client's certificate, or the lack of one: a TLS alert, or a reset. In TLS
// 1.3 the server checks the client's certificate only after the client has
// finished its side of the handshake and sent its first bytes; the server
// then sends its alert and closes a socket with those bytes unread, which
// resets the connection, and the client may meet the reset before the alert,
// on a read or on its next write (both seen on a loaded machine); a write
// after the reset has been reported reads as a broken pipe.
var clientCertRefused = []string{"remote error: tls: ", ": connection reset by peer", ": broken pipe"}

// isTLSFailure checks that err says the connection failed in TLS, and how
// (one of want), and that it is the deadline that ended the wait for a
// connection.
func isTLSFailure(want ...string) func(t *testing.T, err error) {
	return func(t *testing.T, err error) {
		t.Helper()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		for _, w := range want {
			if strings.Contains(err.Error(), w) {
				return
			}
		}
		t.Errorf("%q says none of %q", err, want)
	}
}

// isEtcdFailure checks that err is the etcd error want and says so.
func isEtcdFailure(want error) func(t *testing.T, err error) {
	return func(t *testing.T, err error) {
		t.Helper()
		assert.ErrorIs(t, err, want)
		assert.Contains(t, err.Error(), want.Error())
	}
}

// A client that trusts the CA works against an etcd that serves TLS.
func TestSecureTLS(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{TLS: etcdtest.ServerTLS})
	eps := c.Endpoints()
	require.True(t, strings.HasPrefix(eps[0], "https://"), "endpoint %s", eps[0])
	checkSecureGroup(t, eps, biregister.WithTLS(c.Certs().ClientTLS()))
}

// A client that does not trust the server's certificate fails with an error
// that says why, within ttl.
func TestSecureTLSRejected(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{TLS: etcdtest.ServerTLS})
	eps := c.Endpoints()
	t.Run("WrongCA", func(t *testing.T) {
		checkRejected(t, eps, secureRejectTTL, isTLSFailure("x509: certificate signed by unknown authority"),
			biregister.WithTLS(c.Certs().ClientTLS(testcerts.WrongCA)))
	})
	t.Run("NoTLSOption", func(t *testing.T) {
		// An https endpoint without WithTLS: the client tries the system's
		// CAs, which know nothing of the test CA.
		checkRejected(t, eps, secureRejectTTL, isTLSFailure("x509: certificate signed by unknown authority"))
	})
}

// A client with a certificate signed by the CA works against an etcd that
// requires client certificates.
func TestSecureMutualTLS(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{TLS: etcdtest.MutualTLS})
	checkSecureGroup(t, c.Endpoints(), biregister.WithTLS(c.Certs().ClientTLS(testcerts.ClientCert)))
}

// Without a certificate the server accepts, or without trusting the server,
// a client fails with an error that says why, within ttl.
func TestSecureMutualTLSRejected(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{TLS: etcdtest.MutualTLS})
	eps := c.Endpoints()
	for _, tc := range []struct {
		name string
		tls  []testcerts.ClientOption
		want []string
	}{
		// With TLS 1.3 the client's handshake completes before the server
		// checks its certificate: the refusal arrives as an alert in place
		// of the server's first message. The alert depends on the Go the
		// server was built with: "certificate required" from etcd 3.6,
		// "bad certificate" from Debian's etcd 3.4.
		{"NoClientCert", nil, clientCertRefused},
		// The server names the CAs it accepts, and the client sends no
		// certificate that none of them signed.
		{"StrangerClientCert", []testcerts.ClientOption{testcerts.StrangerCert}, clientCertRefused},
		{"WrongCA", []testcerts.ClientOption{testcerts.ClientCert, testcerts.WrongCA}, []string{"x509: certificate signed by unknown authority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRejected(t, eps, secureRejectTTL, isTLSFailure(tc.want...), biregister.WithTLS(c.Certs().ClientTLS(tc.tls...)))
		})
	}
}

// A user whose role may only use the prefix can register, watch, lead and
// revoke its own leases on Close.
func TestSecureAuth(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{Auth: secureAuth()})
	checkSecureGroup(t, c.Endpoints(), biregister.WithAuth(svcUser, svcPassword))
}

// Bad credentials or missing permissions fail the constructor at once, with
// etcd's error, and leave nothing behind: no goroutine, no lease.
func TestSecureAuthRejected(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{Auth: secureAuth()})
	eps := c.Endpoints()
	root := c.Client(t)
	// Failures that come from etcd itself do not wait for the deadline.
	const ttl = 10
	quick := func(check func(t *testing.T, err error)) func(t *testing.T, err error) {
		return func(t *testing.T, err error) {
			t.Helper()
			check(t, err)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "waited for the deadline")
		}
	}
	for _, tc := range []struct {
		name  string
		opts  []biregister.Option
		check func(t *testing.T, err error)
	}{
		{"WrongPassword", []biregister.Option{biregister.WithAuth(svcUser, badPassword)}, isEtcdFailure(rpctypes.ErrAuthFailed)},
		{"UnknownUser", []biregister.Option{biregister.WithAuth("ghost", badPassword)}, isEtcdFailure(rpctypes.ErrAuthFailed)},
		{"NoCredentials", nil, isEtcdFailure(rpctypes.ErrUserEmpty)},
		{"UserWithoutPermissions", []biregister.Option{biregister.WithAuth(nobodyUser, nobodyPassword)}, isEtcdFailure(rpctypes.ErrPermissionDenied)},
		{"UserOfAnotherPrefix", []biregister.Option{biregister.WithAuth(otherUser, otherPassword)}, isEtcdFailure(rpctypes.ErrPermissionDenied)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRejected(t, eps, ttl, quick(tc.check), tc.opts...)
			// A Register whose transaction was denied revoked the lease it
			// had been granted.
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			leases, err := root.Leases(ctx)
			require.NoError(t, err)
			assert.Empty(t, leases.Leases, "a lease was left behind")
		})
	}
}

// WithAuth with an empty password cannot authenticate: the etcd client would
// silently connect without credentials, so the library refuses it.
func TestSecureAuthEmptyPassword(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	for _, ctor := range secureConstructors {
		err := ctor.new([]string{"http://127.0.0.1:1"}, 1, biregister.WithAuth(svcUser, ""))
		assert.ErrorIs(t, err, biregister.ErrInvalidArgument, ctor.name)
		err = ctor.new([]string{"http://127.0.0.1:1"}, 1, biregister.WithAuth("", svcPassword))
		assert.ErrorIs(t, err, biregister.ErrInvalidArgument, ctor.name)
		if err != nil {
			assert.NotContains(t, err.Error(), svcPassword)
		}
	}
}

// TLS and authentication together: the user authenticates by password over
// a mutually authenticated connection.
func TestSecureAuthOverMutualTLS(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{TLS: etcdtest.MutualTLS, Auth: secureAuth()})
	tlsConfig := biregister.WithTLS(c.Certs().ClientTLS(testcerts.ClientCert))
	checkSecureGroup(t, c.Endpoints(), tlsConfig, biregister.WithAuth(svcUser, svcPassword))

	eps := c.Endpoints()
	t.Run("WrongPassword", func(t *testing.T) {
		checkRejected(t, eps, secureRejectTTL, isEtcdFailure(rpctypes.ErrAuthFailed), tlsConfig, biregister.WithAuth(svcUser, badPassword))
	})
	// With auth, a client that authenticates neither way is refused: etcd
	// takes the certificate's common name as the user, who does not exist.
	t.Run("CertificateOfNoUser", func(t *testing.T) {
		checkRejected(t, eps, secureRejectTTL, isEtcdFailure(rpctypes.ErrPermissionDenied), tlsConfig)
	})
	// The credentials are checked only once the connection is up, so a
	// TLS failure is what the error reports.
	t.Run("NoClientCert", func(t *testing.T) {
		checkRejected(t, eps, secureRejectTTL, isTLSFailure(clientCertRefused...),
			biregister.WithTLS(c.Certs().ClientTLS()), biregister.WithAuth(svcUser, svcPassword))
	})
}

// An etcd that requires client certificates and has auth enabled takes the
// common name of a client's certificate as its user name: the certificate
// alone authenticates, and the user's role applies.
func TestSecureAuthByCertificate(t *testing.T) {
	auth := secureAuth()
	auth.Users = append(auth.Users, etcdtest.User{Name: testcerts.ClientCommonName, Password: "unused-pw-Lr64", Prefix: securePrefix})
	c := startSecureEtcd(t, etcdtest.Options{TLS: etcdtest.MutualTLS, Auth: auth})
	checkSecureGroup(t, c.Endpoints(), biregister.WithTLS(c.Certs().ClientTLS(testcerts.ClientCert)))
}

// A restart of etcd forgets every simple token (they live in memory): the
// clients log in again by themselves, and the group goes on working. JWT
// tokens outlive the restart. On etcd 3.4 the simple case needs the library's
// own login (see TestAuthTokenExpiry): etcd's client would send the forgotten
// token with its login, which 3.4 refuses.
func TestSecureAuthSurvivesRestart(t *testing.T) {
	for _, tokens := range []struct {
		name string
		jwt  bool
	}{{"simple", false}, {"jwt", true}} {
		t.Run(tokens.name, func(t *testing.T) {
			auth := secureAuth()
			auth.JWT = tokens.jwt
			c := startSecureEtcd(t, etcdtest.Options{Auth: auth})
			eps := c.Endpoints()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			login, err := c.Client(t).Authenticate(ctx, svcUser, svcPassword)
			require.NoError(t, err)
			// A JWT is three dot-separated parts; a simple token, two.
			require.Equal(t, tokens.jwt, strings.Count(login.Token, ".") == 2, "the members issue the wrong kind of token")

			logger, logs := secureLogger()
			withAuth := biregister.WithAuth(svcUser, svcPassword)
			w := startWatcher(t, eps, securePrefix, withAuth, biregister.WithLogger(logger))
			r := startRegister(t, eps, securePrefix, "a", "v1", 5, withAuth, biregister.WithLogger(logger))
			changes := w.Changes()
			recvUntil(t, changes, func(c biregister.Change) bool { return c.Op == biregister.OpPut && c.Name == "a" })

			c.Stop(t, 0)
			c.Restart(t, 0)

			require.NoError(t, r.SetValue(ctx, "v2"))
			recvUntil(t, changes, func(c biregister.Change) bool { return c.Op == biregister.OpPut && c.Value == "v2" })
			require.NoError(t, r.WaitLeader(ctx))
			assertNoSecret(t, logs.String(), nil)
		})
	}
}
