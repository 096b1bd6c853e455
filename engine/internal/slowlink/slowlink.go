// Package slowlink is a loopback TCP proxy for tests that need a slow
// reader in front of a real client: the engine-to-client direction can be
// held (nothing forwarded) and then throttled, whatever the client's SDK.
package slowlink

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// SocketBuffer is the receive buffer of the proxy's engine-side socket: a
// small window, so the engine's writer feels a held client after a few KiB
// rather than megabytes of socket buffers.
const SocketBuffer = 16 << 10

// Proxy forwards TCP connections from Addr to a target. Client-to-target
// bytes flow freely; target-to-client bytes stop between Hold and Open and
// flow at most Rate bytes per second after Open.
type Proxy struct {
	ln     net.Listener
	target string
	rate   int
	held   atomic.Bool
	gate   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

// Start listens on 127.0.0.1 and proxies to target (host:port) with rate
// bytes per second once opened. Close stops it.
func Start(target string, rate int) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, rate: rate, gate: make(chan struct{})}
	p.wg.Add(1)
	// Exits when Close closes the listener.
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.serve(c)
		}
	}()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Hold stops forwarding target-to-client bytes until Open.
func (p *Proxy) Hold() { p.held.Store(true) }

// Open resumes forwarding, throttled to the rate.
func (p *Proxy) Open() { p.once.Do(func() { close(p.gate) }) }

// Close stops the proxy and its connections and waits for its goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Open()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) serve(down net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		down.Close()
		return
	}
	up.(*net.TCPConn).SetReadBuffer(SocketBuffer)
	p.mu.Lock()
	p.conns = append(p.conns, down, up)
	p.mu.Unlock()
	p.wg.Add(2)
	// Both copies exit when either side closes (Close closes both).
	go func() {
		defer p.wg.Done()
		io.Copy(up, down)
		up.Close()
		down.Close()
	}()
	go func() {
		defer p.wg.Done()
		defer up.Close()
		defer down.Close()
		buf := make([]byte, 16<<10)
		var start time.Time
		sent := 0
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if p.held.Load() {
				<-p.gate
				if start.IsZero() {
					start = time.Now()
				}
			}
			if _, err := down.Write(buf[:n]); err != nil {
				return
			}
			if start.IsZero() {
				continue
			}
			sent += n
			if ahead := time.Duration(float64(sent)/float64(p.rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}()
}
