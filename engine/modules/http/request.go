package httpapi

import (
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"github.com/iii-workbench/iii/engine/channel"
)

// requestObject is the data an HTTP-triggered function receives (spec
// §3.3). request_body and response are channel refs: the function reads
// the raw body from the first and may stream its response into the second
// (they are left out of what a condition function gets, as iii does).
type requestObject struct {
	QueryParams map[string]string `json:"query_params"`
	PathParams  map[string]string `json:"path_params"`
	Headers     map[string]string `json:"headers"`
	Path        string            `json:"path"`   // the registered pattern
	Method      string            `json:"method"` // the request's method
	Body        json.RawMessage   `json:"body"`   // nil encodes as null
	Trigger     requestTrigger    `json:"trigger"`
	RequestBody *channel.Ref      `json:"request_body,omitempty"`
	Response    *channel.Ref      `json:"response,omitempty"`
}

type requestTrigger struct {
	Type   string `json:"type"`
	Path   string `json:"path"`
	Method string `json:"method"` // the route's method
}

// newRequestObject builds the request object of r for route rt. body is
// the request body already read.
func newRequestObject(r *http.Request, rt *route, segs []string, body []byte) *requestObject {
	return &requestObject{
		QueryParams: queryParams(r),
		PathParams:  rt.pathParams(segs),
		Headers:     headers(r),
		Path:        rt.pattern,
		Method:      r.Method,
		Body:        jsonBody(r.Header.Get("Content-Type"), body),
		Trigger:     requestTrigger{Type: "http", Path: rt.pattern, Method: rt.method},
	}
}

// queryParams keeps one value per key, the last one.
func queryParams(r *http.Request) map[string]string {
	out := make(map[string]string)
	for k, vs := range r.URL.Query() {
		out[k] = vs[len(vs)-1]
	}
	return out
}

// headers lowercases names and keeps the last value of each; the Host
// header (which net/http moves out of Header) is put back.
func headers(r *http.Request) map[string]string {
	out := make(map[string]string, len(r.Header)+1)
	for k, vs := range r.Header {
		if len(vs) > 0 {
			out[strings.ToLower(k)] = vs[len(vs)-1]
		}
	}
	if r.Host != "" {
		out["host"] = r.Host
	}
	return out
}

// jsonBody is the parsed body for a JSON content type, else nil (null).
// Invalid JSON, and an empty body, are null too.
func jsonBody(contentType string, body []byte) json.RawMessage {
	if len(body) == 0 || !isJSONType(contentType) || !json.Valid(body) {
		return nil
	}
	return body
}

// isJSONType reports whether a Content-Type is JSON: iii checks that it
// contains "application/json"; a parse failure falls back to that check.
func isJSONType(ct string) bool {
	if ct == "" {
		return false
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt == jsonType
	}
	return strings.Contains(strings.ToLower(ct), jsonType)
}

// middlewareInput is what a middleware function receives.
type middlewareInput struct {
	Phase   string            `json:"phase"`
	Request middlewareRequest `json:"request"`
	Context struct{}          `json:"context"`
}

type middlewareRequest struct {
	PathParams  map[string]string `json:"path_params"`
	QueryParams map[string]string `json:"query_params"`
	Headers     map[string]string `json:"headers"`
	Method      string            `json:"method"`
}

// middlewareResult is what a middleware function returns.
type middlewareResult struct {
	Action   string          `json:"action"` // continue | respond
	Response json.RawMessage `json:"response"`
}
