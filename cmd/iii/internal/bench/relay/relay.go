// Package relay is the baseline that engine benchmarks measure against: the
// least a WebSocket router must do for one call. Callers and workers speak
// the iii wire protocol to it; it decodes each frame, forwards an
// invokefunction to the one worker that registered the function, and the
// invocationresult back to the caller, re-encoding at each hop. It has no
// timeouts, triggers, events, cleanup or error handling beyond dropping
// what it cannot route: it is a yardstick, not a server. Like the engine it
// never drops a frame for a peer that falls behind: the sender waits (its
// reader pauses), so both sides of a comparison carry the same load.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Relay routes calls between connected sockets.
type Relay struct {
	mu      sync.Mutex
	fns     map[string]*peer
	pending map[string]func(protocol.InvocationResult) // invocation id -> reply
	wg      sync.WaitGroup
}

// New returns an empty relay.
func New() *Relay {
	return &Relay{fns: map[string]*peer{}, pending: map[string]func(protocol.InvocationResult){}}
}

type peer struct {
	ws  *websocket.Conn
	out chan []byte
	ctx context.Context // ends when the peer's socket closes
}

// queueFrames bounds each peer's outbound queue; a sender waits when it is
// full (the engine bounds its queues in bytes, 4 MiB, with the same effect
// for the benchmark's frames).
const queueFrames = 4096

// ServeHTTP accepts one worker socket and serves it until it closes.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ws, err := websocket.Accept(w, req, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ws.SetReadLimit(16 << 20)
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	p := &peer{ws: ws, out: make(chan []byte, queueFrames), ctx: ctx}
	r.wg.Add(1)
	// Exits when ctx is cancelled (the reader below returned).
	go func() {
		defer r.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-p.out:
				if ws.Write(ctx, websocket.MessageText, f) != nil {
					cancel()
					return
				}
			}
		}
	}()
	hello, _ := protocol.Encode(protocol.WorkerRegistered{WorkerID: uuid.NewString()})
	p.out <- hello
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			break
		}
		msg, err := protocol.Decode(data)
		if err != nil {
			continue
		}
		r.route(p, msg)
	}
	cancel()
	ws.CloseNow()
	r.mu.Lock()
	for id, o := range r.fns {
		if o == p {
			delete(r.fns, id)
		}
	}
	r.mu.Unlock()
}

func (r *Relay) route(from *peer, msg protocol.Message) {
	switch m := msg.(type) {
	case protocol.RegisterFunction:
		r.mu.Lock()
		r.fns[m.ID] = from
		r.mu.Unlock()
	case protocol.InvokeFunction:
		r.mu.Lock()
		to := r.fns[m.FunctionID]
		if to != nil && m.InvocationID != "" {
			r.pending[m.InvocationID] = func(res protocol.InvocationResult) {
				if f, err := protocol.Encode(res); err == nil {
					send(from, f)
				}
			}
		}
		r.mu.Unlock()
		if to == nil {
			return
		}
		if m.InvocationID == "" {
			m.InvocationID = uuid.NewString()
		}
		m.Action = nil
		if f, err := protocol.Encode(m); err == nil {
			send(to, f)
		}
	case protocol.InvocationResult:
		r.mu.Lock()
		reply := r.pending[m.InvocationID]
		delete(r.pending, m.InvocationID)
		r.mu.Unlock()
		if reply != nil {
			reply(m)
		}
	case protocol.Ping:
		send(from, []byte(`{"type":"pong"}`))
	}
}

// send queues f for p, waiting while p's queue is full; a frame for a
// peer that has closed is dropped.
func send(p *peer, f []byte) {
	select {
	case p.out <- f:
	case <-p.ctx.Done():
	}
}

// ErrNoWorker is returned by Invoke when no socket registered the function.
var ErrNoWorker = errors.New("relay: no worker serves the function")

// Invoke calls fn on the socket that registered it, from inside the
// process (the HTTP baseline), and waits for the result.
func (r *Relay) Invoke(ctx context.Context, fn string, data json.RawMessage) (protocol.InvocationResult, error) {
	id := uuid.NewString()
	ch := make(chan protocol.InvocationResult, 1)
	r.mu.Lock()
	to := r.fns[fn]
	if to != nil {
		r.pending[id] = func(res protocol.InvocationResult) { ch <- res }
	}
	r.mu.Unlock()
	if to == nil {
		return protocol.InvocationResult{}, ErrNoWorker
	}
	f, err := protocol.Encode(protocol.InvokeFunction{InvocationID: id, FunctionID: fn, Data: data})
	if err != nil {
		return protocol.InvocationResult{}, err
	}
	send(to, f)
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
		return protocol.InvocationResult{}, ctx.Err()
	}
}

// Serves reports whether some socket registered fn.
func (r *Relay) Serves(fn string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fns[fn] != nil
}

// Wait waits for the relay's writer goroutines after its server closed.
func (r *Relay) Wait() { r.wg.Wait() }
