package exec_test

import (
	"bytes"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/modules/exec"
)

// engineHelperEnv makes the test binary play an engine that starts one
// worker process the module's way, prints its pid and waits to be killed.
const engineHelperEnv = "EXEC_TEST_ENGINE_HELPER"

func engineHelper() {
	pid, err := exec.StartForTest(".", "sleep 1000")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(pid)
	time.Sleep(time.Minute)
	os.Exit(1)
}

var (
	binDir    string
	buildOnce sync.Once
	workerBin string
	buildErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv(engineHelperEnv) == "1" {
		engineHelper()
		return
	}
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
