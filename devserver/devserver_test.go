package devserver_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/devserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartStop(t *testing.T) {
	s, err := devserver.Start(devserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
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

func TestOptionsChecked(t *testing.T) {
	for _, o := range []devserver.Options{{Port: -1}, {Port: 70000}, {InvocationTimeout: -time.Second}, {MaxFrameBytes: -1}} {
		if s, err := devserver.Start(o); err == nil {
			s.Stop(context.Background())
			t.Errorf("Start(%+v) accepted bad options", o)
		}
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if s, err := devserver.Start(devserver.Options{Port: port}); err == nil {
		s.Stop(context.Background())
		t.Fatal("started on a port in use")
	}
}
