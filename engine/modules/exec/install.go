package exec

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// defaultInstallInputs are the files whose content decides whether the
// install commands run again, when install_inputs is not set. Missing
// files count as "missing", so creating one is a change too.
var defaultInstallInputs = []string{
	"package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
	"requirements.txt", "pyproject.toml", "poetry.lock", "uv.lock", "Pipfile.lock",
	"go.mod", "go.sum",
}

// installStateFile is where the hash of the last successful install is
// kept, relative to the worker's dir, so a restart of iii dev does not
// install again.
const installStateFile = ".iii/install.sha256"

// installHash hashes the install commands and the contents of the inputs.
func installHash(dir string, commands, inputs []string) (string, error) {
	h := sha256.New()
	for _, c := range commands {
		fmt.Fprintf(h, "cmd %d %s\n", len(c), c)
	}
	for _, in := range inputs {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(in)))
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(h, "missing %s\n", in)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("install input %s: %w", in, err)
		}
		fmt.Fprintf(h, "file %s\n", in)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("install input %s: %w", in, err)
		}
		fmt.Fprintf(h, "\n")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readInstallState returns the stored hash ("" when there is none).
func readInstallState(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, installStateFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeInstallState stores hash; the .iii dir ignores itself in git.
func writeInstallState(dir, hash string) error {
	p := filepath.Join(dir, installStateFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	gi := filepath.Join(filepath.Dir(p), ".gitignore")
	if _, err := os.Stat(gi); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(gi, []byte("*\n"), 0o644)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(hash+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
