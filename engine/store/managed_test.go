//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine/store"
)

// needRedisServer skips (fails in CI) without redis-server on PATH.
func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; CI needs it")
		}
		t.Skip("redis-server not installed")
	}
}

// shortDir is a fresh directory with a short path, so the socket fits in it.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "iii-st")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "data")
}

func openManaged(ctx context.Context, t *testing.T, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(ctx, store.Options{Kind: store.KindManaged, DataDir: dir})
	if err != nil {
		t.Fatalf("open managed store on %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func writeSample(ctx context.Context, t *testing.T, c *redis.Client) {
	t.Helper()
	if err := c.Set(ctx, "state", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: "stream", ID: "1-1", Values: map[string]any{"item": "one"}}).Err(); err != nil {
		t.Fatal(err)
	}
}

func checkSample(ctx context.Context, t *testing.T, c *redis.Client) {
	t.Helper()
	if got, err := c.Get(ctx, "state").Result(); err != nil || got != "kept" {
		t.Errorf("GET state = %q, %v; want kept", got, err)
	}
	msgs, err := c.XRange(ctx, "stream", "-", "+").Result()
	if err != nil || len(msgs) != 1 || msgs[0].ID != "1-1" || msgs[0].Values["item"] != "one" {
		t.Errorf("XRANGE stream = %v, %v; want one entry 1-1 item=one", msgs, err)
	}
}

func TestManagedPersistsAcrossRestart(t *testing.T) {
	needRedisServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := shortDir(t)
	s := openManaged(ctx, t, dir)
	if s.Kind != store.KindManaged || s.Embedded || s.DataDir != dir || s.Addr != filepath.Join(dir, "redis.sock") {
		t.Errorf("managed store = kind %s, embedded %v, data dir %s, addr %s", s.Kind, s.Embedded, s.DataDir, s.Addr)
	}
	// Only the socket: no TCP port, and the fsync policy is the stated one.
	cfg, err := s.Client.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["port"] != "0" || cfg["appendonly"] != "yes" || cfg["appendfsync"] != store.AppendFsync {
		t.Errorf("config port=%s appendonly=%s appendfsync=%s; want 0, yes, %s", cfg["port"], cfg["appendonly"], cfg["appendfsync"], store.AppendFsync)
	}
	writeSample(ctx, t, s.Client)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, name := range []string{"redis.sock", "redis-server.pid"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a clean stop: %v; want it removed", name, err)
		}
	}
	s = openManaged(ctx, t, dir)
	checkSample(ctx, t, s.Client)
}

func TestManagedDataDirInUse(t *testing.T) {
	needRedisServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := shortDir(t)
	openManaged(ctx, t, dir)
	s, err := store.Open(ctx, store.Options{Kind: store.KindManaged, DataDir: dir})
	if err == nil {
		s.Close()
		t.Fatal("a second managed store on the same data dir started")
	}
	if !errors.Is(err, store.ErrDataDirInUse) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second open: %v; want ErrDataDirInUse naming pid %d", err, os.Getpid())
	}
}

func TestManagedNoRedisServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.Setenv("PATH", t.TempDir())
	for _, bin := range []string{"", "/nonexistent/redis-server"} {
		s, err := store.Open(ctx, store.Options{Kind: store.KindManaged, DataDir: shortDir(t), RedisServer: bin})
		if err == nil {
			s.Close()
			t.Fatalf("managed store without redis-server (RedisServer %q) started", bin)
		}
		if !errors.Is(err, store.ErrNoRedisServer) {
			t.Errorf("RedisServer %q: %v; want ErrNoRedisServer", bin, err)
		}
	}
}

// fakeServer writes an executable shell script standing in for redis-server.
func fakeServer(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "redis-server")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManagedFailedStart(t *testing.T) {
	t.Run("exits", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bin := fakeServer(t, "echo '# Fatal error, bad config'\nexit 1\n")
		_, err := store.StartManaged(ctx, store.ManagedOptions{DataDir: shortDir(t), RedisServer: bin})
		if err == nil || !strings.Contains(err.Error(), "exited at start") || !strings.Contains(err.Error(), "# Fatal error, bad config") {
			t.Errorf("start of an exiting server: %v; want an error with its output", err)
		}
	})
	t.Run("never answers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pidFile := filepath.Join(t.TempDir(), "pid")
		bin := fakeServer(t, fmt.Sprintf("echo $$ > %s\nexec sleep 60\n", pidFile))
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		defer scancel()
		dir := shortDir(t)
		_, err := store.StartManaged(sctx, store.ManagedOptions{DataDir: dir, RedisServer: bin})
		if err == nil || !strings.Contains(err.Error(), "did not answer PING") {
			t.Fatalf("start of a silent server: %v; want a PING error", err)
		}
		b, rerr := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if rerr != nil || pid <= 0 {
			t.Fatalf("fake server pid: %q, %v", b, rerr)
		}
		if syscall.Kill(pid, 0) == nil {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("the server that never answered (pid %d) still runs", pid)
		}
		// The directory is free again.
		if _, err := os.Stat(filepath.Join(dir, "redis-server.pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid file after a failed start: %v; want removed", err)
		}
	})
}

// TestManagedServerKilled: the redis-server itself is killed with SIGKILL;
// what it acknowledged is in the append-only file.
func TestManagedServerKilled(t *testing.T) {
	needRedisServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := shortDir(t)
	m, err := store.StartManaged(ctx, store.ManagedOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: m.Socket()})
	writeSample(ctx, t, c)
	c.Close()
	syscall.Kill(m.Pid(), syscall.SIGKILL)
	select {
	case <-m.Exited():
	case <-ctx.Done():
		t.Fatal("redis-server did not exit after SIGKILL")
	}
	if err := m.Stop(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop after the server was killed: %v; want an error saying so", err)
	}
	s := openManaged(ctx, t, dir)
	checkSample(ctx, t, s.Client)
}

// TestManagedStopsOrphan: a redis-server on the data dir that no engine
// owns (its engine was killed where there is no parent-death signal) is
// stopped, cleanly, before the new one starts; its data is kept.
func TestManagedStopsOrphan(t *testing.T) {
	needRedisServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := shortDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "redis.sock")
	orphan := exec.Command("redis-server", "--port", "0", "--unixsocket", sock, "--dir", dir,
		"--appendonly", "yes", "--save", "", "--loglevel", "warning")
	orphan.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	// Exits when the orphan exits.
	go func() { exited <- orphan.Wait() }()
	defer func() {
		orphan.Process.Kill()
		<-exited
	}()
	if err := os.WriteFile(filepath.Join(dir, "redis-server.pid"), []byte(strconv.Itoa(orphan.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1})
	defer c.Close()
	for c.Ping(ctx).Err() != nil {
		select {
		case <-ctx.Done():
			t.Fatal("the orphan never answered")
		case <-time.After(10 * time.Millisecond):
		}
	}
	writeSample(ctx, t, c)

	s := openManaged(ctx, t, dir)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("orphan exit: %v; want a clean exit after SIGTERM", err)
		}
	default:
		t.Error("the orphan still runs after the managed store started")
	}
	checkSample(ctx, t, s.Client)
}

// TestManagedOwnerKilled kills (SIGKILL) a process that started a managed
// store: the kernel's parent-death signal stops its redis-server, and a new
// engine finds the data.
func TestManagedOwnerKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux only")
	}
	needRedisServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := shortDir(t)
	owner := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperOwner$")
	owner.Env = append(os.Environ(), "III_STORE_HELPER_DIR="+dir)
	out, err := owner.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	defer owner.Wait()
	defer owner.Process.Kill()
	sc := bufio.NewScanner(out)
	pid := 0
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "redis-server pid "); ok {
			pid, _ = strconv.Atoi(v)
			break
		}
	}
	if pid == 0 {
		t.Fatal("the owner process never reported its redis-server")
	}
	owner.Process.Kill()
	owner.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("redis-server %d outlived its killed owner by 10s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := openManaged(ctx, t, dir)
	checkSample(ctx, t, s.Client)
}

// TestHelperOwner is the owner process of TestManagedOwnerKilled.
func TestHelperOwner(t *testing.T) {
	dir := os.Getenv("III_STORE_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process")
	}
	ctx := context.Background()
	m, err := store.StartManaged(ctx, store.ManagedOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: m.Socket()})
	writeSample(ctx, t, c)
	fmt.Printf("redis-server pid %d\n", m.Pid())
	<-ctx.Done() // killed by the test
}
