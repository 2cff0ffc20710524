package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/biregister/biregister/internal/leakcheck"
)

// waitTimeout bounds every wait for something that must happen. It only
// turns a hang into a clear failure, so it is generous.
const waitTimeout = 5 * time.Second

// quiet is how long a stalled connection must stay silent.
const quiet = 200 * time.Millisecond

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakcheck.Options()...)
}

// startEcho starts a TCP server on 127.0.0.1 that echoes every connection
// until the client shuts down its sending side, and returns its address.
// t.Cleanup stops it and waits for its goroutines.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// dial connects to the proxy. t.Cleanup closes the connection.
func dial(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(p.Endpoint(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// echo sends msg through c and fails t unless it comes back intact.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	wantRead(t, c, msg)
}

// wantRead fails t unless msg can be read from c within waitTimeout.
func wantRead(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
}

// wantSilence fails t unless nothing can be read from c for quiet, while c
// stays open.
func wantSilence(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(quiet))
	n, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d bytes, %v; want a timeout", n, err)
	}
}

// wantBroken fails t unless reading c ends promptly with EOF or a reset.
func wantBroken(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	n, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d bytes, %v; want EOF or a reset", n, err)
	}
}

// pattern returns n bytes that differ from their neighbours, so that lost,
// repeated or reordered bytes show.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// waitConns polls until p forwards n connections.
func waitConns(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for p.Conns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("Conns() = %d, want %d", p.Conns(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestForward(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, "http://"+startEcho(t))
	if !strings.HasPrefix(p.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("Endpoint() = %q, want a loopback URL", p.Endpoint())
	}

	a, b := dial(t, p), dial(t, p)
	echo(t, a, "hello")
	echo(t, b, "world")
	echo(t, a, "again")
	if n := p.Conns(); n != 2 {
		t.Fatalf("Conns() = %d, want 2", n)
	}

	// A large payload, written while it is read back, arrives intact.
	// Shutting down the sending side reaches the echo server through the
	// proxy, and its close comes back as EOF.
	want := pattern(4 << 20)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Write(want)
		if err == nil {
			err = a.CloseWrite()
		}
		errc <- err
	}()
	a.SetReadDeadline(time.Now().Add(waitTimeout))
	got, err := io.ReadAll(a)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from the %d written", len(got), len(want))
	}
	a.Close()
	waitConns(t, p, 1)

	p.Close()
	p.Close() // a no-op
	wantBroken(t, b)
}

func TestTargetWithoutScheme(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	echo(t, dial(t, p), "hello")
}

func TestCut(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	old := dial(t, p)
	echo(t, old, "hello")

	p.Cut()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() after Cut = %d, want 0", n)
	}
	wantBroken(t, old)
	// New connections are accepted by the kernel, then reset at once. The
	// reset may come before Dial returns and make it fail.
	c, err := net.Dial("tcp", strings.TrimPrefix(p.Endpoint(), "http://"))
	if err == nil {
		defer c.Close()
		wantBroken(t, c)
	}

	p.Heal()
	echo(t, dial(t, p), "healed")
}

func TestCutWhileStalled(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	c := dial(t, p)
	echo(t, c, "hello")

	p.Stall()
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	wantBroken(t, c)

	p.Heal()
	echo(t, dial(t, p), "healed")
}

func TestStall(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	old := dial(t, p)
	echo(t, old, "hello")

	p.Stall()
	// More than the proxy and the kernel buffer, so the writer blocks
	// until Heal and the held bytes must flow on in order.
	big := pattern(16 << 20)
	errc := make(chan error, 1)
	go func() {
		_, err := old.Write(append([]byte("stalled"), big...))
		errc <- err
	}()
	wantSilence(t, old)
	// A connection opened during the stall hangs as well.
	fresh := dial(t, p)
	if _, err := fresh.Write([]byte("fresh")); err != nil {
		t.Fatal(err)
	}
	wantSilence(t, fresh)
	if n := p.Conns(); n != 2 {
		t.Fatalf("Conns() while stalled = %d, want 2", n)
	}

	p.Heal()
	wantRead(t, fresh, "fresh")
	wantRead(t, old, "stalled")
	old.SetReadDeadline(time.Now().Add(waitTimeout))
	got := make([]byte, len(big))
	if _, err := io.ReadFull(old, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("bytes held by the stall came back changed")
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	echo(t, old, "after")
}

// TestStallRequests checks that a request stall holds what the client
// sends and lets the replies already on their way through: an echo the
// server answered before the stall comes back, delayed, and what the client
// sends after it does not reach the server.
func TestStallRequests(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	received := make(chan string, 4)
	p := Start(t, startNotifyingEcho(t, received))
	c := dial(t, p)
	echo(t, c, "warm")
	<-received

	p.DelayReplies(300 * time.Millisecond)
	if _, err := c.Write([]byte("in flight")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-received:
	case <-time.After(waitTimeout):
		t.Fatal("the server never got the request")
	}
	p.StallRequests()
	wantRead(t, c, "in flight")
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	wantSilence(t, c)
	if len(received) != 0 {
		t.Fatal("a request reached the server through a request stall")
	}

	p.Heal()
	wantRead(t, c, "held")
}

// startNotifyingEcho starts a TCP server on 127.0.0.1 that echoes one
// connection and sends what it reads on received before it echoes it.
// t.Cleanup stops it.
func startNotifyingEcho(t *testing.T, received chan<- string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conn net.Conn
	var mu sync.Mutex
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conn = c
		mu.Unlock()
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			received <- string(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		if conn != nil {
			conn.Close()
		}
		mu.Unlock()
		<-done
	})
	return ln.Addr().String()
}

// TestStallHoldsShutdown checks that the end of a stream is held by a
// stall like its bytes: the echo server's close must not reach the client
// before Heal.
func TestStallHoldsShutdown(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	c := dial(t, p)
	echo(t, c, "hello")

	p.Stall()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantSilence(t, c)

	p.Heal()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %d bytes, %v; want EOF", n, err)
	}
	waitConns(t, p, 0)
}

// TestStallMidWrite stalls while the proxy is in the middle of writing a
// chunk to a target that takes bytes slowly: the rest of the chunk must be
// held too, not trickle out as the target keeps reading.
func TestStallMidWrite(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	server := newSlowConn()
	var once sync.Once
	p := start(t, func(context.Context) (net.Conn, error) {
		err := errors.New("one connection only")
		once.Do(func() { err = nil })
		if err != nil {
			return nil, err
		}
		return server, nil
	})

	// One write that the proxy reads as one chunk, of which the target
	// takes 100 bytes before it blocks the proxy.
	want := pattern(1000)
	server.grant(100)
	if _, err := dial(t, p).Write(want); err != nil {
		t.Fatal(err)
	}
	server.waitGot(t, 100)

	p.Stall()
	server.grant(len(want))
	deadline := time.Now().Add(quiet)
	for time.Now().Before(deadline) {
		if n := len(server.received()); n != 100 {
			t.Fatalf("target got %d bytes while stalled, want 100", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	p.Heal()
	server.waitGot(t, len(want))
	if !bytes.Equal(server.received(), want) {
		t.Fatal("bytes held by the stall came back changed")
	}
}

// slowConn is the target end of a proxied connection that takes only the
// bytes the test grants, like a TCP peer whose receive window is full
// until its application reads. It honours write deadlines in the past,
// which is all Stall sets. Nothing is ever read from it.
type slowConn struct {
	net.Conn // nil; the proxy uses only the methods below

	mu       sync.Mutex
	cond     *sync.Cond // signalled on every change of the fields below
	credit   int
	got      []byte
	deadline time.Time
	closed   bool
}

func newSlowConn() *slowConn {
	c := &slowConn{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *slowConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for len(b) > 0 {
		switch {
		case c.closed:
			return n, net.ErrClosed
		case !c.deadline.IsZero() && time.Now().After(c.deadline):
			return n, os.ErrDeadlineExceeded
		case c.credit > 0:
			k := min(c.credit, len(b))
			c.got = append(c.got, b[:k]...)
			c.credit -= k
			b = b[k:]
			n += k
		default:
			c.cond.Wait()
		}
	}
	return n, nil
}

func (c *slowConn) Read([]byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed {
		c.cond.Wait()
	}
	return 0, net.ErrClosed
}

func (c *slowConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	c.cond.Broadcast()
	return nil
}

func (c *slowConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.cond.Broadcast()
	return nil
}

// grant lets the proxy write n more bytes.
func (c *slowConn) grant(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.credit += n
	c.cond.Broadcast()
}

func (c *slowConn) received() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got)
}

// waitGot polls until the target has received n bytes.
func (c *slowConn) waitGot(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(c.received()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("target got %d bytes, want %d", len(c.received()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDelayReplies(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	c := dial(t, p)
	echo(t, c, "warm")

	const delay = 300 * time.Millisecond
	p.DelayReplies(delay)
	start := time.Now()
	echo(t, c, "slow")
	if took := time.Since(start); took < delay {
		t.Fatalf("echo took %v, want at least %v", took, delay)
	}

	// Lifting the delay releases replies held already.
	p.DelayReplies(time.Hour)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	wantSilence(t, c)
	p.DelayReplies(0)
	wantRead(t, c, "held")
}

// TestDelayRepliesOverlap checks that replies read at different times are
// each delayed from their own read time, not queued behind each other's
// delays.
func TestDelayRepliesOverlap(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	p := Start(t, startEcho(t))
	c := dial(t, p)
	echo(t, c, "warm")

	const (
		delay = 300 * time.Millisecond
		gap   = 100 * time.Millisecond
		n     = 4
	)
	p.DelayReplies(delay)
	sent := make(chan time.Time, n)
	errc := make(chan error, 1)
	go func() {
		// Spacing the messages out is the point of the test: each one
		// comes back as a chunk of its own, read at its own time.
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for i := range n {
			if i > 0 {
				<-tick.C
			}
			sent <- time.Now()
			if _, err := c.Write([]byte{'0' + byte(i)}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	// Serialized delays would make message i take delay + i*(delay-gap),
	// 900 ms for the last one.
	const most = delay + 400*time.Millisecond
	for i := range n {
		wantRead(t, c, string([]byte{'0' + byte(i)}))
		took := time.Since(<-sent)
		if took < delay || took >= most {
			t.Errorf("reply %d took %v, want between %v and %v", i, took, delay, most)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
