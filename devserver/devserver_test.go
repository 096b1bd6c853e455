package devserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
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
