package observability_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/observability"
	"github.com/iii-workbench/iii/engine/protocol"
)

// collector is an OTLP/HTTP receiver: it decodes the protobuf requests
// posted to /v1/traces and /v1/logs.
type collector struct {
	srv *httptest.Server

	mu      sync.Mutex
	spans   map[string]string // span name -> service.name of its resource
	traces  map[string]string // span name -> trace id (hex)
	logs    map[string]string // log body -> service.name
	headers http.Header
	bad     []string
}

func newCollector(t *testing.T) *collector {
	c := &collector{spans: map[string]string{}, traces: map[string]string{}, logs: map[string]string{}}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func svcOf(r *resourcepb.Resource) string {
	for _, kv := range r.GetAttributes() {
		if kv.GetKey() == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.headers = r.Header.Clone()
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		c.bad = append(c.bad, "content type "+ct)
	}
	switch r.URL.Path {
	case "/v1/traces":
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			c.bad = append(c.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					c.spans[sp.GetName()] = svcOf(rs.GetResource())
					c.traces[sp.GetName()] = hex.EncodeToString(sp.GetTraceId())
				}
			}
		}
	case "/v1/logs":
		var req collogspb.ExportLogsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			c.bad = append(c.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				for _, lr := range sl.GetLogRecords() {
					c.logs[lr.GetBody().GetStringValue()] = svcOf(rl.GetResource())
				}
			}
		}
	default:
		c.bad = append(c.bad, "path "+r.URL.Path)
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(nil)
}

func (c *collector) state() (spans, logs map[string]string, traces map[string]string, bad []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.spans), maps.Clone(c.logs), maps.Clone(c.traces), slices.Clone(c.bad)
}

func TestOTLPExport(t *testing.T) {
	nodeSpans, err := os.ReadFile("otlpjson/testdata/node-traces.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  func(url string) (string, map[string]string)
	}{
		{"config", func(url string) (string, map[string]string) {
			return "exporter: otlp\nendpoint: " + url + "\nlogs_flush_interval_ms: 20\nservice_name: iii-test", nil
		}},
		{"environment", func(url string) (string, map[string]string) {
			return "logs_flush_interval_ms: 20", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": url,
				"OTEL_SERVICE_NAME": "iii-test", "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s%20cret"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := enginetest.Context(t)
			col := newCollector(t)
			cfg, env := tt.cfg(col.srv.URL)
			s := startServer(t, cfg, env)
			eng := s.Engine()
			w := enginetest.Connect(t, ctx, s.URL(), "export-worker")
			w.RegisterFunction("exp::fn", func(context.Context, json.RawMessage) (any, error) { return 1, nil })
			waitFunctions(t, ctx, eng, "exp::fn")

			const traceID = "11112222333344445555666677778888"
			call(t, ctx, eng, engine.Request{FunctionID: "exp::fn", Traceparent: "00-" + traceID + "-1111222233334444-01"}, nil)
			call(t, ctx, eng, engine.Request{FunctionID: "engine::log::error", Data: data(map[string]any{"message": "exported log"})}, nil)
			s.mod.Telemetry("", "OTLP", nodeSpans)

			waitFor(t, ctx, "spans and logs at the collector", func() (bool, string) {
				spans, logs, _, bad := col.state()
				return spans["exp::fn"] != "" && spans["execute nodeotel::echo"] != "" && logs["exported log"] != "" || len(bad) > 0,
					fmt.Sprint(spans, logs)
			})
			spans, logs, traces, bad := col.state()
			if len(bad) > 0 {
				t.Fatalf("collector rejected requests: %v", bad)
			}
			if spans["exp::fn"] != "iii-test" || traces["exp::fn"] != traceID {
				t.Errorf("engine span exported with service %q trace %s; want iii-test, %s", spans["exp::fn"], traces["exp::fn"], traceID)
			}
			if spans["execute nodeotel::echo"] != "iii-node" || spans["compat-span"] != "iii-node" {
				t.Errorf("worker spans exported with services %v; want their own resource (iii-node)", spans)
			}
			if logs["exported log"] != "iii-test" {
				t.Errorf("log exported with service %q, want iii-test", logs["exported log"])
			}
			_, err := eng.Invoke(ctx, engine.Request{FunctionID: "engine::traces::list"})
			var eb *protocol.ErrorBody
			if env == nil { // exporter: otlp keeps no spans in memory
				if !errors.As(err, &eb) || eb.Code != observability.CodeMemoryExporterOff {
					t.Errorf("traces::list with exporter otlp: %v, want %s", err, observability.CodeMemoryExporterOff)
				}
			} else if err != nil { // the environment's endpoint means both
				t.Errorf("traces::list with an endpoint from the environment: %v", err)
			}
			if env != nil {
				col.mu.Lock()
				h := col.headers.Get("X-Api-Key")
				col.mu.Unlock()
				if h != "s cret" {
					t.Errorf("header from OTEL_EXPORTER_OTLP_HEADERS = %q, want %q", h, "s cret")
				}
			}
		})
	}
}

// grpcCollector is an OTLP/gRPC receiver.
type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer

	mu    sync.Mutex
	spans map[string]string // name -> service.name
	logs  map[string]string
	md    metadata.MD
}

func (g *grpcCollector) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.md, _ = metadata.FromIncomingContext(ctx)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				g.spans[sp.GetName()] = svcOf(rs.GetResource())
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// logsServer adapts the logs service (its Export clashes with the trace
// service's by name).
type logsServer struct {
	collogspb.UnimplementedLogsServiceServer
	g *grpcCollector
}

func (l logsServer) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				l.g.logs[lr.GetBody().GetStringValue()] = svcOf(rl.GetResource())
			}
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func TestOTLPGRPCExport(t *testing.T) {
	ctx := enginetest.Context(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &grpcCollector{spans: map[string]string{}, logs: map[string]string{}}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, g)
	collogspb.RegisterLogsServiceServer(srv, logsServer{g: g})
	done := make(chan struct{})
	// Exits when srv.Stop closes the listener.
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	s := startServer(t, "logs_flush_interval_ms: 20", map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + ln.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer t0k"})
	eng := s.Engine()
	eng.Invoke(ctx, engine.Request{FunctionID: "grpc::missing", Trigger: "http"})
	call(t, ctx, eng, engine.Request{FunctionID: "engine::log::info", Data: data(map[string]any{"message": "over grpc"})}, nil)
	waitFor(t, ctx, "span and log over gRPC", func() (bool, string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.spans["grpc::missing"] == "iii" && g.logs["over grpc"] == "iii", fmt.Sprint(g.spans, g.logs)
	})
	g.mu.Lock()
	auth := g.md.Get("authorization")
	g.mu.Unlock()
	if len(auth) != 1 || auth[0] != "Bearer t0k" {
		t.Errorf("gRPC metadata authorization %v, want Bearer t0k", auth)
	}
}
