package cli

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/engine/config"
)

// TestPortFlags: the port flags of iii start and iii dev override the
// config, a taken port named by a flag is reported with that flag, and bad
// values are usage errors.
func TestPortFlags(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	quiet := writeConfig(t, "engine:\n  port: 0\nmodules:\n  - class: RestApiModule\n  - class: StreamModule\n    config: {port: 0}\n  - class: OtelModule\n    config: {metrics_port: 0}\n")
	onlyEngine := writeConfig(t, "engine:\n  port: 0\n")

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"engine", []string{"--port", fmt.Sprint(port)}, ExitError,
			fmt.Sprintf("iii: port %d in use: is another iii running? set engine.port or --port", port)},
		{"http", []string{"--http-port", fmt.Sprint(port)}, ExitError,
			fmt.Sprintf("iii: port %d in use (http module): is another iii running? set modules[0].config.port or --http-port", port)},
		{"stream", []string{"--http-port", "0", "--stream-port", fmt.Sprint(port)}, ExitError,
			fmt.Sprintf("iii: port %d in use (stream module): is another iii running? set modules[1].config.port or --stream-port", port)},
		{"metrics", []string{"--http-port", "0", "--metrics-port", fmt.Sprint(port)}, ExitError,
			fmt.Sprintf("iii: port %d in use (observability module): is another iii running? set modules[2].config.metrics_port or --metrics-port", port)},
		{"base", []string{"--port-base", fmt.Sprint(port)}, ExitError,
			fmt.Sprintf("iii: port %d in use: is another iii running? set engine.port or --port", port)},
		{"out of range", []string{"--http-port", "70000"}, ExitUsage, "iii: --http-port 70000: want 0-65535 (0 picks a free port)"},
		{"bad base", []string{"--port-base", "0"}, ExitUsage, "iii: --port-base 0: want 1-65532"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cmd := range []string{"start", "dev"} {
				args := append([]string{cmd, "--config", quiet}, tt.args...)
				if cmd == "dev" {
					args = append(args, "--no-tui")
				}
				r := run(t, args...)
				first, _, _ := strings.Cut(r.stderr, "\n")
				if r.code != tt.code || first != tt.want {
					t.Errorf("iii %q = %d, stderr %q; want %d, first line %q", args, r.code, r.stderr, tt.code, tt.want)
				}
			}
		})
	}

	r := run(t, "start", "--config", onlyEngine, "--http-port", "0")
	if want := "iii: --http-port: the config runs no http module\n"; r.code != ExitUsage || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("--http-port without an http module = %d, %q; want %d, %q", r.code, r.stderr, ExitUsage, want)
	}
}

// TestPortFlagsApply: the flags land in the config the modules decode,
// replacing a key, adding one to a config mapping, and adding the mapping.
func TestPortFlagsApply(t *testing.T) {
	cfg, err := config.Parse("config.yaml", []byte("modules:\n  - class: RestApiModule\n    config: {host: 127.0.0.1, port: 1}\n  - class: StreamModule\n    config: {host: 127.0.0.1}\n  - class: OtelModule\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := &cobra.Command{}
	p := addPortFlags(cmd)
	if err := cmd.ParseFlags([]string{"--port-base", "20000", "--stream-port", "30000"}); err != nil {
		t.Fatal(err)
	}
	if err := p.apply(cmd, cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.Port != 20000 {
		t.Errorf("engine.port = %d, want 20000", cfg.Engine.Port)
	}
	for _, tt := range []struct {
		id, key string
		want    int
	}{{"http", "port", 20001}, {"stream", "port", 30000}, {"observability", "metrics_port", 20003}} {
		m, _ := cfg.Module(tt.id)
		var got map[string]any
		if err := m.Config.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got[tt.key] != tt.want {
			t.Errorf("%s config %s = %v, want %d (config %v)", tt.id, tt.key, got[tt.key], tt.want, got)
		}
	}
	m, _ := cfg.Module("http")
	var http struct{ Host string }
	if err := m.Config.Decode(&http); err != nil || http.Host != "127.0.0.1" {
		t.Errorf("http config host = %q (%v), want it kept", http.Host, err)
	}
}
