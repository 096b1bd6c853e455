package engine

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/cork"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// workerMeta is what a worker reports through engine::workers::register.
type workerMeta struct {
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Runtime     string          `json:"runtime,omitempty"`
	Version     string          `json:"version,omitempty"`
	OS          string          `json:"os,omitempty"`
	PID         int             `json:"pid,omitempty"`
	Isolation   string          `json:"isolation,omitempty"`
	Telemetry   json.RawMessage `json:"telemetry,omitempty"`
	// Namespace and Features are sent by the 0.25+ SDKs (features.go).
	Namespace string    `json:"namespace,omitempty"`
	Features  tokenList `json:"features,omitempty"`
}

// tokenList reads a list of feature tokens leniently, as the SDKs read the
// engine's: anything but an array of strings reads as no tokens, and
// non-string items are skipped.
type tokenList []string

func (l *tokenList) UnmarshalJSON(b []byte) error {
	var items []json.RawMessage
	*l = nil
	if json.Unmarshal(b, &items) != nil {
		return nil
	}
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil && s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// conn is one worker socket. Its reader runs in the HTTP handler goroutine,
// its writer in a goroutine the handler waits for; only the writer writes.
type conn struct {
	e           *Engine
	id          string
	token       string
	ws          *websocket.Conn
	cork        *cork.Conn // the socket under ws when Serve accepted it; nil otherwise
	addr        string
	connectedAt time.Time
	log         *slog.Logger
	out         *outq

	python      bool          // the socket is the Python iii-sdk's (by User-Agent)
	session     *session      // RBAC/middleware of its listener; nil: full rights
	inflight    atomic.Int64  // calls routed to this worker and not yet answered
	reads       atomic.Uint64 // frames read so far (keepalive compares it between ticks)
	pinging     atomic.Bool   // a keepalive ping is out
	paused      atomic.Bool   // the reader waits for another worker's full queue
	writeSince  atomic.Int64  // unix nanos of the writer's last progress while it has frames to write; 0 when idle
	slow        atomic.Bool   // closed as a slow consumer
	pings       sync.WaitGroup
	draining    atomic.Bool
	decl        atomic.Pointer[declaration] // nil until engine::workers::register arrived (features.go)
	retiring    atomic.Bool                 // being replaced by a reload (SetRetiring)
	nameRefused atomic.Bool                 // refused WORKER_NAMESPACE_CONFLICT; closing, registers nothing more

	// declWait re-evaluates the observers of its functions when the
	// worker's declareGrace is over (observe.go); guarded by observers.mu.
	declWait *time.Timer

	ctx    context.Context // cancelled when the connection closes
	cancel context.CancelFunc

	mu          sync.Mutex
	pending     map[string]*pending // invocation id (as sent to this worker) -> call
	meta        workerMeta
	gone        bool // cleanup has started; no new pending entries
	closeOnce   sync.Once
	closeReq    chan struct{} // closed by close(); the writer then closes the socket
	closeCode   websocket.StatusCode
	closeReason string
	closeFlush  bool

	// Guarded by Engine.mu: what this connection owns, and whether its
	// cleanup has removed it (then nothing new may be registered for it).
	fnIDs      map[string]struct{}
	triggerIDs map[string]struct{}
	ttypeIDs   map[string]struct{} // ttKey of each trigger type it provides
	// held: trigger types it registered before declaring its namespace
	// that wait for the declaration (registerRemoteTriggerType).
	held    []*triggerType
	removed bool

	cleaned chan struct{} // closed when cleanup has finished
}

func (e *Engine) authorized(r *http.Request) bool {
	if e.opts.AuthToken == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(e.opts.AuthToken)) == 1
}

func (e *Engine) accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, bool) {
	if !e.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="iii"`)
		http.Error(w, "unauthorized: this engine requires Authorization: Bearer <token> (III_TOKEN)", http.StatusUnauthorized)
		return nil, false
	}
	if e.isClosing() {
		http.Error(w, "engine shutting down", http.StatusServiceUnavailable)
		return nil, false
	}
	// Go's TCP sockets have Nagle off (TCP_NODELAY); the Rust SDK sets it
	// on its end too when told so.
	w.Header().Set("X-Iii-Capabilities", "tcp-nodelay")
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		e.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return nil, false
	}
	ws.SetReadLimit(-1) // readMessage enforces MaxFrameBytes per message
	return ws, true
}

// serveOTel accepts a telemetry-only socket: binary OTLP/MTRC/LOGS frames,
// never a reply, never a worker.
func (e *Engine) serveOTel(l *listener, w http.ResponseWriter, r *http.Request) {
	ws, ok := e.accept(w, r)
	if !ok {
		return
	}
	e.connsWG.Add(1)
	defer e.connsWG.Done()
	defer ws.CloseNow()
	if _, ok := l.admit(ws, r); !ok {
		return
	}
	ctx := e.ctx
	mr := newMsgReader(ws, e.opts.MaxFrameBytes)
	for {
		typ, data, err := mr.read(ctx)
		var big *tooBig
		if errors.As(err, &big) {
			e.drop(DropTooLarge, 1, "why", "telemetry message over the read limit", "bytes", big.size)
			continue
		}
		if err != nil {
			if errors.Is(err, errDrainTooLong) {
				ws.Close(websocket.StatusMessageTooBig, fmt.Sprintf("message over %d bytes (engine.max_frame_bytes)", e.opts.MaxFrameBytes))
			}
			if ctx.Err() != nil {
				ws.Close(websocket.StatusGoingAway, "engine shutting down")
			}
			return
		}
		if typ != websocket.MessageBinary {
			continue
		}
		if kind, ok := protocol.TelemetryKind(data); ok {
			e.telemetry("", kind, data[4:])
		} else {
			e.drop(DropTelemetry, 1, "why", "no telemetry prefix")
		}
	}
}

func (e *Engine) telemetry(workerID, kind string, payload []byte) {
	sink := e.sink.Load()
	if sink == nil {
		e.drop(DropTelemetry, 1, "why", "no telemetry sink", "kind", kind)
		return
	}
	(*sink).Telemetry(workerID, kind, payload)
}

// SetTelemetrySink sets (or, with nil, clears) where worker telemetry
// frames go; the observability module installs itself here.
func (e *Engine) SetTelemetrySink(s TelemetrySink) {
	if s == nil {
		e.sink.Store(nil)
		return
	}
	e.sink.Store(&s)
}

// serveWorker runs one worker connection from upgrade to cleanup.
func (e *Engine) serveWorker(l *listener, w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	ws, ok := e.accept(w, r)
	if !ok {
		return
	}
	// The auth call is bounded by the listener's call timeout and ends
	// when the engine shuts down.
	sess, ok := l.admit(ws, r)
	if !ok {
		ws.CloseNow()
		return
	}
	c := &conn{
		session:     sess,
		e:           e,
		id:          uuid.NewString(),
		token:       uuid.NewString(),
		ws:          ws,
		addr:        r.RemoteAddr,
		connectedAt: time.Now(),
		out:         newOutq(e.opts.OutboundQueueBytes),
		pending:     make(map[string]*pending),
		fnIDs:       make(map[string]struct{}),
		triggerIDs:  make(map[string]struct{}),
		ttypeIDs:    make(map[string]struct{}),
		cleaned:     make(chan struct{}),
		closeReq:    make(chan struct{}),
	}
	// The Python iii-sdk speaks through the websockets library, whose
	// User-Agent says so; see shutdownStatus.
	c.cork = cork.FromContext(r.Context())
	c.python = strings.Contains(r.Header.Get("User-Agent"), "websockets/")
	c.log = e.log.With("worker_id", c.id)
	// Not derived from the engine's context: Shutdown closes each socket
	// itself, after failing its pending calls, so results still get out.
	c.ctx, c.cancel = context.WithCancel(context.Background())
	// Reads and writes take no context (ioCtx): a cancellable one costs
	// the WebSocket library a context.AfterFunc per frame. Cancelling
	// c.ctx drops the socket instead, which ends a blocked read or write.
	context.AfterFunc(c.ctx, func() { ws.CloseNow() })

	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		ws.Close(shutdownStatus(c), "engine shutting down")
		return
	}
	e.conns[c.id] = c
	e.connsWG.Add(1)
	e.mu.Unlock()
	defer e.connsWG.Done()

	// The greeting is the first frame the writer sends.
	c.send(mustEncode(e.greeting(c)))

	writerDone := make(chan struct{})
	// Exits when c.ctx is cancelled or a write fails.
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()

	c.log.Debug("worker connected", "remote", c.addr)
	e.bus.Publish(event.WorkerConnected{WorkerID: c.id, Addr: c.addr, At: c.connectedAt})
	e.fireWorkersAvailable("worker_connected", c.id)

	reason := c.readLoop()
	c.cancel()
	<-writerDone
	c.pings.Wait()
	c.cleanup(reason)
	ws.CloseNow()
}

// readLoop decodes and handles frames until the socket fails or closes. It
// returns why.
func (c *conn) readLoop() string {
	mr := newMsgReader(c.ws, c.e.opts.MaxFrameBytes)
	var (
		// Decodes the call messages without allocating them; each frame
		// mr.read returns is a new buffer nothing writes to again.
		dec = protocol.Decoder{Keeps: true}
		big *tooBig // declared once: errors.As makes it escape
	)
	for {
		typ, data, err := mr.read(ioCtx)
		if err != nil && errors.As(err, &big) {
			c.reads.Add(1)
			c.refuseTooBig(big)
			continue
		}
		if err != nil {
			if c.ctx.Err() != nil && websocket.CloseStatus(err) == -1 {
				return "closed by engine"
			}
			if errors.Is(err, errDrainTooLong) {
				// Bounded by the library's close timeout.
				c.ws.Close(websocket.StatusMessageTooBig, fmt.Sprintf("message over %d times engine.max_frame_bytes (%d bytes)", drainFactor, c.e.opts.MaxFrameBytes))
				return fmt.Sprintf("message far over the read limit of %d bytes (1009)", c.e.opts.MaxFrameBytes)
			}
			return closeReason(err)
		}
		c.reads.Add(1) // a counter, not a clock read per frame
		if typ == websocket.MessageBinary {
			if kind, ok := protocol.TelemetryKind(data); ok {
				c.e.telemetry(c.id, kind, data[4:])
				continue
			}
		}
		msg, err := dec.Decode(data)
		if err != nil {
			if !errors.Is(err, protocol.ErrProtocolEmpty) {
				c.e.drop(DropUndecodable, 1, "worker_id", c.id, "err", err, "bytes", len(data))
			}
			continue
		}
		c.handle(msg, dec.Vouched())
	}
}

// ioCtx is the context of a worker socket's reads and writes: never
// cancelled, so the WebSocket library arms nothing per frame; a connection
// that must stop drops its socket (see serveWorker).
var ioCtx = context.Background()

func closeReason(err error) string {
	if s := websocket.CloseStatus(err); s != -1 {
		if s == websocket.StatusMessageTooBig {
			return "frame over the read limit (1009)"
		}
		return "closed by worker (" + s.String() + ")"
	}
	if errors.Is(err, context.Canceled) {
		return "closed by engine"
	}
	return err.Error()
}

// writeLoop is the only writer of the socket. On a close request it writes
// what is still queued (unless the worker is a slow consumer), then performs
// the close handshake.
func (c *conn) writeLoop() {
	var (
		tick      <-chan time.Time
		readsSeen uint64 // c.reads at the previous tick
	)
	if iv := c.e.opts.PingInterval; iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick:
			// A worker that sent anything since the last tick is alive.
			if n := c.reads.Load(); n != readsSeen {
				readsSeen = n
				continue
			}
			c.keepalive()
		case <-c.closeReq:
			c.mu.Lock()
			code, reason, flush := c.closeCode, c.closeReason, c.closeFlush
			c.mu.Unlock()
			if flush {
				c.writeBatch(c.out.take())
			}
			c.dropQueued(c.out.close())
			c.ws.Close(code, reason) // bounded by the library's close timeout
			c.cancel()
			return
		case <-c.out.ready:
			if !c.writeBatch(c.out.take()) {
				c.cancel()
				return
			}
		}
	}
}

// keepalive pings a worker that has sent nothing for a ping interval (the
// writer checks that at each tick), at most one ping at a time; no pong
// within the ping timeout drops the socket. The ping runs in a goroutine
// the handler waits for (the reader must keep reading to see the pong).
func (c *conn) keepalive() {
	// A paused reader is not reading on purpose (backpressure): the pong
	// would not be seen, and the worker is not the one at fault.
	if c.paused.Load() || !c.pinging.CompareAndSwap(false, true) {
		return
	}
	c.pings.Add(1)
	// Exits when the pong arrives, the ping times out or the socket closes.
	go func() {
		defer c.pings.Done()
		defer c.pinging.Store(false)
		ctx, cancel := context.WithTimeout(c.ctx, c.e.opts.PingTimeout)
		defer cancel()
		if err := c.ws.Ping(ctx); err != nil && c.ctx.Err() == nil {
			c.log.Warn("worker did not answer a ping; dropping it", "timeout", c.e.opts.PingTimeout, "err", err)
			c.cancel()
		}
	}()
}

// writeBatch writes a batch of frames, skipping calls whose caller has
// given up; false means the socket failed. Writes have no deadline of
// their own: stallLoop closes a worker whose writer makes no progress for
// SlowConsumerTimeout, which unblocks the write.
func (c *conn) writeBatch(batch []outFrame) bool {
	if len(batch) == 0 {
		return true
	}
	c.writeSince.Store(time.Now().UnixNano())
	defer c.writeSince.Store(0)
	if c.cork != nil && len(batch) > 1 {
		// The frames of the batch leave in one write (or a few, 64 KiB
		// each), not one syscall per frame.
		c.cork.Cork()
		ok := c.writeFrames(batch)
		if err := c.cork.Uncork(); err != nil && ok {
			if c.ctx.Err() == nil {
				c.log.Warn("write to worker failed; closing", "err", err)
			}
			return false
		}
		return ok
	}
	return c.writeFrames(batch)
}

// writeFrames writes the frames of a batch one message each.
func (c *conn) writeFrames(batch []outFrame) bool {
	unreported, skipped := 0, 0
	for i, f := range batch {
		if f.call != nil && f.call.abandoned.Load() {
			skipped++
			unreported += len(f.b)
			batch[i].release()
			continue
		}
		if err := c.writeMessage(f.b); err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("write to worker failed; closing", "err", err)
			}
			c.out.wrote(unreported)
			c.dropQueued(batch[i:])
			c.e.drop(DropCallerGone, skipped, "worker_id", c.id)
			return false
		}
		unreported += len(f.b)
		batch[i].release() // the library has copied it out
		if unreported >= wroteChunk {
			// Progress, for the stall check, and room for producers.
			c.writeSince.Store(time.Now().UnixNano())
			c.out.wrote(unreported)
			unreported = 0
		}
	}
	c.out.wrote(unreported)
	c.e.drop(DropCallerGone, skipped, "worker_id", c.id, "why", "caller gave up before the call was written")
	return true
}

// wroteChunk is how many written bytes the writer accumulates before it
// reports them to the queue (waking producers waiting for room).
const wroteChunk = 64 << 10

// dropQueued counts frames that were queued for this worker and will never
// be written (its socket is closing). Their calls are still pending and end
// with invocation_stopped in cleanup; skipped calls were already given up.
func (c *conn) dropQueued(frames []outFrame) {
	n := 0
	for _, f := range frames {
		if f.call == nil || !f.call.abandoned.Load() {
			n++
		}
	}
	c.e.drop(DropConnClosed, n, "worker_id", c.id)
}

// send queues a control frame or an answer for this worker; these are
// never held back by backpressure. A frame for a closed connection is
// counted as dropped.
func (c *conn) send(frame []byte) error {
	err := c.out.push(outFrame{b: frame})
	if err != nil {
		c.e.drop(DropCallerGone, 1, "worker_id", c.id, "why", "connection closed")
	}
	return err
}

// sendResult queues an invocationresult for this worker, encoded into a
// pooled buffer (see framePool); like send, it never waits. A result over
// what the worker reads becomes a payload_too_large error. vouched may
// vouch for m.Result (the decoder of the worker that sent it scanned it).
func (c *conn) sendResult(m *protocol.InvocationResult, vouched protocol.Compact) {
	buf := frameBuf()
	b, err := protocol.AppendResultVouched((*buf)[:0], m, vouched)
	if err == nil && !c.fits(len(b)) {
		c.e.drop(DropTooLarge, 1, "worker_id", c.id, "function_id", m.FunctionID, "bytes", len(b))
		res := *m
		res.Result, res.Error = nil, &protocol.ErrorBody{Code: CodePayloadTooLarge, Message: fmt.Sprintf(
			"the result of %s is %d bytes, over the %d bytes worker %s reads", m.FunctionID, len(b), c.sendLimit(), c.id)}
		b, err = protocol.AppendResult((*buf)[:0], &res)
	}
	if err != nil {
		// Results from workers were decoded from valid JSON; an in-process
		// handler's invalid result is a programming error.
		panic(err)
	}
	*buf = b
	if c.out.push(outFrame{b: b, buf: buf}) != nil {
		c.e.drop(DropCallerGone, 1, "worker_id", c.id, "why", "connection closed")
	}
}

// slowConsumer closes a worker whose writer has made no progress for
// timeout: the socket is dropped at once (its send buffer is full, so no
// close frame could get through), which unblocks the writer; cleanup then
// ends every call pending on it with invocation_stopped.
//
// Only a worker this closes is counted in Stats.SlowConsumers: one already
// gone is left alone, and one already closing for another reason (its last
// flush stuck) is dropped at once but keeps its own close reason.
func (c *conn) slowConsumer(timeout time.Duration) {
	c.mu.Lock()
	gone := c.gone
	c.mu.Unlock()
	if gone {
		return
	}
	select {
	case <-c.closeReq:
		c.ws.CloseNow()
		return
	default:
	}
	if !c.slow.CompareAndSwap(false, true) {
		return
	}
	c.e.slowConsumers.Add(1)
	frames, bytes := c.out.len()
	reason := fmt.Sprintf("slow consumer: no read progress for %s", timeout)
	c.mu.Lock()
	c.closeCode, c.closeReason = websocket.StatusPolicyViolation, reason
	c.mu.Unlock()
	c.log.Warn("worker made no read progress; closing it as a slow consumer",
		"timeout", timeout, "queued_frames", frames, "queued_bytes", bytes)
	c.cancel()
	c.ws.CloseNow() // unblocks a write stuck in the socket (corked writes are not the library's)
}

// stallLoop closes workers whose writer has been stuck for the slow
// consumer timeout. It exits when the engine shuts down.
func (e *Engine) stallLoop() {
	timeout := e.opts.SlowConsumerTimeout
	t := time.NewTicker(min(max(timeout/8, time.Millisecond), time.Second))
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			conns = e.snapshotConns(conns[:0])
			for _, c := range conns {
				if s := c.writeSince.Load(); s != 0 && now.UnixNano()-s >= int64(timeout) {
					c.slowConsumer(timeout)
				}
			}
			clear(conns)
		}
	}
}

// close asks the writer to close the socket with code and reason after
// flushing what is queued; it does not wait.
func (c *conn) close(code websocket.StatusCode, reason string) {
	c.closeWith(code, reason, true)
}

func (c *conn) closeWith(code websocket.StatusCode, reason string, flush bool) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if !c.slow.Load() {
			c.closeCode, c.closeReason, c.closeFlush = code, reason, flush
		}
		c.mu.Unlock()
		c.log.Debug("closing worker", "code", code, "reason", reason)
		close(c.closeReq)
	})
}

// cleanup runs exactly once per connection, after its reader has stopped.
func (c *conn) cleanup(reason string) {
	msg := "Invocation stopped"
	c.mu.Lock()
	c.gone = true
	if c.slow.Load() {
		reason = c.closeReason
		msg = fmt.Sprintf("Invocation stopped: worker %s was closed (%s)", c.id, c.closeReason)
	}
	c.mu.Unlock()
	c.dropQueued(c.out.close())
	// Its functions leave the registry before its calls are ended, as in
	// iii: a caller told invocation_stopped that calls again gets
	// function_not_found, not a second stop. Calls routed here meanwhile
	// see gone and stop at once.
	c.e.removeConn(c)
	c.failPending(CodeInvocationStopped, msg)
	c.e.releaseCallsOf(c)
	c.e.breakOwnerGone(c.id)
	c.log.Debug("worker disconnected", "reason", reason)
	c.e.bus.Publish(event.WorkerDisconnected{WorkerID: c.id, Reason: reason, At: time.Now()})
	c.e.fireWorkersAvailable("worker_disconnected", c.id)
	close(c.cleaned)
}

func (c *conn) name() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.meta.Name != "" {
		return c.meta.Name
	}
	return c.id
}

// handle applies one decoded message. It runs on the read loop, in order.
func (c *conn) handle(msg protocol.Message, vouched protocol.Compact) {
	e := c.e
	switch m := msg.(type) {
	case *protocol.InvokeFunction: // the Decoder's own: copied here
		e.invokeFromWorker(c, *m, vouched)
	case *protocol.InvocationResult:
		e.resultFromWorker(c, *m, vouched)
	case protocol.InvokeFunction: // spelled in a way only encoding/json reads
		e.invokeFromWorker(c, m, protocol.Compact{})
	case protocol.InvocationResult:
		e.resultFromWorker(c, m, protocol.Compact{})
	case protocol.RegisterFunction:
		if c.session != nil && !e.admitFunction(c, &m) {
			return
		}
		e.registerRemoteFunction(c, m)
	case protocol.UnregisterFunction:
		e.unregisterRemoteFunction(c, c.session.registeredID(m.ID))
	case protocol.RegisterTriggerType:
		if c.session != nil && !e.admitTriggerType(c, &m) {
			return
		}
		e.registerRemoteTriggerType(c, m)
	case protocol.UnregisterTriggerType:
		e.unregisterRemoteTriggerType(c, m)
	case protocol.RegisterTrigger:
		if !c.namespacesOK(m) {
			return
		}
		t := triggerFrom(m)
		if c.session != nil && !e.admitTrigger(c, &t, m.Namespace) {
			return
		}
		// namespace is the target function's (the SDKs fill the worker's;
		// absent is the default one); trigger_namespace where its type's
		// provider is (absent: the worker's namespace, then the default).
		if e.legacyShim(c, t, m.Namespace) { // legacy.go; before t points at its function key
			return
		}
		t.inNamespace(m.Namespace)
		e.registerTrigger(c, t)
	case protocol.UnregisterTrigger:
		if !e.unregisterLegacy(c, m.ID) {
			e.unregisterTriggerFrom(c, m.ID)
		}
	case protocol.TriggerRegistrationResult:
		e.triggerResultFromProvider(c, m)
	case protocol.RegisterService:
		e.registerService(c, m)
	case protocol.Ping:
		c.send(mustEncode(protocol.Pong{}))
	case protocol.Reattach:
		e.reattach(c, m)
	case protocol.Observe:
		e.handleObserve(c, m)
	case protocol.Unobserve:
		e.handleUnobserve(c, m)
	case protocol.ObserverAck:
		e.handleObserverAck(c, m)
	case protocol.InvocationsObserved:
		e.handleInvocationsObserved(c, m)
	case protocol.LocalInvocationStats:
		e.handleLocalStats(c, m)
	case protocol.Pong, protocol.WorkerRegistered:
		// Engine-to-worker messages; nothing to do if a worker echoes them.
	}
}

// reattach evicts the worker's previous connection when the token matches,
// and waits (bounded) for its cleanup so replayed registrations land on a
// clean slate.
func (e *Engine) reattach(c *conn, m protocol.Reattach) {
	if m.PreviousWorkerID == c.id || m.ReattachToken == "" {
		return
	}
	e.mu.RLock()
	old := e.conns[m.PreviousWorkerID]
	e.mu.RUnlock()
	if old == nil || subtle.ConstantTimeCompare([]byte(old.token), []byte(m.ReattachToken)) != 1 {
		// Its old connection is gone already: the observers it left
		// parked check the token.
		e.obsReattached(c, m.PreviousWorkerID, m.ReattachToken, false)
		return
	}
	e.obsReattached(c, old.id, m.ReattachToken, true)
	c.log.Info("worker reattached; evicting its previous connection", "previous_worker_id", old.id)
	// The worker has given up on the old socket, which is likely dead: drop
	// it at once rather than wait for a close handshake it may never answer.
	old.cancel()
	select {
	case <-old.cleaned:
	case <-time.After(5 * time.Second):
		c.log.Warn("previous connection did not clean up within 5s", "previous_worker_id", old.id)
	case <-c.ctx.Done():
	}
}

// rateLimiter allows a few log lines per window and counts the rest.
type rateLimiter struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

const (
	rateWindow = 10 * time.Second
	rateBurst  = 5
)

// allow reports whether to log now, and how many lines were suppressed
// since the last one that was allowed.
func (r *rateLimiter) allow(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.start) > rateWindow {
		r.start, r.n = now, 0
	}
	if r.n >= rateBurst {
		r.suppressed++
		return 0, false
	}
	r.n++
	s := r.suppressed
	r.suppressed = 0
	return s, true
}

func mustEncode(m protocol.Message) []byte {
	b, err := protocol.Encode(m)
	if err != nil {
		// Only engine-built messages come here; their raw fields were
		// decoded from valid JSON, so this is a programming error.
		panic(err)
	}
	return b
}
