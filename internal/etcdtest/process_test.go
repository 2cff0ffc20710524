package etcdtest

import (
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/leakcheck"
)

// TestProcessExitBeforeServing checks that a child that exits at once, as
// etcd does on a flag it does not know, fails the start without waiting
// out the deadline, and that the error quotes the end of its log.
func TestProcessExitBeforeServing(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	urls, err := devetcd.FreeURLs(1)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "etcd.log")
	script := "echo starting; echo 'flag provided but not defined: -x' >&2; exit 2"
	p, err := startProcess(testContext(t), "/bin/sh", []string{"-c", script}, log, urls[0], clientv3.Config{})
	if err == nil {
		p.Close()
		t.Fatal("start succeeded")
	}
	for _, want := range []string{"exited before serving", "exit status 2", "starting\nflag provided but not defined"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
