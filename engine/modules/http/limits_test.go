package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestConcurrencyLimit: with every request slot taken, a request waits
// until its timeout and gets 503; it never reaches a function (the module
// has no engine here, so reaching one would panic).
func TestConcurrencyLimit(t *testing.T) {
	m := New()
	m.ConcurrencyRequestLimit = 1
	m.DefaultTimeout = 50
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	m.log = slog.New(slog.DiscardHandler)
	if err := m.routes.add(mustRoute(t, "busy", "GET", "busy")); err != nil {
		t.Fatal(err)
	}
	m.sem <- struct{}{} // the only slot is busy
	w := httptest.NewRecorder()
	start := time.Now()
	m.ServeHTTP(w, httptest.NewRequest("GET", "/busy", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"SERVICE_UNAVAILABLE"`) {
		t.Errorf("with no free slot: %d %s, want 503 SERVICE_UNAVAILABLE", w.Code, w.Body)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("503 after %v, before the 50ms timeout", d)
	}
	var env envelope
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || env.Error.ErrorID == "" {
		t.Errorf("503 envelope %s has no error_id", w.Body)
	}
}
