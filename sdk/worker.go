package sdk

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/cork"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Version is the SDK version reported to the engine.
const Version = "0.1.0"

const (
	// registerWorkerFunction receives the worker metadata after every
	// (re)connect.
	registerWorkerFunction = "engine::workers::register"
	// writeTimeout bounds each frame write.
	writeTimeout = 10 * time.Second
	// providerQueueLimit bounds trigger bindings waiting for a provider.
	providerQueueLimit = 256
	// closeGrace is the least time Close gives the final flush.
	closeGrace = time.Second
)

// Worker is a connection to an iii engine that serves functions and
// trigger types and calls functions of other workers. It reconnects on its
// own until Close. All methods are safe for concurrent use.
type Worker struct {
	url  string
	opts options
	log  *slog.Logger
	meta []byte // engine::workers::register payload

	// Lifetimes. ctx ends when Close is done (it parents each connection);
	// reconnCtx ends when Close begins (no more dials); hctx parents every
	// handler and provider callback and ends once handlers drained or
	// Close's deadline passed.
	ctx           context.Context
	cancel        context.CancelFunc
	reconnCtx     context.Context
	stopReconnect context.CancelFunc
	hctx          context.Context
	hcancel       context.CancelFunc

	drain      chan struct{} // closed by Close: the writer flushes, then closes with 1000
	registered chan struct{} // closed at the first workerregistered
	regOnce    sync.Once
	runDone    chan struct{} // closed when the connection loop returned

	out   *outbox
	provq chan providerMsg // provider callbacks, in arrival order
	tr    tracing

	spansSent      atomic.Uint64 // spans of telemetry frames written
	resultsDropped atomic.Uint64 // answers that could not be queued (see reply)

	wg       sync.WaitGroup // connection loop, provider loop
	handlers sync.WaitGroup // handler goroutines

	closeOnce sync.Once
	closeErr  error

	// mu guards everything below. Lock order: mu, then out.mu. Nothing
	// blocks under mu (queueing a frame is in-memory).
	mu           sync.Mutex
	closing      bool // Close began: no new registrations or incoming calls
	closed       bool // waiting callers were failed: no new Trigger calls
	workerID     string
	token        string
	seq          uint64 // registration order, for replay
	functions    map[string]*function
	triggerTypes map[string]*triggerType
	triggers     map[string]*registration
	services     map[string]*registration
	bindings     map[string]TriggerBinding // delivered to our providers, by trigger ID
	pending      map[string]chan result    // invocation ID -> waiting Trigger call (cap 1)
}

// registration is a replayable register* frame.
type registration struct {
	seq         uint64
	frame       []byte
	triggerType string // for triggers: needed to unregister
}

// Connect dials the engine at url (for example DefaultURL), waits for the
// engine to assign a worker ID, and returns the connected Worker. The first
// dial is not retried: an unreachable engine fails Connect. After that the
// Worker reconnects in the background on its own, replaying every
// registration, until Close. ctx bounds Connect only.
func Connect(ctx context.Context, url string, opts ...Option) (*Worker, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.check(url); err != nil {
		return nil, err
	}
	w := newWorker(url, o)
	conn, err := w.dial(ctx)
	if err != nil {
		w.cancel()
		sctx, cancel := context.WithTimeout(context.Background(), closeGrace)
		defer cancel()
		_ = w.tr.shutdown(sctx) // no spans yet: only stops its goroutine
		return nil, fmt.Errorf("sdk: connect: %w", err)
	}
	w.wg.Add(2)
	go func() { // exits when Close stops reconnecting and the connection ends
		defer w.wg.Done()
		w.run(conn)
	}()
	go func() { // exits when the handler context ends
		defer w.wg.Done()
		w.provide()
	}()
	select {
	case <-w.registered:
		w.log.DebugContext(ctx, "sdk: worker registered", "worker_id", w.ID())
		return w, nil
	case <-ctx.Done():
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = w.Close(cctx)
		return nil, fmt.Errorf("sdk: connect: waiting for workerregistered: %w", ctx.Err())
	}
}

func newWorker(url string, o options) *Worker {
	w := &Worker{
		url:          url,
		opts:         o,
		log:          o.logger.With("component", "sdk"),
		drain:        make(chan struct{}),
		registered:   make(chan struct{}),
		runDone:      make(chan struct{}),
		out:          newOutbox(o.queueLimit),
		provq:        make(chan providerMsg, providerQueueLimit),
		functions:    make(map[string]*function),
		triggerTypes: make(map[string]*triggerType),
		triggers:     make(map[string]*registration),
		services:     make(map[string]*registration),
		bindings:     make(map[string]TriggerBinding),
		pending:      make(map[string]chan result),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.reconnCtx, w.stopReconnect = context.WithCancel(w.ctx)
	w.hctx, w.hcancel = context.WithCancel(w.ctx)
	w.meta = workerMetadata(o)
	w.tr = newTracing(o, w.out)
	return w
}

// DroppedResults is how many answers to incoming calls could not be
// queued: the worker closed (or its Close deadline passed) while the
// outbound queue was full. A full queue alone never drops an answer; the
// handler waits for room.
func (w *Worker) DroppedResults() uint64 { return w.resultsDropped.Load() }

// ID is the worker ID the engine assigned on the latest connection.
func (w *Worker) ID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.workerID
}

// Close shuts the worker down gracefully: it stops reconnecting, refuses
// new incoming calls (they fail with invocation_stopped), and waits for
// running handlers until ctx ends; then it cancels the handlers' context
// and waits for them to return, fails Trigger calls still waiting with
// ErrClosed, sends the finished spans the default tracer provider still
// holds, flushes what is queued and closes the socket with status 1000
// (allowing at least one second for that even if ctx has ended). Handlers
// must honour their context, or Close waits for them. Close must
// not be called from a handler. It returns ctx.Err() if ctx ended first,
// and the same result on every call.
func (w *Worker) Close(ctx context.Context) error {
	w.closeOnce.Do(func() { w.closeErr = w.shutdown(ctx) })
	return w.closeErr
}

func (w *Worker) shutdown(ctx context.Context) error {
	var err error
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	w.stopReconnect()

	drained := make(chan struct{})
	go func() { // exits once every handler returned; waited for below
		w.handlers.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	w.hcancel()
	<-drained

	w.mu.Lock()
	w.closed = true
	pending := w.pending
	w.pending = make(map[string]chan result)
	w.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: ErrClosed}
	}
	// The handlers' spans are finished: send them before the socket
	// closes, bounded by ctx but, like the close handshake, given at
	// least closeGrace.
	fctx, fcancel := ctx, context.CancelFunc(func() {})
	if ctx.Err() != nil {
		fctx, fcancel = context.WithTimeout(context.WithoutCancel(ctx), closeGrace)
	}
	if terr := w.tr.shutdown(fctx); terr != nil {
		w.log.DebugContext(ctx, "sdk: telemetry flush", "error", terr)
	}
	fcancel()
	w.out.close()

	// Flush and close handshake: bounded by ctx, but given at least
	// closeGrace so that an expired ctx still closes the socket cleanly.
	close(w.drain)
	select {
	case <-w.runDone:
	case <-ctx.Done():
		err = ctx.Err()
		grace := time.NewTimer(closeGrace)
		select {
		case <-w.runDone:
		case <-grace.C:
		}
		grace.Stop()
	}
	w.cancel()
	w.wg.Wait()
	return err
}

// link is one connection to the engine: the WebSocket and, under it, the
// socket the writer corks to send a batch of frames with one syscall (nil
// if the transport did not dial one of ours).
type link struct {
	ws   *websocket.Conn
	cork *cork.Conn
}

// dial opens one connection, bounded by ctx and the handshake timeout.
func (w *Worker) dial(ctx context.Context) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.handshakeTimeout)
	defer cancel()
	var (
		mu sync.Mutex
		cc *cork.Conn
	)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		cc = cork.NewConn(c)
		return cc, nil
	}
	conn, _, err := websocket.Dial(ctx, w.url, &websocket.DialOptions{HTTPHeader: w.opts.header.Clone(),
		HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(w.opts.readLimit)
	mu.Lock()
	defer mu.Unlock()
	return &link{ws: conn, cork: cc}, nil
}

// run serves conn, then keeps reconnecting with backoff until Close.
func (w *Worker) run(conn *link) {
	defer close(w.runDone)
	b := backoff{initial: w.opts.backoffInitial, max: w.opts.backoffMax}
	for {
		w.serve(conn)
		conn = nil
		for conn == nil {
			if w.reconnCtx.Err() != nil {
				return
			}
			d := b.next()
			w.log.InfoContext(w.ctx, "sdk: reconnecting", "worker_id", w.ID(), "in", d, "attempt", b.attempt)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-w.reconnCtx.Done():
				t.Stop()
				return
			}
			c, err := w.dial(w.reconnCtx)
			if err != nil {
				if w.reconnCtx.Err() == nil {
					w.log.WarnContext(w.ctx, "sdk: reconnect failed", "error", err)
				}
				continue
			}
			conn = c
		}
		b.reset()
	}
}

// serve runs one connection until it fails or Close drains it.
func (w *Worker) serve(l *link) {
	conn := l.ws
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	// The socket's reads and writes get a context that never ends, so the
	// WebSocket library arms nothing per frame; ending ctx closes the
	// socket instead, which ends them.
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseNow() })
	defer stop()
	w.startSession()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // exits on a write error, after the final flush, or when ctx ends
		defer wg.Done()
		w.write(ctx, cancel, l)
	}()
	go func() { // exits on a failed ping or when ctx ends
		defer wg.Done()
		w.ping(ctx, cancel, conn)
	}()
	err := w.read(ctx, conn)
	cancel()
	_ = conn.CloseNow()
	wg.Wait()
	w.out.disconnect()

	switch {
	case w.reconnCtx.Err() != nil:
		w.log.DebugContext(w.ctx, "sdk: connection closed", "worker_id", w.ID())
	default:
		w.log.WarnContext(w.ctx, "sdk: connection lost", "worker_id", w.ID(), "error", err)
	}
}

// startSession queues what a new connection starts with: reattach (if the
// worker had an ID), trigger types, functions, triggers, services, the
// calls still waiting, and finally the worker metadata.
func (w *Worker) startSession() {
	w.mu.Lock()
	defer w.mu.Unlock()
	var head []entry
	if w.workerID != "" {
		f, err := protocol.Encode(protocol.Reattach{PreviousWorkerID: w.workerID, ReattachToken: w.token})
		if err == nil {
			head = append(head, entry{frame: f, kind: kindRegistration})
		}
	}
	tts := make([]*registration, 0, len(w.triggerTypes))
	for _, t := range w.triggerTypes {
		tts = append(tts, &t.registration)
	}
	fns := make([]*registration, 0, len(w.functions))
	for _, f := range w.functions {
		fns = append(fns, &f.registration)
	}
	for _, group := range [][]*registration{tts, fns, mapValues(w.triggers), mapValues(w.services)} {
		slices.SortFunc(group, func(a, b *registration) int { return cmp.Compare(a.seq, b.seq) })
		for _, r := range group {
			head = append(head, entry{frame: r.frame, kind: kindRegistration})
		}
	}
	var tail []entry
	if f, err := protocol.Encode(protocol.InvokeFunction{
		FunctionID: registerWorkerFunction,
		Data:       w.meta,
		Action:     &protocol.Action{Type: protocol.ActionVoid},
	}); err == nil {
		tail = append(tail, entry{frame: f, kind: kindRegistration})
	}
	w.out.connect(head, tail, func(e entry) bool {
		if e.invocationID == "" {
			return true
		}
		_, ok := w.pending[e.invocationID]
		return ok
	})
}

func mapValues(m map[string]*registration) []*registration {
	out := make([]*registration, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	return out
}

// busyWake: a writer woken again less than this after its previous wake
// serves a busy connection, and yields once before taking its batch.
const busyWake = time.Millisecond

// write is the connection's only writer.
func (w *Worker) write(ctx context.Context, fail context.CancelFunc, l *link) {
	conn := l.ws
	wctx := context.WithoutCancel(ctx)
	// A write that does not end within writeTimeout closes the socket.
	stall := time.AfterFunc(time.Hour, func() { _ = conn.CloseNow() })
	stall.Stop()
	defer stall.Stop()
	var lastWake time.Time
	for {
		final := false
		select {
		case <-w.out.ready:
		case <-w.drain:
			final = true
		case <-ctx.Done():
			return
		}
		// On a busy connection, let the goroutines made runnable with this
		// frame's producer (the other callers woken by a burst of replies,
		// the handlers of a burst of invocations) queue their frames first:
		// the burst then leaves in one write instead of one per frame. An
		// idle connection's frame goes at once (a yield can wait behind
		// CPU-bound goroutines).
		now := time.Now()
		if now.Sub(lastWake) < busyWake {
			runtime.Gosched()
		}
		lastWake = now
		batch := w.out.take()
		spans, unsent, err := writeBatch(wctx, l, stall, batch)
		if spans > 0 {
			w.spansSent.Add(uint64(spans))
		}
		if err != nil {
			w.out.requeue(batch[unsent:])
			if ctx.Err() == nil {
				w.log.WarnContext(ctx, "sdk: write failed", "worker_id", w.ID(), "error", err)
			}
			fail()
			return
		}
		if final {
			if err := conn.Close(websocket.StatusNormalClosure, "worker closed"); err != nil {
				w.log.DebugContext(ctx, "sdk: close handshake", "error", err)
			}
			return
		}
	}
}

// writeBatch writes batch, corked when it holds several frames so that
// they leave with one syscall (each frame's flush lands in the socket's
// buffer until Uncork). stall closes the socket if a write does not end in
// time. spans counts the telemetry spans of the frames that reached the
// socket; on an error, the frames from unsent on may not have.
func writeBatch(ctx context.Context, l *link, stall *time.Timer, batch []entry) (spans, unsent int, err error) {
	defer stall.Stop()
	corked := l.cork != nil && len(batch) > 1
	if corked {
		l.cork.Cork()
	}
	unsent = len(batch)
	for i, e := range batch {
		typ := websocket.MessageText
		if e.kind == kindTelemetry {
			typ = websocket.MessageBinary
		}
		stall.Reset(writeTimeout)
		if err = l.ws.Write(ctx, typ, e.frame); err != nil {
			unsent = i
			break
		}
		if e.kind == kindTelemetry {
			spans += e.spans
		}
	}
	if corked {
		stall.Reset(writeTimeout)
		if uerr := l.cork.Uncork(); err == nil {
			err = uerr
		}
		if err != nil {
			spans, unsent = 0, 0 // what the buffer held may not have reached the socket
		}
	}
	return spans, unsent, err
}

// ping checks the connection with WebSocket pings; an unanswered ping ends
// the connection, which makes the worker reconnect.
func (w *Worker) ping(ctx context.Context, fail context.CancelFunc, conn *websocket.Conn) {
	t := time.NewTicker(w.opts.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		pctx, cancel := context.WithTimeout(ctx, w.opts.pingInterval)
		err := conn.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.log.WarnContext(ctx, "sdk: ping failed", "worker_id", w.ID(), "error", err)
			}
			fail()
			return
		}
	}
}

// read decodes and dispatches frames until the connection ends.
func (w *Worker) read(ctx context.Context, conn *websocket.Conn) error {
	rctx := context.WithoutCancel(ctx) // see serve
	for {
		_, frame, err := conn.Read(rctx)
		if err != nil {
			return err
		}
		m, err := protocol.Decode(frame)
		if err != nil {
			if !errors.Is(err, protocol.ErrProtocolEmpty) {
				w.log.WarnContext(ctx, "sdk: dropped undecodable frame", "error", err)
			}
			continue
		}
		switch m := m.(type) {
		case protocol.WorkerRegistered:
			w.mu.Lock()
			w.workerID, w.token = m.WorkerID, m.ReattachToken
			w.mu.Unlock()
			w.regOnce.Do(func() { close(w.registered) })
		case protocol.InvocationResult:
			w.onResult(m)
		case protocol.InvokeFunction:
			w.onInvoke(ctx, m)
		case protocol.RegisterTrigger:
			w.onRegisterTrigger(ctx, m)
		case protocol.UnregisterTrigger:
			w.onUnregisterTrigger(m)
		case protocol.TriggerRegistrationResult:
			if m.Error != nil {
				w.log.WarnContext(ctx, "sdk: trigger registration failed",
					"trigger_id", m.ID, "trigger_type", m.TriggerType, "function_id", m.FunctionID,
					"code", m.Error.Code, "error", m.Error.Message)
			}
		}
	}
}

// pushRegistration queues a register*/unregister* frame; the caller holds
// w.mu, so the frame and the table change are atomic with respect to a
// reconnect's replay.
func (w *Worker) pushRegistration(frame []byte) {
	_ = w.out.push(entry{frame: frame, kind: kindRegistration})
}

type workerInfo struct {
	Runtime     string         `json:"runtime"`
	Version     string         `json:"version"`
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	OS          string         `json:"os"`
	PID         int            `json:"pid"`
	Isolation   *string        `json:"isolation"`
	Telemetry   map[string]any `json:"telemetry,omitempty"`
}

// workerMetadata is the payload of engine::workers::register.
func workerMetadata(o options) []byte {
	info := workerInfo{
		Runtime:     "go",
		Version:     Version,
		Name:        workerName(o.name),
		Description: o.description,
		OS:          runtime.GOOS + " (" + runtime.GOARCH + ")",
		PID:         os.Getpid(),
		Telemetry:   map[string]any{"framework": "iii-go"},
	}
	if iso := os.Getenv("III_ISOLATION"); iso != "" {
		info.Isolation = &iso
	}
	b, err := json.Marshal(info)
	if err != nil { // cannot happen: plain strings and ints
		return []byte("null")
	}
	return b
}

// workerName is name, else $III_WORKER_NAME, else "hostname:pid".
func workerName(name string) string {
	if name != "" {
		return name
	}
	if env := os.Getenv("III_WORKER_NAME"); env != "" {
		return env
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}
