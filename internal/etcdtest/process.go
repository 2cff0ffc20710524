package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/devetcd"
)

// binEnv names the environment variable that selects the process backend:
// the path of an etcd server binary to run the members with.
const binEnv = "BIREGISTER_ETCD_BIN"

const (
	// stopTimeout bounds the wait for a member to exit after SIGTERM, which
	// takes etcd well under a second. One that hangs is killed, which loses
	// nothing committed: etcd syncs its log before it acknowledges a write.
	stopTimeout = 10 * time.Second

	// logTailBytes is how much of the end of a member's log a failure to
	// start quotes: enough for the lines that say why etcd gave up.
	logTailBytes = 4 << 10
)

// process is a member, or a gRPC proxy, running as a child process of an
// etcd binary.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the child has exited
	err    error         // what Wait returned; read only after exited is closed
}

// startProcess runs bin with args and returns once the child serves etcd's
// API on its client URL ep, as a client made from ready (TLS settings,
// credentials) finds. The child's output goes to the end of logPath, so that
// a member's log accumulates over its restarts and stays out of the test
// output; on a failure the error quotes its tail.
func startProcess(ctx context.Context, bin string, args []string, logPath string, ep url.URL, ready clientv3.Config) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child gets its own copy of the descriptor. Handing an *os.File
	// to exec, rather than an io.Writer, also spares the copying
	// goroutines that VerifyNoLeaks would have to wait for.
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitServing(ctx, ep, ready); err != nil {
		p.Close()
		return nil, fmt.Errorf("%w\n--- end of %s ---\n%s", err, logPath, logTail(logPath))
	}
	return p, nil
}

// waitServing waits until the member serves on ep, and gives up as soon as
// the child exits: a member that rejected a flag or found its port taken
// will not serve, and waiting out ctx would only hide the reason.
func (p *process) waitServing(ctx context.Context, ep url.URL, ready clientv3.Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := waitListening(ctx, ep.Host)
	if err == nil {
		ready.Endpoints = []string{ep.String()}
		err = devetcd.WaitServingWith(ctx, ready)
	}
	if err == nil {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("exited before serving: %v", p.err)
	default:
		return err
	}
}

// waitListening waits until a TCP connection to hostport succeeds. Unlike
// embed, whose start returns with the ports open, a child takes a moment
// to open them, and a gRPC client that finds a port closed backs off for a
// second before it dials again: polling the port first saves that second
// on every start.
func waitListening(ctx context.Context, hostport string) error {
	var d net.Dialer
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		conn, err := d.DialContext(ctx, "tcp", hostport)
		if err == nil {
			return conn.Close()
		}
		retry.Reset(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			return fmt.Errorf("not listening in time: %v", err)
		case <-retry.C:
		}
	}
}

// Close stops the member the way an operator does, with SIGTERM, on which
// etcd hands over leadership and closes its files like embed's Close does.
// It kills the member if it has not exited after stopTimeout, and returns
// only once the child is gone, so that its ports and files are free.
func (p *process) Close() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return
	case <-timer.C:
	}
	p.Kill()
}

// Kill kills the member at once, as a crash does, and returns once it is
// gone. A paused member dies without running again.
func (p *process) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// logTail returns the last lines of the log at path, which is where etcd
// says why it stopped.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		// Start at a whole line.
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
