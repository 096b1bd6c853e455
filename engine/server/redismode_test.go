package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/store"
)

func TestRedisMode(t *testing.T) {
	tests := []struct {
		kind    store.Kind
		dataDir string
		url     string
		want    string
	}{
		{store.KindMemory, "", "", "memory, lost on exit"},
		{store.KindManaged, "/srv/iii/data", "", "managed /srv/iii/data"},
		{store.KindExternal, "", "redis://127.0.0.1:6379/0", "external redis://127.0.0.1:6379/0"},
		{store.KindExternal, "", "redis://user:secret@cache:6379", "external redis://user:xxxxx@cache:6379"},
		{store.KindExternal, "", "://bad", "external"},
	}
	for _, tt := range tests {
		if got := redisMode(tt.kind, tt.dataDir, tt.url); got != tt.want {
			t.Errorf("redisMode(%s, %q, %q) = %q; want %q", tt.kind, tt.dataDir, tt.url, got, tt.want)
		}
	}
}

func TestStoreOptions(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cfg      config.Config
		wantKind store.Kind
		wantDir  string
		wantURL  string
	}{
		{"url wins", config.Config{Redis: config.Redis{URL: "redis://x:1"}}, store.KindMemory, "", "redis://x:1"},
		{"no choice is memory", config.Config{}, store.KindMemory, "", ""},
		{"memory", config.Config{Redis: config.Redis{Store: config.StoreMemory}}, store.KindMemory, "", ""},
		{"managed beside the config file", config.Config{File: "/etc/iii/config.yaml", Redis: config.Redis{Store: config.StoreManaged}},
			store.KindManaged, "/etc/iii/.iii/data", ""},
		{"managed in the working dir without a file", config.Config{Redis: config.Redis{Store: config.StoreManaged}},
			store.KindManaged, filepath.Join(wd, ".iii", "data"), ""},
		{"relative data dir", config.Config{File: "/etc/iii/config.yaml", Redis: config.Redis{Store: config.StoreManaged, DataDir: "../state"}},
			store.KindManaged, "/etc/state", ""},
		{"absolute data dir", config.Config{File: "/etc/iii/config.yaml", Redis: config.Redis{Store: config.StoreManaged, DataDir: "/var/lib/iii"}},
			store.KindManaged, "/var/lib/iii", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := storeOptions(&tt.cfg, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if o.Kind != tt.wantKind || o.DataDir != tt.wantDir || o.URL != tt.wantURL {
				t.Errorf("storeOptions(%+v) = kind %s, dir %q, url %q; want %s, %q, %q", tt.cfg.Redis, o.Kind, o.DataDir, o.URL, tt.wantKind, tt.wantDir, tt.wantURL)
			}
		})
	}
	if _, err := storeOptions(&config.Config{Redis: config.Redis{Store: "disk"}}, "", nil); err == nil {
		t.Error("storeOptions accepted store disk")
	}
}
