package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/devserver"
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

// start serves the engine and its modules until ctx is done, then shuts
// everything down gracefully.
func start(ctx context.Context, log *slog.Logger, cfg *config.Config) error {
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg, Logger: log})
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "listening for workers", "addr", srv.Addr(), "url", srv.URL()+"/", "auth", cfg.Engine.AuthToken != "")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Stop(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.InfoContext(ctx, "engine stopped")
	return nil
}

// shutdownTimeout bounds a graceful stop.
const shutdownTimeout = 15 * time.Second
