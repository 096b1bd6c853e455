// Package httpfunctions is the HTTP-functions module (iii's
// HttpFunctionsModule / iii-http-functions): it serves the functions
// workers register with an `invocation` block (spec §2.11) by calling the
// URL they name.
//
// A call POSTs (or GETs, PUTs, ... as configured) the JSON payload to the
// URL with the headers Content-Type: application/json, x-iii-Function-Path,
// x-iii-Invocation-ID, x-iii-Timestamp, traceparent and x-iii-Trace-ID when
// the call has a trace, the configured headers, and the auth: bearer
// (Authorization: Bearer $token_key), api_key (header: $value_key) or hmac
// (x-iii-Signature: sha256=hex(HMAC-SHA256($secret_key,
// "<timestamp>:<base64 body>"))), where $X is the engine's environment
// variable named X, read at each call (unset: missing_env_var).
//
// The answer: 2xx with an empty body is no result, 2xx JSON is the result,
// any other 2xx body is invalid_response; 1xx/3xx (redirects are not
// followed) give the JSON body if there is one; 4xx/5xx give the body's
// {"error":{"code","message"}} or http_error. A transport failure or the
// function's timeout_ms (default 30 s, at most 60 s) is http_request_failed.
//
// Security (config `security:`, iii's keys): url_allowlist (glob patterns
// on the URL's host, default ["*"]), require_https (default true) and
// block_private_ips (default true). Private, loopback, link-local and
// other non-public addresses are refused on the address actually dialled,
// after DNS resolution, so a name that resolves (or re-resolves) to one
// cannot slip through; no proxy is used. A refused URL is
// url_validation_failed.
//
// Deviation from iii: iii drops a registration whose URL fails the policy
// or whose auth variable is unset, so its callers see function_not_found.
// Here the function is registered and each call fails with
// url_validation_failed or missing_env_var, which says what is wrong. A
// malformed invocation block (no url, unknown method or auth type) is
// refused; calls then get function_not_found naming the reason.
package httpfunctions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/protocol"
)

// WorkerName is the in-process worker serving the functions.
const WorkerName = "iii-http-functions"

// Error codes (spec §3.1).
const (
	CodeURLValidationFailed = "url_validation_failed"
	CodeMissingEnvVar       = "missing_env_var"
	CodeHTTPError           = "http_error"
	CodeRequestFailed       = "http_request_failed"
	CodeResponseFailed      = "http_response_failed"
	CodeInvalidResponse     = "invalid_response"
)

// Limits.
const (
	DefaultTimeout  = 30 * time.Second
	MaxTimeout      = 60 * time.Second
	MaxResponseBody = 16 << 20
)

func init() {
	module.Register(module.Info{ID: "httpfunctions",
		Aliases: []string{"HttpFunctionsModule", "modules::http_functions::HttpFunctionsModule", WorkerName},
		New:     func() module.Module { return New() }})
}

// New returns the module with its default (strict) security settings.
func New() *Module {
	return &Module{Security: Security{URLAllowlist: []string{"*"}, BlockPrivateIPs: true, RequireHTTPS: true}}
}

// Module is the HTTP-functions module. Its exported fields are its
// config.yaml keys.
type Module struct {
	Security Security `yaml:"security"`

	eng    *engine.Engine
	log    *slog.Logger
	client *http.Client
}

// Security is the URL policy of every HTTP-invoked function.
type Security struct {
	URLAllowlist    []string `yaml:"url_allowlist"`
	BlockPrivateIPs bool     `yaml:"block_private_ips"`
	RequireHTTPS    bool     `yaml:"require_https"`
}

// ID implements module.Module.
func (m *Module) ID() string { return "httpfunctions" }

// Validate checks the allowlist patterns.
func (m *Module) Validate() error {
	for _, p := range m.Security.URLAllowlist {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("security.url_allowlist: bad pattern %q: %w", p, err)
		}
	}
	return nil
}

// Start implements module.Module: the engine hands the module every
// registerfunction that carries an invocation.
func (m *Module) Start(_ context.Context, h *module.Host) error {
	m.eng = h.Engine
	m.log = h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: m.checkDial}
	m.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would dial for us, past the address check
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   50,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: MaxTimeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       MaxTimeout,
	}
	m.eng.SetExternalFunctionProvider(WorkerName, m)
	return nil
}

// Stop implements module.Module: the HTTP-invoked functions go with it.
func (m *Module) Stop(context.Context) error {
	if m.eng != nil {
		m.eng.SetExternalFunctionProvider(WorkerName, nil)
	}
	if m.client != nil {
		m.client.CloseIdleConnections()
	}
	return nil
}

// invocation is registerfunction.invocation.
type invocation struct {
	URL       string            `json:"url"`
	Method    string            `json:"method"`
	TimeoutMS *int64            `json:"timeout_ms"`
	Headers   map[string]string `json:"headers"`
	Auth      *auth             `json:"auth"`
}

// auth is invocation.auth; the *_key fields name environment variables.
type auth struct {
	Type      string `json:"type"`
	TokenKey  string `json:"token_key"`
	Header    string `json:"header"`
	ValueKey  string `json:"value_key"`
	SecretKey string `json:"secret_key"`
}

// function is one HTTP-invoked function.
type function struct {
	m       *Module
	id      string
	inv     invocation
	url     *url.URL
	timeout time.Duration
	policy  error // why the URL breaks the policy, or nil
}

// ExternalHandler implements engine.ExternalFunctionProvider.
func (m *Module) ExternalHandler(fn engine.ExternalFunction) (engine.Handler, error) {
	var inv invocation
	if err := json.Unmarshal(fn.Invocation, &inv); err != nil {
		return nil, fmt.Errorf("invocation: %w", err)
	}
	if inv.URL == "" {
		return nil, errors.New("invocation.url is required")
	}
	u, err := url.Parse(inv.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("invocation.url %q is not an http(s) URL", inv.URL)
	}
	inv.Method = strings.ToUpper(inv.Method)
	switch inv.Method {
	case "":
		inv.Method = http.MethodPost
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return nil, fmt.Errorf("invocation.method %q: want GET, POST, PUT, PATCH or DELETE", inv.Method)
	}
	if a := inv.Auth; a != nil {
		switch {
		case a.Type == "bearer" && a.TokenKey != "":
		case a.Type == "api_key" && a.Header != "" && a.ValueKey != "":
		case a.Type == "hmac" && a.SecretKey != "":
		default:
			return nil, fmt.Errorf("invocation.auth: want {type: bearer, token_key}, {type: api_key, header, value_key} or {type: hmac, secret_key}, got type %q with its keys missing or unknown", a.Type)
		}
	}
	f := &function{m: m, id: fn.ID, inv: inv, url: u, timeout: DefaultTimeout}
	if inv.TimeoutMS != nil && *inv.TimeoutMS > 0 {
		f.timeout = min(time.Duration(*inv.TimeoutMS)*time.Millisecond, MaxTimeout)
	}
	if f.policy = m.checkURL(u); f.policy != nil {
		m.log.Warn("HTTP-invoked function breaks the URL policy; its calls will fail with url_validation_failed",
			"function_id", fn.ID, "url", inv.URL, "why", f.policy)
	}
	if a := inv.Auth; a != nil {
		if _, err := a.secret(); err != nil {
			m.log.Warn("HTTP-invoked function's auth variable is not set; its calls will fail", "function_id", fn.ID, "err", err)
		}
	}
	m.log.Debug("HTTP-invoked function registered", "function_id", fn.ID, "url", inv.URL, "method", inv.Method, "worker_id", fn.WorkerID)
	return f.call, nil
}

// checkURL applies the static part of the policy: scheme and allowlist.
func (m *Module) checkURL(u *url.URL) error {
	if m.Security.RequireHTTPS && u.Scheme != "https" {
		return fmt.Errorf("HTTPS is required (security.require_https), got %s", u.Scheme)
	}
	host := u.Hostname()
	for _, p := range m.Security.URLAllowlist {
		if ok, _ := path.Match(p, host); ok {
			return nil
		}
	}
	return fmt.Errorf("host %s is not in security.url_allowlist", host)
}

// blockedError is a dial refused by block_private_ips.
type blockedError struct{ addr string }

func (b *blockedError) Error() string {
	return fmt.Sprintf("address %s is private, loopback or otherwise non-public (security.block_private_ips)", b.addr)
}

// checkDial runs on the resolved address of every connection the client
// opens, so DNS answers cannot route a call to a private address.
func (m *Module) checkDial(_, address string, _ syscall.RawConn) error {
	if !m.Security.BlockPrivateIPs {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &blockedError{addr: address}
	}
	if NonPublic(ap.Addr()) {
		return &blockedError{addr: ap.Addr().String()}
	}
	return nil
}

var (
	cgnat = netip.MustParsePrefix("100.64.0.0/10")
	docs  = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")
	broadcast = netip.MustParseAddr("255.255.255.255")
)

// NonPublic reports whether ip must not be dialled under block_private_ips:
// loopback, private (RFC 1918, fc00::/7), link-local, unspecified,
// multicast, broadcast, documentation, carrier-grade NAT and "this
// network" addresses, IPv4-mapped IPv6 forms included.
func NonPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || ip == broadcast ||
		cgnat.Contains(ip) || thisNet.Contains(ip) {
		return true
	}
	for _, p := range docs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func fail(code, format string, args ...any) error {
	return &protocol.ErrorBody{Code: code, Message: fmt.Sprintf(format, args...)}
}

// secret reads the environment variable the auth names.
func (a *auth) secret() (string, error) {
	key := a.TokenKey
	switch a.Type {
	case "api_key":
		key = a.ValueKey
	case "hmac":
		key = a.SecretKey
	}
	v, ok := os.LookupEnv(key)
	if !ok {
		return "", fail(CodeMissingEnvVar, "environment variable %s (the %s auth's secret) is not set on the engine host", key, a.Type)
	}
	return v, nil
}

// call serves one invocation.
func (f *function) call(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	if f.policy != nil {
		return nil, fail(CodeURLValidationFailed, "%s: %v", f.inv.URL, f.policy)
	}
	body := []byte(call.Data)
	if len(body) == 0 {
		body = []byte("null")
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, f.inv.Method, f.inv.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fail(CodeRequestFailed, "build request for %s: %v", f.inv.URL, err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("x-iii-Function-Path", f.id)
	h.Set("x-iii-Invocation-ID", call.InvocationID)
	h.Set("x-iii-Timestamp", ts)
	if call.Traceparent != "" {
		h.Set("traceparent", call.Traceparent)
		if parts := strings.Split(call.Traceparent, "-"); len(parts) == 4 {
			h.Set("x-iii-Trace-ID", parts[1])
		}
	}
	for k, v := range f.inv.Headers {
		h.Set(k, v)
	}
	if a := f.inv.Auth; a != nil {
		secret, err := a.secret()
		if err != nil {
			return nil, err
		}
		switch a.Type {
		case "bearer":
			h.Set("Authorization", "Bearer "+secret)
		case "api_key":
			h.Set(a.Header, secret)
		case "hmac":
			h.Set("x-iii-Signature", Sign(body, secret, ts))
		}
	}
	resp, err := f.m.client.Do(req)
	if err != nil {
		var blocked *blockedError
		switch {
		case errors.As(err, &blocked):
			return nil, fail(CodeURLValidationFailed, "%s: %v", f.inv.URL, blocked)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
			return nil, fail(CodeRequestFailed, "%s %s: no answer within %dms (timeout_ms)", f.inv.Method, f.inv.URL, f.timeout.Milliseconds())
		}
		return nil, fail(CodeRequestFailed, "%s %s: %v", f.inv.Method, f.inv.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody+1))
	if err != nil {
		return nil, fail(CodeResponseFailed, "read the answer of %s: %v", f.inv.URL, err)
	}
	if len(raw) > MaxResponseBody {
		return nil, fail(CodeResponseFailed, "the answer of %s is over %d bytes", f.inv.URL, MaxResponseBody)
	}
	return answer(resp.StatusCode, raw)
}

// answer maps an HTTP answer to the function's outcome.
func answer(status int, raw []byte) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	switch {
	case status >= 200 && status < 300:
		if len(trimmed) == 0 {
			return nil, nil
		}
		if !json.Valid(trimmed) {
			return nil, fail(CodeInvalidResponse, "HTTP %d answer is not JSON: %s", status, snippet(trimmed))
		}
		return json.RawMessage(trimmed), nil
	case status < 400:
		if json.Valid(trimmed) && len(trimmed) > 0 {
			return json.RawMessage(trimmed), nil
		}
		return nil, nil
	}
	var e struct {
		Error *struct {
			Code    *string `json:"code"`
			Message *string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(trimmed, &e) == nil && e.Error != nil {
		code, msg := CodeHTTPError, "HTTP request failed"
		if e.Error.Code != nil {
			code = *e.Error.Code
		}
		if e.Error.Message != nil {
			msg = *e.Error.Message
		}
		return nil, &protocol.ErrorBody{Code: code, Message: msg}
	}
	return nil, fail(CodeHTTPError, "HTTP %d %s", status, http.StatusText(status))
}

func snippet(b []byte) string {
	if len(b) > 100 {
		return strconv.Quote(string(b[:100])) + "..."
	}
	return strconv.Quote(string(b))
}

// Sign is the x-iii-Signature of body sent at timestamp (unix seconds):
// "sha256=" + hex HMAC-SHA256 of "<timestamp>:<base64 body>" under secret.
func Sign(body []byte, secret, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + ":" + base64.StdEncoding.EncodeToString(body)))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
