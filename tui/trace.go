package tui

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// span is one row of the waterfall.
type span struct {
	id, parent, name, worker, status string
	start                            time.Time
	dur                              time.Duration
	depth                            int
	attrs                            map[string]any
	// activation describes an observer's activation ("" for other
	// calls): its target's span hangs in the trace of the observed call.
	activation string
}

// activationMark prefixes an activation's name in the waterfall.
const activationMark = "↪ "

// Span attributes the engine's spans carry (observability module).
const (
	attrTrigger      = "iii.trigger"
	attrInvocationID = "iii.invocation.id"
	triggerObserve   = "observe" // engine.TriggerKindObserve
)

// tracePane is the Traces view: the waterfall of one trace.
type tracePane struct {
	Common
	traceID string
	focus   string // span to select once loaded
	loading bool
	spans   []span
	cursor  int
	offset  int
	err     error
	local   bool // spans come from the TUI's own events
}

func (p *tracePane) reset(traceID string) {
	*p = tracePane{Common: p.Common, traceID: traceID, loading: traceID != ""}
}

// loaded takes a query answer. Without the observability module the
// waterfall is built from the invocation events the TUI saw itself.
func (p *tracePane) loaded(msg traceMsg, s *state) {
	if msg.traceID != p.traceID {
		return // an answer for a trace no longer shown
	}
	p.loading, p.err, p.spans, p.local = false, msg.err, msg.spans, false
	if msg.err != nil || len(msg.spans) == 0 {
		var local []span
		for i := range s.inv.len() {
			v := s.inv.at(i)
			if v.traceID == p.traceID {
				sp := span{id: v.spanID, parent: v.parentSpanID, name: v.functionID,
					worker: v.target, status: v.status, start: v.started, dur: v.duration}
				if v.activation != nil {
					sp.activation = v.activation.String()
				}
				local = append(local, sp)
			}
		}
		if len(local) > 0 {
			p.spans, p.local = treeOrder(local), true
		}
	}
	for i := range p.spans {
		markActivation(&p.spans[i], s)
	}
	p.cursor = max(slices.IndexFunc(p.spans, func(sp span) bool { return sp.id == p.focus }), 0)
	p.scrollTo()
}

// markActivation describes a span of the observability module that is an
// observer's activation, from the activation event when the TUI saw it.
func markActivation(sp *span, s *state) {
	if sp.activation != "" || sp.attrs == nil || sp.attrs[attrTrigger] != triggerObserve {
		return
	}
	sp.activation = "observer activation"
	id, _ := sp.attrs[attrInvocationID].(string)
	for i := s.inv.len() - 1; i >= 0 && id != ""; i-- {
		if v := s.inv.at(i); v.id == id && v.activation != nil {
			sp.activation = v.activation.String()
			return
		}
	}
}

func (p *tracePane) move(delta int) {
	if len(p.spans) == 0 {
		return
	}
	p.cursor = min(max(p.cursor+delta, 0), len(p.spans)-1)
	p.scrollTo()
}

func (p *tracePane) scrollTo() {
	page := max(p.Height-2, 1)
	if p.cursor < p.offset {
		p.offset = p.cursor
	}
	if p.cursor >= p.offset+page {
		p.offset = p.cursor - page + 1
	}
}

func (p *tracePane) selected() (span, bool) {
	if p.cursor < len(p.spans) {
		return p.spans[p.cursor], true
	}
	return span{}, false
}

func (p *tracePane) render() string {
	st := p.Styles
	var lines []string
	switch {
	case p.traceID == "":
		lines = append(lines, st.Dim.Render(pad("  no invocation selected: pick one in Invocations (4) and press t", p.Width)))
		return fill(lines, p.Height, p.Width)
	case p.loading:
		lines = append(lines, pad(" trace "+p.traceID, p.Width), st.Dim.Render(pad("  loading…", p.Width)))
		return fill(lines, p.Height, p.Width)
	}
	t0, total := traceBounds(p.spans)
	head := fmt.Sprintf(" trace %s · %d spans", p.traceID, len(p.spans))
	if n := countActivations(p.spans); n > 0 {
		head += fmt.Sprintf(" (%d observer activation", n)
		if n > 1 {
			head += "s"
		}
		head += ")"
	}
	head += " · " + fmtDuration(total)
	lines = append(lines, pad(head, p.Width))
	switch {
	case errors.Is(p.err, errObservabilityMissing):
		note := "  observability module not running"
		if p.local {
			note += ": showing the calls this TUI saw"
		}
		lines = append(lines, st.Warn.Render(pad(note, p.Width)))
	case p.err != nil:
		lines = append(lines, st.Error.Render(pad("  "+oneLine(p.err.Error()), p.Width)))
	case len(p.spans) == 0:
		lines = append(lines, st.Dim.Render(pad("  no spans recorded for this trace", p.Width)))
	default:
		lines = append(lines, st.ColHeader.Render(pad(p.columns("SPAN", "WORKER", "DURATION", ""), p.Width)))
	}
	page := max(p.Height-2, 1)
	end := min(p.offset+page, len(p.spans))
	barW := p.barWidth()
	for i := p.offset; i < end; i++ {
		sp := p.spans[i]
		name := strings.Repeat("  ", sp.depth) + sp.name
		if sp.activation != "" {
			name = strings.Repeat("  ", sp.depth) + activationMark + sp.name
		}
		bar := waterfallBar(sp.start.Sub(t0), sp.dur, total, barW)
		line := pad(p.columns(name, dash(sp.worker), fmtDuration(sp.dur), ""), p.Width-barW) + bar
		failed := sp.status != "" && !strings.EqualFold(sp.status, "ok") && !strings.EqualFold(sp.status, "unset")
		switch {
		case i == p.cursor:
			line = st.Selected.Render(line)
		case failed:
			line = st.Error.Render(line)
		default:
			line = pad(p.columns(name, dash(sp.worker), fmtDuration(sp.dur), ""), p.Width-barW) + st.Bar.Render(bar)
		}
		lines = append(lines, line)
	}
	return fill(lines, p.Height, p.Width)
}

func (p *tracePane) barWidth() int { return max(p.Width*2/5, 10) }

// columns lays out the text part of a waterfall row.
func (p *tracePane) columns(name, worker, dur, _ string) string {
	w := p.Width - p.barWidth()
	nameW := max(w-14-9-6, 10)
	return " " + pad(name, nameW) + "  " + pad(worker, 14) + " " + padLeft(dur, 9) + "  "
}

func countActivations(spans []span) int {
	n := 0
	for _, sp := range spans {
		if sp.activation != "" {
			n++
		}
	}
	return n
}

// traceBounds is the earliest start and the span of the whole trace.
func traceBounds(spans []span) (time.Time, time.Duration) {
	if len(spans) == 0 {
		return time.Time{}, 0
	}
	t0, t1 := spans[0].start, spans[0].start.Add(spans[0].dur)
	for _, s := range spans[1:] {
		if s.start.Before(t0) {
			t0 = s.start
		}
		if e := s.start.Add(s.dur); e.After(t1) {
			t1 = e
		}
	}
	return t0, t1.Sub(t0)
}

// waterfallBar draws a span as a bar at its offset in a row of width
// cells representing total.
func waterfallBar(offset, dur, total time.Duration, width int) string {
	if width <= 0 {
		return ""
	}
	if total <= 0 {
		return strings.Repeat("█", 1) + strings.Repeat(" ", width-1)
	}
	from := int(int64(width) * int64(max(offset, 0)) / int64(total))
	n := int((int64(width)*int64(max(dur, 0)) + int64(total)/2) / int64(total))
	from = min(from, width-1)
	n = min(max(n, 1), width-from)
	return strings.Repeat(" ", from) + strings.Repeat("█", n) + strings.Repeat(" ", width-from-n)
}

// treeOrder sorts spans depth-first, children after their parent by start
// time, and sets their depth. Spans whose parent is not in the set are
// roots.
func treeOrder(spans []span) []span {
	byID := make(map[string]bool, len(spans))
	for _, s := range spans {
		byID[s.id] = true
	}
	children := map[string][]span{}
	for _, s := range spans {
		parent := s.parent
		if !byID[parent] || parent == s.id {
			parent = ""
		}
		children[parent] = append(children[parent], s)
	}
	for _, c := range children {
		slices.SortStableFunc(c, func(a, b span) int { return cmp.Or(a.start.Compare(b.start), cmp.Compare(a.id, b.id)) })
	}
	out := make([]span, 0, len(spans))
	seen := map[string]bool{}
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		for _, s := range children[parent] {
			if seen[s.id] {
				continue
			}
			seen[s.id] = true
			s.depth = depth
			out = append(out, s)
			walk(s.id, depth+1)
		}
	}
	walk("", 0)
	return out
}

// parseTrace reads engine::traces::tree's answer: nested nodes with
// "children", or a flat list of spans with parent ids, at the top level or
// under "spans"/"roots"/"tree". Field names follow the usual span
// vocabulary (span_id, parent_span_id, name, start/end times or a
// duration).
func parseTrace(raw json.RawMessage) ([]span, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	var spans []span
	var walk func(v any, parent string)
	walk = func(v any, parent string) {
		switch x := v.(type) {
		case []any:
			for _, it := range x {
				walk(it, parent)
			}
		case map[string]any:
			id := strField(x, "span_id", "spanId", "id")
			if id == "" {
				for _, k := range []string{"spans", "roots", "tree", "root", "trace", "children"} {
					if c, ok := x[k]; ok {
						walk(c, parent)
					}
				}
				return
			}
			sp := spanOf(x)
			if sp.parent == "" {
				sp.parent = parent
			}
			spans = append(spans, sp)
			for _, k := range []string{"children", "spans"} {
				if c, ok := x[k]; ok {
					walk(c, id)
				}
			}
		}
	}
	walk(v, "")
	return treeOrder(spans), nil
}

func spanOf(m map[string]any) span {
	sp := span{
		id:     strField(m, "span_id", "spanId", "id"),
		parent: strField(m, "parent_span_id", "parentSpanId", "parent_id"),
		name:   strField(m, "name", "function_id", "function", "span_name"),
		worker: strField(m, "worker", "worker_name", "service_name", "service"),
		start:  timeField(m, "start_time", "start_time_unix_nano", "startTimeUnixNano", "start_time_ms", "start", "started_at", "timestamp"),
	}
	switch s := m["status"].(type) {
	case string:
		sp.status = s
	case map[string]any:
		sp.status = strField(s, "code", "status")
		if c, ok := s["code"].(float64); ok {
			sp.status = map[float64]string{0: "unset", 1: "ok", 2: "error"}[c]
		}
	}
	if sp.status == "" {
		sp.status = strField(m, "status_code", "statusCode")
	}
	if a, ok := m["attributes"].(map[string]any); ok {
		sp.attrs = a
		if sp.worker == "" {
			sp.worker = strField(a, "iii.worker", "worker", "iii.worker.name", "service.name")
		}
	}
	end := timeField(m, "end_time", "end_time_unix_nano", "endTimeUnixNano", "end_time_ms", "end", "ended_at")
	switch {
	case !end.IsZero() && !sp.start.IsZero():
		sp.dur = end.Sub(sp.start)
	case num(m, "duration_ns") > 0:
		sp.dur = time.Duration(num(m, "duration_ns"))
	case num(m, "duration_us") > 0:
		sp.dur = time.Duration(num(m, "duration_us") * 1e3)
	case num(m, "duration_ms") > 0:
		sp.dur = time.Duration(num(m, "duration_ms") * 1e6)
	default:
		if s, ok := m["duration"].(string); ok {
			sp.dur, _ = time.ParseDuration(s)
		} else if f := num(m, "duration"); f > 0 {
			sp.dur = time.Duration(f * 1e6) // milliseconds, as iii's console shows
		}
	}
	sp.name, sp.worker = oneLine(sp.name), oneLine(sp.worker)
	return sp
}

func num(m map[string]any, k string) float64 {
	switch v := m[k].(type) {
	case float64:
		return v
	case string:
		var f float64
		if json.Unmarshal([]byte(v), &f) == nil {
			return f
		}
	}
	return 0
}

// spanDetail is the detail text of a span.
func spanDetail(sp span) []string {
	lines := []string{
		"span      " + sp.id,
		"parent    " + dash(sp.parent),
		"name      " + sp.name,
		"worker    " + dash(sp.worker),
		"status    " + dash(sp.status),
		"duration  " + fmtDuration(sp.dur),
	}
	if sp.activation != "" {
		lines = append(lines, "observer  "+sp.activation)
	}
	if !sp.start.IsZero() {
		lines = append(lines, "start     "+sp.start.Format("15:04:05.000000"))
	}
	if len(sp.attrs) > 0 {
		lines = append(lines, "", "attributes")
		for _, k := range slices.Sorted(maps.Keys(sp.attrs)) {
			b, _ := json.Marshal(sp.attrs[k])
			lines = append(lines, "  "+k+" = "+oneLine(string(b)))
		}
	}
	return lines
}
