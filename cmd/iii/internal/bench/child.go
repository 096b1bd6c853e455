package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// child is an engine or relay process serving one measurement.
type child struct {
	cmd      *exec.Cmd
	url      string
	httpAddr string // the HTTP listener, for the HTTP targets
	done     chan struct{}
	dir      string
	probes   chan allocCounts // the child's answers to probes (see EnvProbe)
}

// startChild runs `<exe> start` with a bare engine on a free port (target
// "engine"; "engine-http" adds the HTTP module) or `<exe> bench relay`
// (target "baseline"; "baseline-http" adds its HTTP front), and waits for
// the addresses it prints.
func startChild(ctx context.Context, exe, target string, log *slog.Logger) (*child, error) {
	var (
		args []string
		dir  string
		err  error
	)
	switch target {
	case "engine", "engine-http":
		// The bare core: routing only, no module listeners, no Redis.
		yaml := "engine:\n  host: 127.0.0.1\n  port: 0\nmodules: []\n"
		if target == "engine-http" {
			yaml = "engine:\n  host: 127.0.0.1\n  port: 0\nmodules:\n  - class: RestApiModule\n    config: {host: 127.0.0.1, port: 0}\n"
		}
		var cfg string
		if dir, cfg, err = configDir("iii-bench-*", yaml); err != nil {
			return nil, err
		}
		args = []string{"start", "--config", cfg, "--log-level", "info"}
	case "baseline-http":
		args = []string{"bench", "relay", "--http"}
	default:
		args = []string{"bench", "relay"}
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "iii-bench-*"); err != nil {
			return nil, err
		}
	}
	return launch(ctx, exe, args, []string{EnvProbe + "=1"}, dir, target, strings.HasSuffix(target, "-http"), 10*time.Second, log)
}

// configDir writes yaml as config.yaml in a new temporary directory.
func configDir(pattern, yaml string) (dir, cfg string, err error) {
	if dir, err = os.MkdirTemp("", pattern); err != nil {
		return "", "", err
	}
	cfg = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	return dir, cfg, nil
}

// launch runs `<exe> args...` (exe "" is this binary) with III_TOKEN unset
// and env added, owning dir, and waits up to ready for the worker address
// it prints (and its HTTP address when wantHTTP). Its output is read until
// it exits: probe answers go to probes, the rest to the debug log.
func launch(ctx context.Context, exe string, args, env []string, dir, target string, wantHTTP bool, ready time.Duration, log *slog.Logger) (*child, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("find own executable: %w", err)
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), "III_TOKEN="), env...)
	out, err := spawn(cmd, dir, target)
	if err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{}), dir: dir, probes: make(chan allocCounts, 4)}
	addr, httpAddr := make(chan string, 1), make(chan string, 1)
	// Exits when the child exits and its output closes.
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := probeAnswer(line); ok {
				select {
				case c.probes <- a:
				default:
				}
				continue
			}
			if a, ok := listenAddr(line); ok {
				select {
				case addr <- a:
				default:
				}
				continue
			}
			if a, ok := httpListenAddr(line); ok {
				select {
				case httpAddr <- a:
				default:
				}
				continue
			}
			log.Debug("bench child output", "target", target, "line", line)
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	select {
	case a := <-addr:
		c.url = "ws://" + a
		if !wantHTTP {
			return c, nil
		}
		select {
		case c.httpAddr = <-httpAddr:
			return c, nil
		case <-time.After(ready):
			c.stop()
			return nil, fmt.Errorf("%s did not report its HTTP address", target)
		}
	case <-c.done:
		c.stop()
		return nil, fmt.Errorf("%s exited before listening", target)
	case <-time.After(ready):
		c.stop()
		return nil, fmt.Errorf("%s did not start listening within %s", target, ready)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// listenAddr finds the address in the line a child prints when it is
// ready: the engine's JSON "listening for workers" log record, or the
// relay's "relay listening on ADDR".
func listenAddr(line string) (string, bool) {
	if a, ok := strings.CutPrefix(line, RelayReadyPrefix); ok {
		return strings.TrimSpace(a), true
	}
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening for workers" && rec.Addr != "" {
		return rec.Addr, true
	}
	return "", false
}

// httpListenAddr finds the HTTP address in the HTTP module's "http api
// listening" record or the relay's "relay http on ADDR".
func httpListenAddr(line string) (string, bool) {
	if a, ok := strings.CutPrefix(line, RelayHTTPPrefix); ok {
		return strings.TrimSpace(a), true
	}
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http api listening" && rec.Addr != "" {
		return rec.Addr, true
	}
	return "", false
}

// RelayHTTPPrefix starts the line `iii bench relay --http` prints for its
// HTTP address.
const RelayHTTPPrefix = "relay http on "

// RelayReadyPrefix starts the line `iii bench relay` prints once it
// listens.
const RelayReadyPrefix = "relay listening on "

// stop ends the child (SIGTERM, then SIGKILL) and removes its files.
func (c *child) stop() {
	defer os.RemoveAll(c.dir)
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// allocs asks the child for its allocation counters; ok is false when it
// does not answer within a few seconds (an engine built without probes).
func (c *child) allocs() (a allocCounts, ok bool) {
	for drained := false; !drained; {
		select {
		case <-c.probes: // a late answer to an earlier probe
		default:
			drained = true
		}
	}
	c.probe()
	select {
	case a = <-c.probes:
		return a, true
	case <-c.done:
	case <-time.After(3 * time.Second):
	}
	return a, false
}

func (c *child) sample() procSample {
	s, err := readProc(c.cmd.Process.Pid)
	if err != nil && !errors.Is(err, errNoProc) {
		return procSample{}
	}
	return s
}

// spawn starts cmd in its own process group with stderr joined to the
// stdout it returns; on failure it removes the child's temporary dir.
func spawn(cmd *exec.Cmd, dir, target string) (io.ReadCloser, error) {
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", target, err)
	}
	return out, nil
}
