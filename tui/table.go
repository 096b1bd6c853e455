package tui

import (
	"strings"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// column of a table. Columns share the width by content: each gets what
// its widest cell (or title) needs; when that does not fit, the widest
// columns give way first, down to min; what is left over goes to the flex
// columns by share.
type column struct {
	title string
	// short replaces the title when the column is narrower than it.
	short string
	flex  int
	min   int // narrowest the column gets; 0 is its title's width
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

// flexGrowth is the most a flex column grows beyond its content.
const flexGrowth = 16

// widths distributes the table's width over its columns for rows, two
// spaces between columns.
func (t *table) widths(rows []row) []int {
	n := len(t.cols)
	ws, mins := make([]int, n), make([]int, n)
	for i, c := range t.cols {
		ws[i] = lipgloss.Width(c.title)
		mins[i] = c.min
		if mins[i] == 0 {
			mins[i] = ws[i]
			if c.short != "" {
				mins[i] = lipgloss.Width(c.short)
			}
		}
	}
	// The rows on screen decide (cheap at any rate of calls).
	content := make([]int, n)
	for _, r := range rows[min(t.offset, len(rows)):min(t.offset+t.pageSize(), len(rows))] {
		for i := range min(len(r.cells), n) {
			content[i] = max(content[i], ansi.StringWidth(r.cells[i]))
		}
	}
	avail := max(t.Width-2*(n-1), 0)
	sum := 0
	for i := range ws {
		ws[i] = max(ws[i], content[i])
		mins[i] = min(mins[i], ws[i])
		sum += ws[i]
	}
	// Too wide: first titles wider than their column's content give way
	// to their short form, widest first, then content is cut.
	for ; sum > avail; sum-- {
		widest := -1
		for i := range ws {
			if ws[i] > max(mins[i], content[i]) && (widest < 0 || ws[i] > ws[widest]) {
				widest = i
			}
		}
		if widest < 0 {
			break
		}
		ws[widest]--
	}
	// Then take a cell at a time from the widest column that can give
	// one.
	for ; sum > avail; sum-- {
		widest := -1
		for i := range ws {
			if ws[i] > mins[i] && (widest < 0 || ws[i] > ws[widest]) {
				widest = i
			}
		}
		if widest < 0 {
			break // every column at its minimum: the line is cut
		}
		ws[widest]--
	}
	// Room to spare: the flex columns share some of it, by share, each
	// growing by at most flexGrowth; the rest stays blank at the right
	// rather than stretching one column across the screen.
	if extra := avail - sum; extra > 0 {
		flex := 0
		for _, c := range t.cols {
			flex += c.flex
		}
		for i, c := range t.cols {
			if c.flex > 0 {
				ws[i] += min(extra*c.flex/flex, flexGrowth)
			}
		}
	}
	return ws
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
	ws := t.widths(rows)
	st := t.Styles
	lines := make([]string, 0, t.Height)
	hdr := make([]string, len(t.cols))
	for i, c := range t.cols {
		title := c.title
		if c.short != "" && ws[i] < lipgloss.Width(title) {
			title = c.short
		}
		hdr[i] = cell(title, ws[i], c.right)
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
