package module_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/module"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// greeter is a custom module: its config is its own fields.
type greeter struct {
	Greeting string `yaml:"greeting"`
	FailAt   string `yaml:"fail_at"`
}

var journal []string

func (g *greeter) ID() string { return "test.greeter" }

func (g *greeter) Provision(context.Context, *module.Host) error {
	journal = append(journal, "provision")
	if g.FailAt == "provision" {
		return errors.New("cannot provision")
	}
	return nil
}

func (g *greeter) Validate() error {
	journal = append(journal, "validate")
	if g.Greeting == "" {
		return errors.New("greeting must not be empty")
	}
	return nil
}

func (g *greeter) Start(_ context.Context, h *module.Host) error {
	journal = append(journal, "start")
	if g.FailAt == "start" {
		return errors.New("cannot start")
	}
	return h.Engine.RegisterFunction(g.ID(), engine.Function{ID: "greet::hello",
		Handler: func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
			return json.Marshal(g.Greeting)
		}})
}

func (g *greeter) Stop(context.Context) error {
	journal = append(journal, "stop")
	return nil
}

func init() {
	module.Register(module.Info{ID: "test.greeter", Aliases: []string{"GreeterModule"},
		New: func() module.Module { return &greeter{Greeting: "hello"} }})
}

// load loads the modules of yaml (a config.yaml) on a new engine, shut
// down at cleanup, under a context with a deadline.
func load(t *testing.T, yaml string) (context.Context, *engine.Engine, *module.Set, error) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	eng, err := engine.New(engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(func() {
		eng.Shutdown(ctx)
		cancel()
	})
	set, err := module.Load(ctx, cfg.Modules, module.Host{Engine: eng})
	return ctx, eng, set, err
}

// orderly records when it starts and stops, by its name.
type orderly struct{ Name string }

var order []string

func (o *orderly) ID() string { return "test.orderly." + o.Name }
func (o *orderly) Start(context.Context, *module.Host) error {
	order = append(order, "start "+o.Name)
	return nil
}
func (o *orderly) Stop(context.Context) error {
	order = append(order, "stop "+o.Name)
	return nil
}

func init() {
	for _, n := range []string{"a", "b", "c"} {
		module.Register(module.Info{ID: "test.orderly." + n, New: func() module.Module { return &orderly{Name: n} }})
	}
}

// TestStopReverseOrder: modules stop in reverse start order, one at a
// time, both at shutdown and when a later module fails to load.
func TestStopReverseOrder(t *testing.T) {
	for _, tc := range []struct{ name, more, want string }{
		{"shutdown", "", "start a,start b,start c,stop c,stop b,stop a"},
		{"load fails", "  - class: test.greeter\n    config: {fail_at: start}\n", "start a,start b,start c,stop c,stop b,stop a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			order = nil
			yaml := "modules:\n"
			for _, n := range []string{"a", "b", "c"} {
				yaml += "  - class: test.orderly." + n + "\n"
			}
			ctx, _, set, err := load(t, yaml+tc.more)
			if (err != nil) != (tc.more != "") {
				t.Fatalf("Load: %v", err)
			}
			if err := set.Stop(ctx); err != nil {
				t.Error(err)
			}
			if got := strings.Join(order, ","); got != tc.want {
				t.Errorf("order %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRegisterDuplicatePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("duplicate Register did not panic")
		}
	}()
	module.Register(module.Info{ID: "test.greeter", New: func() module.Module { return &greeter{} }})
}

func TestLoad(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string
		want    string // result of greet::hello, or "" when loading fails
		err     string
		journal string
	}{
		{"defaults", "modules:\n  - class: test.greeter\n", `"hello"`, "", "provision,validate,start,stop"},
		{"alias and config", "modules:\n  - class: GreeterModule\n    config:\n      greeting: hi\n", `"hi"`, "", "provision,validate,start,stop"},
		{"unknown key", "modules:\n  - class: test.greeter\n    config:\n      greting: hi\n", "", "t.yaml:4", ""},
		{"invalid", "modules:\n  - class: test.greeter\n    config:\n      greeting: \"\"\n", "", "t.yaml:2: module test.greeter: invalid config: greeting must not be empty", "provision,validate,stop"},
		// Cleaned up as when Validate fails (caddy's Cleanup).
		{"provision fails", "modules:\n  - class: test.greeter\n    config: {fail_at: provision}\n", "", "cannot provision", "provision,stop"},
		{"start fails", "modules:\n  - class: test.greeter\n    config: {fail_at: start}\n", "", "cannot start", "provision,validate,start,stop"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			journal = nil
			ctx, eng, set, err := load(t, tc.yaml)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Load error %v, want it to contain %q", err, tc.err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				got, err := eng.Invoke(ctx, engine.Request{FunctionID: "greet::hello"})
				if err != nil || string(got) != tc.want {
					t.Errorf("greet::hello = %s, %v; want %s", got, err, tc.want)
				}
				if err := set.Stop(ctx); err != nil {
					t.Error(err)
				}
			}
			if got := strings.Join(journal, ","); got != tc.journal {
				t.Errorf("lifecycle %q, want %q", got, tc.journal)
			}
		})
	}
}
