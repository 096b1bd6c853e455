package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

// startLister starts an engine with a Go SDK worker "lister": functions
// lister::a and lister::b, trigger type lister-ticks, and two bindings of
// lister::a, one to lister-ticks (active) and one to http (parked: no
// HTTP module runs).
func startLister(t *testing.T) string {
	t.Helper()
	srv := startEngine(t, "")
	w := connectWorker(t, srv.URL(), "lister")
	noop := func(context.Context, json.RawMessage) (any, error) { return nil, nil }
	if err := w.RegisterFunction("lister::a", noop, sdk.WithDescription("first\tfunction")); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterFunction("lister::b", noop); err != nil {
		t.Fatal(err)
	}
	// The engine lists engine::queue::* without include_internal (as iii
	// does); iii functions hides them without --all all the same.
	if err := w.RegisterFunction("engine::queue::lister_stats", noop); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterTriggerType("lister-ticks", "ticks now and then", sdk.TriggerProviderFuncs{}); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []sdk.Trigger{
		{Type: "lister-ticks", FunctionID: "lister::a", Config: map[string]any{"every": "1s"}},
		{Type: "http", FunctionID: "lister::a", Config: map[string]any{"api_path": "a", "http_method": "GET"}},
	} {
		if _, err := w.RegisterTrigger(tr); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the engine has the registrations and the worker's
	// metadata (sent right after connecting).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		snap := srv.Engine().Snapshot()
		ready := len(snap.Triggers) == 2
		for _, wi := range snap.Workers {
			ready = ready && (wi.Internal || wi.Runtime == "go")
		}
		if ready {
			return srv.URL()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the engine did not list lister's registrations in time: %+v", snap)
		case <-tick.C:
		}
	}
}

func TestListTables(t *testing.T) {
	url := startLister(t)

	r := runIn(t, nil, nil, "functions", "--address", url)
	want := "ID         WORKER(S)  DESCRIPTION\n" +
		"lister::a  lister     first function\n" +
		"lister::b  lister     -\n"
	if r.code != ExitOK || r.stdout != want || r.stderr != "" {
		t.Errorf("iii functions = %d, stdout %q, stderr %q; want 0, %q, empty", r.code, r.stdout, r.stderr, want)
	}

	r = runIn(t, nil, nil, "functions", "--all", "--address", url)
	if r.code != ExitOK || !strings.Contains(r.stdout, "\nengine::functions::list ") || !strings.Contains(r.stdout, "\nlister::a ") ||
		!strings.Contains(r.stdout, "\nengine::queue::lister_stats ") {
		t.Errorf("iii functions --all = %d, stdout %q; want engine::functions::list, engine::queue::lister_stats and lister::a rows", r.code, r.stdout)
	}

	r = runIn(t, nil, nil, "workers", "--address", url)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != ExitOK || len(lines) != 2 {
		t.Fatalf("iii workers = %d, stdout %q, stderr %q; want a header and one row (lister; not the CLI itself)", r.code, r.stdout, r.stderr)
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NAME RUNTIME VERSION PID STATUS FUNCTIONS IN-FLIGHT CONNECTED" {
		t.Errorf("iii workers header = %q", lines[0])
	}
	row := strings.Fields(lines[1])
	wantRow := []string{"lister", "go", sdk.Version, strconv.Itoa(os.Getpid()), "connected", "3", "0"}
	if len(row) != 9 || strings.Join(row[:7], " ") != strings.Join(wantRow, " ") || row[8] != "ago" {
		t.Errorf("iii workers row = %q; want %q then \"<n>s ago\"", lines[1], wantRow)
	}

	r = runIn(t, nil, nil, "workers", "--all", "--address", url)
	if r.code != ExitOK || !strings.Contains(r.stdout, "\niii-engine-functions ") || strings.Contains(r.stdout, clientName) {
		t.Errorf("iii workers --all = %d, stdout %q; want the engine's own worker, not %s", r.code, r.stdout, clientName)
	}

	r = runIn(t, nil, nil, "triggers", "--address", url)
	lines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != ExitOK || len(lines) != 3 {
		t.Fatalf("iii triggers = %d, stdout %q, stderr %q; want a header and two rows", r.code, r.stdout, r.stderr)
	}
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "ID TYPE FUNCTION WORKER STATE CONFIG" {
		t.Errorf("iii triggers header = %q", lines[0])
	}
	var rows []string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Join(strings.Fields(l)[1:], " ")) // IDs are random
	}
	for _, want := range []string{
		`lister-ticks lister::a lister active {"every":"1s"}`,
		`http lister::a lister parked {"api_path":"a","http_method":"GET"}`,
	} {
		if !strings.Contains(strings.Join(rows, "\n"), want) {
			t.Errorf("iii triggers rows %q; want one ending %q", rows, want)
		}
	}

	r = runIn(t, nil, nil, "triggers", "--types", "--address", url)
	want = "ID            WORKER  DESCRIPTION\n" +
		"lister-ticks  lister  ticks now and then\n"
	if r.code != ExitOK || r.stdout != want {
		t.Errorf("iii triggers --types = %d, stdout %q, stderr %q; want 0, %q", r.code, r.stdout, r.stderr, want)
	}
}

func TestListJSON(t *testing.T) {
	url := startLister(t)
	tests := []struct {
		args []string
		key  string   // the list in the result
		ids  []string // ids expected in it, under idKey
		not  []string // ids that must not be there
		id   string
	}{
		{[]string{"functions"}, "functions", []string{"lister::a", "lister::b"}, []string{"engine::functions::list"}, "function_id"},
		{[]string{"functions", "--all"}, "functions", []string{"lister::a", "engine::functions::list"}, nil, "function_id"},
		{[]string{"workers"}, "workers", []string{"lister", "iii-engine-functions"}, []string{clientName}, "name"},
		{[]string{"triggers"}, "registered_triggers", []string{"lister::a"}, nil, "function_id"},
		{[]string{"triggers", "--types"}, "triggers", []string{"lister-ticks"}, []string{"engine::workers-available"}, "id"},
		{[]string{"triggers", "--types", "--all"}, "triggers", []string{"lister-ticks", "engine::workers-available"}, nil, "id"},
	}
	for _, tt := range tests {
		args := append(append([]string{}, tt.args...), "--json", "--address", url)
		r := runIn(t, nil, nil, args...)
		var res map[string][]map[string]any
		if r.code != ExitOK || json.Unmarshal([]byte(r.stdout), &res) != nil || !strings.HasSuffix(r.stdout, "}\n") ||
			strings.Contains(r.stdout, "\n ") {
			t.Errorf("iii %q = %d, stdout %q, stderr %q; want 0 and one line of JSON", args, r.code, r.stdout, r.stderr)
			continue
		}
		got := map[string]bool{}
		for _, e := range res[tt.key] {
			s, _ := e[tt.id].(string)
			got[s] = true
		}
		for _, id := range tt.ids {
			if !got[id] {
				t.Errorf("iii %q: %s has no %s %q: %s", args, tt.key, tt.id, id, r.stdout)
			}
		}
		for _, id := range tt.not {
			if got[id] {
				t.Errorf("iii %q: %s has %s %q; want it left out: %s", args, tt.key, tt.id, id, r.stdout)
			}
		}
	}
}

func TestListEmpty(t *testing.T) {
	srv := startEngine(t, "")
	tests := []struct {
		args           []string
		stdout, stderr string
	}{
		{[]string{"functions"}, "ID  WORKER(S)  DESCRIPTION\n", "no functions registered (--all shows internal ones)\n"},
		{[]string{"workers"}, "NAME  RUNTIME  VERSION  PID  STATUS  FUNCTIONS  IN-FLIGHT  CONNECTED\n", "no workers connected (--all shows internal ones)\n"},
		{[]string{"triggers"}, "ID  TYPE  FUNCTION  WORKER  STATE  CONFIG\n", "no triggers registered (--all shows internal ones)\n"},
		{[]string{"triggers", "--all"}, "ID  TYPE  FUNCTION  WORKER  STATE  CONFIG\n", "no triggers registered\n"},
	}
	for _, tt := range tests {
		args := append(append([]string{}, tt.args...), "--address", srv.URL())
		r := runIn(t, nil, nil, args...)
		if r.code != ExitOK || r.stdout != tt.stdout || r.stderr != tt.stderr {
			t.Errorf("iii %q = %d, stdout %q, stderr %q; want 0, %q, %q", args, r.code, r.stdout, r.stderr, tt.stdout, tt.stderr)
		}
	}
}

func TestWriteWorkers(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	str := func(s string) *string { return &s }
	pid := 4242
	v := workerList{Workers: []workerRow{
		{ID: "2", Name: "web", Runtime: str("node"), Version: str("0.22.1"), PID: &pid, Status: "connected",
			FunctionCount: 3, ActiveInvocations: 1, ConnectedAtMS: now.Add(-90 * time.Second).UnixMilli()},
		{ID: "1", Name: "billing", Status: "draining", ConnectedAtMS: now.Add(-26 * time.Hour).UnixMilli()},
	}}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if err := writeWorkers(tw, v, now); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	want := "NAME     RUNTIME  VERSION  PID   STATUS     FUNCTIONS  IN-FLIGHT  CONNECTED\n" +
		"billing  -        -        -     draining   0          0          1d2h ago\n" +
		"web      node     0.22.1   4242  connected  3          1          1m ago\n"
	if b.String() != want {
		t.Errorf("writeWorkers =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s ago"},
		{-time.Second, "0s ago"}, // clock skew
		{59 * time.Second, "59s ago"},
		{time.Minute, "1m ago"},
		{59*time.Minute + 59*time.Second, "59m ago"},
		{3*time.Hour + 5*time.Minute, "3h5m ago"},
		{50 * time.Hour, "2d2h ago"},
	}
	for _, tt := range tests {
		if got := ago(now, now.Add(-tt.d)); got != tt.want {
			t.Errorf("ago(now-%v) = %q; want %q", tt.d, got, tt.want)
		}
	}
	if got := ago(now, time.UnixMilli(0)); got != "-" {
		t.Errorf("ago(unknown) = %q; want -", got)
	}
}

func TestTruncateAndCell(t *testing.T) {
	tests := []struct{ in, want string }{
		{"short", "short"},
		{strings.Repeat("é", 60), strings.Repeat("é", 60)},
		{strings.Repeat("é", 61), strings.Repeat("é", 59) + "…"},
	}
	for _, tt := range tests {
		if got := truncate(tt.in, 60); got != tt.want {
			t.Errorf("truncate(%q, 60) = %q; want %q", tt.in, got, tt.want)
		}
	}
	if got := cell("a\tb\nc\rd"); got != "a b c d" {
		t.Errorf("cell = %q; want %q", got, "a b c d")
	}
	if got := orDash(""); got != "-" {
		t.Errorf("orDash(\"\") = %q; want -", got)
	}
}

func TestDropWorker(t *testing.T) {
	in := `{"workers":[{"id":"a","name":"x","extra":{"k":1}},{"id":"me","name":""},{"id":"b","name":"iii-cli"}]}`
	got, err := dropWorker(json.RawMessage(in), "me")
	if want := `{"workers":[{"id":"a","name":"x","extra":{"k":1}}]}`; err != nil || string(got) != want {
		t.Errorf("dropWorker = %s, %v; want %s", got, err, want)
	}
	got, err = dropWorker(json.RawMessage(`{"workers":[{"id":"me"}]}`), "me")
	if want := `{"workers":[]}`; err != nil || string(got) != want {
		t.Errorf("dropWorker(only me) = %s, %v; want %s", got, err, want)
	}
}

// In a cluster each row names its engine; a single engine's tables above
// have no such column.
func TestWriteClusterColumns(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	writeWorkers(tw, workerList{Workers: []workerRow{
		{ID: "1", Name: "api", Status: "connected", ConnectedAtMS: now.UnixMilli(), Engine: "host-a:49134"},
		{ID: "2", Name: "billing", Status: "connected", ConnectedAtMS: now.UnixMilli(), Engine: "host-b:49134"},
	}}, now)
	tw.Flush()
	want := "NAME     RUNTIME  VERSION  PID  STATUS     FUNCTIONS  IN-FLIGHT  CONNECTED  ENGINE\n" +
		"api      -        -        -    connected  0          0          0s ago     host-a:49134\n" +
		"billing  -        -        -    connected  0          0          0s ago     host-b:49134\n"
	if b.String() != want {
		t.Errorf("writeWorkers =\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeFunctions(tw, functionList{Functions: []functionRow{
		{ID: "billing::charge", Workers: []string{"billing", "billing"}, Engines: []string{"host-a:49134", "host-b:49134"}},
		{ID: "state::get", Workers: []string{"iii-state"}, Description: "Get a value"},
	}})
	tw.Flush()
	want = "ID               WORKER(S)        ENGINE(S)                  DESCRIPTION\n" +
		"billing::charge  billing,billing  host-a:49134,host-b:49134  -\n" +
		"state::get       iii-state        -                          Get a value\n"
	if b.String() != want {
		t.Errorf("writeFunctions =\n%s\nwant\n%s", b.String(), want)
	}
}

// A namespace other than default adds a NAMESPACE column (default-only
// engines print the tables above, unchanged).
func TestWriteNamespaceColumns(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	writeFunctions(tw, functionList{Functions: []functionRow{
		{ID: "state::get", Namespace: "orders", Workers: []string{"state"}},
		{ID: "state::get", Namespace: "default", Workers: []string{"iii-state"}, Description: "Get a value"},
	}})
	tw.Flush()
	want := "ID          NAMESPACE  WORKER(S)  DESCRIPTION\n" +
		"state::get  default    iii-state  Get a value\n" +
		"state::get  orders     state      -\n"
	if b.String() != want {
		t.Errorf("writeFunctions =\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeWorkers(tw, workerList{Workers: []workerRow{
		{ID: "1", Name: "state", Namespace: "orders", Status: "connected", ConnectedAtMS: now.UnixMilli()},
		{ID: "2", Name: "state", Status: "connected", ConnectedAtMS: now.UnixMilli()},
	}}, now)
	tw.Flush()
	want = "NAME   NAMESPACE  RUNTIME  VERSION  PID  STATUS     FUNCTIONS  IN-FLIGHT  CONNECTED\n" +
		"state  orders     -        -        -    connected  0          0          0s ago\n" +
		"state  default    -        -        -    connected  0          0          0s ago\n"
	if b.String() != want {
		t.Errorf("writeWorkers =\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeTriggers(tw, triggerList{Triggers: []triggerRow{
		{ID: "t1", Type: "http", FunctionID: "state::get", Namespace: "orders", Active: true, ConfigSummary: "{}"},
	}})
	tw.Flush()
	want = "ID  TYPE  FUNCTION    NAMESPACE  WORKER  STATE   CONFIG\n" +
		"t1  http  state::get  orders     -       active  {}\n"
	if b.String() != want {
		t.Errorf("writeTriggers =\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeTriggerTypes(tw, triggerTypeList{Triggers: []triggerTypeRow{
		{ID: "webhook", Namespace: "orders", Worker: "hooks", Description: "orders' webhooks"},
		{ID: "webhook", Namespace: "default", Worker: "hooks", Description: "webhooks"},
	}})
	tw.Flush()
	want = "ID       NAMESPACE  WORKER  DESCRIPTION\n" +
		"webhook  default    hooks   webhooks\n" +
		"webhook  orders     hooks   orders' webhooks\n"
	if b.String() != want {
		t.Errorf("writeTriggerTypes =\n%s\nwant\n%s", b.String(), want)
	}
}
