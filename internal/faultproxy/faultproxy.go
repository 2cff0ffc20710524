// Package faultproxy puts a TCP proxy between a client and a server on the
// loopback interface and injects network faults on demand.
//
// Tests use it to prove that code survives what real networks do: links
// that break (Cut), partitions that lose packets without resetting
// anything (Stall), and slow replies (DelayReplies). The proxy only ever
// listens on 127.0.0.1.
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// bufSize is the most the proxy reads from a socket at once, and so
	// the largest chunk it holds.
	bufSize = 32 << 10

	// queueLen is how many chunks may wait between the read and the write
	// side of one direction. While stalled or delayed, the proxy keeps
	// reading until the queue is full and then stops, so the sender feels
	// back-pressure the way it would from a peer whose TCP window is full.
	queueLen = 64
)

// aLongTimeAgo is a write deadline that has already passed. Setting it
// makes a Write that is blocked in progress return at once.
var aLongTimeAgo = time.Unix(1, 0)

// Proxy forwards TCP connections from a loopback port to a target address
// and injects network faults on demand.
type Proxy struct {
	ln     net.Listener
	dial   func(ctx context.Context) (net.Conn, error)
	ctx    context.Context // cancelled by Close, to abort dials in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the proxy started

	mu      sync.Mutex
	closed  bool
	cut     bool
	stalled bool
	// stalledRequests holds what goes from the client to the target only.
	stalledRequests bool
	delay           time.Duration
	// changed is closed and replaced whenever a fault is set or lifted.
	// Writers waiting for a stall or a delay to end select on it, which
	// works like a sync.Cond that can also wait for a connection to close.
	changed chan struct{}
	links   map[*link]struct{}
}

// Start listens on a free 127.0.0.1 port and forwards every connection to
// target, which is an address such as "127.0.0.1:2379" or an etcd endpoint
// such as "http://127.0.0.1:2379"; the scheme, if any, is dropped.
// t.Cleanup closes the proxy. Start fails the test on error.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	addr := target
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			t.Fatalf("faultproxy: bad target %q", target)
		}
		addr = u.Host
	}
	var d net.Dialer
	return start(t, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
}

// start is Start with the way to reach the target left to the caller, so
// that tests can put a net.Pipe behind the proxy.
func start(t testing.TB, dial func(ctx context.Context) (net.Conn, error)) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:      ln,
		dial:    dial,
		ctx:     ctx,
		cancel:  cancel,
		changed: make(chan struct{}),
		links:   make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Endpoint returns the address of the proxy as an etcd endpoint URL,
// "http://127.0.0.1:port".
func (p *Proxy) Endpoint() string {
	return "http://" + p.ln.Addr().String()
}

// Conns returns the number of connection pairs the proxy currently
// forwards.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Cut closes every open connection at once and, until Heal, closes new
// connections as soon as they are accepted. Both sides are reset rather
// than shut down gracefully, so the client sees ECONNRESET (or EOF) on its
// next read, as after a crashed link or a killed server, and data still in
// flight is lost. Cut works while stalled as well.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for l := range p.links {
		l.close(true)
		// Forget the link now rather than when its goroutines are done,
		// so that Conns drops to zero as soon as Cut returns.
		delete(p.links, l)
	}
	p.notify()
}

// Stall stops moving bytes in both directions without closing anything:
// open connections and new ones hang silently, like a network partition
// where packets are lost but nobody resets anything. Bytes the proxy has
// read are held, not dropped, and flow on in order after Heal, as TCP
// retransmission would deliver them. A write that is in progress stops
// where it is and the rest of its chunk is held too; bytes that already
// reached the kernel before Stall can still be read by the peer.
func (p *Proxy) Stall() { p.stall(true) }

// StallRequests stops moving bytes from the client to the target, as Stall
// does, while replies go on flowing: requests stop reaching the target, and
// the answers already on their way (held by DelayReplies, say) still arrive.
func (p *Proxy) StallRequests() { p.stall(false) }

// stall stops moving bytes to the target, and to the client too if replies.
func (p *Proxy) stall(replies bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if replies {
		p.stalled = true
	} else {
		p.stalledRequests = true
	}
	// A Write blocked on a peer that does not read would finish on its own
	// once the peer reads again. Expiring its deadline makes it return the
	// count written so far, so the writer can hold the rest.
	for l := range p.links {
		l.server.SetWriteDeadline(aLongTimeAgo)
		if replies {
			l.client.SetWriteDeadline(aLongTimeAgo)
		}
	}
	p.notify()
}

// DelayReplies holds every chunk that goes from the target back to the
// client for d before writing it. Order is kept, and each chunk is released
// d after it was read, so chunks read at different times do not add up
// their delays. It models a slow link or a client that reads its socket
// late. DelayReplies(0) removes the delay, and chunks held already are
// released at once.
func (p *Proxy) DelayReplies(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = max(d, 0)
	p.notify()
}

// Heal undoes Cut, Stall, StallRequests and DelayReplies: new connections
// are forwarded again and held bytes flow. Connections closed by Cut stay
// closed; clients have to reconnect.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	p.stalled = false
	p.stalledRequests = false
	p.delay = 0
	p.notify()
}

// Close stops the proxy and closes every connection. It waits for every
// goroutine the proxy started. Close is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.cancel()
		p.ln.Close()
		for l := range p.links {
			l.close(false)
			delete(p.links, l)
		}
		p.notify()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// notify wakes every writer waiting for the faults to change. p.mu must be
// held.
func (p *Proxy) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			// Close closed the listener. Any other error would repeat
			// forever, and a proxy that accepts no more connections fails
			// the test that uses it plainly enough.
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects client to the target and forwards between them until
// both directions are done or the link is closed.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if p.refusing() {
		abort(client)
		return
	}
	server, err := p.dial(p.ctx)
	if err != nil {
		// The target is down: the client sees a reset, much as if it
		// had dialed the target itself and been refused.
		abort(client)
		return
	}
	l := &link{client: client, server: server, done: make(chan struct{})}
	if !p.add(l) {
		l.close(true)
		return
	}
	defer p.remove(l)

	up := make(chan chunk, queueLen)
	down := make(chan chunk, queueLen)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); p.read(l, client, up) }()
	go func() { defer wg.Done(); p.write(l, server, up, false) }()
	go func() { defer wg.Done(); p.read(l, server, down) }()
	go func() { defer wg.Done(); p.write(l, client, down, true) }()
	wg.Wait()
	l.close(false)
}

// refusing reports whether new connections are to be closed at once.
func (p *Proxy) refusing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut || p.closed
}

// add registers l unless the proxy was cut or closed while l was dialing.
func (p *Proxy) add(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		return false
	}
	p.links[l] = struct{}{}
	return true
}

func (p *Proxy) remove(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l)
}

// read reads src into q until src ends. An orderly end (EOF) closes q only,
// so the writer delivers what is queued and then shuts down the other
// side's sending direction too, keeping half-closed connections working.
// Any other error, such as a reset, breaks the whole link; while stalled
// only after Heal, as a partition would not let the reset through either.
func (p *Proxy) read(l *link, src net.Conn, q chan<- chunk) {
	defer close(q)
	buf := make([]byte, bufSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// The chunk may be held for a while, so it needs its own copy.
			c := chunk{data: bytes.Clone(buf[:n]), at: time.Now()}
			select {
			case q <- c:
			case <-l.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && p.await(l, nil, time.Time{}, false) {
				l.close(true)
			}
			return
		}
	}
}

// write copies the chunks of q to dst, holding each one as long as the
// proxy is stalled or, for replies, delayed. When q is closed, the source
// has shut down its sending side, and write passes that on to dst.
func (p *Proxy) write(l *link, dst net.Conn, q <-chan chunk, reply bool) {
	for {
		var c chunk
		select {
		case <-l.done:
			return
		case next, ok := <-q:
			if !ok {
				// The end of the stream is held by a stall like the bytes
				// before it.
				if p.await(l, nil, time.Time{}, false) {
					closeWrite(dst)
				}
				return
			}
			c = next
		}
		for len(c.data) > 0 {
			if !p.await(l, dst, c.at, reply) {
				return
			}
			n, err := dst.Write(c.data)
			c.data = c.data[n:]
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Only Stall sets write deadlines: hold the rest.
				continue
			}
			if err != nil {
				l.close(true)
				return
			}
		}
	}
}

// await blocks until a chunk read at readAt may be written to dst: the
// proxy is not stalled (in that direction) and, for a reply, the delay has
// passed. It then clears the write deadline a Stall may have left on dst, if dst is not
// nil. Doing both under p.mu means a Stall either comes before and is seen
// here, or comes after and interrupts the Write that follows. await
// returns false if the link was closed.
func (p *Proxy) await(l *link, dst net.Conn, readAt time.Time, reply bool) bool {
	for {
		p.mu.Lock()
		var wait time.Duration
		if reply {
			wait = time.Until(readAt.Add(p.delay))
		}
		stalled, changed := p.stalled || (p.stalledRequests && !reply), p.changed
		if !stalled && wait <= 0 {
			if dst != nil {
				dst.SetWriteDeadline(time.Time{})
			}
			p.mu.Unlock()
			return true
		}
		p.mu.Unlock()

		// While stalled, only a change of the faults can end the wait.
		var timer *time.Timer
		var timeout <-chan time.Time
		if !stalled {
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-l.done:
		case <-changed:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-l.done:
			return false
		default:
		}
	}
}

// chunk is one read from a socket, with the time it was read.
type chunk struct {
	data []byte
	at   time.Time
}

// link is one proxied connection pair.
type link struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{} // closed by close
}

// close closes both connections and wakes every goroutine of the link.
// With reset set, the peers see a reset instead of an orderly shutdown.
func (l *link) close(reset bool) {
	l.once.Do(func() {
		close(l.done)
		if reset {
			abort(l.client)
			abort(l.server)
		} else {
			l.client.Close()
			l.server.Close()
		}
	})
}

// abort closes c so that its peer sees a reset: a zero linger time makes
// the kernel send RST and drop unsent data instead of shutting down with
// FIN, as when the process at the other end crashes.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// closeWrite shuts down the sending side of c, if c supports that.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
