package cron

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	// A Monday, half a second past 12:34:56 UTC.
	t0 := time.Date(2025, 3, 10, 12, 34, 56, 500_000_000, time.UTC)
	tests := []struct {
		expr      string
		next      string // RFC3339, UTC
		canonical string // "" = expr
	}{
		{expr: "* * * * * *", next: "2025-03-10T12:34:57Z"},
		{expr: "*/15 * * * * *", next: "2025-03-10T12:35:00Z"},
		{expr: "0 0 * * * *", next: "2025-03-10T13:00:00Z"},
		{expr: "30 15 10 * * *", next: "2025-03-11T10:15:30Z"},
		{expr: "0 0 9 * * MON", next: "2025-03-17T09:00:00Z"},
		{expr: "0 0 9 ? * TUE", next: "2025-03-11T09:00:00Z"},
		{expr: "0 0 0 1 JAN *", next: "2026-01-01T00:00:00Z"},
		{expr: "*/5 * * * *", next: "2025-03-10T12:35:00Z"},      // 5 fields, minute first
		{expr: "0 12 * * 1-5", next: "2025-03-11T12:00:00Z"},     // weekdays at noon
		{expr: "0 0 0 1 1 * 2030", next: "2030-01-01T00:00:00Z"}, // 7 fields, + year
		{expr: "0 0 12 * * * 2025/2", next: "2025-03-11T12:00:00Z"},
		{expr: "0 0 0 1 1 * 2026,2028", next: "2026-01-01T00:00:00Z"},
		{expr: "0 0 0 * * * 2027-2029", next: "2027-01-01T00:00:00Z"},
		{expr: "0 0 0 * * * *", next: "2025-03-11T00:00:00Z"},
		{expr: "@every 5s", next: "2025-03-10T12:35:00Z"},
		{expr: "@every 1m", next: "2025-03-10T12:35:00Z", canonical: "@every 1m0s"},
		{expr: "@hourly", next: "2025-03-10T13:00:00Z"},
		{expr: "@daily", next: "2025-03-11T00:00:00Z"},
		{expr: "@weekly", next: "2025-03-16T00:00:00Z"},
		{expr: "CRON_TZ=Europe/Paris 0 0 9 * * *", next: "2025-03-11T08:00:00Z"},
		{expr: "TZ=Europe/Paris @daily", next: "2025-03-10T23:00:00Z", canonical: "CRON_TZ=Europe/Paris @daily"},
		{expr: "  0   0 *  * * *  ", next: "2025-03-10T13:00:00Z", canonical: "0 0 * * * *"},
	}
	for _, tt := range tests {
		s, err := parseSchedule(tt.expr)
		if err != nil {
			t.Errorf("parseSchedule(%q): %v", tt.expr, err)
			continue
		}
		if got := s.Next(t0).UTC().Format(time.RFC3339); got != tt.next {
			t.Errorf("parseSchedule(%q).Next(%s) = %s, want %s", tt.expr, t0.Format(time.RFC3339Nano), got, tt.next)
		}
		want := tt.canonical
		if want == "" {
			want = tt.expr
		}
		if s.canonical != want {
			t.Errorf("parseSchedule(%q).canonical = %q, want %q", tt.expr, s.canonical, want)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"", "empty expression"},
		{"   ", "empty expression"},
		{"* * * *", "found 4 fields; want 6 (sec min hour day-of-month month day-of-week), 7"},
		{"* * * * * * * *", "found 8 fields"},
		{"60 * * * * *", "above maximum (59)"},
		{"* * 25 * * *", "above maximum (23)"},
		{"* * * * * FOO", "failed to parse int from FOO"},
		{"* * * * * * 1969", "years must be within 1970-2199"},
		{"* * * * * * 2020", "it never fires again (year field \"2020\")"},
		{"* * * * * * abc", "year field \"abc\": bad year"},
		{"* * * * * * 2030-x", "bad range"},
		{"* * * * * * */0", "bad step"},
		{"@every 0s", "whole number of seconds, at least 1s"},
		{"@every 1500ms", "whole number of seconds"},
		{"@every -5s", "at least 1s"},
		{"@every soon", "@every: time: invalid duration"},
		{"@sometimes", "unrecognized descriptor"},
		{"TZ=Mars/Olympus * * * * * *", "unknown time zone \"Mars/Olympus\""},
		{"CRON_TZ=UTC", "time zone prefix without a schedule"},
	}
	for _, tt := range tests {
		s, err := parseSchedule(tt.expr)
		if err == nil {
			t.Errorf("parseSchedule(%q) = %v, want an error containing %q", tt.expr, s.canonical, tt.want)
			continue
		}
		if !errors.Is(err, ErrExpression) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "\""+tt.expr+"\"") {
			t.Errorf("parseSchedule(%q) error = %q, want ErrExpression naming the expression and containing %q", tt.expr, err, tt.want)
		}
	}
}

func TestYearScheduleEnds(t *testing.T) {
	s, err := parseSchedule("0 0 0 1 1 * 2030")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if n := s.Next(after); !n.IsZero() {
		t.Errorf("Next(%s) = %s, want none (2030 is the last year)", after, n)
	}
}
