package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
)

// Close codes the module sends.
const (
	closeGoingAway    = websocket.StatusGoingAway       // 1001: the engine is stopping
	closeSlowConsumer = websocket.StatusPolicyViolation // 1008: the client does not keep up
)

// subscription is one joined subscription of a client.
type subscription struct {
	SubscriptionID string
	StreamName     string
	GroupID        string
	ID             *string // nil: the whole group
}

func (s subscription) matches(h header) bool {
	return s.StreamName == h.StreamName && s.GroupID == h.GroupID &&
		(s.ID == nil || (h.ID != nil && *s.ID == *h.ID))
}

type groupKey struct{ stream, group string }

// subscriptions indexes every client's subscriptions; Module.mu guards it.
type subscriptions struct {
	byClient map[*client]map[string]subscription // client → subscription id → subscription
	byGroup  map[groupKey]map[*client]int        // stream+group → clients with a subscription there (count)
}

func (ss *subscriptions) add(c *client, s subscription) {
	if ss.byClient == nil {
		ss.byClient = map[*client]map[string]subscription{}
		ss.byGroup = map[groupKey]map[*client]int{}
	}
	if _, ok := ss.byClient[c][s.SubscriptionID]; ok {
		ss.remove(c, s.SubscriptionID) // a join with a known id replaces it
	}
	if ss.byClient[c] == nil {
		ss.byClient[c] = map[string]subscription{}
	}
	ss.byClient[c][s.SubscriptionID] = s
	k := groupKey{s.StreamName, s.GroupID}
	if ss.byGroup[k] == nil {
		ss.byGroup[k] = map[*client]int{}
	}
	ss.byGroup[k][c]++
}

func (ss *subscriptions) remove(c *client, id string) (subscription, bool) {
	s, ok := ss.byClient[c][id]
	if !ok {
		return subscription{}, false
	}
	delete(ss.byClient[c], id)
	if len(ss.byClient[c]) == 0 {
		delete(ss.byClient, c)
	}
	k := groupKey{s.StreamName, s.GroupID}
	if ss.byGroup[k][c]--; ss.byGroup[k][c] <= 0 {
		delete(ss.byGroup[k], c)
		if len(ss.byGroup[k]) == 0 {
			delete(ss.byGroup, k)
		}
	}
	return s, true
}

// removeClient drops every subscription of c and returns them, ordered by
// subscription id.
func (ss *subscriptions) removeClient(c *client) []subscription {
	var out []subscription
	for id := range ss.byClient[c] {
		s, _ := ss.remove(c, id)
		out = append(out, s)
	}
	sortSubs(out)
	return out
}

func sortSubs(s []subscription) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].SubscriptionID < s[j-1].SubscriptionID; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// match returns the clients with at least one subscription matching h.
// Each client is listed once, however many of its subscriptions match: the
// wrapper names no subscription, so clients route it themselves.
func (ss *subscriptions) match(h header) []*client {
	var out []*client
	for c := range ss.byGroup[groupKey{h.StreamName, h.GroupID}] {
		for _, s := range ss.byClient[c] {
			if s.matches(h) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// client is one stream WebSocket. Its reader is the HTTP handler's
// goroutine (counted in Module.wg from the request on); its writer is the
// only goroutine writing to conn.
type client struct {
	m       *Module
	conn    *websocket.Conn
	remote  string
	authCtx json.RawMessage // context from the auth function, or nil

	out chan []byte // bounded by Module.QueueSize

	// ctx ends when the client is closing; code and reason are set once,
	// before cancel, and read by the writer after ctx is done.
	ctx    context.Context
	cancel context.CancelFunc
	// writeCtx bounds writes. It ends only when the client is dropped as
	// slow, aborting a blocked write; a normal close lets the write in
	// progress finish (coder/websocket closes the socket when a write's
	// context ends, even just after the frame went out).
	writeCtx    context.Context
	abortWrites context.CancelFunc
	closeOnce   sync.Once
	code        websocket.StatusCode
	reason      string
}

// close asks the writer to close the socket with code; the first call wins
// and reports true.
func (c *client) close(code websocket.StatusCode, reason string) bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.code, c.reason = code, reason
		c.cancel()
	})
	return first
}

// send queues one message without blocking. A full queue closes the client
// as a slow consumer.
func (c *client) send(msg []byte) {
	if c.ctx.Err() != nil {
		return
	}
	select {
	case c.out <- msg:
	default:
		c.dropSlow("outbound queue full")
	}
}

func (c *client) dropSlow(why string) {
	if c.close(closeSlowConsumer, "slow consumer") {
		c.abortWrites()
		c.m.dropped.Add(1)
		c.m.log.Warn("stream client dropped as a slow consumer", "remote", c.remote, "reason", why,
			"queue_size", c.m.QueueSize)
	}
}

// writer writes queued messages, each under the write timeout, until the
// client closes; then it closes the socket with the recorded code.
func (c *client) writer() {
	defer c.abortWrites() // releases writeCtx
	for {
		select {
		case <-c.ctx.Done():
			c.conn.Close(c.code, c.reason)
			return
		case msg := <-c.out:
			wctx, cancel := context.WithTimeout(c.writeCtx, c.m.writeTimeout())
			err := c.conn.Write(wctx, websocket.MessageText, msg)
			cancel()
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					c.dropSlow("write timed out")
				}
				c.close(websocket.StatusInternalError, "write failed")
				c.conn.CloseNow()
				return
			}
		}
	}
}

// serveHTTP accepts stream WebSockets on "/" (any query string).
func (m *Module) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if !m.life.Enter() {
		http.Error(w, "stream server shutting down", http.StatusServiceUnavailable)
		return
	}
	defer m.life.Leave()
	authCtx := m.authenticate(r)
	opts := &websocket.AcceptOptions{OriginPatterns: m.AllowedOrigins, InsecureSkipVerify: len(m.AllowedOrigins) == 0}
	conn, err := websocket.Accept(w, r, opts)
	if err != nil {
		m.log.Debug("stream upgrade refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	conn.SetReadLimit(m.MaxMessageBytes)
	c := &client{m: m, conn: conn, remote: r.RemoteAddr, authCtx: authCtx, out: make(chan []byte, m.QueueSize)}
	c.ctx, c.cancel = context.WithCancel(m.ctx)
	c.writeCtx, c.abortWrites = context.WithCancel(m.ctx)

	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		c.cancel()
		c.abortWrites()
		conn.Close(closeGoingAway, "server shutting down")
		return
	}
	m.clients[c] = struct{}{}
	// Exits when the client closes (peer gone, slow, or Stop). Not refused:
	// Stop stops the module's goroutines only after setting closing.
	m.life.Go(c.writer)
	m.mu.Unlock()
	m.log.Debug("stream client connected", "remote", c.remote)

	for {
		_, data, err := conn.Read(m.ctx)
		if err != nil {
			break
		}
		m.handle(c, data)
	}

	c.close(websocket.StatusNormalClosure, "")
	m.mu.Lock()
	delete(m.clients, c)
	subs := m.subs.removeClient(c)
	m.mu.Unlock()
	for _, s := range subs {
		m.runJoinLeave(m.ctx, TriggerLeave, leaveEvent(c, s))
	}
	m.log.Debug("stream client disconnected", "remote", c.remote, "subscriptions", len(subs))
}

func leaveEvent(c *client, s subscription) joinLeaveEvent {
	return joinLeaveEvent{SubscriptionID: s.SubscriptionID, StreamName: s.StreamName, GroupID: s.GroupID,
		ID: s.ID, Context: c.authCtx}
}

// authenticate calls the configured auth function with the upgrade request
// (spec §8.1) and returns the context it grants. A failure is logged and the
// connection proceeds without context.
func (m *Module) authenticate(r *http.Request) json.RawMessage {
	if m.AuthFunction == "" {
		return nil
	}
	headers := make(map[string]string, len(r.Header))
	for k, vs := range r.Header {
		if len(vs) > 0 {
			headers[strings.ToLower(k)] = vs[len(vs)-1]
		}
	}
	query := map[string][]string(r.URL.Query())
	in := mustMarshal(struct {
		Headers     map[string]string   `json:"headers"`
		Path        string              `json:"path"`
		QueryParams map[string][]string `json:"query_params"`
		Addr        string              `json:"addr"`
	}{headers, r.URL.Path, query, r.RemoteAddr})
	ctx, cancel := context.WithTimeout(r.Context(), m.handlerTimeout())
	defer cancel()
	res, err := m.h.Engine.Invoke(ctx, engine.Request{FunctionID: m.AuthFunction, Data: in})
	if err != nil {
		m.log.Warn("stream auth function failed; connection proceeds without context",
			"function_id", m.AuthFunction, "remote", r.RemoteAddr, "err", err)
		return nil
	}
	var out struct {
		Context json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		m.log.Warn("stream auth function result is not {\"context\": ...}; ignored",
			"function_id", m.AuthFunction, "err", err)
		return nil
	}
	return out.Context
}

// handle processes one client frame. Undecodable frames are logged
// (rate-limited) and ignored; the socket stays open.
func (m *Module) handle(c *client, data []byte) {
	var msg clientMessage
	if err := json.Unmarshal(data, &msg); err != nil {
		m.badMessage(c, data, err)
		return
	}
	if msg.Type != "join" && msg.Type != "leave" {
		m.badMessage(c, data, fmt.Errorf("unknown message type %q (want join or leave)", msg.Type))
		return
	}
	var d subscribeData
	if err := json.Unmarshal(msg.Data, &d); err != nil {
		m.badMessage(c, data, fmt.Errorf("%s data: %w", msg.Type, err))
		return
	}
	switch msg.Type {
	case "join":
		if d.SubscriptionID == "" || d.StreamName == "" || d.GroupID == "" {
			m.badMessage(c, data, errors.New("join needs data.subscriptionId, data.streamName and data.groupId"))
			return
		}
		m.join(c, d)
	case "leave":
		if d.SubscriptionID == "" {
			m.badMessage(c, data, errors.New("leave needs data.subscriptionId"))
			return
		}
		m.leave(c, d)
	}
}

// join runs the stream:join handlers; unless one refuses, it subscribes
// the client and sends the sync.
func (m *Module) join(c *client, d subscribeData) {
	ev := joinLeaveEvent{SubscriptionID: d.SubscriptionID, StreamName: d.StreamName, GroupID: d.GroupID,
		ID: d.ID, Context: c.authCtx}
	if m.runJoinLeave(c.ctx, TriggerJoin, ev) {
		c.send(unauthorizedWrapper(d.StreamName, d.GroupID, d.ID))
		return
	}
	if c.ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	m.subs.add(c, subscription(d))
	m.mu.Unlock()

	ctx, cancel := context.WithTimeout(c.ctx, m.handlerTimeout())
	defer cancel()
	var data json.RawMessage
	var err error
	if d.ID != nil {
		data, err = m.readItem(ctx, d.StreamName, d.GroupID, *d.ID)
	} else {
		data, err = m.readGroup(ctx, d.StreamName, d.GroupID)
	}
	if err != nil {
		m.log.Error("stream sync failed", "remote", c.remote, "subscription_id", d.SubscriptionID,
			"stream_name", d.StreamName, "group_id", d.GroupID, "err", err)
		return
	}
	c.send(dataWrapper(EventSync, d.StreamName, d.GroupID, d.ID, data))
}

// leave unsubscribes and runs the stream:leave handlers. Leaving an unknown
// subscription does nothing.
func (m *Module) leave(c *client, d subscribeData) {
	m.mu.Lock()
	s, ok := m.subs.remove(c, d.SubscriptionID)
	m.mu.Unlock()
	if ok {
		m.runJoinLeave(m.ctx, TriggerLeave, leaveEvent(c, s))
	}
}

// deliver pushes a published wrapper to every local client subscribed to
// its stream+group (and id).
func (m *Module) deliver(payload []byte) {
	var h header
	if err := json.Unmarshal(payload, &h); err != nil || h.Type != wrapperType {
		m.log.Warn("stream: ignoring a malformed message on the change channel", "channel", m.channel, "err", err)
		return
	}
	m.mu.Lock()
	targets := m.subs.match(h)
	m.mu.Unlock()
	for _, c := range targets {
		c.send(payload)
	}
}

// rateLimited lets one log line through per interval and counts the rest.
type rateLimited struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const badFrameLogInterval = time.Second

func (r *rateLimited) allow(now time.Time) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.last) < badFrameLogInterval {
		r.suppressed++
		return false, 0
	}
	r.last, suppressed, r.suppressed = now, r.suppressed, 0
	return true, suppressed
}

func (m *Module) badMessage(c *client, data []byte, err error) {
	if ok, n := m.badFrame.allow(time.Now()); ok {
		m.log.Warn("undecodable stream client message ignored", "remote", c.remote, "frame", abbreviate(data),
			"err", err, "suppressed_since_last", n)
	}
}
