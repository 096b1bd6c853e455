package compat_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRustSDKSuite runs the integration tests that ship inside the
// crates.io crate iii-sdk 0.26.0-rc.4 (its tests/*.rs, iii's own suite for
// that SDK) against `iii start` built from this tree, with
// testdata/rustsuite/config.yaml: the ports and the RBAC listener those
// tests expect. One subtest per test file.
//
// It takes minutes (a cold cargo build of the tests is about five), binds
// the fixed ports 49199, 49135, 3199 and 3112, and so runs only with
// III_RUST_SUITE=1:
//
//	III_RUST_SUITE=1 go test -run TestRustSDKSuite -timeout 40m -v ./engine/compat/
//
// III_RUST_SUITE_TARGET names the cargo target directory (default: a
// folder in the user cache directory, kept between runs).
func TestRustSDKSuite(t *testing.T) {
	if os.Getenv("III_RUST_SUITE") != "1" {
		t.Skip("set III_RUST_SUITE=1 to run the iii-sdk 0.26.0-rc.4 crate's own tests against this engine")
	}
	cargo, err := exec.LookPath("cargo")
	if err != nil {
		t.Fatalf("cargo is not on PATH: %v", err)
	}
	crate := rustSuiteCrate(t)
	target := os.Getenv("III_RUST_SUITE_TARGET")
	if target == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("no cargo target directory: set III_RUST_SUITE_TARGET (%v)", err)
		}
		target = filepath.Join(cache, "iii-rustsuite", "target")
	}
	suitePortsFree(t)

	// The crate is read-only in cargo's registry: test a copy.
	work := t.TempDir()
	src := filepath.Join(work, "iii-sdk")
	if out, err := exec.Command("cp", "-r", crate, src).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", crate, err, out)
	}
	env := append(os.Environ(), "CARGO_TARGET_DIR="+target, "RUST_BACKTRACE=0",
		"III_URL=ws://localhost:49199", "III_HTTP_URL=http://localhost:3199")
	build := exec.Command(cargo, "test", "-j", "2", "--no-run", "--test", "*")
	build.Dir, build.Env = src, env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cargo test --no-run in %s: %v\n%s", src, err, out)
	}

	stopEngine := startSuiteEngine(t, work)
	defer stopEngine()

	files, err := filepath.Glob(filepath.Join(src, "tests", "*.rs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no tests in %s/tests (%v)", src, err)
	}
	// These two read fixtures from iii's repository (sdk/fixtures), which
	// the published crate does not carry; they talk to no engine.
	noFixtures := []string{"observe_fixtures", "observe_mock"}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".rs")
		t.Run(name, func(t *testing.T) {
			if slices.Contains(noFixtures, name) {
				t.Skip("needs iii's repository fixtures (sdk/fixtures/protocol), absent from the crate; engine-independent")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, cargo, "test", "-j", "2", "--test", name)
			cmd.Dir, cmd.Env = src, env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("cargo test --test %s: %v\n%s", name, err, failedLines(out))
				return
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "test result:") {
					t.Log(l)
				}
			}
		})
	}
}

// rustSuiteCrate is the unpacked iii-sdk 0.26.0-rc.4 in cargo's registry
// (present once engine/compat/testdata/rust has been built).
func rustSuiteCrate(t *testing.T) string {
	t.Helper()
	home := os.Getenv("CARGO_HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("no home directory for cargo's registry: %v", err)
		}
		home = filepath.Join(h, ".cargo")
	}
	dirs, _ := filepath.Glob(filepath.Join(home, "registry", "src", "*", "iii-sdk-0.26.0-rc.4"))
	if len(dirs) == 0 {
		t.Fatalf("iii-sdk-0.26.0-rc.4 is not in %s/registry/src: build engine/compat/testdata/rust once (cargo build) to fetch it", home)
	}
	return dirs[0]
}

// suitePortsFree fails the test when a port of the suites' config is
// taken.
func suitePortsFree(t *testing.T) {
	t.Helper()
	for _, port := range []string{"49199", "49135", "3199", "3112"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			c.Close()
			t.Fatalf("port %s is taken: stop whatever listens there (another iii?) before running the suite", port)
		}
	}
}

// startSuiteEngine builds `iii` from this tree into dir, runs `iii start`
// with the suites' config there and waits for its worker port; the
// returned func stops it and waits.
func startSuiteEngine(t *testing.T, dir string) func() {
	t.Helper()
	bin := filepath.Join(dir, "iii")
	gobuild := exec.Command("go", "build", "-o", bin, "./cmd/iii")
	gobuild.Dir = filepath.Join("..", "..")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/iii: %v\n%s", err, out)
	}
	cfg, err := filepath.Abs(filepath.Join("testdata", "rustsuite", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "engine.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "start", "--config", cfg)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.Env = append(os.Environ(), "III_TELEMETRY_ENABLED=false")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("engine log (last 4 KiB):\n%s", tail(b, 4096))
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:49199", time.Second)
		if err == nil {
			c.Close()
			return stop
		}
		select {
		case err := <-exited:
			exited <- err
			t.Errorf("iii start exited before listening: %v", err)
			stop() // logs the engine's output
			t.FailNow()
		default:
		}
		if time.Now().After(deadline) {
			t.Errorf("iii start did not listen on 49199 within 30s")
			stop()
			t.FailNow()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// failedLines keeps cargo's output from the first failure on, bounded.
func failedLines(out []byte) string {
	s := string(out)
	if i := strings.Index(s, "failures:"); i >= 0 {
		s = s[i:]
	}
	return string(tail([]byte(s), 16<<10))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
