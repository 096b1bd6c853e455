package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/channel"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// exchange is one request being served.
type exchange struct {
	m   *Module
	w   http.ResponseWriter
	r   *http.Request
	rt  *route
	ctx context.Context // bounded by the module's timeout
}

// ServeHTTP routes a request to its function: CORS, route, auth and size
// are checked first, so a refused request never reaches a function. Each
// answered request is published as an event.HTTPRequestServed (for request
// metrics) when anyone listens.
func (m *Module) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m.eng == nil || !m.eng.Events().Active() {
		m.serve(w, r)
		return
	}
	bus := m.eng.Events()
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	x := m.serve(rec, r)
	ev := event.HTTPRequestServed{Method: r.Method, Status: rec.status, Duration: time.Since(start), At: time.Now()}
	if x != nil && x.rt != nil {
		ev.Route = x.rt.pattern
	}
	if ev.Status == 0 {
		ev.Status = http.StatusOK
	}
	bus.Publish(ev)
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (m *Module) serve(w http.ResponseWriter, r *http.Request) *exchange {
	if m.cors.apply(w, r) {
		return nil
	}
	x := &exchange{m: m, w: w, r: r, ctx: r.Context()}
	segs, ok := splitPath(r.URL.EscapedPath())
	if ok {
		x.rt = m.routes.match(r.Method, segs)
	}
	if x.rt == nil {
		x.fail(http.StatusNotFound, codeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
		return x
	}
	if a := x.rt.auth; a != nil && !a.allow(r.Header) {
		if c := a.challenge(); c != "" {
			w.Header().Set("WWW-Authenticate", c)
		}
		x.fail(http.StatusUnauthorized, codeUnauthorized, fmt.Sprintf("%s needs valid %s credentials", x.rt, a.kind))
		return x
	}
	streamed := streamedBody(r)
	if streamed && r.ContentLength > m.StreamBodyLimit || !streamed && r.ContentLength > m.BodyLimit {
		x.tooLarge(streamed, false)
		return x
	}
	deadline := time.Now().Add(m.timeout)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	x.ctx = ctx
	select {
	case m.sem <- struct{}{}:
		defer func() { <-m.sem }()
	case <-ctx.Done():
		if r.Context().Err() == nil {
			x.fail(http.StatusServiceUnavailable, codeUnavailable,
				fmt.Sprintf("no request slot free within %d ms (concurrency_request_limit %d)", m.DefaultTimeout, m.ConcurrencyRequestLimit))
		}
		return x
	}
	var body []byte
	if !streamed {
		var ok bool
		if body, ok = x.readBody(deadline); !ok {
			return x
		}
	}
	obj := newRequestObject(r, x.rt, segs, body)
	if !x.runMiddleware(segs) {
		return x
	}
	if x.rt.condition != "" {
		data, err := json.Marshal(obj)
		if err != nil {
			x.fail(http.StatusInternalServerError, codeInternal, "encode request: "+err.Error())
			return x
		}
		if !x.checkCondition(data) {
			return x
		}
	}
	x.serveFunction(obj, body, streamed)
	return x
}

// serveFunction calls the route's function with the request object and
// its two channels, and answers with the function's result or with what
// it streams into its response channel, whichever comes first (spec §3.3).
// body is the JSON body already read; when streamed, the body is still
// unread and goes to whoever opens request_body.
func (x *exchange) serveFunction(obj *requestObject, body []byte, streamed bool) {
	chs := x.m.eng.Channels()
	var (
		src  channel.Source
		bsrc *bodySource
	)
	if streamed {
		rc := http.NewResponseController(x.w)
		_ = rc.EnableFullDuplex() // the body may be read while the response streams (HTTP/1.1)
		bsrc = &bodySource{body: x.r.Body, limit: x.m.StreamBodyLimit, rc: rc}
		src = bsrc
	} else {
		src = channel.NewBytesSource(body)
	}
	ictx, icancel := context.WithCancelCause(x.ctx)
	defer icancel(nil)
	sink := newResponseSink(x.w, x.m.timeout, icancel)
	reqRef, resRef := chs.CreateReadable(src, ""), chs.CreateWritable(sink, "")
	defer func() {
		chs.Remove(reqRef.ChannelID)
		chs.Remove(resRef.ChannelID)
		sink.close()
		if bsrc != nil {
			bsrc.close()
		}
	}()
	obj.RequestBody, obj.Response = &reqRef, &resRef
	data, err := json.Marshal(obj)
	if err != nil {
		x.fail(http.StatusInternalServerError, codeInternal, "encode request: "+err.Error())
		return
	}
	fid := x.rt.functionID
	result, err := x.callRoute(ictx, fid, data)
	noResult := err == nil && (len(bytes.TrimSpace(result)) == 0 || isNull(result))
	if noResult {
		x.awaitStream(sink)
	}
	switch sink.claim() {
	case sinkStreaming:
		select {
		case <-sink.wait(&sink.finished):
			if sink.aborted() && x.r.Context().Err() == nil {
				// The function's writer vanished mid-stream: cut the
				// response rather than end it as if complete.
				panic(http.ErrAbortHandler)
			}
		case <-sink.Gone():
		case <-x.r.Context().Done():
		}
		return
	}
	switch {
	case bsrc != nil && bsrc.tooBig.Load():
		x.tooLarge(true, true)
	case err != nil:
		x.invokeFailed(fid, err, codeTimeout)
	case noResult && sink.isOpened():
		x.fail(http.StatusGatewayTimeout, codeTimeout,
			fmt.Sprintf("function %s returned nothing and sent no response on its channel within %d ms", fid, x.m.DefaultTimeout))
	default:
		resp, err := mapResponse(result)
		if err != nil {
			x.fail(http.StatusInternalServerError, codeInternal, fmt.Sprintf("function %s: %v", fid, err))
			return
		}
		x.write(resp)
	}
}

// awaitStream waits, after a function returned no result, for its
// response stream to start: while the response channel is open, until the
// request's deadline; while it is not, for streamOpenGrace.
func (x *exchange) awaitStream(sink *responseSink) {
	grace := time.NewTimer(streamOpenGrace)
	defer grace.Stop()
	opened, started := sink.wait(&sink.opened), sink.wait(&sink.started)
	for {
		select {
		case <-started:
			return
		case <-opened:
			opened = nil
			grace.Stop()
		case <-grace.C:
			return
		case <-x.ctx.Done():
			return
		}
	}
}

func (x *exchange) invoke(functionID string, data []byte) (json.RawMessage, error) {
	return x.call(x.ctx, functionID, data)
}

func (x *exchange) call(ctx context.Context, functionID string, data []byte) (json.RawMessage, error) {
	return x.m.eng.Invoke(ctx, x.request(functionID, data))
}

// callRoute calls the route's function, naming the binding: a route an
// observer of http::on-request stands for is served through it.
func (x *exchange) callRoute(ctx context.Context, functionID string, data []byte) (json.RawMessage, error) {
	req := x.request(functionID, data)
	req.Binding = x.rt.triggerID
	return x.m.eng.Invoke(ctx, req)
}

// request is a call of the route's function, condition or middleware: all
// three resolve in the route's namespace.
func (x *exchange) request(functionID string, data []byte) engine.Request {
	return engine.Request{
		FunctionID:  functionID,
		Namespace:   x.rt.namespace,
		Data:        data,
		Metadata:    x.rt.metadata,
		Traceparent: x.r.Header.Get("Traceparent"),
		Baggage:     x.r.Header.Get("Baggage"),
		Trigger:     TriggerType,
	}
}

// readBody reads the body within the limit and the deadline. On failure
// the response has been sent and ok is false.
func (x *exchange) readBody(deadline time.Time) (body []byte, ok bool) {
	r := x.r
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true
	}
	rc := http.NewResponseController(x.w)
	_ = rc.SetReadDeadline(deadline) // unsupported writers just have no deadline
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(x.w, r.Body, x.m.BodyLimit))
	_ = rc.SetReadDeadline(time.Time{})
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return buf.Bytes(), true
	case errors.As(err, &tooBig):
		x.tooLarge(false, true)
	case errors.Is(err, os.ErrDeadlineExceeded):
		x.fail(http.StatusRequestTimeout, codeRequestTimeout,
			fmt.Sprintf("request body not received within %d ms", x.m.DefaultTimeout))
	case r.Context().Err() != nil:
		// The client went away.
	default:
		x.fail(http.StatusBadRequest, codeBadRequest, "read request body: "+err.Error())
	}
	return nil, false
}

// Bounds on reading a refused body after the 413.
const (
	maxDrainBytes = 8 << 20
	maxDrainTime  = 2 * time.Second
)

// tooLarge answers 413 naming the limit passed (body_limit for a JSON body,
// read whole; stream_body_limit for one streamed to the function) and
// closes the connection, after reading what the client still sends of the
// body (within maxDrainBytes and maxDrainTime): a client that sends its
// whole request before reading the response would otherwise fail on a
// reset while sending and never see the 413. started reports that the
// body was being read already.
func (x *exchange) tooLarge(streamed, started bool) {
	x.w.Header().Set("Connection", "close")
	key, limit := "body_limit", x.m.BodyLimit
	if streamed {
		key, limit = "stream_body_limit", x.m.StreamBodyLimit
	}
	x.fail(http.StatusRequestEntityTooLarge, codeTooLarge,
		fmt.Sprintf("request body exceeds the %s of %d bytes", key, limit))
	// A client waiting for 100 Continue has sent nothing and, with its
	// answer, will not.
	if !started && strings.EqualFold(x.r.Header.Get("Expect"), "100-continue") {
		return
	}
	rc := http.NewResponseController(x.w)
	if rc.Flush() != nil {
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(min(maxDrainTime, x.m.timeout)))
	n, err := io.CopyN(io.Discard, x.r.Body, maxDrainBytes)
	_ = rc.SetReadDeadline(time.Time{})
	x.m.log.DebugContext(x.r.Context(), "http: read the rest of a refused body", "path", x.r.URL.Path,
		"bytes", n, "complete", errors.Is(err, io.EOF))
}

// runMiddleware calls the module's middleware, then the route's. It
// reports whether the request goes on; otherwise the response is sent.
func (x *exchange) runMiddleware(segs []string) bool {
	if len(x.m.middleware) == 0 && len(x.rt.middleware) == 0 {
		return true
	}
	in, err := json.Marshal(middlewareInput{Phase: "preHandler", Request: middlewareRequest{
		PathParams: x.rt.pathParams(segs), QueryParams: queryParams(x.r), Headers: headers(x.r), Method: x.r.Method,
	}})
	if err != nil {
		x.fail(http.StatusInternalServerError, codeInternal, "encode middleware request: "+err.Error())
		return false
	}
	for _, ids := range [][]string{x.m.middleware, x.rt.middleware} {
		for _, id := range ids {
			res, err := x.invoke(id, in)
			if err != nil {
				x.invokeFailed(id, err, codeMiddlewareTime)
				return false
			}
			var mr middlewareResult
			if len(bytes.TrimSpace(res)) > 0 && !isNull(res) {
				if err := json.Unmarshal(res, &mr); err != nil {
					x.fail(http.StatusInternalServerError, codeInternal, fmt.Sprintf("middleware %s: result %s is not {action, response}", id, res))
					return false
				}
			}
			switch mr.Action {
			case "", "continue":
			case "respond":
				resp, err := mapResponse(mr.Response)
				if err != nil {
					x.fail(http.StatusInternalServerError, codeInternal, fmt.Sprintf("middleware %s: %v", id, err))
					return false
				}
				x.write(resp)
				return false
			default:
				x.fail(http.StatusInternalServerError, codeInternal, fmt.Sprintf("middleware %s: action %q is not continue or respond", id, mr.Action))
				return false
			}
		}
	}
	return true
}

// checkCondition calls the route's condition function, if any: a result
// of false skips the handler with 422; an error fails the request.
func (x *exchange) checkCondition(data []byte) bool {
	if x.rt.condition == "" {
		return true
	}
	res, err := x.invoke(x.rt.condition, data)
	if err != nil {
		x.invokeFailed(x.rt.condition, err, codeTimeout)
		return false
	}
	if string(bytes.TrimSpace(res)) != "false" {
		return true
	}
	env := envelope{Error: envelopeError{Code: codeConditionFalse,
		Message: fmt.Sprintf("condition %s returned false", x.rt.condition)}, Skipped: true}
	body, _ := json.Marshal(env)
	x.write(jsonResponse(http.StatusUnprocessableEntity, body))
	return false
}

// invokeFailed answers a failed call of functionID: 504 when it ran out
// of time (timeoutCode), 503 when the function is not there, else 500 with
// the function's own error code.
func (x *exchange) invokeFailed(functionID string, err error, timeoutCode string) {
	var eb *protocol.ErrorBody
	switch {
	case errors.As(err, &eb):
		switch eb.Code {
		case protocol.CodeTimeout:
			x.fail(http.StatusGatewayTimeout, timeoutCode, fmt.Sprintf("function %s: %s", functionID, eb.Message))
		case engine.CodeFunctionNotFound:
			x.w.Header().Set("Retry-After", "1")
			x.fail(http.StatusServiceUnavailable, eb.Code, eb.Message)
		case engine.CodeShutdown:
			x.fail(http.StatusServiceUnavailable, eb.Code, eb.Message)
		default:
			x.fail(http.StatusInternalServerError, eb.Code, eb.Message)
		}
	case errors.Is(err, context.DeadlineExceeded):
		x.fail(http.StatusGatewayTimeout, timeoutCode,
			fmt.Sprintf("function %s did not answer within %d ms", functionID, x.m.DefaultTimeout))
	case x.r.Context().Err() != nil:
		// The client went away (or the module is stopping): nobody to answer.
	case errors.Is(err, engine.ErrEngineClosed):
		x.fail(http.StatusServiceUnavailable, engine.CodeShutdown, "the engine is shutting down")
	default:
		x.fail(http.StatusInternalServerError, codeInternal, fmt.Sprintf("function %s: %v", functionID, err))
	}
}

// fail sends an error envelope; 5xx are logged with their error_id.
func (x *exchange) fail(status int, code, message string) {
	resp, errorID := errorResponse(status, code, message)
	if errorID != "" {
		attrs := []any{"error_id", errorID, "status", status, "code", code, "err", message,
			"method", x.r.Method, "path", x.r.URL.Path}
		if x.rt != nil {
			attrs = append(attrs, "function_id", x.rt.functionID, "trigger_id", x.rt.triggerID)
		}
		x.m.log.WarnContext(x.r.Context(), "http request failed", attrs...)
	}
	x.write(resp)
}

// write sends resp. Headers the CORS policy set stay unless resp names
// them too.
func (x *exchange) write(resp response) {
	h := x.w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	rc := http.NewResponseController(x.w)
	_ = rc.SetWriteDeadline(time.Now().Add(x.m.timeout))
	if bodyAllowed(resp.status) {
		h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	}
	x.w.WriteHeader(resp.status)
	if bodyAllowed(resp.status) && len(resp.body) > 0 {
		if _, err := x.w.Write(resp.body); err != nil && !errors.Is(err, http.ErrBodyNotAllowed) {
			x.m.log.DebugContext(x.r.Context(), "http response not delivered", "path", x.r.URL.Path, "err", err)
		}
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && status >= 200
}
