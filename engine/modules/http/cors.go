package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// CORS is the module's cors config. Without it, CORS is permissive: any
// origin, method and header.
type CORS struct {
	// AllowedOrigins lists the origins ("https://app.example.com") allowed
	// to call the API; "*" or an empty list allows any.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedMethods lists the methods a preflight allows; empty allows
	// every method a route may use.
	AllowedMethods []string `yaml:"allowed_methods"`
}

// corsPolicy is a checked CORS config.
type corsPolicy struct {
	anyOrigin  bool
	origins    map[string]bool
	methods    string // Access-Control-Allow-Methods
	permissive bool   // no cors config: also exposes every header
}

func newCORSPolicy(c *CORS) (*corsPolicy, error) {
	if c == nil {
		return &corsPolicy{anyOrigin: true, methods: strings.Join(methods, ", "), permissive: true}, nil
	}
	p := &corsPolicy{origins: make(map[string]bool)}
	for i, o := range c.AllowedOrigins {
		o = strings.TrimSpace(o)
		switch {
		case o == "*":
			p.anyOrigin = true
		case o == "":
			return nil, fmt.Errorf("cors.allowed_origins[%d] is empty", i)
		default:
			p.origins[strings.TrimSuffix(o, "/")] = true
		}
	}
	if len(c.AllowedOrigins) == 0 {
		p.anyOrigin = true
	}
	var ms []string
	for i, m := range c.AllowedMethods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m != "*" && !validHeaderName(m) {
			return nil, fmt.Errorf("cors.allowed_methods[%d] %q is not a method", i, c.AllowedMethods[i])
		}
		if !slices.Contains(ms, m) {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		ms = methods
	}
	p.methods = strings.Join(ms, ", ")
	return p, nil
}

// apply sets the CORS headers of a cross-origin request and answers a
// preflight (OPTIONS with Access-Control-Request-Method) itself, reporting
// true when it did. A disallowed origin gets no CORS headers, so the
// browser refuses the response.
func (p *corsPolicy) apply(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	h := w.Header()
	allowed := p.anyOrigin || p.origins[origin]
	if allowed {
		if p.anyOrigin {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
		}
		if p.permissive && !preflight {
			h.Set("Access-Control-Expose-Headers", "*")
		}
	}
	if !preflight {
		return false
	}
	if allowed {
		h.Set("Access-Control-Allow-Methods", p.methods)
		if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
			h.Set("Access-Control-Allow-Headers", rh)
			h.Add("Vary", "Access-Control-Request-Headers")
		}
		h.Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}
