package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/iii-workbench/iii/engine"
)

// methods are the HTTP methods a trigger may name in http_method.
var methods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}

// Errors returned when a trigger's config is refused. The engine turns them
// into trigger_registration_failed for the worker that registered it.
var (
	ErrHTTPConfig        = errors.New("http trigger: invalid config")
	ErrHTTPRouteConflict = errors.New("http trigger: route conflict")
)

// segment is one "/"-separated part of a route pattern.
type segment struct {
	value string // the literal, or the parameter's name
	param bool
}

// route is one registered HTTP trigger.
type route struct {
	triggerID  string
	functionID string
	namespace  string // of the function: condition and middleware resolve there too
	method     string // upper case
	pattern    string // api_path without leading or trailing "/"
	segments   []segment
	metadata   json.RawMessage
	auth       *authenticator // nil: no auth
	condition  string         // condition_function_id
	middleware []string       // middleware_function_ids
}

func (r *route) String() string { return r.method + " /" + r.pattern }

// triggerConfig is the config of an http trigger. Unknown keys are ignored,
// as iii does.
type triggerConfig struct {
	APIPath    *string     `json:"api_path"`
	HTTPMethod string      `json:"http_method"`
	Auth       *authConfig `json:"auth"`
	Condition  string      `json:"condition_function_id"`
	Middleware []string    `json:"middleware_function_ids"`
}

// parseRoute checks an http trigger's config and builds its route.
// getenv resolves the environment variables auth names.
func parseRoute(triggerID, functionID, namespace string, config, metadata json.RawMessage, getenv func(string) (string, bool)) (*route, error) {
	var c triggerConfig
	if len(config) == 0 || strings.TrimSpace(string(config)) == "null" {
		return nil, fmt.Errorf("%w: api_path is required", ErrHTTPConfig)
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHTTPConfig, err)
	}
	if c.APIPath == nil || *c.APIPath == "" {
		return nil, fmt.Errorf("%w: api_path is required", ErrHTTPConfig)
	}
	method := strings.ToUpper(strings.TrimSpace(c.HTTPMethod))
	if method == "" {
		method = "GET"
	}
	if !slices.Contains(methods, method) {
		return nil, fmt.Errorf("%w: http_method %q is not one of %s", ErrHTTPConfig, c.HTTPMethod, strings.Join(methods, " "))
	}
	pattern, segs, err := parsePattern(*c.APIPath)
	if err != nil {
		return nil, err
	}
	r := &route{triggerID: triggerID, functionID: functionID, namespace: namespace, method: method, pattern: pattern,
		segments: segs, metadata: metadata, condition: c.Condition}
	for i, id := range c.Middleware {
		if id == "" {
			return nil, fmt.Errorf("%w: middleware_function_ids[%d] is empty", ErrHTTPConfig, i)
		}
	}
	r.middleware = c.Middleware
	if c.Auth != nil {
		if r.auth, err = newAuthenticator(*c.Auth, getenv); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// parsePattern normalises an api_path ("/users/:id/" → "users/:id") and
// splits it. Parameters are ":name" (iii) or "{name}" (axum style).
func parsePattern(p string) (string, []segment, error) {
	pattern := strings.Trim(strings.TrimSpace(p), "/")
	if pattern == "" {
		return "", nil, nil // the root, "/"
	}
	parts := strings.Split(pattern, "/")
	segs := make([]segment, len(parts))
	seen := make(map[string]bool)
	for i, part := range parts {
		name, isParam := strings.CutPrefix(part, ":")
		if !isParam && strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}") {
			name, isParam = part[1:len(part)-1], true
		}
		switch {
		case part == "":
			return "", nil, fmt.Errorf("%w: api_path %q has an empty segment", ErrHTTPConfig, p)
		case isParam && name == "":
			return "", nil, fmt.Errorf("%w: api_path %q has a parameter without a name", ErrHTTPConfig, p)
		case isParam && seen[name]:
			return "", nil, fmt.Errorf("%w: api_path %q names parameter %q twice", ErrHTTPConfig, p, name)
		}
		if isParam {
			seen[name] = true
			segs[i] = segment{value: name, param: true}
		} else {
			segs[i] = segment{value: part}
		}
	}
	return pattern, segs, nil
}

// splitPath splits a request's escaped URL path into unescaped segments,
// ignoring the leading and one trailing "/". ok is false for a path that
// does not unescape.
func splitPath(escaped string) (segs []string, ok bool) {
	p := strings.TrimPrefix(escaped, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil, true
	}
	segs = strings.Split(p, "/")
	for i, s := range segs {
		if !strings.Contains(s, "%") {
			continue
		}
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		segs[i] = u
	}
	return segs, true
}

// node is one level of the route trie. Literal children win over the
// parameter child; matching backtracks when a literal branch has no route
// for the method.
type node struct {
	static map[string]*node
	param  *node
	routes map[string]*route // by method
}

func (n *node) empty() bool {
	return len(n.static) == 0 && n.param == nil && len(n.routes) == 0
}

// table is the set of HTTP routes, safe for concurrent use. Lookups take
// the read lock only; registrations are rare.
type table struct {
	mu   sync.RWMutex
	root node
	byID map[string]*route
}

// routeConflict is a refused route; it matches ErrHTTPRouteConflict, and
// engine.ErrTriggerConflict so that a worker's new route refused only
// because its own previous version's route is in the way (a reload that
// changed the route's config) is parked and takes over when that one goes.
type routeConflict struct{ msg string }

func (e *routeConflict) Error() string        { return e.msg }
func (e *routeConflict) Unwrap() error        { return ErrHTTPRouteConflict }
func (e *routeConflict) Is(target error) bool { return target == engine.ErrTriggerConflict }

func newTable() *table { return &table{byID: make(map[string]*route)} }

// add installs r. A route with r's trigger id is replaced (and stays
// removed if r is refused). Two routes with the same method and shape
// (parameter names ignored) conflict.
func (t *table) add(r *route) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.byID[r.triggerID]; old != nil {
		t.removeLocked(old)
	}
	n := &t.root
	for _, s := range r.segments {
		if s.param {
			if n.param == nil {
				n.param = &node{}
			}
			n = n.param
			continue
		}
		if n.static == nil {
			n.static = make(map[string]*node)
		}
		child := n.static[s.value]
		if child == nil {
			child = &node{}
			n.static[s.value] = child
		}
		n = child
	}
	if other := n.routes[r.method]; other != nil {
		t.pruneLocked(r.segments)
		// iii's wording, then which trigger and function hold the route.
		return &routeConflict{msg: fmt.Sprintf("Route '%s' conflicts with already-registered route '%s' (trigger %s, function %s): "+
			"routes with the same method and structure (parameter names ignored) are not supported; %s wants it for function %s",
			r, other, other.triggerID, other.functionID, r, r.functionID)}
	}
	if n.routes == nil {
		n.routes = make(map[string]*route)
	}
	n.routes[r.method] = r
	t.byID[r.triggerID] = r
	return nil
}

// remove deletes the route of a trigger id and reports whether it existed.
func (t *table) remove(triggerID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.byID[triggerID]
	if r == nil {
		return false
	}
	t.removeLocked(r)
	return true
}

func (t *table) removeLocked(r *route) {
	delete(t.byID, r.triggerID)
	n := &t.root
	for _, s := range r.segments {
		if s.param {
			n = n.param
		} else {
			n = n.static[s.value]
		}
		if n == nil {
			return
		}
	}
	if n.routes[r.method] == r {
		delete(n.routes, r.method)
	}
	t.pruneLocked(r.segments)
}

// pruneLocked removes the empty nodes along a shape.
func (t *table) pruneLocked(segs []segment) {
	var walk func(n *node, i int) bool // reports whether n is now empty
	walk = func(n *node, i int) bool {
		if i == len(segs) {
			return n.empty()
		}
		s := segs[i]
		if s.param {
			if n.param != nil && walk(n.param, i+1) {
				n.param = nil
			}
		} else if c := n.static[s.value]; c != nil && walk(c, i+1) {
			delete(n.static, s.value)
		}
		return n.empty()
	}
	walk(&t.root, 0)
}

// len is the number of routes.
func (t *table) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

// match finds the route for a method and the request's path segments. HEAD
// falls back to the GET route of the same path.
func (t *table) match(method string, segs []string) *route {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if r := matchNode(&t.root, method, segs); r != nil {
		return r
	}
	if method == "HEAD" {
		return matchNode(&t.root, "GET", segs)
	}
	return nil
}

func matchNode(n *node, method string, segs []string) *route {
	if len(segs) == 0 {
		return n.routes[method]
	}
	if c := n.static[segs[0]]; c != nil {
		if r := matchNode(c, method, segs[1:]); r != nil {
			return r
		}
	}
	if n.param != nil && segs[0] != "" {
		return matchNode(n.param, method, segs[1:])
	}
	return nil
}

// pathParams maps a matched route's parameter names to the request's
// segments.
func (r *route) pathParams(segs []string) map[string]string {
	params := make(map[string]string)
	for i, s := range r.segments {
		if s.param && i < len(segs) {
			params[s.value] = segs[i]
		}
	}
	return params
}
