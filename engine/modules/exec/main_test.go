package exec_test

import (
	"bytes"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

var (
	binDir    string
	buildOnce sync.Once
	workerBin string
	buildErr  error
)

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp("", "exec-test-bin")
	if err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(binDir) }))
}

// testWorker builds testdata/worker once per test run and returns its path.
func testWorker(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		workerBin = filepath.Join(binDir, "worker")
		cmd := osexec.Command("go", "build", "-o", workerBin, "./testdata/worker")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = err
			workerBin = out.String()
		}
	})
	if buildErr != nil {
		t.Fatalf("go build ./testdata/worker: %v\n%s", buildErr, workerBin)
	}
	return workerBin
}
