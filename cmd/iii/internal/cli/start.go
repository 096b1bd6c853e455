package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/cmd/iii/internal/bench"
	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/store"
)

func newStart(env Env) *cobra.Command {
	var (
		path  string
		sf    storeFlags
		ports *portFlags
	)
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run the engine",
		Long: `Run the engine with ./config.yaml, or the file given with --config.
Without ./config.yaml the engine runs with defaults. III_TOKEN, when set,
is the token workers must send as "Authorization: Bearer <token>". The
engine runs Go code on half the CPUs (at least one) unless GOMAXPROCS is
set: it is I/O-bound and shares the host with its workers.

Without redis.url the engine keeps queue, state and stream data in a
redis-server it starts and owns, with an append-only file under
.iii/data beside the config file (--data-dir, redis.data_dir): nothing
acknowledged is lost on restart or kill -9. It needs redis-server on PATH
(or III_REDIS_SERVER); --store memory keeps the data in memory instead,
lost on exit.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Context(), env, path, cmd.Flags().Changed("config"))
			if err != nil {
				return err
			}
			if err := sf.apply(cmd, cfg, config.StoreManaged); err != nil {
				return err
			}
			if err := ports.apply(cmd, cfg); err != nil {
				return err
			}
			redisServer, _ := env.Getenv(EnvRedisServer)
			engineProcs(env, env.Logger)
			// Under iii bench, answer its allocation probes.
			defer bench.ServeProbes(cmd.OutOrStdout())()
			return start(cmd.Context(), env.Logger, cfg, redisServer)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", config.DefaultPath, "config file")
	sf.add(cmd)
	ports = addPortFlags(cmd)
	return cmd
}

// EnvRedisServer names the redis-server binary the managed store runs
// (default: redis-server on PATH).
const EnvRedisServer = "III_REDIS_SERVER"

// storeFlags are --store and --data-dir, which override redis.store and
// redis.data_dir.
type storeFlags struct {
	store   string
	dataDir string
}

func (f *storeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.store, "store", "", "store without redis.url: managed (a redis-server with an append-only file) or memory (lost on exit)")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "managed store data directory (default .iii/data beside the config file)")
}

// apply puts the flags into cfg and settles the store: def when neither
// redis.url nor a store is chosen (a data dir alone chooses managed).
func (f *storeFlags) apply(cmd *cobra.Command, cfg *config.Config, def string) error {
	r := &cfg.Redis
	if cmd.Flags().Changed("store") {
		switch {
		case f.store != config.StoreMemory && f.store != config.StoreManaged:
			return usageError{fmt.Errorf("--store %q: want %s or %s", f.store, config.StoreMemory, config.StoreManaged)}
		case r.URL != "":
			return usageError{fmt.Errorf("--store %s: redis.url is set in %s; the store applies only without it", f.store, cfg.File)}
		}
		r.Store = f.store
	}
	if cmd.Flags().Changed("data-dir") {
		switch {
		case f.dataDir == "":
			return usageError{errors.New("--data-dir needs a directory")}
		case r.URL != "":
			return usageError{fmt.Errorf("--data-dir: redis.url is set in %s; the data dir is for the managed store", cfg.File)}
		case r.Store == config.StoreMemory:
			return usageError{errors.New("--data-dir is for the managed store, not --store memory")}
		}
		abs, err := filepath.Abs(f.dataDir)
		if err != nil {
			return usageError{fmt.Errorf("--data-dir: %w", err)}
		}
		r.DataDir = abs
	}
	if r.URL == "" && r.Store == "" {
		r.Store = def
		if r.DataDir != "" {
			r.Store = config.StoreManaged
		}
	}
	return nil
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
func start(ctx context.Context, log *slog.Logger, cfg *config.Config, redisServer string) error {
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg, Logger: log, RedisServer: redisServer})
	if err != nil {
		return storeError(err, redisServer)
	}
	log.InfoContext(ctx, "listening for workers", "addr", srv.Addr(), "url", srv.URL()+"/", "auth", cfg.Engine.AuthToken != "",
		"store", srv.RedisMode())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Stop(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.InfoContext(ctx, "engine stopped")
	return nil
}

// storeError turns a missing redis-server into one line that says how to
// choose a store.
func storeError(err error, redisServer string) error {
	if !errors.Is(err, store.ErrNoRedisServer) {
		return err
	}
	where := "on PATH"
	if redisServer != "" {
		where = fmt.Sprintf("at %s=%s", EnvRedisServer, redisServer)
	}
	return fmt.Errorf("redis-server not found %s: without redis.url iii keeps queue, state and stream data in a redis-server it runs; "+
		"install redis-server (apt-get install redis-server, brew install redis), set redis.url to a Redis you run, "+
		"or pass --store memory to keep data in memory and lose it on exit", where)
}

// shutdownTimeout bounds a graceful stop.
const shutdownTimeout = 15 * time.Second
