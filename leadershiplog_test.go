package biregister_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.opentelemetry.io/otel/attribute"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/metertest"
	"github.com/biregister/biregister/internal/syncbuf"
)

// leadershipRecord is what a Register logs and counts of its leadership.
type leadershipRecord struct {
	meters *metertest.Meters
	logs   *syncbuf.Buffer
	name   string
}

// recordLeadership returns the record of the Register named name and the
// options that make it log and count there.
func recordLeadership(t *testing.T, name string) (*leadershipRecord, []biregister.Option) {
	rec := &leadershipRecord{meters: metertest.New(t), logs: &syncbuf.Buffer{}, name: name}
	return rec, []biregister.Option{
		biregister.WithMeterProvider(rec.meters.Provider),
		// Debug: leadership is logged at Info only once the user asks
		// about it (TestLeadershipLogLevel).
		biregister.WithLogger(slog.New(slog.NewTextHandler(rec.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
}

// says reports whether the counter biregister.leadership.changes and the
// log both say that leadership was gained and lost so many times.
func (rec *leadershipRecord) says(t *testing.T, gained, lost int) bool {
	counted := func(leading bool) int {
		return int(rec.meters.Value(t, "biregister.leadership.changes", ofMember(rec.name), attribute.Bool("biregister.leading", leading)))
	}
	logs := rec.logs.String()
	return counted(true) == gained && counted(false) == lost &&
		strings.Count(logs, "leadership gained") == gained && strings.Count(logs, "leadership lost") == lost
}

// requireSays fails the test unless the counter and the log say, within
// 5 s, that leadership was gained and lost so many times. The Register
// looks at its leadership at least every ttl/3 (ttl 5 here).
func (rec *leadershipRecord) requireSays(t *testing.T, gained, lost int) {
	t.Helper()
	require.Eventually(t, func() bool { return rec.says(t, gained, lost) }, 5*time.Second, time.Millisecond,
		"want leadership gained %d and lost %d times, counted and logged; logs:\n%s", gained, lost, rec.logs.String())
}

// Every end of leadership is logged and counted as a loss, each new
// leadership as a gain: Close while leading, a Resign behind another member
// or alone (the member's next leadership is another registration's), and a
// Resign etcd refuses, which ends the member's term too.
func TestLeadershipLoggedAndCounted(t *testing.T) {
	t.Run("Close while leading", func(t *testing.T) {
		etcd := startEtcd(t)
		rec, opts := recordLeadership(t, "a")
		a := startRegister(t, etcd.Endpoints(), "/led", "a", "v", 5, opts...)
		rec.requireSays(t, 1, 0)
		a.Close()
		require.True(t, rec.says(t, 1, 1), "Close ended the leadership: logs\n%s", rec.logs.String())
	})
	t.Run("Resign behind another member", func(t *testing.T) {
		etcd := startEtcd(t)
		rec, opts := recordLeadership(t, "a")
		a := startRegister(t, etcd.Endpoints(), "/led", "a", "v", 5, opts...)
		startRegister(t, etcd.Endpoints(), "/led", "b", "v", 5)
		rec.requireSays(t, 1, 0)
		require.NoError(t, a.Resign(context.Background()))
		rec.requireSays(t, 1, 1)
	})
	t.Run("Resign alone", func(t *testing.T) {
		etcd := startEtcd(t)
		rec, opts := recordLeadership(t, "a")
		a := startRegister(t, etcd.Endpoints(), "/led", "a", "v", 5, opts...)
		rec.requireSays(t, 1, 0)
		require.NoError(t, a.Resign(context.Background()))
		rec.requireSays(t, 2, 1)
	})
	t.Run("Resign refused", func(t *testing.T) {
		c := startSecureEtcd(t, etcdtest.Options{Auth: secureAuth()})
		rec, opts := recordLeadership(t, "a")
		a := startRegister(t, c.Endpoints(), securePrefix, "a", "v", 5, append(opts, biregister.WithAuth(svcUser, svcPassword))...)
		term := waitTerm(t, a)
		rec.requireSays(t, 1, 0)
		readWrite := readOnly(t, c.Client(t), svcUser, securePrefix)
		require.ErrorIs(t, a.Resign(context.Background()), rpctypes.ErrPermissionDenied)
		requireEnded(t, term, biregister.ErrResigned)
		rec.requireSays(t, 2, 1)
		readWrite()
	})
}

// A Register whose user never asks about leadership (a server that only
// registers to be found) logs its leadership at Debug; once asked
// (AmILeader, WaitLeader, WaitTerm, Lead), at Info, with the cause of a
// loss.
func TestLeadershipLogLevel(t *testing.T) {
	etcd := startEtcd(t)
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := startRegister(t, etcd.Endpoints(), "/led-level", "a", "v", 5, biregister.WithLogger(logger))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "leadership gained") }, waitFor, time.Millisecond)
	require.Contains(t, logs.String(), `level=DEBUG msg="biregister: leadership gained"`)
	require.True(t, a.AmILeader())
	// Asked about now: the leadership it holds is said at Info.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `level=INFO msg="biregister: leading"`) },
		waitFor, time.Millisecond, "logs:\n%s", logs.String())
	require.NoError(t, a.Resign(context.Background()))
	b := startRegister(t, etcd.Endpoints(), "/led-level", "b", "v", 5)
	_ = b
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `level=INFO msg="biregister: leadership lost"`) },
		waitFor, time.Millisecond, "logs:\n%s", logs.String())
	require.Contains(t, logs.String(), "cause=")
}

// A registration lost because its lease expired while nothing renewed it
// (an outage, a pause) is logged and counted as a lost lease, not as a key
// deleted from outside, whichever of the two the Register hears of first.
func TestRegistrationLostCause(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	var logs syncbuf.Buffer
	m := metertest.New(t)
	const ttl = 2
	a := startRegister(t, []string{proxy.Endpoint()}, "/lost-cause", "a", "v", ttl,
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))), biregister.WithMeterProvider(m.Provider))
	w := startWatcher(t, etcd.Endpoints(), "/lost-cause")
	recvUntil(t, w.Changes(), func(c biregister.Change) bool { return c.Name == "a" })
	proxy.Stall()
	recvUntil(t, w.Changes(), func(c biregister.Change) bool { return c.Op == biregister.OpDelete && c.Name == "a" })
	proxy.Heal()
	require.Eventually(t, func() bool {
		return m.Value(t, "biregister.registrations", ofMember("a"), forCause("lease_lost")) == 1
	}, waitFor, 10*time.Millisecond, "logs:\n%s", logs.String())
	require.Zero(t, m.Value(t, "biregister.registrations", ofMember("a"), forCause("key_deleted")))
	require.NotContains(t, logs.String(), "key deleted")
	require.Eventually(t, a.AmILeader, waitFor, time.Millisecond)
}

// A member that does not lead logs an etcd that answers no keepalive for
// the whole lease, and its next answer: nothing else tells an operator of
// an outage that etcd's restart ends with the lease alive (etcd renews
// every lease when it starts).
func TestKeepaliveSilenceLogged(t *testing.T) {
	etcd := startEtcd(t)
	var logs syncbuf.Buffer
	startRegister(t, etcd.Endpoints(), "/silence", "a", "v", 2)
	b := startRegister(t, etcd.Endpoints(), "/silence", "b", "v", 2,
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	revision := b.MyRevision()
	etcd.Stop(t, 0)
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="biregister: etcd answered no keepalive for the whole lease, which may be gone" prefix=/silence/ key=/silence/b`)
	}, waitFor, 10*time.Millisecond, "logs:\n%s", logs.String())
	etcd.Restart(t, 0)
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), `level=INFO msg="biregister: etcd answers keepalives again" prefix=/silence/ key=/silence/b`)
	}, waitFor, 10*time.Millisecond, "logs:\n%s", logs.String())
	require.Equal(t, revision, b.MyRevision(), "the lease did not survive etcd's restart: the test shows nothing")
}

// A leadership gained before the program asked is said at Info when it
// asks, not at the loop's next look (ttl/3, 10 s here).
func TestLeadingSaidWhenAsked(t *testing.T) {
	etcd := startEtcd(t)
	var logs syncbuf.Buffer
	a := startRegister(t, etcd.Endpoints(), "/asked", "a", "v", 30,
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `level=DEBUG msg="biregister: leadership gained"`) },
		waitFor, time.Millisecond)
	require.True(t, a.AmILeader())
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `level=INFO msg="biregister: leading"`) },
		5*time.Second, time.Millisecond, "logs:\n%s", logs.String())
}

// The library's own reads of leadership — Status, the readiness handlers,
// the metrics — do not make a program one that asks about it: a server
// that only registers to be found keeps leadership at Debug.
func TestStatusIsNotAskingAboutLeadership(t *testing.T) {
	etcd := startEtcd(t)
	var logs syncbuf.Buffer
	m := metertest.New(t)
	a := startRegister(t, etcd.Endpoints(), "/not-asked", "a", "v", 30, biregister.WithMeterProvider(m.Provider),
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `level=DEBUG msg="biregister: leadership gained"`) },
		waitFor, time.Millisecond)
	require.True(t, a.Status().Leading)
	for _, h := range []http.Handler{biregister.ReadyHandler(a), biregister.ServingHandler(a)} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		require.Equal(t, http.StatusOK, rec.Code)
	}
	m.Value(t, "biregister.leader", ofMember("a"))
	require.Never(t, func() bool { return strings.Contains(logs.String(), "level=INFO") }, time.Second, 10*time.Millisecond,
		"logs:\n%s", logs.String())
}
