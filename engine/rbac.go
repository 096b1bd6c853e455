package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/iii-workbench/iii/engine/internal/wildcard"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Error codes of RBAC (spec §1.5, §3.1).
const (
	CodeForbidden = protocol.CodeForbidden
	CodeAuthError = protocol.CodeAuthError
)

// RBAC is a listener's access control (iii's iii-worker-manager `rbac`
// block).
type RBAC struct {
	// AuthFunctionID is called on every upgrade ("/" and "/otel") with
	// {headers, query_params, ip_address}; its AuthResult admits the
	// connection. Empty admits everyone with full registration rights.
	AuthFunctionID string
	// ExposeFunctions are the functions this listener's workers may call
	// beyond the auth result's allowed_functions and the infrastructure
	// functions every worker needs.
	ExposeFunctions []FunctionFilter
	// The registration hooks get each registration (with the session's
	// context) before it is applied and answer with the object to apply
	// (possibly rewritten); anything else refuses it.
	OnFunctionRegistrationFunctionID    string
	OnTriggerRegistrationFunctionID     string
	OnTriggerTypeRegistrationFunctionID string
}

// FunctionFilter is one expose_functions entry: a wildcard pattern on the
// function id (`match("api::*")`), or conditions on the function's metadata
// that must all hold, in one namespace.
type FunctionFilter struct {
	Match    string // pattern on the id ('*' matches any run); used when Metadata is nil
	Metadata map[string]MetadataMatch
	// Namespace is the namespace the rule exposes functions in; "" is the
	// default one. A rule never exposes a function reached in another
	// namespace (as iii).
	Namespace string
}

// MetadataMatch is one metadata condition: a wildcard pattern on a string
// value (`match("pat")`), or a value the metadata must equal.
type MetadataMatch struct {
	Pattern string // used when IsPattern
	Value   any    // JSON-decoded (numbers as float64) when !IsPattern
	// IsPattern selects Pattern over Value.
	IsPattern bool
}

// ParseFunctionFilter reads one expose_functions entry as decoded from YAML
// or JSON: the string `match("pattern")`, or a map {match: "pattern"} or
// {metadata: {key: value | "match(\"pattern\")"}}, either map with an
// optional {namespace: name}.
func ParseFunctionFilter(v any) (FunctionFilter, error) {
	switch v := v.(type) {
	case string:
		pat, ok := matchPattern(v)
		if !ok {
			return FunctionFilter{}, fmt.Errorf("expose_functions entry %q: want match(\"pattern\"), {match: pattern} or {metadata: {...}}", v)
		}
		return FunctionFilter{Match: pat}, nil
	case map[string]any:
		var f FunctionFilter
		for k, kv := range v {
			switch k {
			case "match", "metadata":
			case "namespace":
				ns, ok := kv.(string)
				if !ok || strings.TrimSpace(ns) == "" {
					return FunctionFilter{}, fmt.Errorf("expose_functions entry: namespace %v: want a namespace name (omit the key for the default namespace)", kv)
				}
				f.Namespace = strings.TrimSpace(ns)
			default:
				return FunctionFilter{}, fmt.Errorf("expose_functions entry: unknown key %q; want match, metadata or namespace", k)
			}
		}
		if m, ok := v["match"]; ok {
			pat, isStr := m.(string)
			if _, both := v["metadata"]; both || !isStr || strings.TrimSpace(pat) == "" {
				return FunctionFilter{}, fmt.Errorf("expose_functions entry: match %v: want one non-empty pattern string, and no metadata beside it", m)
			}
			if p, ok := matchPattern(pat); ok {
				pat = p
			}
			f.Match = pat
			return f, nil
		}
		meta, ok := v["metadata"].(map[string]any)
		if !ok || len(meta) == 0 {
			return FunctionFilter{}, errors.New("expose_functions entry: a map needs a match pattern or a non-empty 'metadata' map of conditions")
		}
		f.Metadata = make(map[string]MetadataMatch, len(meta))
		for k, mv := range meta {
			if s, ok := mv.(string); ok {
				if pat, ok := matchPattern(s); ok {
					f.Metadata[k] = MetadataMatch{Pattern: pat, IsPattern: true}
					continue
				}
			}
			norm, err := jsonValue(mv)
			if err != nil {
				return FunctionFilter{}, fmt.Errorf("expose_functions metadata %q: %w", k, err)
			}
			f.Metadata[k] = MetadataMatch{Value: norm}
		}
		return f, nil
	}
	return FunctionFilter{}, fmt.Errorf("expose_functions entry of type %T: want match(\"pattern\") or {metadata: {...}}", v)
}

// jsonValue normalises a YAML- or JSON-decoded value to what encoding/json
// decodes (float64 numbers, map[string]any), so values compare equal.
func jsonValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}

func matchPattern(s string) (string, bool) {
	t := strings.TrimSpace(s)
	for _, q := range []string{`"`, `'`} {
		if strings.HasPrefix(t, "match("+q) && strings.HasSuffix(t, q+")") && len(t) >= 9 {
			return t[7 : len(t)-2], true
		}
	}
	return "", false
}

// appliesIn reports whether the rule exposes functions reached in
// namespace ns.
func (f FunctionFilter) appliesIn(ns string) bool {
	return nsOrDefault(f.Namespace) == nsOrDefault(ns)
}

// Matches reports whether the function id (with its registered metadata)
// passes the filter, whatever the namespace (see Namespace).
func (f FunctionFilter) Matches(id string, metadata json.RawMessage) bool {
	if f.Metadata == nil {
		return wildcard.Match(f.Match, id)
	}
	if len(metadata) == 0 {
		return false
	}
	var obj map[string]any
	if json.Unmarshal(metadata, &obj) != nil || obj == nil {
		return false
	}
	for k, want := range f.Metadata {
		got, ok := obj[k]
		if !ok {
			return false
		}
		if want.IsPattern {
			s, ok := got.(string)
			if !ok || !wildcard.Match(want.Pattern, s) {
				return false
			}
		} else if !reflect.DeepEqual(got, want.Value) {
			return false
		}
	}
	return true
}

// infrastructureFunctions may be called from every session unless its
// auth result forbids them by name: what every SDK calls on its own.
var infrastructureFunctions = map[string]struct{}{
	"engine::channels::create":  {},
	"engine::workers::register": {},
	"engine::log::info":         {},
	"engine::log::warn":         {},
	"engine::log::error":        {},
	"engine::log::debug":        {},
	"engine::log::trace":        {},
	"engine::baggage::get":      {},
	"engine::baggage::set":      {},
	"engine::baggage::get_all":  {},
}

// listener is one worker listener's configuration, shared by its sockets.
type listener struct {
	e    *Engine
	opts ListenerOptions
	// sessions: the listener has RBAC or a middleware, so each of its
	// workers gets a session; otherwise they have full rights (nil).
	sessions bool
}

func (e *Engine) newListener(opts ListenerOptions) *listener {
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultRBACCallTimeout
	}
	return &listener{e: e, opts: opts, sessions: opts.RBAC != nil || opts.MiddlewareFunctionID != ""}
}

func (l *listener) rbac() *RBAC { return l.opts.RBAC }

// session is what one worker connection of an RBAC listener may do.
type session struct {
	l *listener
	// allowed are grants that name no namespace: they answer in the
	// default namespace only. forbidden are denials in every namespace.
	allowed, forbidden []string
	// namespaces are the auth result's grants per namespace (exact ids or
	// wildcards); when not empty, its keys are also the only namespaces
	// the worker may declare.
	namespaces          map[string][]string
	allowedTriggerTypes []string // nil: every type
	allowTriggerTypeReg bool
	allowFunctionReg    bool
	context             json.RawMessage
	prefix              string // "P::" when the auth result set a prefix

	// Functions a hook renamed: the engine stores them under the new id
	// but must invoke the worker by the id it registered.
	renamed   atomic.Bool
	namesMu   sync.Mutex
	asStored  map[string]string // the worker's id -> stored id
	asOwnedBy map[string]string // stored id -> the worker's id
}

// authResult is the auth function's answer (spec §1.5).
type authResult struct {
	Namespaces                   map[string][]string `json:"namespaces"`
	AllowedFunctions             []string            `json:"allowed_functions"`
	ForbiddenFunctions           []string            `json:"forbidden_functions"`
	AllowedTriggerTypes          *[]string           `json:"allowed_trigger_types"`
	AllowTriggerTypeRegistration *bool               `json:"allow_trigger_type_registration"`
	AllowFunctionRegistration    *bool               `json:"allow_function_registration"`
	Context                      json.RawMessage     `json:"context"`
	FunctionRegistrationPrefix   *string             `json:"function_registration_prefix"`
}

// authError is the text frame that refuses a connection. It is not one of
// the protocol's messages.
type authError struct {
	Type  string             `json:"type"`
	Error protocol.ErrorBody `json:"error"`
}

// admit runs the listener's auth function for an accepted socket. On
// refusal it sends the AUTH_ERROR frame, closes the socket (1008) and
// returns false.
func (l *listener) admit(ws *websocket.Conn, r *http.Request) (*session, bool) {
	if !l.sessions {
		return nil, true
	}
	s, err := l.authenticate(r)
	if err == nil {
		return s, true
	}
	l.e.log.Warn("worker connection refused by the auth function", "listener", l.opts.Name,
		"remote", r.RemoteAddr, "path", r.URL.Path, "err", err.Message)
	frame, _ := json.Marshal(authError{Type: "error", Error: *err})
	ctx, cancel := context.WithTimeout(l.e.ctx, DefaultWriteTimeout)
	defer cancel()
	if ws.Write(ctx, websocket.MessageText, frame) == nil {
		reason := err.Message
		for len(reason) > 120 { // a close reason must fit in a control frame
			_, n := utf8.DecodeLastRuneInString(reason)
			reason = reason[:len(reason)-n]
		}
		ws.Close(websocket.StatusPolicyViolation, reason)
	}
	return nil, false
}

func (l *listener) authenticate(r *http.Request) (*session, *protocol.ErrorBody) {
	s := &session{l: l, allowTriggerTypeReg: true, allowFunctionReg: true, context: json.RawMessage("{}")}
	rb := l.rbac()
	if rb == nil || rb.AuthFunctionID == "" {
		return s, nil
	}
	headers := make(map[string]string, len(r.Header)+1)
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	if r.Host != "" {
		headers["host"] = r.Host // net/http keeps it out of Header
	}
	query := map[string][]string(r.URL.Query())
	ip := r.RemoteAddr
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	in, err := json.Marshal(map[string]any{"headers": headers, "query_params": query, "ip_address": ip})
	if err != nil {
		return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: err.Error()}
	}
	ctx, cancel := context.WithTimeout(l.e.ctx, l.opts.CallTimeout)
	defer cancel()
	res, err := l.e.Invoke(ctx, Request{FunctionID: rb.AuthFunctionID, Data: in, Trigger: "rbac"})
	if err != nil {
		var eb *protocol.ErrorBody
		switch {
		case errors.As(err, &eb):
			return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: fmt.Sprintf("auth function %s failed: %s: %s", rb.AuthFunctionID, eb.Code, eb.Message)}
		case errors.Is(err, context.DeadlineExceeded):
			return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: fmt.Sprintf("auth function %s did not answer within %s", rb.AuthFunctionID, l.opts.CallTimeout)}
		}
		return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: fmt.Sprintf("auth function %s: %v", rb.AuthFunctionID, err)}
	}
	if isNull(res) {
		return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: fmt.Sprintf("auth function %s returned no result", rb.AuthFunctionID)}
	}
	var ar authResult
	if err := json.Unmarshal(res, &ar); err != nil {
		return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: fmt.Sprintf("auth function %s returned an invalid AuthResult: %v", rb.AuthFunctionID, err)}
	}
	s.allowed, s.forbidden = ar.AllowedFunctions, ar.ForbiddenFunctions
	if len(ar.Namespaces) > 0 {
		s.namespaces = make(map[string][]string, len(ar.Namespaces))
		for ns, grants := range ar.Namespaces {
			if strings.TrimSpace(ns) == "" {
				return nil, &protocol.ErrorBody{Code: CodeAuthError, Message: fmt.Sprintf(
					"auth function %s returned an invalid AuthResult: namespaces has a blank namespace name", rb.AuthFunctionID)}
			}
			s.namespaces[ns] = grants
		}
	}
	if ar.AllowedTriggerTypes != nil {
		s.allowedTriggerTypes = append([]string{}, *ar.AllowedTriggerTypes...)
	}
	// With an auth function, trigger type registration is opt-in.
	s.allowTriggerTypeReg = ar.AllowTriggerTypeRegistration != nil && *ar.AllowTriggerTypeRegistration
	if ar.AllowFunctionRegistration != nil {
		s.allowFunctionReg = *ar.AllowFunctionRegistration
	}
	if !isNull(ar.Context) {
		s.context = ar.Context
	}
	if ar.FunctionRegistrationPrefix != nil && *ar.FunctionRegistrationPrefix != "" {
		s.prefix = *ar.FunctionRegistrationPrefix + "::"
	}
	return s, nil
}

func isNull(b json.RawMessage) bool {
	t := strings.TrimSpace(string(b))
	return t == "" || t == "null"
}

// registeredID is the id under which a function this session's worker
// registered as id is stored: renamed by a hook, prefixed. A nil session
// leaves it alone.
func (s *session) registeredID(id string) string {
	if s == nil {
		return id
	}
	if s.renamed.Load() {
		s.namesMu.Lock()
		stored, ok := s.asStored[id]
		s.namesMu.Unlock()
		if ok {
			return stored
		}
	}
	return s.prefix + id
}

// localID is a stored function id as this session's worker knows it.
func (s *session) localID(id string) string {
	if s.renamed.Load() {
		s.namesMu.Lock()
		own, ok := s.asOwnedBy[id]
		s.namesMu.Unlock()
		if ok {
			return own
		}
	}
	if s.prefix == "" {
		return id
	}
	return strings.TrimPrefix(id, s.prefix)
}

// rename records that the worker's function id is stored as stored.
func (s *session) rename(id, stored string) {
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if s.asStored == nil {
		s.asStored, s.asOwnedBy = map[string]string{}, map[string]string{}
	}
	if old, ok := s.asStored[id]; ok {
		delete(s.asOwnedBy, old)
	}
	s.asStored[id], s.asOwnedBy[stored] = stored, id
	s.renamed.Store(true)
}

// allows is the invocation filter (spec §1.5) for function id reached in
// namespace ns, in iii's order: forbidden by name (in every namespace),
// the auth result's grants for ns, allowed by name (in the default
// namespace only), infrastructure, then the listener's expose_functions
// rules for ns (a rule without a namespace is the default one's). The
// string says how to allow it.
func (s *session) allows(e *Engine, id, ns string) (bool, string) {
	ns = nsOrDefault(ns)
	for _, f := range s.forbidden {
		if f == id {
			return false, "remove from rbac.forbidden_functions"
		}
	}
	for _, g := range s.namespaces[ns] {
		if grantMatches(g, id) {
			return true, ""
		}
	}
	if ns == DefaultNamespace {
		for _, f := range s.allowed {
			if f == id {
				return true, ""
			}
		}
	}
	if _, ok := infrastructureFunctions[id]; ok {
		return true, ""
	}
	rb := s.l.rbac()
	if rb == nil {
		return true, ""
	}
	// The metadata of the function the call reaches: in ns, or the
	// engine's own in the default namespace.
	var meta json.RawMessage
	e.mu.RLock()
	f := e.functions[fnKey(ns, id)]
	if f == nil && strings.HasPrefix(id, "engine::") {
		f = e.functions[id]
	}
	local := f != nil && len(f.regs) > 0
	if local {
		meta = f.regs[len(f.regs)-1].metadata
	}
	e.mu.RUnlock()
	if v := e.clusterView(); !local && v != nil {
		meta = v.RemoteMetadata(ns, id) // the call will be forwarded there
	}
	for _, f := range rb.ExposeFunctions {
		if f.appliesIn(ns) && f.Matches(id, meta) {
			return true, ""
		}
	}
	if ns != DefaultNamespace {
		return false, "add to rbac.expose_functions with namespace: " + ns
	}
	return false, "add to rbac.expose_functions"
}

// grantMatches reports whether one of the auth result's namespace grants
// covers id: an exact id, or a wildcard written bare (svc::*) or as
// expose_functions writes it (match("svc::*")).
func grantMatches(grant, id string) bool {
	if pat, ok := matchPattern(grant); ok {
		grant = pat
	}
	return grant == id || strings.Contains(grant, "*") && wildcard.Match(grant, id)
}

// declarationAllowed refuses an engine::workers::register that declares a
// namespace outside the session's namespaces (when the auth result scoped
// it to some): the namespace a worker lives in is the auth function's
// decision. The string says why.
func (s *session) declarationAllowed(data json.RawMessage) (bool, string) {
	if len(s.namespaces) == 0 {
		return true, ""
	}
	var in struct {
		Namespace string `json:"namespace"`
	}
	json.Unmarshal(data, &in) // not an object: the default namespace, refused below unless granted
	ns := nsOrDefault(strings.TrimSpace(in.Namespace))
	if _, ok := s.namespaces[ns]; ok {
		return true, ""
	}
	permitted := make([]string, 0, len(s.namespaces))
	for k := range s.namespaces {
		permitted = append(permitted, k)
	}
	sort.Strings(permitted)
	return false, fmt.Sprintf("namespace '%s' not allowed for this session (permitted: %s)", ns, strings.Join(permitted, ", "))
}

// intercept applies the caller's session to its invokefunction: a refused
// call is answered FORBIDDEN, a call outside engine:: goes to the
// listener's middleware. It reports whether it handled the call.
func (e *Engine) intercept(caller *conn, m protocol.InvokeFunction) bool {
	s := caller.session
	ok, fix := s.allows(e, m.FunctionID, m.Namespace)
	msg := ""
	switch {
	case !ok && nsOrDefault(m.Namespace) != DefaultNamespace:
		msg = fmt.Sprintf("function '%s' not allowed in namespace '%s' (%s)", m.FunctionID, m.Namespace, fix)
	case !ok:
		msg = fmt.Sprintf("function '%s' not allowed (%s)", m.FunctionID, fix)
	case m.FunctionID == registerWorkerFunction:
		if ok, msg = s.declarationAllowed(m.Data); !ok {
			caller.log.Warn("worker declaration refused: its namespace is outside the session's", "why", msg)
		}
	}
	if !ok {
		id := m.InvocationID
		if id == "" {
			id = uuid.NewString()
		}
		caller.send(mustEncode(protocol.InvocationResult{InvocationID: id, FunctionID: m.FunctionID,
			Error:       &protocol.ErrorBody{Code: CodeForbidden, Message: msg},
			Traceparent: m.Traceparent, Baggage: m.Baggage}))
		return true
	}
	mw := s.l.opts.MiddlewareFunctionID
	if mw == "" || strings.HasPrefix(m.FunctionID, "engine::") {
		return false
	}
	data := m.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	var action any
	if m.Action != nil {
		action = m.Action
	}
	mwIn := map[string]any{"function_id": m.FunctionID, "payload": data, "action": action, "context": s.context}
	if m.Namespace != "" {
		mwIn["namespace"] = m.Namespace // where the call resolves; absent: the default namespace
	}
	in, err := json.Marshal(mwIn)
	if err != nil {
		in = nil
	}
	call := Call{InvocationID: m.InvocationID, FunctionID: mw, Data: in, Metadata: m.Metadata,
		Traceparent: m.Traceparent, Baggage: m.Baggage, CallerWorkerID: caller.id}
	id, fn := m.InvocationID, m.FunctionID
	if id == "" {
		id = uuid.NewString()
	}
	tp, bg := m.Traceparent, m.Baggage
	// The middleware answers for the function the caller named.
	e.dispatch(call, func(o outcome) {
		if o.traceparent == "" {
			o.traceparent, o.baggage = tp, bg
		}
		caller.send(mustEncode(protocol.InvocationResult{InvocationID: id, FunctionID: fn,
			Result: o.result, Error: o.err, Traceparent: o.traceparent, Baggage: o.baggage}))
	})
	return true
}

// hook calls a registration hook and returns its answer when it is an
// object, or why the registration is refused.
func (e *Engine) hook(c *conn, fnID string, in map[string]any) (map[string]json.RawMessage, error) {
	in["context"] = c.session.context
	data, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(e.ctx, c.session.l.opts.CallTimeout)
	defer cancel()
	res, err := e.Invoke(ctx, Request{FunctionID: fnID, Data: data, Trigger: "rbac"})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("hook %s did not answer within %s", fnID, c.session.l.opts.CallTimeout)
		}
		return nil, fmt.Errorf("hook %s failed: %w", fnID, err)
	}
	var out map[string]json.RawMessage
	if isNull(res) || json.Unmarshal(res, &out) != nil || out == nil {
		return nil, fmt.Errorf("hook %s refused it (answered %s, not an object)", fnID, abbreviate(res))
	}
	return out, nil
}

func abbreviate(b json.RawMessage) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "nothing"
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

// str sets *dst from a string field of a hook's answer, if present.
func str(out map[string]json.RawMessage, key string, dst *string) {
	var v string
	if raw, ok := out[key]; ok && json.Unmarshal(raw, &v) == nil {
		*dst = v
	}
}

// admitFunction applies the session to a registerfunction: the
// registration right, the hook (which may rewrite id, description and
// metadata), then the prefix. False means refused.
func (e *Engine) admitFunction(c *conn, m *protocol.RegisterFunction) bool {
	s := c.session
	if !s.allowFunctionReg {
		c.log.Warn("function registration refused: the auth result does not allow function registration", "function_id", m.ID)
		e.refuse(c, s.registeredID(m.ID), "the auth result does not allow function registration (allow_function_registration: false)")
		return false
	}
	if rb := s.l.rbac(); rb != nil && rb.OnFunctionRegistrationFunctionID != "" {
		meta := m.Metadata
		if len(meta) == 0 {
			meta = json.RawMessage("null")
		}
		out, err := e.hook(c, rb.OnFunctionRegistrationFunctionID, map[string]any{
			"function_id": m.ID, "description": nullable(m.Description), "metadata": meta})
		if err != nil {
			c.log.Warn("function registration refused by the on_function_registration hook", "function_id", m.ID, "err", err)
			e.refuse(c, s.registeredID(m.ID), err.Error())
			return false
		}
		own := m.ID
		str(out, "function_id", &m.ID)
		str(out, "description", &m.Description)
		if raw, ok := out["metadata"]; ok {
			m.Metadata = raw
		}
		if m.ID != own {
			s.rename(own, s.prefix+m.ID)
		}
	}
	m.ID = s.prefix + m.ID
	return true
}

// admitTriggerType applies the session to a registertriggertype.
func (e *Engine) admitTriggerType(c *conn, m *protocol.RegisterTriggerType) bool {
	s := c.session
	if !s.allowTriggerTypeReg {
		c.log.Warn("trigger type registration refused: the auth result does not allow it (allow_trigger_type_registration)", "trigger_type", m.ID)
		return false
	}
	if rb := s.l.rbac(); rb != nil && rb.OnTriggerTypeRegistrationFunctionID != "" {
		out, err := e.hook(c, rb.OnTriggerTypeRegistrationFunctionID, map[string]any{
			"trigger_type_id": m.ID, "description": m.Description})
		if err != nil {
			c.log.Warn("trigger type registration refused by the on_trigger_type_registration hook", "trigger_type", m.ID, "err", err)
			return false
		}
		str(out, "trigger_type_id", &m.ID)
		str(out, "description", &m.Description)
	}
	return true
}

// admitTrigger applies the session to a registertrigger whose target
// resolves in namespace ns ("" for the default one). A refusal is
// reported to the worker as a failed triggerregistrationresult, which both
// SDKs log.
func (e *Engine) admitTrigger(c *conn, t *Trigger, ns string) bool {
	s := c.session
	refuse := func(why string) bool {
		c.log.Warn("trigger registration refused", "trigger_id", t.ID, "trigger_type", t.Type, "why", why)
		c.send(mustEncode(protocol.TriggerRegistrationResult{ID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID,
			Error: &protocol.ErrorBody{Code: CodeTriggerRegFailed, Message: why}}))
		return false
	}
	if s.allowedTriggerTypes != nil && !contains(s.allowedTriggerTypes, t.Type) {
		return refuse(fmt.Sprintf("trigger type %s is not allowed for this session (allowed_trigger_types)", t.Type))
	}
	if rb := s.l.rbac(); rb != nil && rb.OnTriggerRegistrationFunctionID != "" {
		cfg, meta := t.Config, t.Metadata
		if len(cfg) == 0 {
			cfg = json.RawMessage("null")
		}
		if len(meta) == 0 {
			meta = json.RawMessage("null")
		}
		out, err := e.hook(c, rb.OnTriggerRegistrationFunctionID, map[string]any{
			"trigger_id": t.ID, "trigger_type": t.Type, "function_id": t.FunctionID, "config": cfg, "metadata": meta,
			"namespace": nsOrDefault(ns)})
		if err != nil {
			return refuse("refused by the on_trigger_registration hook: " + err.Error())
		}
		str(out, "trigger_id", &t.ID)
		str(out, "trigger_type", &t.Type)
		str(out, "function_id", &t.FunctionID)
		if raw, ok := out["config"]; ok {
			t.Config = raw
		}
	}
	t.FunctionID = s.registeredID(t.FunctionID)
	if why := e.mayTarget(c, t.FunctionID, ns); why != "" {
		return refuse(why)
	}
	return true
}

// mayTarget says why c's session may not bind a trigger to function id in
// namespace ns ("" when it may). A binding makes the engine call its
// target, so it passes the same filter as a call (as iii: otherwise a
// worker could reach, through a trigger, a function of a namespace it is
// not exposed in). A worker's own functions are exempt, which iii does not
// do: binding its own code exposes nothing. Its own are those it
// registered and, with a function_registration_prefix, every id under the
// prefix (it may bind before it registers).
func (e *Engine) mayTarget(c *conn, id, ns string) string {
	s := c.session
	ok, fix := s.allows(e, id, ns)
	if ok || s.prefix != "" && strings.HasPrefix(id, s.prefix) || e.serves(c, id, ns) {
		return ""
	}
	return fmt.Sprintf("function '%s' not allowed in namespace '%s' (%s)", id, nsOrDefault(ns), fix)
}

// serves reports whether c registered function id in namespace ns, or,
// before its declaration, in the default namespace (where its
// registrations wait until the declaration moves them to its namespace).
func (e *Engine) serves(c *conn, id, ns string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if _, ok := c.fnIDs[fnKey(ns, id)]; ok {
		return true
	}
	_, pending := c.fnIDs[id]
	return pending && c.decl.Load() == nil
}

// sessionCaller is the worker that made call, when it has a session.
func (e *Engine) sessionCaller(call *Call) *conn {
	if call.CallerWorkerID == "" {
		return nil
	}
	e.mu.RLock()
	c := e.conns[call.CallerWorkerID]
	e.mu.RUnlock()
	if c == nil || c.session == nil {
		return nil
	}
	return c
}
