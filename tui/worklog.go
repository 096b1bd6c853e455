package tui

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"
)

// workerRecord unwraps a worker's structured log line (log/slog's text or
// JSON form, as a Go worker writes it) into its level and the rest without
// the timestamp, which the line's own event already carries. ok is false
// for any other line.
func workerRecord(line string) (level, rest string, ok bool) {
	if strings.HasPrefix(line, "{") {
		return jsonRecord(line)
	}
	return textRecord(line)
}

// textRecord reads "time=... level=INFO msg=... k=v".
func textRecord(line string) (level, rest string, ok bool) {
	t, after, found := strings.Cut(line, " ")
	if !found || !strings.HasPrefix(t, "time=") {
		return "", "", false
	}
	if _, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(t, "time=")); err != nil {
		return "", "", false
	}
	lv, after, found := strings.Cut(after, " ")
	if !found || !strings.HasPrefix(lv, "level=") {
		return "", "", false
	}
	level = strings.TrimPrefix(lv, "level=")
	msg, attrs, _ := strings.Cut(after, " ")
	if !strings.HasPrefix(msg, "msg=") {
		return "", "", false
	}
	if strings.HasPrefix(msg, `msg="`) {
		// A quoted message may hold spaces: it ends at the closing quote.
		end := closingQuote(after[len(`msg="`):])
		if end < 0 {
			return "", "", false
		}
		msg, attrs = after[:len(`msg="`)+end+1], strings.TrimPrefix(after[len(`msg="`)+end+1:], " ")
		if s, err := unquote(msg[len("msg="):]); err == nil {
			msg = "msg=" + s
		}
	}
	rest = strings.TrimPrefix(msg, "msg=")
	if attrs != "" {
		rest += " " + attrs
	}
	return level, rest, true
}

// closingQuote is the index of the first unescaped '"' in s, or -1.
func closingQuote(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func unquote(s string) (string, error) {
	var v string
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}

// jsonRecord reads {"time":...,"level":...,"msg":...,...}.
func jsonRecord(line string) (level, rest string, ok bool) {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return "", "", false
	}
	lv, ok1 := m[slog.LevelKey].(string)
	msg, ok2 := m[slog.MessageKey].(string)
	if !ok1 || !ok2 {
		return "", "", false
	}
	delete(m, slog.TimeKey)
	delete(m, slog.LevelKey)
	delete(m, slog.MessageKey)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(msg)
	for _, k := range keys {
		v, _ := json.Marshal(m[k])
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return lv, b.String(), true
}
