package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/sdk"
)

// BenchmarkHTTPTrigger measures requests/s of a simple GET route over
// loopback with keep-alive clients in parallel (8 per CPU):
//
//	go test -run '^$' -bench HTTPTrigger -benchtime 5s ./engine/modules/http
//
// in-process: the route's function is served inside the engine (HTTP
// module + router cost). sdk-worker: the function is served by a Go SDK
// worker over its WebSocket, the path a real deployment takes.
func BenchmarkHTTPTrigger(b *testing.B) {
	for _, mode := range []string{"in-process", "sdk-worker"} {
		b.Run(mode, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			f := startServer(b, ctx, "")
			handler := func(context.Context, json.RawMessage) (any, error) {
				return map[string]any{"body": map[string]any{"ok": true}}, nil
			}
			if mode == "in-process" {
				if err := f.srv.Engine().RegisterFunction("bench", engine.Function{ID: "bench::get",
					Handler: func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
						return json.RawMessage(`{"body":{"ok":true}}`), nil
					}}); err != nil {
					b.Fatal(err)
				}
				if _, err := f.srv.Engine().RegisterTrigger(ctx, engine.Trigger{Type: "http", FunctionID: "bench::get",
					Config: json.RawMessage(`{"api_path":"bench/:id"}`)}); err != nil {
					b.Fatal(err)
				}
			} else {
				w, err := sdk.Connect(ctx, f.srv.URL(), sdk.WithName("bench"))
				if err != nil {
					b.Fatal(err)
				}
				defer func() {
					cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer ccancel()
					w.Close(cctx)
				}()
				if err := w.RegisterFunction("bench::get", handler); err != nil {
					b.Fatal(err)
				}
				if _, err := w.RegisterTrigger(sdk.Trigger{Type: "http", FunctionID: "bench::get",
					Config: map[string]any{"api_path": "bench/:id"}}); err != nil {
					b.Fatal(err)
				}
			}
			url := f.base + "/bench/42?x=1"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
			defer client.CloseIdleConnections()
			for deadline := time.Now().Add(5 * time.Second); ; {
				if resp, err := client.Get(url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						break
					}
				}
				if time.Now().After(deadline) {
					b.Fatal("route never answered 200")
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
