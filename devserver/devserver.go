// Package devserver assembles a ready iii engine on loopback ports behind
// one Start/Stop pair, shared by `iii dev` and by tests that need a real
// engine.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/iii-workbench/iii/engine"
)

// Options configures a dev server. The zero value starts an engine on a
// free 127.0.0.1 port.
type Options struct {
	Host              string // default 127.0.0.1
	Port              int    // 0 picks a free port
	Logger            *slog.Logger
	AuthToken         string
	InvocationTimeout time.Duration
	MaxFrameBytes     int64
}

func (o *Options) check() error {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("devserver: port %d out of range 0-65535", o.Port)
	}
	if o.InvocationTimeout < 0 {
		return fmt.Errorf("devserver: negative invocation timeout %v", o.InvocationTimeout)
	}
	if o.MaxFrameBytes < 0 {
		return fmt.Errorf("devserver: negative max frame size %d", o.MaxFrameBytes)
	}
	return nil
}

// Server is a running engine.
type Server struct {
	eng    *engine.Engine
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
}

// Start checks opts, listens and serves an engine until Stop.
func Start(opts Options) (*Server, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devserver: listen on %s: %w", addr, err)
	}
	eng, err := engine.New(engine.Options{Logger: opts.Logger, AuthToken: opts.AuthToken,
		InvocationTimeout: opts.InvocationTimeout, MaxFrameBytes: opts.MaxFrameBytes})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("devserver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{eng: eng, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	// Exits when Stop cancels ctx and the engine has shut down.
	go func() {
		defer close(s.done)
		s.err = eng.Serve(ctx, ln)
	}()
	return s, nil
}

// Engine is the running engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// Addr is the worker socket's host:port.
func (s *Server) Addr() string { return s.addr }

// URL is the worker WebSocket URL (what III_URL should be).
func (s *Server) URL() string { return "ws://" + s.addr }

// Stop shuts the engine down and waits for it, or for ctx.
func (s *Server) Stop(ctx context.Context) error {
	s.once.Do(s.cancel)
	select {
	case <-s.done:
		if errors.Is(s.err, context.Canceled) {
			return nil
		}
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("devserver: stop: %w", ctx.Err())
	}
}
