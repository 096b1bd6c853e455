package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/channel"
)

// streamOpenGrace is how long a request whose function returned nothing
// waits for the function to open its response channel. The SDKs open it
// asynchronously (a handler may call res.stream.write and return at once),
// so the result can arrive before the socket; iii itself waits for the
// response channel until default_timeout and then answers 504.
const streamOpenGrace = time.Second

// bodySource streams a request body to the worker that opens the
// request's request_body channel. It reads the body only while a reader
// is connected, on that reader's goroutine: a function that never opens
// request_body costs no goroutine and its body is not read.
//
// The request is in full-duplex mode (the body may be read while the
// response streams), so the handler closes the body itself before it
// returns (close): net/http must not meet an unread full-duplex body after
// the handler.
type bodySource struct {
	body  io.ReadCloser // r.Body
	limit int64         // stream_body_limit
	rc    *http.ResponseController

	closed atomic.Bool // the request is over: no more reads
	opened atomic.Bool // a reader asked for the body
	ended  atomic.Bool // the body's end was seen
	tooBig atomic.Bool // the body passed the limit

	mu      sync.Mutex // held across each body Read; close takes it to wait for one in flight
	read    int64
	err     error // the end once seen (io.EOF or why it was cut)
	pending error // an error returned with the last bytes
	buf     []byte
}

var _ channel.Source = (*bodySource)(nil)

var errRequestFinished = &channel.EndError{Code: websocket.StatusGoingAway, Reason: "http request finished"}

// Next reads the next chunk of the body. The item's bytes are valid until
// the next call (the socket has sent them by then).
func (s *bodySource) Next(context.Context) (channel.Item, error) {
	s.opened.Store(true) // before the closed check: see close
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return channel.Item{}, errRequestFinished
	}
	if s.err != nil {
		return channel.Item{}, s.err
	}
	if s.pending != nil {
		s.end(s.pending)
		s.pending = nil
		return channel.Item{}, s.err
	}
	if s.buf == nil {
		s.buf = make([]byte, channel.ChunkSize)
	}
	for {
		n, err := s.body.Read(s.buf)
		s.read += int64(n)
		if s.read > s.limit {
			s.tooBig.Store(true)
			s.end(&channel.EndError{Code: websocket.StatusMessageTooBig,
				Reason: fmt.Sprintf("request body exceeds stream_body_limit of %d bytes", s.limit)})
			return channel.Item{}, s.err
		}
		if n > 0 {
			s.pending = err
			return channel.Item{Data: s.buf[:n]}, nil
		}
		if err != nil {
			s.end(err)
			return channel.Item{}, s.err
		}
	}
}

// end records the body's end from a Read error; s.mu is held.
func (s *bodySource) end(err error) {
	s.ended.Store(true)
	switch {
	case errors.Is(err, io.EOF):
		s.err = io.EOF
	case s.closed.Load(), errors.Is(err, os.ErrDeadlineExceeded):
		s.err = errRequestFinished
	case err != nil && s.err == nil:
		var ee *channel.EndError
		if errors.As(err, &ee) {
			s.err = err
		} else {
			s.err = &channel.EndError{Code: websocket.StatusInternalError, Reason: "request body cut off: " + err.Error()}
		}
	}
}

// Stop is called when the reader leaves; the rest of the body stays
// unread.
func (s *bodySource) Stop(error) {}

// close ends the source for good before the handler returns: a Read in
// flight is cut by a read deadline and waited for, then the body is
// closed (what is left of a small one is discarded; a large unread one
// closes the connection after the response).
func (s *bodySource) close() {
	s.closed.Store(true)
	if s.opened.Load() && !s.ended.Load() {
		_ = s.rc.SetReadDeadline(time.Now())
	}
	s.mu.Lock()
	//lint:ignore SA2001 waits for the read in flight, which holds mu
	s.mu.Unlock()
	s.body.Close()
}

// Sink states.
const (
	sinkPending   = iota // nothing decided
	sinkStreaming        // the stream answers the request
	sinkAnswered         // the function's result (or an error) answers it
)

// responseSink is the engine's end of a request's response channel: it
// turns set_status / set_headers text items and binary body items into
// the HTTP response, writing each body item as it arrives (flushed, so
// server-sent events reach the client one by one). It runs on the
// goroutine of the worker's writer socket; the request's handler
// goroutine meanwhile waits for the function's result.
type responseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController // under wmu; made at the first write
	timeout time.Duration            // per write to the client
	cancel  context.CancelCauseFunc

	mu        sync.Mutex // guards the fields below
	state     int
	status    int
	header    http.Header
	opened    signal // by Open
	started   signal // when the stream takes the answer
	finished  signal // by Finish
	gone      signal // once nobody reads
	goneErr   error
	finishErr error
	finishing bool

	// wmu serialises use of w between the socket and the handler's exit.
	// Lock order: wmu, then mu.
	wmu    sync.Mutex
	closed bool // under wmu: the handler is done with w
	head   bool // under wmu: the status line is written
}

var _ channel.Sink = (*responseSink)(nil)

func newResponseSink(w http.ResponseWriter, timeout time.Duration, cancel context.CancelCauseFunc) *responseSink {
	return &responseSink{w: w, timeout: timeout, cancel: cancel, status: http.StatusOK}
}

// signal is a one-time event whose channel is made only if someone waits
// for it before it fires (most requests never stream). Guarded by the
// sink's mu.
type signal struct {
	c     chan struct{}
	fired bool
}

// closedChan is the channel of every signal that fired before anyone
// asked for it.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (g *signal) fire() {
	if !g.fired {
		g.fired = true
		if g.c != nil {
			close(g.c)
		}
	}
}

// wait returns a channel closed when g fires.
func (s *responseSink) wait(g *signal) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.fired {
		return closedChan
	}
	if g.c == nil {
		g.c = make(chan struct{})
	}
	return g.c
}

func (s *responseSink) Open() {
	s.mu.Lock()
	s.opened.fire()
	s.mu.Unlock()
}

// Put applies a control message or writes a body chunk.
func (s *responseSink) Put(_ context.Context, it channel.Item) error {
	if it.Text {
		s.control(it.Data)
		return s.Err()
	}
	s.mu.Lock()
	switch s.state {
	case sinkPending:
		s.state = sinkStreaming
		s.started.fire()
	case sinkAnswered:
		s.mu.Unlock()
		s.stop(&channel.EndError{Code: websocket.StatusGoingAway, Reason: "the function's return value already answered the request"})
		return s.Err()
	}
	s.mu.Unlock()
	if err := s.write(it.Data); err != nil {
		s.stop(&channel.EndError{Code: websocket.StatusGoingAway, Reason: "http client went away: " + err.Error()})
		return s.Err()
	}
	return nil
}

// control applies {"type":"set_status","status_code":N} and
// {"type":"set_headers","headers":{...}} before the response starts;
// anything else, or anything later, is ignored (as iii does).
func (s *responseSink) control(data []byte) {
	var msg struct {
		Type       string          `json:"type"`
		StatusCode json.RawMessage `json:"status_code"`
		Headers    json.RawMessage `json:"headers"`
	}
	if json.Unmarshal(data, &msg) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != sinkPending {
		return
	}
	switch msg.Type {
	case "set_status":
		if code, err := statusCode(msg.StatusCode); err == nil {
			s.status = code
		}
	case "set_headers":
		h := make(http.Header)
		if addHeaders(h, msg.Headers) == nil {
			if s.header == nil {
				s.header = make(http.Header, len(h))
			}
			for k, v := range h {
				s.header[k] = v
			}
		}
	}
}

// writeHead writes the status line and headers once; wmu is held.
func (s *responseSink) writeHead() {
	if s.head {
		return
	}
	s.head = true
	s.mu.Lock()
	status, header := s.status, s.header
	s.mu.Unlock()
	h := s.w.Header()
	for k, v := range header {
		h[k] = v
	}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: the function said nothing
	}
	s.w.WriteHeader(status)
}

// write sends one body chunk, flushed, within the write timeout.
func (s *responseSink) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return errors.New("response already finished")
	}
	if s.rc == nil {
		s.rc = http.NewResponseController(s.w)
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	defer s.rc.SetWriteDeadline(time.Time{})
	s.writeHead()
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// Finish ends the stream: with no body item before, it answers with the
// status and headers set and an empty body.
func (s *responseSink) Finish(err error) {
	s.mu.Lock()
	if s.finishing {
		s.mu.Unlock()
		return
	}
	s.finishing = true
	if s.state == sinkPending {
		s.state = sinkStreaming
		s.started.fire()
	}
	streaming := s.state == sinkStreaming
	s.finishErr = err
	s.mu.Unlock()
	if streaming {
		s.wmu.Lock()
		if !s.closed {
			s.writeHead()
		}
		s.wmu.Unlock()
	}
	s.mu.Lock()
	s.finished.fire()
	s.mu.Unlock()
	// The response is complete: stop waiting for the function's result,
	// but let the call finish (its result is then discarded quietly, as
	// iii does, not counted as late).
	s.cancel(engine.ErrResultNotNeeded)
}

// aborted reports whether the stream ended without its writer's Close
// (the response is then cut, not completed).
func (s *responseSink) aborted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finishErr != nil
}

func (s *responseSink) Gone() <-chan struct{} { return s.wait(&s.gone) }

func (s *responseSink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.goneErr
}

// stop says nobody will read (the writer's socket is closed with err).
func (s *responseSink) stop(err error) {
	s.mu.Lock()
	first := s.goneErr == nil
	if first {
		s.goneErr = err
		s.gone.fire()
	}
	s.mu.Unlock()
	if first {
		s.cancel(err)
	}
}

// claim makes the function's result (or an error) the answer unless the
// stream took it; it returns the state before.
func (s *responseSink) claim() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	if st == sinkPending {
		s.state = sinkAnswered
	}
	return st
}

// close ends the sink when the handler returns: w is not touched again.
func (s *responseSink) close() {
	s.stop(&channel.EndError{Code: websocket.StatusGoingAway, Reason: "http request finished"})
	s.wmu.Lock()
	s.closed = true
	s.wmu.Unlock()
}

// isOpened reports whether the function connected its response writer.
func (s *responseSink) isOpened() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened.fired
}

// streamedBody reports whether r's body goes to the function as a stream
// (any body that is not JSON) rather than parsed.
func streamedBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return false
	}
	return !isJSONType(r.Header.Get("Content-Type"))
}
