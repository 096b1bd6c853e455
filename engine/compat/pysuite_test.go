package compat_test

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPythonSDKSuite runs the tests that ship in PyPI's iii-sdk 0.22.1
// source distribution (its tests/, iii's own suite for that SDK) against
// `iii start` built from this tree, with testdata/rustsuite/config.yaml:
// the fixture ports and RBAC listener of iii's SDK suites.
//
// Three tests stream iii's test-assets/handbook.pdf, which the source
// distribution does not carry; a stand-in of 3 MB of random bytes behind a
// PDF header takes its place, so they run rather than skip.
//
// It takes minutes, needs PyPI, and binds the fixed ports 49199, 49135,
// 3199 and 3112, so it runs only with III_PYTHON_SUITE=1:
//
//	III_PYTHON_SUITE=1 go test -run TestPythonSDKSuite -timeout 20m -v ./engine/compat/
func TestPythonSDKSuite(t *testing.T) {
	if os.Getenv("III_PYTHON_SUITE") != "1" {
		t.Skip("set III_PYTHON_SUITE=1 to run PyPI iii-sdk 0.22.1's own tests against this engine")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is not on PATH: %v", err)
	}
	suitePortsFree(t)
	work := t.TempDir()
	run := func(dir string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out, 8<<10))
		}
	}

	// Laid out as in iii's repository, where the tests find test-assets.
	pkg := filepath.Join(work, "sdk", "packages", "python")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	run(work, python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "--dest", work, "iii-sdk==0.22.1")
	run(pkg, "tar", "xzf", filepath.Join(work, "iii_sdk-0.22.1.tar.gz"))
	src := filepath.Join(pkg, "iii")
	if err := os.Rename(filepath.Join(pkg, "iii_sdk-0.22.1"), src); err != nil {
		t.Fatal(err)
	}
	assets := filepath.Join(work, "sdk", "test-assets")
	if err := os.MkdirAll(assets, 0o755); err != nil {
		t.Fatal(err)
	}
	pdf := append([]byte("%PDF-1.4\n"), make([]byte, 3<<20)...)
	rand.Read(pdf[9:])
	if err := os.WriteFile(filepath.Join(assets, "handbook.pdf"), pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	venv := filepath.Join(work, "venv")
	run(work, python, "-m", "venv", venv)
	run(work, filepath.Join(venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check", src+"[dev]", "pytest-timeout")

	stopEngine := startSuiteEngine(t, work)
	defer stopEngine()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(venv, "bin", "pytest"), "-q", "-rfEs", "--timeout=120", "-p", "no:cacheprovider", "--no-cov", "tests")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "III_URL=ws://localhost:49199", "III_HTTP_URL=http://localhost:3199")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pytest: %v\n%s", err, tail(out, 16<<10))
	}
	// The summary ("340 passed in 127.27s"); asyncio may print more after it.
	var summary string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, " passed") {
			summary = l
		}
	}
	t.Log(summary)
	if summary == "" || strings.Contains(summary, "skipped") {
		t.Errorf("no summary, or tests were skipped:\n%s", tail(out, 8<<10))
	}
}
