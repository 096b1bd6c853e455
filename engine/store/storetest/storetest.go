// Package storetest gives tests a real Redis: a redis-server process of
// their own on a free loopback port, and the embedded miniredis, so every
// module can be tested against both.
package storetest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Backend is one Redis a test runs against.
type Backend struct {
	Name string // "miniredis" or "redis-server"
	URL  string
	// Server is the redis-server process, nil for miniredis.
	Server *Server
	// Mini is the miniredis instance, nil for redis-server.
	Mini *miniredis.Miniredis
}

// Client opens a go-redis client closed at test cleanup.
func (b Backend) Client(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(b.URL)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// Each runs f as a subtest against miniredis and against a real
// redis-server. Without redis-server on PATH the real run fails when CI=true
// and is skipped otherwise.
func Each(t *testing.T, f func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) { f(t, Mini(t)) })
	t.Run("redis-server", func(t *testing.T) {
		srv := StartServer(t)
		f(t, Backend{Name: "redis-server", URL: srv.URL(), Server: srv})
	})
}

// Mini starts a miniredis stopped at cleanup.
func Mini(t testing.TB) Backend {
	t.Helper()
	m := miniredis.RunT(t)
	return Backend{Name: "miniredis", URL: "redis://" + m.Addr(), Mini: m}
}

// Server is a redis-server process owned by a test.
type Server struct {
	t    testing.TB
	Port int
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://127.0.0.1:" + strconv.Itoa(s.Port) }

// StartServer starts redis-server on a free port with persistence off and
// stops it (by PID) at cleanup.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed (apt-get install -y redis-server); CI needs it")
		}
		t.Skip("redis-server not installed; skipping the real-Redis run (apt-get install -y redis-server)")
	}
	s := &Server{t: t, Port: freePort(t)}
	// Registered first: a server that starts but never answers is still
	// stopped when start fails the test.
	t.Cleanup(s.Stop)
	s.start(bin)
	return s
}

func (s *Server) start(bin string) {
	s.t.Helper()
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("storetest: start redis-server: %v", err)
	}
	s.done = make(chan struct{})
	// Exits when redis-server exits and its output pipe closes.
	go func(done chan struct{}, cmd *exec.Cmd) {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.t.Logf("redis-server: %s", sc.Text())
		}
		cmd.Wait()
		close(done)
	}(s.done, s.cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.Port), MaxRetries: -1})
	defer c.Close()
	for c.Ping(ctx).Err() != nil {
		select {
		case <-ctx.Done():
			s.t.Fatalf("storetest: redis-server on port %d did not answer PING", s.Port)
		case <-s.done:
			s.t.Fatalf("storetest: redis-server exited at start (port %d)", s.Port)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop terminates the server and waits for it. It is safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Restart starts the server again on the same port after Stop (a Redis
// outage that ends). Data is gone: persistence is off.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatal(err)
	}
	s.start(bin)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
