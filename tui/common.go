package tui

import (
	"time"

	"charm.land/bubbles/v2/key"
	"charm.land/lipgloss/v2"
)

// Common is what every component shares: its size, the styles and the
// keymap. Components embed it and implement SetSize.
type Common struct {
	Width, Height int
	Styles        *Styles
	Keys          *KeyMap
}

// SetSize sets the component's size in cells.
func (c *Common) SetSize(width, height int) {
	c.Width, c.Height = max(width, 0), max(height, 0)
}

// Styles are the TUI's lipgloss styles. Colors are dropped by the color
// profile on terminals (and in tests) that lack them.
type Styles struct {
	Title      lipgloss.Style
	Header     lipgloss.Style
	Dim        lipgloss.Style
	Key        lipgloss.Style
	TabActive  lipgloss.Style
	TabIdle    lipgloss.Style
	ColHeader  lipgloss.Style
	Selected   lipgloss.Style
	OK         lipgloss.Style
	Error      lipgloss.Style
	Warn       lipgloss.Style
	Added      lipgloss.Style
	Removed    lipgloss.Style
	Bar        lipgloss.Style
	BarError   lipgloss.Style
	Border     lipgloss.Style
	Flash      lipgloss.Style
	FlashError lipgloss.Style
}

// DefaultStyles returns the default theme.
func DefaultStyles() *Styles {
	accent := lipgloss.Color("#7D56F4")
	return &Styles{
		Title:      lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#FFFFFF")).Background(accent),
		Header:     lipgloss.NewStyle().Foreground(lipgloss.Color("#D0D0D0")),
		Dim:        lipgloss.NewStyle().Foreground(lipgloss.Color("#808080")),
		Key:        lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#AF87FF")),
		TabActive:  lipgloss.NewStyle().Bold(true).Reverse(true),
		TabIdle:    lipgloss.NewStyle().Foreground(lipgloss.Color("#A8A8A8")),
		ColHeader:  lipgloss.NewStyle().Bold(true).Underline(true),
		Selected:   lipgloss.NewStyle().Reverse(true),
		OK:         lipgloss.NewStyle().Foreground(lipgloss.Color("#5FD75F")),
		Error:      lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#FF5F5F")),
		Warn:       lipgloss.NewStyle().Foreground(lipgloss.Color("#FFD75F")),
		Added:      lipgloss.NewStyle().Foreground(lipgloss.Color("#5FD75F")),
		Removed:    lipgloss.NewStyle().Foreground(lipgloss.Color("#FF5F5F")),
		Bar:        lipgloss.NewStyle().Foreground(lipgloss.Color("#5FAFFF")),
		BarError:   lipgloss.NewStyle().Foreground(lipgloss.Color("#FF5F5F")),
		Border:     lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(accent).Padding(0, 1),
		Flash:      lipgloss.NewStyle().Foreground(lipgloss.Color("#5FD75F")),
		FlashError: lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#FF5F5F")),
	}
}

// KeyMap holds every binding; help is generated from it.
type KeyMap struct {
	Quit, Help, NextTab, PrevTab, Filter               key.Binding
	Up, Down, PageUp, PageDown, Top, Bottom            key.Binding
	Detail, Back, Invoke, Send, Replay, Restart, Pause key.Binding
	Follow, WorkerFilter, Trace, ShowAll, Logs         key.Binding
	Views                                              [6]key.Binding
}

// DefaultKeyMap returns the k9s/lazygit-style bindings.
func DefaultKeyMap() *KeyMap {
	k := &KeyMap{
		Quit:         key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		Help:         key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		NextTab:      key.NewBinding(key.WithKeys("tab", "right"), key.WithHelp("tab", "next view")),
		PrevTab:      key.NewBinding(key.WithKeys("shift+tab", "left"), key.WithHelp("shift+tab", "previous view")),
		Filter:       key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		Up:           key.NewBinding(key.WithKeys("k", "up"), key.WithHelp("k/↑", "up")),
		Down:         key.NewBinding(key.WithKeys("j", "down"), key.WithHelp("j/↓", "down")),
		PageUp:       key.NewBinding(key.WithKeys("pgup", "ctrl+u"), key.WithHelp("pgup", "page up")),
		PageDown:     key.NewBinding(key.WithKeys("pgdown", "ctrl+d"), key.WithHelp("pgdn", "page down")),
		Top:          key.NewBinding(key.WithKeys("g", "home"), key.WithHelp("g", "top")),
		Bottom:       key.NewBinding(key.WithKeys("G", "end"), key.WithHelp("G", "bottom")),
		Detail:       key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "detail")),
		Back:         key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		Invoke:       key.NewBinding(key.WithKeys("i"), key.WithHelp("i", "invoke function")),
		Send:         key.NewBinding(key.WithKeys("ctrl+s", "ctrl+enter"), key.WithHelp("ctrl+s", "send")),
		Replay:       key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "replay invocation")),
		Restart:      key.NewBinding(key.WithKeys("R"), key.WithHelp("R", "restart worker")),
		Pause:        key.NewBinding(key.WithKeys("space"), key.WithHelp("space", "pause tail")),
		Follow:       key.NewBinding(key.WithKeys("f"), key.WithHelp("f", "follow")),
		WorkerFilter: key.NewBinding(key.WithKeys("w"), key.WithHelp("w", "cycle worker")),
		Trace:        key.NewBinding(key.WithKeys("t"), key.WithHelp("t", "show trace")),
		ShowAll:      key.NewBinding(key.WithKeys("a"), key.WithHelp("a", "engine functions")),
		Logs:         key.NewBinding(key.WithKeys("l"), key.WithHelp("l", "worker logs")),
	}
	for i := range k.Views {
		n := string(rune('1' + i))
		k.Views[i] = key.NewBinding(key.WithKeys(n), key.WithHelp(n, viewNames[i]))
	}
	return k
}

// Options tune a Model.
type Options struct {
	// Now is the clock (time.Now by default); tests fix it.
	Now func() time.Time
	// Tick is the refresh interval of clocks and rates (500 ms by default);
	// negative disables ticking (tests drive time by messages).
	Tick time.Duration
	// Batch is how long the event command gathers events into one message
	// (100 ms by default): the screen redraws at most 1/Batch times a
	// second because of events, however many arrive; with the tick that is
	// at most 12 redraws a second that the user did not cause.
	Batch time.Duration
	// Buffer is the subscription's buffer (65536 events by default: over
	// three seconds of 10,000 calls a second).
	Buffer int
	// QueryTimeout bounds calls the TUI makes (30 s by default).
	QueryTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tick == 0 {
		o.Tick = 500 * time.Millisecond
	}
	if o.Batch <= 0 {
		o.Batch = 100 * time.Millisecond
	}
	if o.Buffer <= 0 {
		o.Buffer = 1 << 16
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 30 * time.Second
	}
	return o
}
