package biregister_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.opentelemetry.io/otel/attribute"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
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
		biregister.WithLogger(slog.New(slog.NewTextHandler(rec.logs, nil))),
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
		a := newRegister(t, etcd.Endpoints(), "/led", "a", "v", 5, opts...)
		rec.requireSays(t, 1, 0)
		a.Close()
		require.True(t, rec.says(t, 1, 1), "Close ended the leadership: logs\n%s", rec.logs.String())
	})
	t.Run("Resign behind another member", func(t *testing.T) {
		etcd := startEtcd(t)
		rec, opts := recordLeadership(t, "a")
		a := newRegister(t, etcd.Endpoints(), "/led", "a", "v", 5, opts...)
		newRegister(t, etcd.Endpoints(), "/led", "b", "v", 5)
		rec.requireSays(t, 1, 0)
		require.NoError(t, a.Resign(context.Background()))
		rec.requireSays(t, 1, 1)
	})
	t.Run("Resign alone", func(t *testing.T) {
		etcd := startEtcd(t)
		rec, opts := recordLeadership(t, "a")
		a := newRegister(t, etcd.Endpoints(), "/led", "a", "v", 5, opts...)
		rec.requireSays(t, 1, 0)
		require.NoError(t, a.Resign(context.Background()))
		rec.requireSays(t, 2, 1)
	})
	t.Run("Resign refused", func(t *testing.T) {
		c := startSecureEtcd(t, etcdtest.Options{Auth: secureAuth()})
		rec, opts := recordLeadership(t, "a")
		a := newRegister(t, c.Endpoints(), securePrefix, "a", "v", 5, append(opts, biregister.WithAuth(svcUser, svcPassword))...)
		term := waitTerm(t, a)
		rec.requireSays(t, 1, 0)
		readWrite := readOnly(t, c.Client(t), svcUser, securePrefix)
		require.ErrorIs(t, a.Resign(context.Background()), rpctypes.ErrPermissionDenied)
		requireEnded(t, term, biregister.ErrResigned)
		rec.requireSays(t, 2, 1)
		readWrite()
	})
}
