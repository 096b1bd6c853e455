package exec

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher reports changes of the files under root that match its globs.
// Directories are watched recursively (new ones are added as they appear,
// ignored ones never); a burst of changes is reported once, after debounce
// of quiet (or after maxDelay of continuous changes).
//
// A change is a file whose size or modification time differs from when
// the serving process started (rebase): writes that landed before the
// start, such as an install rewriting its lock file (npm install and
// package-lock.json), are already in what the process read, so their
// events, however late they arrive, report nothing.
type watcher struct {
	root     string
	globs    []glob
	ignores  ignoreSet
	debounce time.Duration
	maxDelay time.Duration
	fw       *fsnotify.Watcher
	// out receives the path of (one of) the changed files. Capacity 1: a
	// change while one is pending is folded into it.
	out chan string
	log *slog.Logger

	mu   sync.Mutex
	base map[string]stamp // matched files at the last rebase; nil before the first
}

// stamp is what tells a file's content changed without reading it.
type stamp struct {
	size int64
	mod  time.Time
}

func stampOf(p string) (stamp, bool) {
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() {
		return stamp{}, false
	}
	return stamp{size: fi.Size(), mod: fi.ModTime()}, true
}

// rebase records the matched files as they are now: the state a process
// started now reads. Later events for files still like this are ignored.
func (w *watcher) rebase() {
	base := map[string]stamp{}
	filepath.WalkDir(w.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable or gone: treated as changed when reported
		}
		rel := w.rel(p)
		if rel != "." && w.ignores.ignored(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && w.matches(rel) {
			if st, ok := stampOf(p); ok {
				base[rel] = st
			}
		}
		return nil
	})
	w.mu.Lock()
	w.base = base
	w.mu.Unlock()
}

// unchanged reports whether rel is as it was at the last rebase.
func (w *watcher) unchanged(rel string) bool {
	w.mu.Lock()
	was, ok := w.base[rel]
	w.mu.Unlock()
	if !ok {
		return false
	}
	now, ok := stampOf(filepath.Join(w.root, filepath.FromSlash(rel)))
	return ok && now.size == was.size && now.mod.Equal(was.mod)
}

func newWatcher(root string, globs []glob, ignores ignoreSet, debounce time.Duration, log *slog.Logger) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	w := &watcher{root: root, globs: globs, ignores: ignores, debounce: debounce,
		maxDelay: max(time.Second, 5*debounce), fw: fw, out: make(chan string, 1), log: log}
	if _, err := w.addTree(root); err != nil {
		fw.Close()
		return nil, err
	}
	return w, nil
}

// addTree watches dir and every directory below it that is not ignored. It
// returns the first file found that matches a glob (files created before
// the watch on a new directory was in place would otherwise be missed).
func (w *watcher) addTree(dir string) (string, error) {
	var matched string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile
			}
			return err
		}
		rel := w.rel(p)
		if rel != "." && w.ignores.ignored(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			if matched == "" && w.matches(rel) {
				matched = rel
			}
			return nil
		}
		if err := w.fw.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		return nil
	})
	return matched, err
}

func (w *watcher) rel(p string) string {
	r, err := filepath.Rel(w.root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

func (w *watcher) matches(rel string) bool {
	for _, g := range w.globs {
		if g.match(rel) {
			return true
		}
	}
	return false
}

// run delivers debounced changes until ctx ends, then closes the fsnotify
// watcher (which stops its goroutine).
func (w *watcher) run(ctx context.Context) {
	defer w.fw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		pending = map[string]bool{} // relative paths, or overflow
		since   time.Time
	)
	note := func(rel string) {
		if len(pending) == 0 {
			since = time.Now()
		}
		pending[rel] = true
		wait := w.debounce
		if left := w.maxDelay - time.Since(since); left < wait {
			wait = max(left, 0)
		}
		timer.Reset(wait)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			if rel := w.relevant(ev); rel != "" {
				note(rel)
			}
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			w.log.Warn("file watcher error", "dir", w.root, "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				note(overflow)
			}
		case <-timer.C:
			changed := ""
			for rel := range pending {
				if rel == overflow || !w.unchanged(rel) {
					changed = rel
					break
				}
			}
			clear(pending)
			if changed == "" {
				continue // only writes the serving process has seen
			}
			select {
			case w.out <- changed:
			default: // one is pending already: this change is part of it
			}
		}
	}
}

// overflow stands for changes lost to an event queue overflow.
const overflow = "(event overflow)"

// relevant returns the relative path an event makes relevant ("" for
// none), adding new directories to the watch.
func (w *watcher) relevant(ev fsnotify.Event) string {
	if ev.Op == fsnotify.Chmod {
		return ""
	}
	rel := w.rel(ev.Name)
	if rel == "." || w.ignores.ignored(rel) {
		return ""
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			m, err := w.addTree(ev.Name)
			if err != nil {
				w.log.Warn("cannot watch new directory", "dir", ev.Name, "err", err)
			}
			return m
		}
	}
	if w.matches(rel) {
		return rel
	}
	return ""
}
