package devserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	_ "github.com/iii-workbench/iii/engine/modules/http"          // a module with a port
	_ "github.com/iii-workbench/iii/engine/modules/observability" // a module with a metrics port
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := devserver.Start(ctx, devserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, s.URL(), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", s.URL(), err)
	}
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var hello struct{ Type, WorkerID string }
	json.Unmarshal(data, &hello)
	if hello.Type != "workerregistered" {
		t.Errorf("first frame %s", data)
	}
	readErr := make(chan error, 1)
	// Exits when the engine closes the socket.
	go func() {
		_, _, err := ws.Read(ctx)
		readErr <- err
	}()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after stop: %v, want close 1001", err)
	}
	if err := s.Stop(ctx); err != nil { // idempotent
		t.Errorf("second stop: %v", err)
	}
}

func TestBadPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, port := range []int{-1, 70000} {
		cfg := &config.Config{Engine: config.Engine{Host: "127.0.0.1", Port: port}}
		if s, err := devserver.Start(ctx, devserver.Options{Config: cfg}); err == nil {
			s.Stop(ctx)
			t.Errorf("Start with port %d succeeded", port)
		}
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &config.Config{Engine: config.Engine{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}}
	s, err := devserver.Start(ctx, devserver.Options{Config: cfg})
	if err == nil {
		s.Stop(ctx)
		t.Fatal("started on a port in use")
	}
	var inUse *devserver.PortInUseError
	if !errors.As(err, &inUse) || inUse.Port != cfg.Engine.Port {
		t.Errorf("error %v, want PortInUseError for port %d", err, cfg.Engine.Port)
	}
}

func TestExtraListeners(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := devserver.Start(ctx, devserver.Options{
		Listener: engine.ListenerOptions{MiddlewareFunctionID: "mw"},
		Listeners: []devserver.Listener{{Addr: "127.0.0.1:0",
			ListenerOptions: engine.ListenerOptions{RBAC: &engine.RBAC{AuthFunctionID: "auth"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	addrs := s.ListenerAddrs()
	if len(addrs) != 1 {
		t.Fatalf("ListenerAddrs = %v", addrs)
	}
	first := func(url string) string {
		ws, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		defer ws.CloseNow()
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	// No auth function registered yet: refused with AUTH_ERROR.
	if got := first("ws://" + addrs[0]); !strings.Contains(got, `"AUTH_ERROR"`) || !strings.Contains(got, "auth") {
		t.Errorf("first frame on the RBAC listener: %s", got)
	}
	err = s.Engine().RegisterFunction("test", engine.Function{ID: "auth",
		Handler: func(context.Context, *engine.Call) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if got := first("ws://" + addrs[0]); !strings.Contains(got, "workerregistered") {
		t.Errorf("first frame once admitted: %s", got)
	}
	if got := first(s.URL()); !strings.Contains(got, "workerregistered") {
		t.Errorf("first frame on the primary listener: %s", got)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := websocket.Dial(ctx, "ws://"+addrs[0], nil); err == nil {
		t.Error("extra listener still accepting after Stop")
	}
}

// TestModulePortInUse: a module listener's taken port stops startup with
// the config key and the flag that move it, for each module with a port.
func TestModulePortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, tt := range []struct {
		module, entry, key, flag string
	}{
		{"http", fmt.Sprintf("RestApiModule\n    config: {port: %d}", port), "modules[1].config.port", "--http-port"},
		{"stream", fmt.Sprintf("StreamModule\n    config: {port: %d}", port), "modules[1].config.port", "--stream-port"},
		{"observability", fmt.Sprintf("OtelModule\n    config: {metrics_port: %d}", port), "modules[1].config.metrics_port", "--metrics-port"},
	} {
		t.Run(tt.module, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			text := "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: iii-cron\n  - class: " + tt.entry + "\n"
			cfg, err := config.Parse("config.yaml", []byte(text), nil)
			if err != nil {
				t.Fatal(err)
			}
			s, err := devserver.Start(ctx, devserver.Options{Config: cfg})
			if err == nil {
				s.Stop(ctx)
				t.Fatal("started on a port in use")
			}
			want := fmt.Sprintf("port %d in use (%s module): is another iii running? set %s or %s", port, tt.module, tt.key, tt.flag)
			var inUse *devserver.PortInUseError
			if !errors.As(err, &inUse) || err.Error() != want {
				t.Errorf("error %v, want %q", err, want)
			}
		})
	}
}
