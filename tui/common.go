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

// KeyMap holds every binding, grouped by where they apply. It is the one
// source of key handling, of the footer's hints (ShortHelp) and of the
// help screen (FullHelp): a binding the model does not match is not
// listed, and the other way round.
type KeyMap struct {
	Global      GlobalKeys
	Nav         NavKeys
	Filter      FilterKeys
	Modal       ModalKeys
	Workers     WorkersKeys
	Functions   FunctionsKeys
	Triggers    TriggersKeys
	Invocations InvocationsKeys
	Traces      TracesKeys
	Logs        LogsKeys
	Breaks      BreaksKeys
	Observers   ObserversKeys
}

// GlobalKeys work in every view.
type GlobalKeys struct {
	// View switches to view n with the key n (1-8).
	View, NextTab, PrevTab, Filter, Back, Help, Quit key.Binding
}

// ShortHelp is what every view's footer starts and ends with.
func (k GlobalKeys) ShortHelp() []key.Binding { return []key.Binding{k.View, k.Filter, k.Help, k.Quit} }

// FullHelp lists the global keys on the help screen.
func (k GlobalKeys) FullHelp() [][]key.Binding {
	return [][]key.Binding{{k.View, k.NextTab, k.PrevTab, k.Filter, k.Back, k.Help, k.Quit}}
}

// NavKeys move through a list; Move is their summary in the footer.
type NavKeys struct {
	Move, Up, Down, PageUp, PageDown, Top, Bottom key.Binding
}

// ShortHelp is the footer's summary.
func (k NavKeys) ShortHelp() []key.Binding { return []key.Binding{k.Move} }

// FullHelp lists each move.
func (k NavKeys) FullHelp() [][]key.Binding {
	return [][]key.Binding{{k.Up, k.Down, k.PageUp, k.PageDown, k.Top, k.Bottom}}
}

// FilterKeys edit the filter line.
type FilterKeys struct {
	Apply, Clear, Erase, EraseAll key.Binding
}

// ShortHelp is the filter line's hint.
func (k FilterKeys) ShortHelp() []key.Binding { return []key.Binding{k.Apply, k.Clear} }

// FullHelp lists the filter line's keys.
func (k FilterKeys) FullHelp() [][]key.Binding {
	return [][]key.Binding{{k.Apply, k.Clear, k.Erase, k.EraseAll}}
}

// ModalKeys work in the detail, help, replay and editor panes.
type ModalKeys struct {
	Scroll, Close, Send, Again key.Binding
}

// ShortHelp is the panes' footer (each pane picks the ones it has).
func (k ModalKeys) ShortHelp() []key.Binding { return []key.Binding{k.Scroll, k.Close} }

// FullHelp lists the panes' keys.
func (k ModalKeys) FullHelp() [][]key.Binding {
	return [][]key.Binding{{k.Send, k.Again, k.Scroll, k.Close}}
}

// WorkersKeys act on the selected worker.
type WorkersKeys struct{ Detail, Logs, Restart key.Binding }

// ShortHelp is the Workers view's footer.
func (k WorkersKeys) ShortHelp() []key.Binding { return []key.Binding{k.Detail, k.Logs, k.Restart} }

// FullHelp lists the Workers view's keys.
func (k WorkersKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// FunctionsKeys act on the selected function.
type FunctionsKeys struct{ Detail, Invoke, Break, ShowAll key.Binding }

// ShortHelp is the Functions view's footer.
func (k FunctionsKeys) ShortHelp() []key.Binding {
	return []key.Binding{k.Detail, k.Invoke, k.Break, k.ShowAll}
}

// FullHelp lists the Functions view's keys.
func (k FunctionsKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// TriggersKeys act on the selected trigger.
type TriggersKeys struct{ Detail, Fire key.Binding }

// ShortHelp is the Triggers view's footer.
func (k TriggersKeys) ShortHelp() []key.Binding { return []key.Binding{k.Detail, k.Fire} }

// FullHelp lists the Triggers view's keys.
func (k TriggersKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// InvocationsKeys act on the selected call and the live tail.
type InvocationsKeys struct{ Detail, Replay, Invoke, Trace, Pause, Break key.Binding }

// ShortHelp is the Invocations view's footer.
func (k InvocationsKeys) ShortHelp() []key.Binding {
	return []key.Binding{k.Detail, k.Replay, k.Invoke, k.Trace, k.Pause}
}

// FullHelp lists the Invocations view's keys.
func (k InvocationsKeys) FullHelp() [][]key.Binding {
	return [][]key.Binding{append(k.ShortHelp(), k.Break)}
}

// TracesKeys act on the waterfall.
type TracesKeys struct{ Span, Reload key.Binding }

// ShortHelp is the Traces view's footer.
func (k TracesKeys) ShortHelp() []key.Binding { return []key.Binding{k.Span, k.Reload} }

// FullHelp lists the Traces view's keys.
func (k TracesKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// LogsKeys steer the log tail.
type LogsKeys struct{ Follow, Worker key.Binding }

// ShortHelp is the Logs view's footer.
func (k LogsKeys) ShortHelp() []key.Binding { return []key.Binding{k.Follow, k.Worker} }

// FullHelp lists the Logs view's keys.
func (k LogsKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// BreaksKeys decide the fate of the selected held call.
type BreaksKeys struct{ Continue, Edit, Fail, Drop, Detail, ClearAll key.Binding }

// ShortHelp is the Breakpoints view's footer.
func (k BreaksKeys) ShortHelp() []key.Binding {
	return []key.Binding{k.Continue, k.Edit, k.Fail, k.Drop, k.ClearAll}
}

// FullHelp lists the Breakpoints view's keys.
func (k BreaksKeys) FullHelp() [][]key.Binding {
	return [][]key.Binding{append(k.ShortHelp(), k.Detail)}
}

func bind(help, desc string, keys ...string) key.Binding {
	return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
}

// DefaultKeyMap returns the k9s/lazygit-style bindings.
func DefaultKeyMap() *KeyMap {
	return &KeyMap{
		Global: GlobalKeys{
			View:    bind("1-8", "views", "1", "2", "3", "4", "5", "6", "7", "8"),
			NextTab: bind("tab", "next view", "tab", "right"),
			PrevTab: bind("shift+tab", "previous view", "shift+tab", "left"),
			Filter:  bind("/", "filter", "/"),
			Back:    bind("esc", "clear the filter", "esc"),
			Help:    bind("?", "help", "?"),
			Quit:    bind("q", "quit", "q", "ctrl+c"),
		},
		Nav: NavKeys{
			Move:     bind("j/k", "move", "j", "k", "up", "down"),
			Up:       bind("k/↑", "up", "k", "up"),
			Down:     bind("j/↓", "down", "j", "down"),
			PageUp:   bind("pgup", "page up", "pgup", "ctrl+u"),
			PageDown: bind("pgdn", "page down", "pgdown", "ctrl+d"),
			Top:      bind("g", "top", "g", "home"),
			Bottom:   bind("G", "bottom", "G", "end"),
		},
		Filter: FilterKeys{
			Apply:    bind("enter", "apply", "enter"),
			Clear:    bind("esc", "clear", "esc"),
			Erase:    bind("backspace", "erase a character", "backspace"),
			EraseAll: bind("ctrl+u", "erase all", "ctrl+u"),
		},
		Modal: ModalKeys{
			Scroll: bind("j/k", "scroll", "j", "k", "up", "down"),
			Close:  bind("esc", "close", "esc", "q"),
			Send:   bind("ctrl+s", "send", "ctrl+s", "ctrl+enter"),
			Again:  bind("r", "replay again", "r"),
		},
		Workers: WorkersKeys{
			Detail:  bind("enter", "detail", "enter"),
			Logs:    bind("l", "logs", "l"),
			Restart: bind("R", "restart", "R"),
		},
		Functions: FunctionsKeys{
			Detail:  bind("enter", "detail", "enter"),
			Invoke:  bind("i", "invoke", "i"),
			Break:   bind("b", "break", "b"),
			ShowAll: bind("a", "engine fns", "a"),
		},
		Triggers: TriggersKeys{
			Detail: bind("enter", "detail", "enter"),
			Fire:   bind("f", "fire now", "f"),
		},
		Invocations: InvocationsKeys{
			Detail: bind("enter", "detail", "enter"),
			Replay: bind("r", "replay", "r"),
			Invoke: bind("i", "invoke", "i"),
			Trace:  bind("t", "trace", "t"),
			Pause:  bind("space", "pause", "space"),
			Break:  bind("b", "break on its function", "b"),
		},
		Traces: TracesKeys{
			Span:   bind("enter", "span", "enter"),
			Reload: bind("ctrl+r", "reload", "ctrl+r"),
		},
		Breaks: BreaksKeys{
			Continue: bind("c", "continue", "c"),
			Edit:     bind("e", "edit & continue", "e"),
			Fail:     bind("x", "fail", "x"),
			Drop:     bind("d", "drop", "d"),
			Detail:   bind("enter", "payload", "enter"),
			ClearAll: bind("B", "clear all", "B"),
		},
		Observers: ObserversKeys{Detail: bind("enter", "detail", "enter")},
		Logs: LogsKeys{
			Follow: bind("f", "follow", "f"),
			Worker: bind("w", "worker", "w"),
		},
	}
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
