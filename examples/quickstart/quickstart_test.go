// Package quickstart_test runs the quickstart as a user would: `iii start`
// on its config.yaml (the exec module installs and starts the three
// workers), then an HTTP request that crosses all of them.
package quickstart_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("installs the Node and Python SDKs")
	}
	for _, tool := range []string{"npm", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed for the quickstart", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	exe := filepath.Join(t.TempDir(), "iii")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/iii-workbench/iii/cmd/iii").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	httpPort := freePort(t)
	cmd := exec.Command(exe, "start", "--config", "config.yaml", "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), fmt.Sprintf("III_PORT=%d", freePort(t)),
		fmt.Sprintf("HTTP_PORT=%d", httpPort), fmt.Sprintf("STREAM_PORT=%d", freePort(t)),
		fmt.Sprintf("METRICS_PORT=%d", freePort(t)), "III_TOKEN=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 4096)
	done := make(chan struct{})
	// Exits when the engine exits.
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case logs <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		cmd.Wait()
		if t.Failed() {
			close(logs)
			for l := range logs {
				t.Log(l)
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/hello/tester", httpPort)
	var body map[string]any
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && json.Unmarshal(b, &body) == nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s never answered 200 (last error %v)", url, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	by, _ := json.Marshal(body["by"])
	if body["greeting"] != "Hello, tester!" || string(by) != `["go","python","node"]` || body["visits"] == nil {
		t.Fatalf("quickstart answered %v", body)
	}
	// The cron job (every 10 s) goes through the same three workers. A
	// tick before the Node worker is up says so in one line, and installs
	// are quiet.
	installLines := 0
	for {
		select {
		case l := <-logs:
			// The first start's installs rewrite lock files (npm install
			// and package-lock.json): no worker reloads or restarts for it.
			if strings.Contains(l, `"msg":"files changed"`) || strings.Contains(l, `"msg":"reloaded"`) ||
				strings.Contains(l, `"msg":"restarting after backoff"`) {
				t.Errorf("a worker reloaded or restarted on the first start: %s", l)
			}
			if strings.Contains(l, "Traceback") {
				t.Errorf("a worker printed a traceback on the first start: %s", l)
			}
			if strings.Contains(l, `"stream":"install"`) {
				if installLines++; installLines > 10 {
					t.Errorf("more than 10 lines of install output; the %dth: %s", installLines, l)
				}
			}
			if strings.Contains(l, "Hello, cron!") {
				return
			}
		case <-ctx.Done():
			t.Fatal("no cron run of quickstart::tick")
		}
	}
}
