package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/cmd/iii/internal/devsource"
	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/tui"
)

func newDev(env Env) *cobra.Command {
	var (
		path  string
		noTUI bool
		sf    storeFlags
		ports *portFlags
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the engine, every module and your workers, with a live TUI",
		Long: `Run the whole engine in this process with ./config.yaml (or --config):
every module, an in-memory store (lost on exit) unless redis.url,
redis.store, --store or --data-dir choose otherwise, and the workers the
exec module lists, then show them live in a terminal UI.

Without a terminal, or with --no-tui, the same engine writes one line per
event (workers joining and leaving, registrations, calls, worker output) to
stdout, for scripts and CI. With the TUI up, logs go to .iii/dev.log.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			useTUI := !noTUI && isTerminal(env.Stdout) && isTerminal(devStdin(env))
			store := func(cfg *config.Config) error { return sf.apply(cmd, cfg, config.StoreMemory) }
			return dev(cmd.Context(), env, devOptions{path: path, explicit: cmd.Flags().Changed("config"), tui: useTUI, store: store,
				ports: func(cfg *config.Config) error { return ports.apply(cmd, cfg) }})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", config.DefaultPath, "config file")
	cmd.Flags().BoolVar(&noTUI, "no-tui", false, "print a line per event instead of the terminal UI")
	sf.add(cmd)
	ports = addPortFlags(cmd)
	return cmd
}

func devStdin(env Env) io.Reader {
	if env.Stdin != nil {
		return env.Stdin
	}
	return os.Stdin
}

type devOptions struct {
	path     string
	explicit bool
	tui      bool
	// store applies --store and --data-dir to the loaded config; nil
	// leaves it as loaded.
	store func(*config.Config) error
	// ports applies the port flags to the loaded config; nil leaves it.
	ports func(*config.Config) error
	// tuiOpts are extra bubbletea options (tests).
	tuiOpts []tea.ProgramOption
}

// dev runs the engine until ctx ends (or the user quits the TUI), then
// stops it.
func dev(ctx context.Context, env Env, o devOptions) (err error) {
	log := env.Logger
	var devLog *lateFile
	if !o.tui {
		log = slog.New(withoutWorkerOutput{log.Handler()})
		env.Logger = log
	}
	if o.tui {
		// The terminal belongs to the TUI: logs go to a file, opened only
		// once the engine is up so a second iii dev that fails on a taken
		// port leaves the first one's log alone.
		devLog = new(lateFile)
		defer devLog.Close()
		log = slog.New(slog.NewTextHandler(devLog, &slog.HandlerOptions{Level: env.Level}))
		env.Logger = log
	}
	cfg, err := loadConfig(ctx, env, o.path, o.explicit)
	if err != nil {
		return err
	}
	if o.store != nil {
		if err := o.store(cfg); err != nil {
			return err
		}
	}
	if o.ports != nil {
		if err := o.ports(cfg); err != nil {
			return err
		}
	}

	begin := time.Now()
	redisServer, _ := env.Getenv(EnvRedisServer)
	// The events from before the TUI or the printer subscribes (a worker's
	// first lines) wait in EventBuffer for it.
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg, Logger: log, RedisServer: redisServer,
		EventBuffer: devEventBuffer})
	if err != nil {
		return storeError(err, redisServer)
	}
	ready := time.Since(begin)
	var logPath string
	if devLog != nil {
		if logPath, err = devLog.open(o.path); err != nil {
			srv.Stop(context.WithoutCancel(ctx))
			return err
		}
	}
	log.InfoContext(ctx, "iii dev ready", "ready_in", ready, "url", srv.URL(), "redis", srv.RedisMode(),
		"modules", srv.Modules().IDs())
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if serr := srv.Stop(sctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("shutdown: %w", serr))
		}
		log.InfoContext(ctx, "engine stopped")
	}()

	src := devsource.New(srv, env.Build.Version)
	if !o.tui {
		fmt.Fprintf(env.Stdout, "iii dev: engine ready in %s on %s (redis %s; modules %s)\n", ready.Round(time.Microsecond),
			srv.URL(), orNone(srv.RedisMode()), orNone(strings.Join(srv.Modules().IDs(), ", ")))
		if eps := src.Info().Endpoints; len(eps) > 0 {
			// Where the modules listen: with moved ports, the addresses to
			// curl are these, not the defaults a worker may print.
			var b strings.Builder
			for i, ep := range eps {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(ep.Name + " " + ep.Addr)
			}
			fmt.Fprintf(env.Stdout, "iii dev: listening: %s\n", b.String())
		}
		return tui.Print(ctx, src, env.Stdout)
	}
	opts := append([]tea.ProgramOption{tea.WithInput(devStdin(env)), tea.WithOutput(env.Stdout)}, o.tuiOpts...)
	if err := tui.Run(ctx, src, tui.Options{}, opts...); err != nil {
		return fmt.Errorf("tui: %w", err)
	}
	fmt.Fprintf(env.Stdout, "iii dev: engine was ready in %s; logs in %s\n", ready.Round(time.Microsecond), logPath)
	return nil
}

// devEventBuffer is how many events iii dev holds for its TUI or printer,
// from before it subscribes and whenever it falls behind.
const devEventBuffer = 1 << 16

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// lateFile is the dev log: what is written before open is kept in memory,
// then written to the file, which takes every later write.
type lateFile struct {
	mu  sync.Mutex
	buf bytes.Buffer
	f   *os.File
}

func (l *lateFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return l.f.Write(p)
	}
	return l.buf.Write(p)
}

// open opens .iii/dev.log beside the config file (or in the working
// directory), or a file in the temp dir when that is not writable, and
// returns its path.
func (l *lateFile) open(configPath string) (string, error) {
	f, p, err := openDevLog(configPath)
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f = f
	_, err = l.buf.WriteTo(f)
	return p, err
}

// Close closes the file; later writes are dropped into memory.
func (l *lateFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	l.buf.Reset()
	return err
}

// openDevLog opens .iii/dev.log beside the config file (or in the working
// directory), or a file in the temp dir when that is not writable.
func openDevLog(configPath string) (*os.File, string, error) {
	dir := filepath.Join(filepath.Dir(configPath), ".iii")
	p := filepath.Join(dir, "dev.log")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err == nil {
			return f, p, nil
		}
	}
	f, err := os.CreateTemp("", "iii-dev-*.log")
	if err != nil {
		return nil, "", fmt.Errorf("dev log: %w", err)
	}
	return f, f.Name(), nil
}
