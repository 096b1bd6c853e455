package cli

import (
	"context"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/engine/config"
)

func TestStoreFlagErrors(t *testing.T) {
	withURL := writeConfig(t, "redis: {url: 'redis://127.0.0.1:1'}\nmodules: []\n")
	plain := writeConfig(t, "modules: []\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"start", "--config", plain, "--store", "disk"}, "iii: --store \"disk\": want memory or managed\n"},
		{[]string{"dev", "--no-tui", "--config", plain, "--store", ""}, "iii: --store \"\": want memory or managed\n"},
		{[]string{"start", "--config", withURL, "--store", "managed"}, "iii: --store managed: redis.url is set in " + withURL + "; the store applies only without it\n"},
		{[]string{"start", "--config", withURL, "--data-dir", "d"}, "iii: --data-dir: redis.url is set in " + withURL + "; the data dir is for the managed store\n"},
		{[]string{"start", "--config", plain, "--store", "memory", "--data-dir", "d"}, "iii: --data-dir is for the managed store, not --store memory\n"},
		{[]string{"start", "--config", plain, "--data-dir", ""}, "iii: --data-dir needs a directory\n"},
	}
	for _, tt := range tests {
		r := run(t, tt.args...)
		if want := tt.want + "Run 'iii " + tt.args[0] + " --help' for usage.\n"; r.code != ExitUsage || r.stderr != want {
			t.Errorf("iii %q = %d, stderr %q; want %d, %q", tt.args, r.code, r.stderr, ExitUsage, tt.want)
		}
	}
}

func TestStoreFlagsApply(t *testing.T) {
	abs, err := filepath.Abs("rel")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		redis config.Redis
		args  []string
		def   string
		want  config.Redis
	}{
		{"start defaults to managed", config.Redis{}, nil, config.StoreManaged, config.Redis{Store: config.StoreManaged}},
		{"dev defaults to memory", config.Redis{}, nil, config.StoreMemory, config.Redis{Store: config.StoreMemory}},
		{"a data dir chooses managed", config.Redis{}, []string{"--data-dir", "rel"}, config.StoreMemory,
			config.Redis{Store: config.StoreManaged, DataDir: abs}},
		{"a data dir in the file chooses managed", config.Redis{DataDir: "d"}, nil, config.StoreMemory,
			config.Redis{Store: config.StoreManaged, DataDir: "d"}},
		{"the flag overrides the file", config.Redis{Store: config.StoreManaged}, []string{"--store", "memory"}, config.StoreManaged,
			config.Redis{Store: config.StoreMemory}},
		{"a url leaves the store alone", config.Redis{URL: "redis://x:1"}, nil, config.StoreManaged, config.Redis{URL: "redis://x:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sf storeFlags
			cmd := &cobra.Command{}
			sf.add(cmd)
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg := &config.Config{File: "config.yaml", Redis: tt.redis}
			if err := sf.apply(cmd, cfg, tt.def); err != nil {
				t.Fatal(err)
			}
			if cfg.Redis != tt.want {
				t.Errorf("apply(%+v, %q, default %s) = %+v; want %+v", tt.redis, tt.args, tt.def, cfg.Redis, tt.want)
			}
		})
	}
}

// TestDevSaysMemory: iii dev keeps the store in memory by default and its
// ready line says the data is lost on exit.
func TestDevSaysMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stdout, _, _ := devNoTUI(t, ctx, "engine:\n  port: 0\nmodules:\n  - class: StateModule\n")
	waitOutput(ctx, t, stdout, regexp.MustCompile(`iii dev: engine ready in \S+ on ws://\S+ \(redis memory, lost on exit; modules state\)\n`))
}
