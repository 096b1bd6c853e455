package tui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"
)

// Pure formatting helpers. Everything here is deterministic and
// table-tested; the views only arrange their output.

// fmtDuration renders a call duration compactly with three significant
// digits: 850µs, 12.3ms, 1.25s, 2m05s. Negative durations render as "-".
func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	case d < time.Minute:
		return sig3(float64(d)/float64(time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

// sig3 formats v (>= 1) with three significant digits, dropping a
// trailing ".0".
func sig3(v float64) string {
	var s string
	switch {
	case v >= 100:
		s = strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case v >= 10:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// fmtUptime renders how long something has been up: 45s, 3m12s, 2h05m,
// 3d04h. Zero or negative is "-".
func fmtUptime(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}

// fmtCount renders a counter compactly: 999, 1.2k, 12k, 3.4M.
func fmtCount(n uint64) string {
	switch {
	case n < 1000:
		return strconv.FormatUint(n, 10)
	case n < 10_000:
		return trimZero(strconv.FormatFloat(float64(n)/1e3, 'f', 1, 64)) + "k"
	case n < 1_000_000:
		return strconv.FormatUint(n/1000, 10) + "k"
	case n < 10_000_000:
		return trimZero(strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64)) + "M"
	default:
		return strconv.FormatUint(n/1_000_000, 10) + "M"
	}
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }

var sparkBars = []rune("▁▂▃▄▅▆▇█")

// sparkline renders the last width values as bars scaled to the largest.
// Zero values are blank so an idle engine shows an empty line; shorter
// input is left-padded with blanks.
func sparkline(values []int, width int) string {
	if width <= 0 {
		return ""
	}
	if len(values) > width {
		values = values[len(values)-width:]
	}
	peak := 0
	for _, v := range values {
		peak = max(peak, v)
	}
	var b strings.Builder
	b.WriteString(strings.Repeat(" ", width-len(values)))
	for _, v := range values {
		if v <= 0 || peak == 0 {
			b.WriteByte(' ')
			continue
		}
		i := (v*len(sparkBars) - 1) / peak
		b.WriteRune(sparkBars[min(i, len(sparkBars)-1)])
	}
	return b.String()
}

// prettyJSON indents raw JSON with two spaces. Empty input is "null"
// (what a missing payload means on the wire); invalid JSON is returned as
// it is.
func prettyJSON(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "null"
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

// compactJSON renders raw JSON on one line, cut to width cells with "…".
// Empty input is "null".
func compactJSON(raw json.RawMessage, width int) string {
	s := "null"
	if len(bytes.TrimSpace(raw)) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err == nil {
			s = buf.String()
		} else {
			s = strings.Join(strings.Fields(string(raw)), " ")
		}
	}
	return truncate(s, width)
}

// truncate cuts s to width cells, ending in "…" when cut. It is aware of
// wide characters and ANSI sequences.
func truncate(s string, width int) string {
	if width <= 0 {
		return ""
	}
	return ansi.Truncate(s, width, "…")
}

// pad cuts or right-pads s to exactly width cells.
func pad(s string, width int) string {
	s = truncate(s, width)
	if w := ansi.StringWidth(s); w < width {
		s += strings.Repeat(" ", width-w)
	}
	return s
}

// padLeft cuts or left-pads s to exactly width cells.
func padLeft(s string, width int) string {
	s = truncate(s, width)
	if w := ansi.StringWidth(s); w < width {
		s = strings.Repeat(" ", width-w) + s
	}
	return s
}

// Diff operations of lineDiff.
const (
	diffSame = iota
	diffRemoved
	diffAdded
)

// diffLine is one line of a diff: in the old text, the new one, or both.
type diffLine struct {
	Op   int
	Text string
}

// lineDiff is a minimal line diff (longest common subsequence) of a and b.
// Inputs are small (pretty JSON of a result), so the quadratic table is
// fine; beyond maxDiffCells it degrades to "all removed, all added".
func lineDiff(a, b []string) []diffLine {
	const maxDiffCells = 4_000_000
	if len(a)*len(b) > maxDiffCells {
		out := make([]diffLine, 0, len(a)+len(b))
		for _, l := range a {
			out = append(out, diffLine{diffRemoved, l})
		}
		for _, l := range b {
			out = append(out, diffLine{diffAdded, l})
		}
		return out
	}
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []diffLine
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			out = append(out, diffLine{diffSame, a[i]})
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, diffLine{diffRemoved, a[i]})
			i++
		default:
			out = append(out, diffLine{diffAdded, b[j]})
			j++
		}
	}
	for ; i < len(a); i++ {
		out = append(out, diffLine{diffRemoved, a[i]})
	}
	for ; j < len(b); j++ {
		out = append(out, diffLine{diffAdded, b[j]})
	}
	return out
}

// sideBySide lays a diff out as rows of (left, right) cells with markers:
// unchanged lines on both sides, a removed line on the left opposite an
// added line on the right where they pair up. Marks are "  ", "- " and
// "+ ".
func sideBySide(d []diffLine) [][2]string {
	var rows [][2]string
	for k := 0; k < len(d); {
		if d[k].Op == diffSame {
			rows = append(rows, [2]string{"  " + d[k].Text, "  " + d[k].Text})
			k++
			continue
		}
		// Gather a run of changes and pair removed with added lines.
		var rem, add []string
		for ; k < len(d) && d[k].Op != diffSame; k++ {
			if d[k].Op == diffRemoved {
				rem = append(rem, d[k].Text)
			} else {
				add = append(add, d[k].Text)
			}
		}
		for n := 0; n < max(len(rem), len(add)); n++ {
			var row [2]string
			if n < len(rem) {
				row[0] = "- " + rem[n]
			}
			if n < len(add) {
				row[1] = "+ " + add[n]
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// percentile returns the p-th percentile (0..1) of sorted durations by the
// nearest-rank method; 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// fmtRate renders a per-second rate: 0, 7, 1.2k.
func fmtRate(n int) string {
	if n < 0 {
		n = 0
	}
	return fmtCount(uint64(n))
}

// shortID cuts an id (UUID, hex span id) to its first 8 characters.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// oneLine flattens control characters of worker-provided text (names,
// log lines, error messages) so a stray newline or escape cannot break
// the layout.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case isControl(r):
			return '·'
		}
		return r
	}, s)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// lipglossWidth is the display width of styled text.
func lipglossWidth(s string) int { return ansi.StringWidth(s) }

func slicesSort(s []string) { slices.Sort(s) }

// engineFields are what the engine adds to a payload a worker sends (the
// caller); the invoke editor leaves them out of the payload it offers.
var engineFields = []string{"_caller_worker_id"}

// withoutEngineFields is data without the engineFields, when it is an object
// that has any.
func withoutEngineFields(data json.RawMessage) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return data
	}
	n := len(obj)
	for _, k := range engineFields {
		delete(obj, k)
	}
	if len(obj) == n {
		return data
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return data
	}
	return out
}
