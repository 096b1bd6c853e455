package httpapi

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/iii-workbench/iii/engine/protocol"
)

// ErrHTTPResponse is returned by mapResponse for a function result that
// cannot become an HTTP response (a bad status_code or header).
var ErrHTTPResponse = errors.New("http trigger: invalid response")

// response is an HTTP response ready to write.
type response struct {
	status int
	header http.Header
	body   []byte
}

// managedHeaders are set by the server itself; a function's values for
// them are dropped.
var managedHeaders = map[string]bool{
	"Content-Length":    true,
	"Transfer-Encoding": true,
	"Connection":        true,
	"Keep-Alive":        true,
	"Proxy-Connection":  true,
	"Upgrade":           true,
	"Trailer":           true,
	"Te":                true,
}

const jsonType = "application/json"

// mapResponse turns a function's result into an HTTP response, as iii does
// (spec §3.3), with one deliberate difference for results that are not a
// response object:
//
//   - An object with at least one of status_code, headers, body is a
//     response object: status_code (default 200), headers (an object, or
//     an array of "Name: value" strings), body (default {}). With a
//     content-type header, a string body is sent as its raw bytes and any
//     other body as its JSON text; without one the body is JSON and
//     content-type is application/json. A null body sends no body at all.
//   - Anything else (an object with none of those keys, an array, a
//     string, a number, a boolean) is sent as the JSON body of a 200. iii
//     would read such an object as an empty response object and send {};
//     sending what the function returned is what its author meant.
//   - No result (or JSON null) is an empty response object: 200 with {}.
func mapResponse(result json.RawMessage) (response, error) {
	raw := bytes.TrimSpace(result)
	if len(raw) == 0 || string(raw) == "null" {
		return jsonResponse(http.StatusOK, []byte("{}")), nil
	}
	if raw[0] != '{' {
		return jsonResponse(http.StatusOK, raw), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return response{}, fmt.Errorf("%w: result is not valid JSON: %v", ErrHTTPResponse, err)
	}
	statusRaw, hasStatus := obj["status_code"]
	headersRaw, hasHeaders := obj["headers"]
	body, hasBody := obj["body"]
	if !hasStatus && !hasHeaders && !hasBody {
		return jsonResponse(http.StatusOK, raw), nil
	}
	resp := response{status: http.StatusOK, header: make(http.Header)}
	if hasStatus && !isNull(statusRaw) {
		s, err := statusCode(statusRaw)
		if err != nil {
			return response{}, err
		}
		resp.status = s
	}
	if hasHeaders {
		if err := addHeaders(resp.header, headersRaw); err != nil {
			return response{}, err
		}
	}
	ct := resp.header.Get("Content-Type")
	switch {
	case !hasBody:
		resp.body = []byte("{}")
		if ct == "" {
			resp.header.Set("Content-Type", jsonType)
		}
	case isNull(body):
		// No body.
	case ct != "" && body[0] == '"':
		var s string
		if err := json.Unmarshal(body, &s); err != nil {
			return response{}, fmt.Errorf("%w: body: %v", ErrHTTPResponse, err)
		}
		resp.body = []byte(s)
	case ct != "":
		resp.body = body
	default:
		resp.body = body
		resp.header.Set("Content-Type", jsonType)
	}
	return resp, nil
}

func jsonResponse(status int, body []byte) response {
	return response{status: status, header: http.Header{"Content-Type": {jsonType}}, body: body}
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// statusCode reads status_code: an integer (integral floats too, as some
// SDKs send them) from 200 to 599. 1xx cannot be a final response.
func statusCode(raw json.RawMessage) (int, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || f < 200 || f > 599 {
		return 0, fmt.Errorf("%w: status_code %s is not an integer from 200 to 599", ErrHTTPResponse, raw)
	}
	return int(f), nil
}

// addHeaders adds a response object's headers: an object of name → value
// (a string, a number or boolean as its JSON text, or an array of those
// for repeated headers) or an array of "Name: value" strings.
func addHeaders(h http.Header, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || isNull(raw) {
		return nil
	}
	switch raw[0] {
	case '[':
		var lines []string
		if err := json.Unmarshal(raw, &lines); err != nil {
			return fmt.Errorf("%w: headers must be an object or an array of \"Name: value\" strings: %v", ErrHTTPResponse, err)
		}
		for i, line := range lines {
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				return fmt.Errorf("%w: headers[%d] %q is not \"Name: value\"", ErrHTTPResponse, i, line)
			}
			if err := addHeader(h, strings.TrimSpace(name), strings.TrimSpace(value)); err != nil {
				return err
			}
		}
		return nil
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("%w: headers: %v", ErrHTTPResponse, err)
		}
		for name, v := range obj {
			values, err := headerValues(v)
			if err != nil {
				return fmt.Errorf("%w: header %q: %v", ErrHTTPResponse, name, err)
			}
			for _, value := range values {
				if err := addHeader(h, name, value); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%w: headers must be an object or an array of \"Name: value\" strings, got %s", ErrHTTPResponse, raw)
}

func headerValues(v json.RawMessage) ([]string, error) {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0 || isNull(v):
		return nil, nil
	case v[0] == '"':
		var s string
		err := json.Unmarshal(v, &s)
		return []string{s}, err
	case v[0] == '[':
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, err
		}
		var out []string
		for _, item := range items {
			if item = bytes.TrimSpace(item); len(item) > 0 && (item[0] == '[' || item[0] == '{') {
				return nil, fmt.Errorf("nested value %s", item)
			}
			vs, err := headerValues(item)
			if err != nil {
				return nil, err
			}
			out = append(out, vs...)
		}
		return out, nil
	case v[0] == '{':
		return nil, fmt.Errorf("value is an object")
	default: // number or boolean
		return []string{string(v)}, nil
	}
}

func addHeader(h http.Header, name, value string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("%w: header name %q is not a valid token", ErrHTTPResponse, name)
	}
	if !validHeaderValue(value) {
		return fmt.Errorf("%w: header %s has a control character in its value", ErrHTTPResponse, name)
	}
	key := http.CanonicalHeaderKey(name)
	if managedHeaders[key] {
		return nil
	}
	h.Add(key, value)
	return nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue refuses control characters other than tab (a CR or LF
// would split the response).
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// Error codes of the HTTP error envelope.
const (
	codeNotFound       = "NOT_FOUND"
	codeUnauthorized   = "UNAUTHORIZED"
	codeTooLarge       = "PAYLOAD_TOO_LARGE"
	codeBadRequest     = "BAD_REQUEST"
	codeRequestTimeout = "REQUEST_TIMEOUT"
	codeTimeout        = protocol.CodeTimeout
	codeMiddlewareTime = "MIDDLEWARE_TIMEOUT"
	codeInternal       = "INTERNAL_ERROR"
	codeUnavailable    = "SERVICE_UNAVAILABLE"
	codeConditionFalse = "CONDITION_NOT_MET"
)

// envelope is the HTTP API's error body:
// {"error":{"code","message","error_id"}}; error_id only on 5xx.
type envelope struct {
	Error   envelopeError `json:"error"`
	Skipped bool          `json:"skipped,omitempty"`
}

type envelopeError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	ErrorID string `json:"error_id,omitempty"`
}

// errorResponse builds an error envelope response. A 5xx gets a fresh
// error_id, returned so the caller can log it next to the cause.
func errorResponse(status int, code, message string) (response, string) {
	env := envelope{Error: envelopeError{Code: code, Message: message}}
	if status >= 500 {
		env.Error.ErrorID = newErrorID()
	}
	body, _ := json.Marshal(env)
	return jsonResponse(status, body), env.Error.ErrorID
}

func newErrorID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
