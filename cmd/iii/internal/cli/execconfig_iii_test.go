package cli

import (
	"errors"
	"testing"

	"github.com/iii-workbench/iii/engine/config"
)

// TestAddExecWorkerIII: in an iii-format file the new worker becomes an
// iii-exec entry of the list the file uses, which config.Parse maps back
// onto one exec worker with the same install, run and watch.
func TestAddExecWorkerIII(t *testing.T) {
	w := execWorker{Name: "tasks", Dir: "jobs/my tasks", Install: []string{"python -m venv .venv", ".venv/bin/pip install -r requirements.txt"},
		Run: ".venv/bin/python worker.py", Watch: []string{"**/*.py"}, Env: map[string]string{"PYTHONUNBUFFERED": "1", "X": "it's"}}
	entry := `  # Worker tasks: iii-exec runs these commands in turn (the last one keeps running)
  # and starts them again when a watched file changes.
  - name: iii-exec
    config:
      watch: ["jobs/my tasks/**/*.py"]
      exec: ["cd 'jobs/my tasks' && python -m venv .venv", "cd 'jobs/my tasks' && .venv/bin/pip install -r requirements.txt", "cd 'jobs/my tasks' && export PYTHONUNBUFFERED=1 && export X='it'\\''s' && .venv/bin/python worker.py"]
`
	tests := []struct{ name, in, want string }{
		{"workers list", "workers:\n  - name: iii-http\n    config: {port: 3111}\n",
			"workers:\n  - name: iii-http\n    config: {port: 3111}\n" + entry},
		{"empty workers", "workers: []\n", "workers:\n" + entry},
		{"modules list with names", "modules:\n  - name: iii-state\n", "modules:\n  - name: iii-state\n" + entry},
	}
	for _, tt := range tests {
		got, err := addExecWorker("config.yaml", []byte(tt.in), w)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: addExecWorker(%q) =\n%s\n(err %v)\nwant\n%s", tt.name, tt.in, got, err, tt.want)
			continue
		}
		if !isIIIConfig(got) {
			t.Errorf("%s: result is not in iii's format", tt.name)
		}
		cfg, err := config.Parse("config.yaml", got, func(string) (string, bool) { return "", false })
		if err != nil {
			t.Errorf("%s: config.Parse of the result: %v", tt.name, err)
			continue
		}
		m, ok := cfg.Module(config.ModuleExec)
		if !ok {
			t.Errorf("%s: no exec module after adding the worker", tt.name)
			continue
		}
		var ec struct {
			Workers []struct {
				Name    string   `yaml:"name"`
				Dir     string   `yaml:"dir"`
				Install []string `yaml:"install"`
				Run     string   `yaml:"run"`
				Watch   []string `yaml:"watch"`
			} `yaml:"workers"`
		}
		if err := m.Decode(&ec); err != nil || len(ec.Workers) != 1 || len(ec.Workers[0].Install) != 2 ||
			ec.Workers[0].Run != "cd 'jobs/my tasks' && export PYTHONUNBUFFERED=1 && export X='it'\\''s' && .venv/bin/python worker.py" {
			t.Errorf("%s: exec module config = %+v, %v", tt.name, ec, err)
		}
	}

	twice := "workers:\n" + entry
	_, err := addExecWorker("config.yaml", []byte(twice), w)
	var dup *iiiExecError
	if want := "config.yaml:4: an iii-exec entry already runs a worker in jobs/my tasks; pick another name or --dir, or remove that entry"; !errors.As(err, &dup) || err.Error() != want {
		t.Errorf("adding the worker twice: error %v, want %q", err, want)
	}
	if _, err := addExecWorker("config.yaml", []byte("workers: 3\n"), w); err == nil || err.Error() != "config.yaml:1: workers: want a list of workers" {
		t.Errorf("workers not a list: error %v", err)
	}
}
