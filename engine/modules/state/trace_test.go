package state

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	engineevent "github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// A state trigger's handler runs in the trace of the state::set that fired
// it, as the child of that call's span.
func TestTriggerContinuesTheTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state", "")
	eng := srv.Engine()
	sub := eng.Events().Subscribe(1024)
	defer sub.Close()
	recorders(t, eng, "traced::handler")
	bind(ctx, t, eng, "traced::handler", `{"scope":"traced"}`)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := eng.Invoke(ctx, engine.Request{FunctionID: "state::set", Traceparent: tp,
		Data: json.RawMessage(`{"scope":"traced","key":"k","value":1}`)}); err != nil {
		t.Fatal(err)
	}
	var set, handler *engineevent.InvocationFinished
	for set == nil || handler == nil {
		select {
		case ev := <-sub.C():
			f, ok := ev.(engineevent.InvocationFinished)
			if !ok {
				continue
			}
			switch f.FunctionID {
			case "state::set":
				set = &f
			case "traced::handler":
				handler = &f
			}
		case <-ctx.Done():
			t.Fatal("state::set and its trigger handler did not both finish")
		}
	}
	if set.Span.TraceID != tp[3:35] || handler.Span.TraceID != set.Span.TraceID || handler.Span.ParentSpanID != set.Span.SpanID {
		t.Errorf("state::set span %+v, handler span %+v: want the handler a child of state::set in trace %s", set.Span, handler.Span, tp[3:35])
	}
}
