// Package cli implements the iii command line. main builds the process
// environment (signals, logger) and hands it to Run.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed: bad config, port in use, ...
	ExitUsage = 2 // bad command line
)

// Build identifies the binary. main's variables are stamped with -ldflags -X.
type Build struct {
	Version, Commit, Date string
}

// String is "<version> (<commit>, <date>)"; an unstamped build is
// "devel (commit <commit>, built <date>)" with "unknown" for what the
// toolchain did not record.
func (b Build) String() string {
	if b.Version == unstamped || b.Version == "" {
		return fmt.Sprintf("devel (commit %s, built %s)", orUnknown(b.Commit), orUnknown(b.Date))
	}
	return fmt.Sprintf("%s (%s, %s)", b.Version, b.Commit, b.Date)
}

// unstamped is what main's build variables hold without -ldflags -X.
const unstamped = "dev"

func orUnknown(s string) string {
	if s == unstamped || s == "" {
		return "unknown"
	}
	return s
}

// withVCS fills a version, commit and date left at "dev" from the Go
// toolchain's stamps (go install ...@vX.Y.Z, the VCS state), when the
// binary has them.
func (b Build) withVCS() Build {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := info.Main.Version; b.Version == unstamped && v != "" && v != "(devel)" {
		b.Version = v
	}
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && b.Commit == "dev" && len(s.Value) >= 12:
			b.Commit = s.Value[:12]
		case s.Key == "vcs.time" && b.Date == "dev" && s.Value != "":
			b.Date = s.Value
		}
	}
	return b
}

// Env is what a run needs from its process.
type Env struct {
	Stdout, Stderr io.Writer
	// Logger is the one logger of the process; Level is its level, set from
	// --log-level.
	Logger *slog.Logger
	Level  *slog.LevelVar
	// Getenv looks up environment variables (os.LookupEnv).
	Getenv func(string) (string, bool)
	Build  Build
	// Stdin is read by commands that take input there (iii invoke); nil
	// means os.Stdin.
	Stdin io.Reader
}

// usageError marks a bad command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Run runs the command line args (without the program name) and returns the
// process exit code. Errors are printed to env.Stderr.
func Run(ctx context.Context, env Env, args []string) int {
	env.Build = env.Build.withVCS()
	root := newRoot(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var fe functionError
	if errors.As(err, &fe) {
		fe.print(env.Stderr)
		return ExitError
	}
	fmt.Fprintf(env.Stderr, "iii: %v\n", err)
	var ce codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	if errors.As(err, new(usageError)) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(env.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage
	}
	return ExitError
}

func newRoot(env Env) *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:   "iii",
		Short: "iii routes function calls between workers",
		Long: `iii is a function-routing engine. Workers in any language connect to it
over WebSocket, register functions and call each other's functions through it.`,
		Version:       env.Build.String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(*cobra.Command, []string) error {
			var l slog.Level
			if err := l.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", logLevel)}
			}
			if env.Level != nil {
				env.Level.Set(l)
			}
			return nil
		},
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetVersionTemplate("iii {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.CompletionOptions.HiddenDefaultCmd = false

	root.AddCommand(newVersion(env), newStart(env), newBench(env))
	root.AddCommand(newInvoke(env), newFunctions(env), newWorkers(env), newTriggers(env), newNew(env))
	root.AddCommand(newDev(env), newTUI(env), newBreak(env))
	strictCompletion(root)
	return root
}

// strictCompletion makes `iii completion SHELL` refuse a shell it has no
// script for (cobra's own command prints its help and exits 0).
func strictCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		var shells []string
		for _, sub := range c.Commands() {
			shells = append(shells, sub.Name())
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("no completion for shell %q: want %s", args[0], strings.Join(shells, ", "))}
			}
			return cmd.Help()
		}
		c.Args = cobra.ArbitraryArgs
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), strings.Join(args, " "))}
	}
	return nil
}

func newVersion(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "iii %s\n", env.Build)
			return err
		},
	}
}
