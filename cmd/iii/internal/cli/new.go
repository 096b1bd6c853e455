package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/templates"
)

func newNew(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "new",
		Short: "Create a project part from a template",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown template %q: try %s worker", args[0], cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newNewWorker(env))
	return cmd
}

func newNewWorker(env Env) *cobra.Command {
	var lang, dir, cfgPath string
	langs := strings.Join(templates.Languages(), ", ")
	cmd := &cobra.Command{
		Use:   "worker NAME --lang " + strings.Join(templates.Languages(), "|"),
		Short: "Scaffold a worker and add it to config.yaml",
		Long: `Scaffold a worker into ./NAME (or --dir) that runs on first try: it
registers the function NAME::hello, which returns its input together with a
greeting, and the HTTP trigger GET /NAME/hello. Node and Python workers use
the published iii-sdk ` + templates.SDKVersion + `; Go workers get a copy of iii's Go SDK.

The worker is added to the ExecModule of ./config.yaml (or --config),
which is created when missing, so "iii dev" installs, starts and reloads it.
Comments and other entries of config.yaml are kept.

NAME is a lowercase identifier: a letter, then letters, digits, '-' or '_'.
An existing directory is never overwritten.`,
		Example: `  iii new worker billing --lang python
  iii new worker web --lang node --dir services/web
  iii dev    # then: iii invoke billing::hello '{"x":1}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("%s takes one NAME, got %d arguments", cmd.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := templates.CheckName(name); err != nil {
				return usageError{err}
			}
			if lang == "" {
				return usageError{fmt.Errorf("--lang is required: %s", langs)}
			}
			s, err := templates.Worker(strings.ToLower(lang), name)
			if errors.Is(err, templates.ErrTemplatesUnknownLang) {
				return usageError{fmt.Errorf("--lang %q: want %s", lang, langs)}
			}
			if err != nil {
				return err
			}
			if dir == "" {
				dir = name
			}
			return newWorker(env, s, name, dir, cfgPath)
		},
	}
	f := cmd.Flags()
	f.StringVar(&lang, "lang", "", "the worker's language: "+langs+" (or py, js, ts)")
	f.StringVar(&dir, "dir", "", "directory to create (default ./NAME)")
	f.StringVarP(&cfgPath, "config", "c", config.DefaultPath, "config file to add the worker to")
	return cmd
}

// newWorker writes the scaffold s into dir and adds it to the config file.
// Nothing is written when dir exists or the config file cannot take the
// worker; a failure after dir was created removes it again.
func newWorker(env Env, s *templates.Scaffold, name, dir, cfgPath string) (err error) {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists; pick another name or --dir", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	// The config edit is computed first, so a config file that cannot take
	// the worker leaves no directory behind.
	src, err := os.ReadFile(cfgPath)
	created := errors.Is(err, fs.ErrNotExist)
	switch {
	case created:
		src = newConfigText()
	case err != nil:
		return fmt.Errorf("config: %w", err)
	default:
		getenv := env.Getenv
		if getenv == nil {
			getenv = os.LookupEnv
		}
		if err := checkConfig(cfgPath, src, getenv); err != nil {
			return err
		}
	}
	rel, err := relDir(cfgPath, dir)
	if err != nil {
		return err
	}
	out, err := addExecWorker(cfgPath, src, execWorker{Name: name, Dir: rel, Install: s.Exec.Install,
		Run: s.Exec.Run, Watch: s.Exec.Watch, Env: s.Exec.Env})
	if err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err // exists by now, or cannot be made
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	for _, f := range s.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return err
		}
	}
	if err := writeFileAtomic(cfgPath, out); err != nil {
		return fmt.Errorf("config: %w", err)
	}

	verb := "added it to"
	if created {
		verb = "created"
	}
	module := "ExecModule"
	if isIIIConfig(out) {
		module = "an iii-exec entry"
	}
	devCmd := "iii dev"
	if filepath.Clean(cfgPath) != config.DefaultPath {
		devCmd += " --config " + cfgPath // iii dev reads ./config.yaml otherwise
	}
	fmt.Fprintf(env.Stdout, `Created the %s worker %q in %s and %s %s (%s).

Next:
  %-40s # starts the engine and the worker
  iii invoke %s::hello '{"x":1}'
  curl http://127.0.0.1:3111/%s/hello       # with the HTTP module on

See %s for running it on its own.
`, s.Lang, name, filepath.Clean(dir)+string(filepath.Separator), verb, cfgPath, module, devCmd, name, name, filepath.Join(dir, "README.md"))
	return nil
}

// relDir is dir relative to the config file's directory, slash-separated,
// as the ExecModule resolves it; absolute when there is no relative path.
func relDir(cfgPath, dir string) (string, error) {
	absCfg, err := filepath.Abs(cfgPath)
	if err != nil {
		return "", err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(filepath.Dir(absCfg), absDir)
	if err != nil {
		return filepath.ToSlash(absDir), nil
	}
	return filepath.ToSlash(rel), nil
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory, keeping an existing file's permissions.
func writeFileAtomic(path string, data []byte) (err error) {
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
