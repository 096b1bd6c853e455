package tui

import (
	"strings"

	"charm.land/lipgloss/v2"
)

// column of a table: a fixed width, or a share (flex) of what is left with
// a minimum.
type column struct {
	title string
	width int
	flex  int
	min   int
	right bool
}

// Row tones.
const (
	toneNormal = iota
	toneDim
	toneWarn
	toneError
)

// row is one line of a table: a stable key (to keep the selection on the
// same item when rows move) and its cells.
type row struct {
	key   string
	cells []string
	tone  int
}

// table is a scrolling, selectable table. Its rows are built by the model
// in Update; View only lays them out.
type table struct {
	Common
	cols   []column
	cursor int
	offset int
	selKey string
	// stickTop keeps the cursor on the first row while it is there (a
	// newest-first tail follows new items).
	stickTop bool
}

func newTable(c Common, cols []column) *table { return &table{Common: c, cols: cols} }

// widths distributes the table's width over its columns, two spaces
// between columns.
func (t *table) widths() []int {
	ws := make([]int, len(t.cols))
	rest := t.Width - 2*(len(t.cols)-1)
	flex := 0
	for i, c := range t.cols {
		if c.flex == 0 {
			ws[i] = c.width
			rest -= c.width
		} else {
			flex += c.flex
		}
	}
	if flex == 0 {
		return ws
	}
	rest = max(rest, 0)
	left := rest
	last := -1
	for i, c := range t.cols {
		if c.flex > 0 {
			ws[i] = max(rest*c.flex/flex, c.min)
			left -= ws[i]
			last = i
		}
	}
	if left > 0 && last >= 0 {
		ws[last] += left
	}
	return ws
}

func (t *table) colWidth(i int) int {
	ws := t.widths()
	if i < len(ws) {
		return ws[i]
	}
	return 0
}

// pageSize is how many rows fit under the header.
func (t *table) pageSize() int { return max(t.Height-1, 1) }

// sync puts the cursor back on the selected item after rows changed.
func (t *table) sync(rows []row) {
	switch {
	case len(rows) == 0:
		t.cursor, t.offset = 0, 0
		return
	case t.stickTop && t.cursor == 0:
	default:
		for i, r := range rows {
			if r.key == t.selKey {
				t.cursor = i
				break
			}
		}
	}
	t.cursor = min(max(t.cursor, 0), len(rows)-1)
	t.selKey = rows[t.cursor].key
	t.scrollTo(len(rows))
}

func (t *table) move(rows []row, delta int) {
	if len(rows) == 0 {
		return
	}
	t.cursor = min(max(t.cursor+delta, 0), len(rows)-1)
	t.selKey = rows[t.cursor].key
	t.scrollTo(len(rows))
}

func (t *table) scrollTo(n int) {
	page := t.pageSize()
	if t.cursor < t.offset {
		t.offset = t.cursor
	}
	if t.cursor >= t.offset+page {
		t.offset = t.cursor - page + 1
	}
	t.offset = min(max(t.offset, 0), max(n-page, 0))
}

// render lays rows out in exactly Height lines of Width cells.
func (t *table) render(rows []row, empty string) string {
	ws := t.widths()
	st := t.Styles
	lines := make([]string, 0, t.Height)
	hdr := make([]string, len(t.cols))
	for i, c := range t.cols {
		hdr[i] = cell(c.title, ws[i], c.right)
	}
	lines = append(lines, st.ColHeader.Render(pad(strings.Join(hdr, "  "), t.Width)))
	if len(rows) == 0 {
		lines = append(lines, st.Dim.Render(pad("  "+empty, t.Width)))
	}
	end := min(t.offset+t.pageSize(), len(rows))
	for i := t.offset; i < end; i++ {
		r := rows[i]
		cells := make([]string, len(t.cols))
		for j, c := range t.cols {
			v := ""
			if j < len(r.cells) {
				v = r.cells[j]
			}
			cells[j] = cell(v, ws[j], c.right)
		}
		line := pad(strings.Join(cells, "  "), t.Width)
		var style lipgloss.Style
		switch {
		case i == t.cursor:
			style = st.Selected
		case r.tone == toneDim:
			style = st.Dim
		case r.tone == toneWarn:
			style = st.Warn
		case r.tone == toneError:
			style = st.Error
		default:
			lines = append(lines, line)
			continue
		}
		lines = append(lines, style.Render(line))
	}
	return fill(lines, t.Height, t.Width)
}

func cell(s string, w int, right bool) string {
	if right {
		return padLeft(s, w)
	}
	return pad(s, w)
}

// fill pads or cuts lines to exactly height lines of width cells.
func fill(lines []string, height, width int) string {
	if len(lines) > height {
		lines = lines[:height]
	}
	blank := strings.Repeat(" ", width)
	for len(lines) < height {
		lines = append(lines, blank)
	}
	return strings.Join(lines, "\n")
}

// filterRows keeps the rows with a cell containing q (case-insensitive).
func filterRows(rows []row, q string) []row {
	if q == "" {
		return rows
	}
	q = strings.ToLower(q)
	out := rows[:0:0]
	for _, r := range rows {
		for _, c := range r.cells {
			if strings.Contains(strings.ToLower(c), q) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}
