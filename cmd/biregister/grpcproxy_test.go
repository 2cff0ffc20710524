// The operator command through etcd's gRPC proxy.

package main

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister/internal/syncbuf"
)

// TestGRPCProxy runs members and watch against etcd's gRPC proxy only: the
// members table, then every change, as etcd itself would give them.
func TestGRPCProxy(t *testing.T) {
	cluster := setup(t, true)
	ep := cluster.StartGRPCProxy(t).Endpoint()
	eps := []string{ep}
	oldest := register(t, eps, "/svc/gp/", "b", "10.0.0.2:80")
	next := register(t, eps, "/svc/gp/", "a", "10.0.0.1:80")

	code, out, _ := runCmd(t, "members", "-endpoints", ep, "/svc/gp")
	require.Equal(t, 0, code)
	assert.Equal(t, [][]string{
		{"LEADER", "NAME", "VALUE", "CREATE-REVISION"},
		{"*", "b", "10.0.0.2:80", strconv.FormatInt(oldest.MyRevision(), 10)},
		{"a", "10.0.0.1:80", strconv.FormatInt(next.MyRevision(), 10)},
	}, withoutAge(rows(out)))

	var watchOut, watchErr syncbuf.Buffer
	stop := runInBackground(t, []string{"watch", "-endpoints", ep, "/svc/gp"}, &watchOut, &watchErr)
	waitOutput(t, &watchOut, `(?m)^\*\s+b\s+10\.0\.0\.2:80\s+\d+\s+\d+\n\s+a\s+10\.0\.0\.1:80\s+\d+\s+\d+$`)

	_, err := cluster.Client(t).Put(context.Background(), "/svc/gp/c", "10.0.0.3:80")
	require.NoError(t, err)
	waitOutput(t, &watchOut, `(?m)^\S+ PUT +c 10\.0\.0\.3:80 rev \d+$`)
	oldest.Close() // revokes the lease through the proxy: deleted at once
	waitOutput(t, &watchOut, `(?m)^\S+ DELETE b 10\.0\.0\.2:80 rev \d+ \(left\)$`)

	stop()
	t.Logf("stdout:\n%sstderr:\n%s", watchOut.String(), watchErr.String())
	assert.Empty(t, watchErr.String())

	code, out, _ = runCmd(t, "members", "-endpoints", ep, "/svc/gp/")
	require.Equal(t, 0, code)
	got := rows(out)
	require.Len(t, got, 3)
	assert.Equal(t, []string{"*", "a"}, got[1][:2])
	assert.Equal(t, []string{"c", "10.0.0.3:80"}, got[2][:2])
}
