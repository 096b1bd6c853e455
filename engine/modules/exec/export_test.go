package exec

import "os"

// StartForTest starts command the way the module starts a worker's run
// command and returns its pid. Its output is discarded.
func StartForTest(dir, command string) (int, error) {
	p, err := startProc(procSpec{dir: dir, command: shellCommand(command), env: os.Environ(),
		line: func(*proc, string, string) {}}, func(f func()) { go f() })
	if err != nil {
		return 0, err
	}
	return p.pid, nil
}
