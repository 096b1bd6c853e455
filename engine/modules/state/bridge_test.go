package state

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// TestBridge runs the state functions on an engine whose state lives in a
// second engine (bridge_url, iii's bridge adapter). Each engine has a Redis
// of its own, so whatever one reads back of the other's writes went over
// the bridge.
func TestBridge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	backendSrv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state", "{max_value_bytes: 64}")
	backend := backendSrv.Engine()
	front := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state",
		fmt.Sprintf("{bridge_url: %q}", backendSrv.URL())).Engine()
	calls := recorders(t, front, "on::users")
	bind(ctx, t, front, "on::users", `{"scope":"users"}`)

	steps := []struct {
		on       string // "front" or "backend"
		fn, in   string
		want     string
		wantCode string // prefix of the error, when one is wanted
		event    string // the front's trigger call, when one is wanted
	}{
		{on: "front", fn: FnGet, in: `{"scope":"users","key":"u1"}`},
		{on: "front", fn: FnSet, in: `{"scope":"users","key":"u1","value":{"n":1,"s":"a"}}`, want: `{"old_value":null,"new_value":{"n":1,"s":"a"}}`,
			event: `{"type":"state","event_type":"state:created","scope":"users","key":"u1","old_value":null,"new_value":{"n":1,"s":"a"}}`},
		{on: "backend", fn: FnGet, in: `{"scope":"users","key":"u1"}`, want: `{"n":1,"s":"a"}`},
		{on: "backend", fn: FnSet, in: `{"scope":"users","key":"u2","value":"b"}`, want: `{"old_value":null,"new_value":"b"}`},
		{on: "front", fn: FnGet, in: `{"scope":"users","key":"u2"}`, want: `"b"`},
		{on: "front", fn: FnUpdate, in: `{"scope":"users","key":"u1","ops":[{"type":"increment","path":"n","by":2},{"type":"increment","path":"s","by":1}]}`,
			want:  `{"old_value":{"n":1,"s":"a"},"new_value":{"n":3,"s":"a"},"errors":[{"op_index":1,"code":"increment.not_number","message":"expected a number at path \"s\", got a string"}]}`,
			event: `{"type":"state","event_type":"state:updated","scope":"users","key":"u1","old_value":{"n":1,"s":"a"},"new_value":{"n":3,"s":"a"}}`},
		{on: "front", fn: FnList, in: `{"scope":"users"}`, want: `[{"n":3,"s":"a"},"b"]`},
		{on: "front", fn: FnList, in: `{"scope":"nobody"}`, want: `[]`},
		{on: "front", fn: FnListGroups, in: `{}`, want: `{"groups":["users"]}`},
		{on: "front", fn: FnDelete, in: `{"scope":"users","key":"u2"}`, want: `"b"`,
			event: `{"type":"state","event_type":"state:deleted","scope":"users","key":"u2","old_value":"b","new_value":null}`},
		{on: "backend", fn: FnGet, in: `{"scope":"users","key":"u2"}`},
		// Checked on the front, before the bridge is used.
		{on: "front", fn: FnSet, in: `{"scope":"users","value":1}`, wantCode: "deserialization_error: state::set: key is required"},
		// The backend's own error comes back as it is.
		{on: "front", fn: FnSet, in: `{"scope":"users","key":"big","value":"` + strings.Repeat("x", 100) + `"}`, wantCode: "VALUE_TOO_LARGE: state::set: value is 102 bytes"},
	}
	for i, s := range steps {
		eng := front
		if s.on == "backend" {
			eng = backend
		}
		got, code := call(ctx, t, eng, s.fn, s.in)
		switch {
		case s.wantCode != "":
			if !strings.HasPrefix(code, s.wantCode) {
				t.Errorf("step %d: %s on the %s = %s %q, want the error %q", i, s.fn, s.on, got, code, s.wantCode)
			}
		case code != "" || got != s.want:
			t.Errorf("step %d: %s on the %s = %s %s, want %s", i, s.fn, s.on, got, code, s.want)
		}
		if s.event != "" {
			if got := collect(ctx, t, calls, 1); len(got["on::users"]) != 1 || got["on::users"][0] != s.event {
				t.Errorf("step %d: the front's trigger got %v, want %s", i, got, s.event)
			}
		}
	}
	select {
	case r := <-calls:
		t.Errorf("unexpected trigger call %s %s (writes on the backend fire the backend's triggers only)", r.fn, r.data)
	default:
	}
}

// TestBridgeRemoteLate: an engine whose bridge_url answers nothing yet
// starts anyway, as iii's does; calls wait for the connection, and once
// the remote engine is up they reach it.
func TestBridgeRemoteLate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there for now
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	front := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state",
		fmt.Sprintf("{bridge_url: 'ws://127.0.0.1:%d'}", port)).Engine()

	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = front.Invoke(wctx, engine.Request{FunctionID: FnGet, Data: json.RawMessage(`{"scope":"s","key":"k"}`)})
	wcancel()
	if err == nil {
		t.Fatal("state::get answered with no remote engine to answer it")
	}

	cfg := strings.Replace(enginetest.ModuleConfig(storetest.Mini(t).URL, "iii-state", ""), "port: 0", fmt.Sprintf("port: %d", port), 1)
	backend := enginetest.Start(t, ctx, cfg).Engine()
	if got, code := call(ctx, t, front, FnSet, `{"scope":"s","key":"k","value":1}`); code != "" || got != `{"old_value":null,"new_value":1}` {
		t.Fatalf("state::set once the remote is up = %s %s", got, code)
	}
	if got, code := call(ctx, t, backend, FnGet, `{"scope":"s","key":"k"}`); got != "1" {
		t.Errorf("the value on the remote engine = %s %s, want 1", got, code)
	}
}
