package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
)

// authConfig is a trigger's "auth" block. The *_key fields name
// environment variables of the engine process, never the secrets
// themselves.
type authConfig struct {
	Type     string `json:"type"`      // bearer | api_key
	TokenKey string `json:"token_key"` // bearer
	Header   string `json:"header"`    // api_key
	ValueKey string `json:"value_key"` // api_key
}

// authenticator checks one route's credentials. It keeps only a digest of
// the secret, so the secret is neither logged nor compared in a way whose
// timing depends on where it differs.
type authenticator struct {
	kind   string // "bearer" or "api_key"
	header string // canonical header name
	digest [sha256.Size]byte
}

// newAuthenticator resolves the secret's environment variable now: a route
// whose secret is missing is refused at registration, not at every request.
func newAuthenticator(c authConfig, getenv func(string) (string, bool)) (*authenticator, error) {
	kind := strings.ToLower(strings.TrimSpace(c.Type))
	var key, field string
	a := &authenticator{kind: kind}
	switch kind {
	case "bearer":
		key, field = c.TokenKey, "auth.token_key"
		a.header = "Authorization"
	case "api_key":
		key, field = c.ValueKey, "auth.value_key"
		if strings.TrimSpace(c.Header) == "" {
			return nil, fmt.Errorf("%w: auth type api_key needs auth.header (the request header carrying the key)", ErrHTTPConfig)
		}
		if !validHeaderName(c.Header) {
			return nil, fmt.Errorf("%w: auth.header %q is not a valid header name", ErrHTTPConfig, c.Header)
		}
		a.header = http.CanonicalHeaderKey(c.Header)
	default:
		return nil, fmt.Errorf("%w: auth.type %q is not bearer or api_key", ErrHTTPConfig, c.Type)
	}
	if key == "" {
		return nil, fmt.Errorf("%w: auth type %s needs %s (the name of an environment variable holding the secret)", ErrHTTPConfig, kind, field)
	}
	secret, ok := getenv(key)
	if !ok {
		return nil, fmt.Errorf("%w: %s names environment variable %s, which is not set in the engine's environment", ErrHTTPConfig, field, key)
	}
	if secret == "" {
		return nil, fmt.Errorf("%w: %s names environment variable %s, which is empty", ErrHTTPConfig, field, key)
	}
	a.digest = sha256.Sum256([]byte(secret))
	return a, nil
}

// allow reports whether the request carries the route's secret.
func (a *authenticator) allow(h http.Header) bool {
	v := h.Get(a.header)
	if a.kind == "bearer" {
		scheme, token, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		v = strings.TrimSpace(token)
	}
	if v == "" {
		return false
	}
	got := sha256.Sum256([]byte(v))
	return subtle.ConstantTimeCompare(got[:], a.digest[:]) == 1
}

// challenge is the WWW-Authenticate value of a 401, or "".
func (a *authenticator) challenge() string {
	if a.kind == "bearer" {
		return `Bearer realm="iii"`
	}
	return ""
}
