package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
)

func newStart(env Env) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run the engine",
		Long: `Run the engine with ./config.yaml, or the file given with --config.
Without ./config.yaml the engine runs with defaults. III_TOKEN, when set,
is the token workers must send as "Authorization: Bearer <token>".`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Context(), env, path, cmd.Flags().Changed("config"))
			if err != nil {
				return err
			}
			return start(cmd.Context(), env.Logger, cfg)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", config.DefaultPath, "config file")
	return cmd
}

// loadConfig reads path. A missing file is fine unless the path was given
// explicitly: the engine then runs with defaults.
func loadConfig(ctx context.Context, env Env, path string, explicit bool) (*config.Config, error) {
	data, err := os.ReadFile(path)
	var cfg *config.Config
	switch {
	case err == nil:
		if cfg, err = config.Parse(path, data, env.Getenv); err != nil {
			return nil, err
		}
		env.Logger.InfoContext(ctx, "config loaded", "file", path, "modules", moduleIDs(cfg))
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		cfg = config.Default()
		env.Logger.InfoContext(ctx, "no config file, running with defaults", "file", path)
	default:
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.ApplyEnv(env.Getenv)
	return cfg, nil
}

func moduleIDs(c *config.Config) []string {
	ids := make([]string, len(c.Modules))
	for i, m := range c.Modules {
		ids[i] = m.ID
	}
	return ids
}

// start serves the engine until ctx is done, then shuts it down gracefully.
func start(ctx context.Context, log *slog.Logger, cfg *config.Config) error {
	ln, err := listen(ctx, cfg.Engine)
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.Options{
		Logger:            log,
		AuthToken:         string(cfg.Engine.AuthToken),
		InvocationTimeout: cfg.Engine.InvocationTimeout,
		MaxFrameBytes:     cfg.Engine.MaxFrameBytes,
	})
	if err != nil {
		ln.Close()
		return err
	}
	log.InfoContext(ctx, "listening for workers",
		"addr", ln.Addr().String(), "url", "ws://"+ln.Addr().String()+"/",
		"auth", cfg.Engine.AuthToken != "")
	err = eng.Serve(ctx, ln)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	log.InfoContext(ctx, "engine stopped")
	return nil
}

// portInUseError says what to do about a taken port.
type portInUseError struct {
	port int
	err  error
}

func (e *portInUseError) Error() string {
	return fmt.Sprintf("port %d in use: is another iii running? set engine.port", e.port)
}

func (e *portInUseError) Unwrap() error { return e.err }

func listen(ctx context.Context, e config.Engine) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", e.Addr())
	if err != nil {
		if isAddrInUse(err) {
			return nil, &portInUseError{port: e.Port, err: err}
		}
		return nil, fmt.Errorf("listen on %s: %w", e.Addr(), err)
	}
	return ln, nil
}
