package tui

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
)

// The Observers view (8): every observer as source → target, its state
// (and why it is not active), how often it fired, its activations in
// flight and the ones it dropped.

// Observer states (engine/observe.go).
const (
	ObserverActive   = "active"
	ObserverDisposed = "disposed"
)

// ObserversKeys act on the selected observer.
type ObserversKeys struct{ Detail key.Binding }

// ShortHelp is the Observers view's footer.
func (k ObserversKeys) ShortHelp() []key.Binding { return []key.Binding{k.Detail} }

// FullHelp lists the Observers view's keys.
func (k ObserversKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// observersPage is view 8.
type observersPage struct{ tablePage }

func (p *observersPage) ShortHelp() []key.Binding  { return p.m.Keys.Observers.ShortHelp() }
func (p *observersPage) FullHelp() [][]key.Binding { return p.m.Keys.Observers.FullHelp() }

func (p *observersPage) key(msg tea.KeyPressMsg) tea.Cmd {
	m := p.m
	switch {
	case p.nav(msg):
	case key.Matches(msg, m.Keys.Observers.Detail):
		if sel, ok := p.selected(); ok {
			if o := m.st.observers[sel]; o != nil {
				m.modal.openDetail("Observer "+o.ID, observerDetail(m.st, o))
			}
		}
	}
	return nil
}

func observerColumns() []column {
	return []column{{title: "SOURCE → TARGET", flex: 2, min: 30}, {title: "STATE", min: 9}, {title: "FIRES", right: true},
		{title: "IN-FLIGHT", short: "INFL", right: true}, {title: "DROPPED", short: "DROP", right: true}, {title: "OWNER", min: 5},
		{title: "REASON", flex: 1, min: 6}}
}

// observerRows lists the observers by source, then target.
func observerRows(s *state) []row {
	os := make([]*Observer, 0, len(s.observers))
	for _, o := range s.observers {
		os = append(os, o)
	}
	slices.SortFunc(os, func(a, b *Observer) int {
		return strings.Compare(a.Source+"\x00"+a.Target+"\x00"+a.ID, b.Source+"\x00"+b.Target+"\x00"+b.ID)
	})
	rows := make([]row, 0, len(os))
	for _, o := range os {
		tone := toneNormal
		switch o.State {
		case ObserverActive:
		case "error":
			tone = toneError
		default:
			tone = toneWarn
		}
		owner := "engine"
		if o.Owner != "" {
			owner = dash(s.workerName(o.Owner))
			if owner == "-" {
				owner = shortID(o.Owner)
			}
		}
		rows = append(rows, row{key: o.ID, tone: tone, cells: []string{
			o.Source + " → " + o.Target, dash(o.State), fmtCount(o.Fires), strconv.Itoa(o.InFlight),
			fmtCount(o.Dropped), owner, dash(oneLine(o.Reason)),
		}})
	}
	return rows
}

func observerDetail(s *state, o *Observer) []string {
	owner := "engine (in-process)"
	if o.Owner != "" {
		owner = o.Owner
		if n := s.workerName(o.Owner); n != "" {
			owner = n + " (" + o.Owner + ")"
		}
	}
	return []string{
		"id         " + o.ID,
		"source     " + o.Source,
		"target     " + o.Target,
		"state      " + dash(o.State),
		"reason     " + dash(oneLine(o.Reason)),
		fmt.Sprintf("fires      %d", o.Fires),
		fmt.Sprintf("in flight  %d", o.InFlight),
		fmt.Sprintf("dropped    %d", o.Dropped),
		"owner      " + owner,
	}
}
