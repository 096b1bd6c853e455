package tui

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFmtDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{-1, "-"},
		{0, "0ns"},
		{999, "999ns"},
		{time.Microsecond, "1µs"},
		{850 * time.Microsecond, "850µs"},
		{1500 * time.Microsecond, "1.5ms"},
		{12345 * time.Microsecond, "12.3ms"},
		{999 * time.Millisecond, "999ms"},
		{1250 * time.Millisecond, "1.25s"},
		{59 * time.Second, "59s"},
		{125 * time.Second, "2m05s"},
		{3*time.Hour + 7*time.Minute, "3h07m"},
	}
	for _, tt := range tests {
		if got := fmtDuration(tt.in); got != tt.want {
			t.Errorf("fmtDuration(%d) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestFmtUptime(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "-"},
		{45 * time.Second, "45s"},
		{3*time.Minute + 12*time.Second, "3m12s"},
		{2*time.Hour + 5*time.Minute, "2h05m"},
		{76 * time.Hour, "3d04h"},
	}
	for _, tt := range tests {
		if got := fmtUptime(tt.in); got != tt.want {
			t.Errorf("fmtUptime(%v) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestFmtCount(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0"}, {999, "999"}, {1000, "1k"}, {1234, "1.2k"}, {12_345, "12k"},
		{999_999, "999k"}, {3_400_000, "3.4M"}, {42_000_000, "42M"},
	}
	for _, tt := range tests {
		if got := fmtCount(tt.in); got != tt.want {
			t.Errorf("fmtCount(%d) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestSparkline(t *testing.T) {
	tests := []struct {
		in    []int
		width int
		want  string
	}{
		{nil, 4, "    "},
		{[]int{0, 0}, 2, "  "},
		{[]int{1, 2, 4, 8}, 4, "▁▂▄█"},
		{[]int{8, 8}, 4, "  ██"},
		{[]int{1, 2, 3, 4, 5, 6, 7, 8}, 3, "▆▇█"},
		{[]int{5}, 0, ""},
	}
	for _, tt := range tests {
		if got := sparkline(tt.in, tt.width); got != tt.want {
			t.Errorf("sparkline(%v, %d) = %q; want %q", tt.in, tt.width, got, tt.want)
		}
	}
}

func TestPrettyAndCompactJSON(t *testing.T) {
	tests := []struct {
		in      string
		pretty  string
		compact string
	}{
		{"", "null", "null"},
		{`{"a":1,"b":[true,null]}`, "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null\n  ]\n}", `{"a":1,"b":[true,null]}`},
		{"{ \"a\" :\n 1 }", "{\n  \"a\": 1\n}", `{"a":1}`},
		{"not json\nat all", "not json\nat all", "not json at all"},
	}
	for _, tt := range tests {
		if got := prettyJSON(json.RawMessage(tt.in)); got != tt.pretty {
			t.Errorf("prettyJSON(%q) = %q; want %q", tt.in, got, tt.pretty)
		}
		if got := compactJSON(json.RawMessage(tt.in), 80); got != tt.compact {
			t.Errorf("compactJSON(%q) = %q; want %q", tt.in, got, tt.compact)
		}
	}
	if got := compactJSON(json.RawMessage(`{"message":"hello world"}`), 12); got != `{"message":…` {
		t.Errorf("compactJSON cut to 12 = %q; want %q", got, `{"message":…`)
	}
}

func TestPadAndTruncate(t *testing.T) {
	tests := []struct {
		in          string
		width       int
		pad, padL   string
		description string
	}{
		{"abc", 5, "abc  ", "  abc", "shorter"},
		{"abcdef", 4, "abc…", "abc…", "longer"},
		{"日本語", 5, "日本…", "日本…", "wide runes"},
		{"x", 0, "", "", "zero width"},
	}
	for _, tt := range tests {
		if got := pad(tt.in, tt.width); got != tt.pad {
			t.Errorf("%s: pad(%q, %d) = %q; want %q", tt.description, tt.in, tt.width, got, tt.pad)
		}
		if got := padLeft(tt.in, tt.width); got != tt.padL {
			t.Errorf("%s: padLeft(%q, %d) = %q; want %q", tt.description, tt.in, tt.width, got, tt.padL)
		}
	}
}

func TestLineDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string // one char per line: ' ' same, '-' removed, '+' added
	}{
		{"equal", "a b c", "a b c", "   "},
		{"changed middle", "a b c", "a x c", " -+ "},
		{"added end", "a b", "a b c", "  +"},
		{"removed start", "a b c", "b c", "-  "},
		{"all different", "a", "b", "-+"},
		{"empty old", "", "a", "+"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := lineDiff(strings.Fields(tt.a), strings.Fields(tt.b))
			var got strings.Builder
			for _, l := range d {
				got.WriteByte(" -+"[l.Op])
			}
			if got.String() != tt.want {
				t.Errorf("lineDiff(%q, %q) ops = %q; want %q (%v)", tt.a, tt.b, got.String(), tt.want, d)
			}
		})
	}
}

func TestSideBySide(t *testing.T) {
	old := strings.Split(prettyJSON(json.RawMessage(`{"n":1,"same":true}`)), "\n")
	cur := strings.Split(prettyJSON(json.RawMessage(`{"n":2,"same":true}`)), "\n")
	got := sideBySide(lineDiff(old, cur))
	want := [][2]string{
		{"  {", "  {"},
		{`-   "n": 1,`, `+   "n": 2,`},
		{`    "same": true`, `    "same": true`},
		{"  }", "  }"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sideBySide = %q; want %q", got, want)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.5, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %v) = %v; want %v", tt.in, tt.p, got, tt.want)
		}
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a\tb", "a b"},
		{"a\nb\x1b[31m", "a·b·[31m"},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestWithoutEngineFields: the invoke editor offers the last payload without
// the _caller_worker_id the engine added.
func TestWithoutEngineFields(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"name":"you","_caller_worker_id":"w-1"}`, `{"name":"you"}`},
		{`{"name":"you"}`, `{"name":"you"}`},
		{`[1,2]`, `[1,2]`},
		{`"text"`, `"text"`},
	}
	for _, tt := range tests {
		if got := string(withoutEngineFields(json.RawMessage(tt.in))); got != tt.want {
			t.Errorf("withoutEngineFields(%s) = %s; want %s", tt.in, got, tt.want)
		}
	}
}
