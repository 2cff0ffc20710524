package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// waitFor bounds every wait: generous, since it only turns a hang into a
// failure.
const waitFor = 15 * time.Second

// clearEnv hides the etcdctl variables of whoever runs the tests, so that
// only the flags of each test count.
func clearEnv(t *testing.T) {
	for _, v := range []string{"ENDPOINTS", "CACERT", "CERT", "KEY", "INSECURE_SKIP_TLS_VERIFY", "USER", "PASSWORD"} {
		t.Setenv("ETCDCTL_"+v, "")
	}
}

// setup checks the test for leaks, clears the environment and, if withEtcd,
// starts one etcd member.
func setup(t *testing.T, withEtcd bool) *etcdtest.Cluster {
	t.Helper()
	leakcheck.VerifyNoLeaks(t)
	clearEnv(t)
	if !withEtcd {
		return nil
	}
	return etcdtest.Start(t, 1)
}

// runCmd runs the command to completion.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncbuf.Buffer
	code = run(context.Background(), args, &out, &errOut)
	t.Logf("biregister %s -> %d\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// rows returns the table rows of out as fields, header first, without the
// line on the group above them.
func rows(out string) [][]string {
	var r [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		r = append(r, strings.Fields(line))
	}
	return r
}

// withoutAge returns rows without their last field, the member's age in
// revisions, which moves with every write to etcd.
func withoutAge(rows [][]string) [][]string {
	var r [][]string
	for _, row := range rows {
		r = append(r, row[:len(row)-1])
	}
	return r
}

// waitOutput polls buf until it matches re.
func waitOutput(t *testing.T, buf *syncbuf.Buffer, re string) {
	t.Helper()
	waitOutputFor(t, waitFor, buf, re)
}

// waitOutputFor polls buf until it matches re, for up to d.
func waitOutputFor(t *testing.T, d time.Duration, buf *syncbuf.Buffer, re string) {
	t.Helper()
	pattern := regexp.MustCompile(re)
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !pattern.MatchString(buf.String()) {
		select {
		case <-deadline.C:
			t.Fatalf("output never matched %q:\n%s", re, buf.String())
		case <-tick.C:
		}
	}
}

func register(t *testing.T, endpoints []string, prefix, name, value string) biregister.Register {
	t.Helper()
	r, err := biregister.NewRegister(endpoints, prefix, name, value, 10)
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

func TestMembers(t *testing.T) {
	cluster := setup(t, true)
	eps := cluster.Endpoints()
	ep := strings.Join(eps, ",")
	oldest := register(t, eps, "/svc/api/", "b", "10.0.0.2:80")
	first := register(t, eps, "/svc/api/", "a", "10.0.0.1:80")
	cli := cluster.Client(t)
	ctx := context.Background()
	_, err := cli.Put(ctx, "/svc/api/c", "with blank")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/svc/api/sub/x", "not a member") // a sub-group
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/svc/api2/x", "another group")
	require.NoError(t, err)

	code, out, _ := runCmd(t, "members", "-endpoints", ep, "/svc/api")
	require.Equal(t, 0, code)
	got := rows(out)
	require.Len(t, got, 4)
	assert.Equal(t, []string{"LEADER", "NAME", "VALUE", "CREATE-REVISION", "AGE-REVISIONS"}, got[0])
	assert.Equal(t, []string{"*", "b", "10.0.0.2:80"}, got[1][:3])
	assert.Equal(t, []string{"a", "10.0.0.1:80", strconv.FormatInt(first.MyRevision(), 10)}, withoutAge(got)[2])
	assert.Equal(t, []string{"c", `"with`, `blank"`}, got[3][:3])
	// The line on the group: its size, its leader's term and age, read at
	// one revision; each member's age is counted from that revision too.
	summary := regexp.MustCompile(`^3 members at revision (\d+); leader b, term (\d+), registered (\d+) revisions ago\n`).FindStringSubmatch(out)
	require.NotNil(t, summary, out)
	revision, _ := strconv.ParseInt(summary[1], 10, 64)
	assert.Equal(t, strconv.FormatInt(oldest.MyRevision(), 10), summary[2])
	assert.Equal(t, strconv.FormatInt(revision-oldest.MyRevision(), 10), summary[3])
	assert.Equal(t, strconv.FormatInt(revision-first.MyRevision(), 10), got[2][3])

	// The two oldest leave (Close revokes their leases at once): the next
	// oldest leads. Flags may follow the prefix, and the endpoints may come
	// from etcdctl's variable.
	oldest.Close()
	first.Close()
	t.Setenv("ETCDCTL_ENDPOINTS", ep)
	code, out, _ = runCmd(t, "members", "/svc/api/", "-timeout", "2s")
	require.Equal(t, 0, code)
	got = rows(out)
	require.Len(t, got, 2)
	assert.Equal(t, []string{"*", "c"}, got[1][:2])

	code, out, _ = runCmd(t, "members", "/svc/empty/")
	require.Equal(t, 0, code)
	assert.Len(t, rows(out), 1, "an empty group prints the header only")
	assert.Regexp(t, `^no members at revision \d+\n`, out)
}

func TestWatch(t *testing.T) {
	cluster := setup(t, true)
	eps := cluster.Endpoints()
	old := register(t, eps, "/svc/w/", "old", "1.1.1.1:1")
	// More members than the Changes channel holds: the watcher queues the
	// rest of their PUTs behind it.
	var bulk []clientv3.Op
	for i := range 100 {
		bulk = append(bulk, clientv3.OpPut(fmt.Sprintf("/svc/w/bulk%03d", i), "v"))
	}
	_, err := cluster.Client(t).Txn(context.Background()).Then(bulk...).Commit()
	require.NoError(t, err)

	var out, errOut syncbuf.Buffer
	stop := runInBackground(t, []string{"watch", "-endpoints", strings.Join(eps, ","), "/svc/w"}, &out, &errOut)
	waitOutput(t, &out, `(?m)^\*\s+old\s+1\.1\.1\.1:1\s+\d+\s+\d+$`)

	_, err = cluster.Client(t).Put(context.Background(), "/svc/w/new", "2.2.2.2:2")
	require.NoError(t, err)
	waitOutput(t, &out, `(?m)^\S+ PUT +new 2\.2\.2\.2:2 rev \d+$`)
	old.Close() // revokes the lease: the member is deleted at once
	waitOutput(t, &out, `(?m)^\S+ DELETE old 1\.1\.1\.1:1 rev \d+ \(left\)$`)
	// The bulk members share one create revision: the first by name leads.
	waitOutput(t, &out, `(?m)^\S+ LEADER bulk000 term \d+, registered \d+ revisions ago$`)

	stop()
	t.Logf("stdout:\n%sstderr:\n%s", out.String(), errOut.String())
	assert.NotRegexp(t, `PUT +(old|bulk)`, out.String(), "the members present at start are in the table, not repeated as changes")
	assert.Empty(t, errOut.String())
}

func TestUsage(t *testing.T) {
	setup(t, false)
	for _, tc := range []struct {
		args      []string
		code      int
		stdout    string
		stderrHas string
	}{
		{nil, 2, "", "usage: biregister members"},
		{[]string{"bogus"}, 2, "", `unknown command "bogus"`},
		{[]string{"-h"}, 0, "usage: biregister members", ""},
		{[]string{"watch", "-h"}, 0, "-insecure-skip-tls-verify", ""},
		{[]string{"members"}, 2, "", "want one prefix argument, got 0"},
		{[]string{"members", "/a", "/b"}, 2, "", "want one prefix argument, got 2"},
		{[]string{"members", "-timeout", "soon", "/a"}, 2, "", "-timeout"},
		{[]string{"members", "-nope", "/a"}, 2, "", "-nope"},
		{[]string{"members", "-endpoints", "127.0.0.1:1", "-timeout", "0s", "/a"}, 2, "", "-timeout must be positive"},
		{[]string{"help"}, 0, "biregister groups  [flags] <root>", ""},
		{[]string{"groups", "-h"}, 0, "-endpoints", ""},
		{[]string{"groups"}, 2, "", "want one prefix argument, got 0"},
		{[]string{"groups", "/a/", "/b/"}, 2, "", "want one prefix argument, got 2"},
		{[]string{"groups", "-endpoints", "127.0.0.1:1", ""}, 2, "", "empty prefix"},
	} {
		code, stdout, stderr := runCmd(t, tc.args...)
		assert.Equal(t, tc.code, code, tc.args)
		if tc.stdout != "" {
			assert.Contains(t, stdout, tc.stdout, tc.args)
		}
		assert.Contains(t, stderr, tc.stderrHas, tc.args)
	}
}

func TestMissingEndpoints(t *testing.T) {
	setup(t, false)
	for _, cmd := range []string{"members", "watch", "groups"} {
		code, stdout, stderr := runCmd(t, cmd, "/svc/api/")
		assert.Equal(t, 2, code)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, "-endpoints 127.0.0.1:2379")
		assert.Contains(t, stderr, "ETCDCTL_ENDPOINTS")
	}
	code, _, _ := runCmd(t, "members", "-endpoints", " , ", "/svc/api/")
	assert.Equal(t, 2, code)
}

// freeAddr returns a loopback address that nothing listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestUnreachable(t *testing.T) {
	setup(t, false)
	addr := freeAddr(t)
	// With a user, the client authenticates while it connects; without, the
	// first read is what waits: both must give up in time.
	for _, args := range [][]string{
		{"members", "-endpoints", addr, "-timeout", "1s", "/svc/api/"},
		{"watch", "-endpoints", addr, "-timeout", "1s", "-user", "root:s3cret", "/svc/api/"},
		{"groups", "-endpoints", addr, "-timeout", "1s", "/svc/"},
	} {
		start := time.Now()
		code, stdout, stderr := runCmd(t, args...)
		elapsed := time.Since(start)
		assert.Equal(t, 1, code)
		assert.Less(t, elapsed, 4*time.Second)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, "no answer from etcd at "+addr+" within 1s")
		assert.NotContains(t, stderr, "s3cret")
	}
}

func TestTLSFlags(t *testing.T) {
	setup(t, false)
	addr := freeAddr(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		flags     []string
		code      int
		stderrHas string
	}{
		{[]string{"-cacert", missing}, 1, "-cacert: open " + missing},
		{[]string{"-cacert", notPEM}, 1, "-cacert: no PEM certificate in " + notPEM},
		{[]string{"-cert", missing, "-key", missing}, 1, "-cert/-key: open " + missing},
		{[]string{"-cert", notPEM}, 2, "-cert and -key go together"},
		{[]string{"-key", notPEM}, 2, "-cert and -key go together"},
	} {
		args := append([]string{"members", "-endpoints", addr}, tc.flags...)
		code, _, stderr := runCmd(t, append(args, "/p")...)
		assert.Equal(t, tc.code, code, tc.flags)
		assert.Contains(t, stderr, tc.stderrHas, tc.flags)
	}
}

// TestAuth reads a group from an etcd with authentication, with the user
// and password from flags and etcdctl's variables, each flag winning over
// its variable.
func TestAuth(t *testing.T) {
	cluster := setup(t, true)
	ctx := context.Background()
	cli := cluster.Client(t)
	_, err := cli.RoleAdd(ctx, "root")
	require.NoError(t, err)
	_, err = cli.UserAdd(ctx, "root", "s3cret")
	require.NoError(t, err)
	_, err = cli.UserGrantRole(ctx, "root", "root")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/svc/auth/m", "v")
	require.NoError(t, err)
	_, err = cli.AuthEnable(ctx)
	require.NoError(t, err)
	ep := strings.Join(cluster.Endpoints(), ",")

	const noPassword = "has no password, and biregister does not ask for one: give it with -password, in ETCDCTL_PASSWORD, or as "
	for _, tc := range []struct {
		flags          []string
		user, password string // ETCDCTL_USER, ETCDCTL_PASSWORD
		code           int
		stderrHas      string
	}{
		{flags: []string{"-user", "root:s3cret"}},
		{flags: []string{"-user", "root", "-password", "s3cret"}},
		{flags: []string{"-user", "root"}, password: "s3cret"},
		{user: "root:s3cret"},
		{user: "root", password: "s3cret"},
		{flags: []string{"-password", "s3cret"}, user: "root"},
		// A flag wins over its variable.
		{flags: []string{"-password", "s3cret"}, user: "root:wr0ng"},
		{flags: []string{"-user", "root:s3cret"}, password: "wr0ng"},
		{flags: []string{"-user", "root:s3cret"}, user: "other:wr0ng"},
		{flags: []string{"-password", "s3cret"}, user: "root:wr0ng", password: "wr0ng"},
		{flags: []string{"-user", "root"}, user: "root:s3cret", code: 2, stderrHas: "-user root " + noPassword + "-user root:password"},
		// Twice on one level.
		{flags: []string{"-user", "root:s3cret", "-password", "s3cret"}, code: 2,
			stderrHas: "the password is given twice: in -user name:password and in -password"},
		{user: "root:s3cret", password: "s3cret", code: 2,
			stderrHas: "the password is given twice: in ETCDCTL_USER=name:password and in ETCDCTL_PASSWORD"},
		// Half a pair.
		{flags: []string{"-user", "root"}, code: 2, stderrHas: "-user root " + noPassword + "-user root:password"},
		{flags: []string{"-user", "root:"}, code: 2, stderrHas: "-user root " + noPassword},
		{user: "root", code: 2, stderrHas: "ETCDCTL_USER=root " + noPassword + "ETCDCTL_USER=root:password"},
		{flags: []string{"-password", "s3cret"}, code: 2, stderrHas: "a password needs a user name"},
		{password: "s3cret", code: 2, stderrHas: "a password needs a user name"},
		{flags: []string{"-user", ":s3cret"}, code: 2, stderrHas: "no user name in -user name:password"},
		{user: ":s3cret", code: 2, stderrHas: "no user name in ETCDCTL_USER=name:password"},
		// etcd says no.
		{flags: []string{"-user", "root:wr0ng"}, code: 1, stderrHas: "authentication failed"},
		{user: "root", password: "wr0ng", code: 1, stderrHas: "authentication failed"},
	} {
		t.Setenv("ETCDCTL_USER", tc.user)
		t.Setenv("ETCDCTL_PASSWORD", tc.password)
		args := append(append([]string{"members", "-endpoints", ep, "-timeout", "2s"}, tc.flags...), "/svc/auth/")
		code, out, stderr := runCmd(t, args...)
		what := fmt.Sprintf("%q ETCDCTL_USER=%q ETCDCTL_PASSWORD=%q", tc.flags, tc.user, tc.password)
		if assert.Equal(t, tc.code, code, what) && code == 0 {
			assert.Equal(t, []string{"*", "m", "v"}, rows(out)[1][:3], what)
		}
		assert.Contains(t, stderr, tc.stderrHas, what)
		assert.NotContains(t, stderr, "s3cret", what)
		assert.NotContains(t, stderr, "wr0ng", what)
		if code == 2 {
			assert.Empty(t, out, what)
		}
	}
	t.Setenv("ETCDCTL_USER", "")
	t.Setenv("ETCDCTL_PASSWORD", "")
	code, out, _ := runCmd(t, "groups", "-endpoints", ep, "-user", "root:s3cret", "/svc/")
	require.Equal(t, 0, code)
	assert.Equal(t, []string{"auth", "1", "m"}, rows(out)[1][:3])
	code, _, stderr := runCmd(t, "groups", "-endpoints", ep, "-user", "root:wr0ng", "/svc/")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "authentication failed")
}

// TestMutualTLS reads a group from an etcd that requires client
// certificates, with the etcdctl-style TLS flags.
func TestMutualTLS(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	clearEnv(t)
	cluster := etcdtest.StartWith(t, etcdtest.Options{Members: 1, TLS: etcdtest.MutualTLS})
	certs := cluster.Certs()
	_, err := cluster.Client(t).Put(context.Background(), "/svc/tls/m", "10.0.0.9:443")
	require.NoError(t, err)

	code, out, _ := runCmd(t, "members", "-endpoints", cluster.Endpoint(0),
		"-cacert", certs.CAFile, "-cert", certs.ClientCertFile, "-key", certs.ClientKeyFile, "/svc/tls/")
	require.Equal(t, 0, code)
	assert.Equal(t, [][]string{{"LEADER", "NAME", "VALUE", "CREATE-REVISION"}, {"*", "m", "10.0.0.9:443", "2"}}, withoutAge(rows(out)))

	code, _, errOut := runCmd(t, "members", "-endpoints", cluster.Endpoint(0), "-timeout", "1s",
		"-cacert", certs.CAFile, "/svc/tls/")
	assert.Equal(t, 1, code, "without a client certificate")
	assert.Contains(t, errOut, "tls")

	code, out, _ = runCmd(t, "groups", "-endpoints", cluster.Endpoint(0),
		"-cacert", certs.CAFile, "-cert", certs.ClientCertFile, "-key", certs.ClientKeyFile, "/svc/")
	require.Equal(t, 0, code)
	assert.Equal(t, [][]string{groupsHeader[:4], {"tls", "1", "m", "2"}}, withoutAge(rows(out)))
	code, _, errOut = runCmd(t, "groups", "-endpoints", cluster.Endpoint(0), "-timeout", "1s",
		"-cacert", certs.CAFile, "/svc/")
	assert.Equal(t, 1, code, "without a client certificate")
	assert.Contains(t, errOut, "tls")
}

// inBackground runs f until the stop it returns, which cancels f's context
// and requires f to return 0, as a watch does when interrupted.
func inBackground(t *testing.T, f func(ctx context.Context) int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan int, 1)
	go func() { done <- f(ctx) }()
	return func() {
		t.Helper()
		cancel()
		select {
		case code := <-done:
			assert.Equal(t, 0, code)
		case <-time.After(waitFor):
			t.Fatal("watch did not return after cancel")
		}
	}
}

// runInBackground runs the command with args until stop (see
// inBackground).
func runInBackground(t *testing.T, args []string, stdout, stderr io.Writer) (stop func()) {
	return inBackground(t, func(ctx context.Context) int { return run(ctx, args, stdout, stderr) })
}

// watchInBackground runs watch on a new Watcher of prefix, made with opts,
// until stop (see inBackground); out takes what it prints.
func watchInBackground(t *testing.T, cluster *etcdtest.Cluster, prefix string, out io.Writer, opts ...biregister.Option) (
	w biregister.Watcher, stop func(),
) {
	w, err := biregister.NewWatcher(cluster.Endpoints(), prefix, 5, opts...)
	require.NoError(t, err)
	t.Cleanup(w.Close)
	return w, inBackground(t, func(ctx context.Context) int { return watch(ctx, w, out) })
}

// fill writes n members under prefix, perRequest in a transaction, one
// transaction after the other: m0 to m<n-1>, all as wide, each valued "v".
// It returns their keys.
func fill(t *testing.T, cli *clientv3.Client, prefix string, n, perRequest int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sm%0*d", prefix, len(strconv.Itoa(n-1)), i)
	}
	require.NoError(t, benchutil.Populate(context.Background(), cli, keys, func(int) string { return "v" }, perRequest, 1))
	return keys
}
