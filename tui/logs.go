package tui

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// logPane is the Logs view: every worker's output, or one worker's, as a
// tail that follows new lines until the user scrolls.
type logPane struct {
	Common
	follow bool
	offset int    // first visible line when not following
	worker string // "" for all workers
}

func (p *logPane) entries(s *state, q string) []logEntry {
	q = strings.ToLower(q)
	out := make([]logEntry, 0, s.logs.len())
	for i := range s.logs.len() {
		e := s.logs.at(i)
		if p.worker != "" && e.worker != p.worker {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(e.line), q) && !strings.Contains(strings.ToLower(e.worker), q) {
			continue
		}
		out = append(out, e)
	}
	return out
}

func (p *logPane) scroll(s *state, q string, delta int) {
	n := len(p.entries(s, q))
	page := max(p.Height, 1)
	last := max(n-page, 0)
	if p.follow {
		p.offset, p.follow = last, false
	}
	p.offset = min(max(p.offset+delta, 0), last)
	if delta > 0 && p.offset == last {
		p.follow = true
	}
}

// cycleWorker steps the worker filter through all workers that logged.
func (p *logPane) cycleWorker(s *state) {
	seen := map[string]bool{}
	for i := range s.logs.len() {
		seen[s.logs.at(i).worker] = true
	}
	for name := range s.procs {
		seen[name] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	names = append([]string{""}, names...)
	i := slices.Index(names, p.worker)
	p.worker = names[(i+1)%len(names)]
}

func (p *logPane) status() string {
	mode := "follow"
	if !p.follow {
		mode = "scroll"
	}
	w := "all workers"
	if p.worker != "" {
		w = "worker " + p.worker
	}
	return p.Styles.Dim.Render(w + " · " + mode)
}

func (p *logPane) render(s *state, q string) string {
	es := p.entries(s, q)
	page := max(p.Height, 1)
	start := p.offset
	if p.follow {
		start = max(len(es)-page, 0)
	}
	start = min(start, max(len(es)-page, 0))
	end := min(start+page, len(es))
	lines := make([]string, 0, page)
	if len(es) == 0 {
		msg := "no log lines yet"
		if p.worker != "" || q != "" {
			msg = "no log lines match"
		}
		lines = append(lines, p.Styles.Dim.Render(pad("  "+msg, p.Width)))
	}
	// The worker and stream columns are as wide as the page's widest, up
	// to a bound, so the lines keep the room.
	nameW, streamW := 4, 6
	for _, e := range es[start:end] {
		nameW = min(max(nameW, lipglossWidth(e.worker)), 18)
		streamW = min(max(streamW, lipglossWidth(e.stream)), 8)
	}
	for _, e := range es[start:end] {
		prefix := e.at.Format("15:04:05.000") + "  " + pad(e.worker, nameW) + "  " + pad(e.stream, streamW) + "  "
		line := pad(prefix+e.line, p.Width)
		switch strings.ToLower(e.stream) {
		case "stderr", "warn", "warning":
			line = p.Styles.Warn.Render(line)
		case "error", "fatal":
			line = p.Styles.Error.Render(line)
		case "install":
			line = p.Styles.Dim.Render(line)
		}
		lines = append(lines, line)
	}
	return fill(lines, p.Height, p.Width)
}

// backfill puts records read from the log store before the lines that
// arrived live (dropping any the live tail already has).
func (p *logPane) backfill(s *state, entries []logEntry) {
	if len(entries) == 0 {
		return
	}
	var live []logEntry
	for i := range s.logs.len() {
		live = append(live, s.logs.at(i))
	}
	if len(live) > 0 {
		first := live[0].at
		entries = slices.DeleteFunc(entries, func(e logEntry) bool { return !e.at.Before(first) })
	}
	slices.SortStableFunc(entries, func(a, b logEntry) int { return a.at.Compare(b.at) })
	s.logs.reset()
	for _, e := range entries {
		s.logs.push(e)
	}
	for _, e := range live {
		s.logs.push(e)
	}
}

// parseLogs reads engine::logs::list's answer. The shape is the
// observability module's; this accepts a list of records at the top level
// or under a "logs"/"records"/"items" key, with the usual field names.
func parseLogs(raw json.RawMessage) []logEntry {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	items := findList(v, "logs", "records", "items", "entries", "data")
	out := make([]logEntry, 0, len(items))
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			continue
		}
		e := logEntry{
			at: timeField(m, "timestamp_unix_nano", "timestamp", "time", "timestamp_ms", "time_unix_nano", "timeUnixNano",
				"observed_timestamp_unix_nano", "observed_timestamp", "at"),
			worker: strField(m, "worker", "worker_name", "service_name", "service"),
			stream: strField(m, "stream", "severity_text", "severityText", "severity", "level"),
			line:   strField(m, "body", "message", "msg", "line"),
		}
		// A managed process's output keeps its stream, as in the live tail.
		if src := strField(m, "source"); src == "stdout" || src == "stderr" || src == "install" {
			e.stream = src
		}
		if e.worker == "" {
			for _, k := range []string{"attributes", "resource"} {
				if a, ok := m[k].(map[string]any); ok {
					e.worker = strField(a, "worker", "iii.worker", "worker_name", "service.name", "service_name")
				}
				if e.worker != "" {
					break
				}
			}
		}
		e.worker, e.line = oneLine(e.worker), oneLine(e.line)
		if e.line != "" {
			out = append(out, e)
		}
	}
	return out
}

// findList finds the record list in a decoded JSON answer.
func findList(v any, keys ...string) []any {
	switch x := v.(type) {
	case []any:
		return x
	case map[string]any:
		for _, k := range keys {
			if l, ok := x[k].([]any); ok {
				return l
			}
		}
	}
	return nil
}

func strField(m map[string]any, keys ...string) string {
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			if v != "" {
				return v
			}
		case map[string]any:
			// OTLP AnyValue: {"stringValue": "..."}
			if s, ok := v["stringValue"].(string); ok && s != "" {
				return s
			}
		}
	}
	return ""
}

// timeField reads a timestamp given as RFC 3339 text or as a number of
// seconds, milliseconds, microseconds or nanoseconds since the epoch
// (told apart by magnitude).
func timeField(m map[string]any, keys ...string) time.Time {
	for _, k := range keys {
		if t, ok := parseTime(m[k]); ok {
			return t
		}
	}
	return time.Time{}
}

func parseTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case float64:
		return epoch(x), x > 0
	case string:
		if x == "" {
			return time.Time{}, false
		}
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return t, true
		}
		var f float64
		if err := json.Unmarshal([]byte(x), &f); err == nil && f > 0 {
			return epoch(f), true
		}
	}
	return time.Time{}, false
}

func epoch(x float64) time.Time {
	switch {
	case x > 1e17:
		return time.Unix(0, int64(x))
	case x > 1e14:
		return time.UnixMicro(int64(x))
	case x > 1e11:
		return time.UnixMilli(int64(x))
	default:
		return time.Unix(0, int64(x*1e9))
	}
}
