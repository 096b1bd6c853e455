package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
)

// portFlags are the listener ports iii dev and iii start take on the
// command line, over config.yaml.
type portFlags struct {
	base   int
	engine int
	// module holds one port per devserver.ModulePorts entry.
	module []int
}

const portBaseFlag = "--port-base"

func addPortFlags(cmd *cobra.Command) *portFlags {
	p := &portFlags{module: make([]int, len(devserver.ModulePorts))}
	f := cmd.Flags()
	f.IntVar(&p.base, portBaseFlag[2:], 0, "put every listener on consecutive ports from this one: worker socket, http, stream, metrics")
	f.IntVar(&p.engine, devserver.EngineFlag[2:], 0, "worker socket port (engine.port)")
	for i, l := range devserver.ModulePorts {
		f.IntVar(&p.module[i], l.Flag[2:], 0, fmt.Sprintf("%s module port (its config %s)", l.Module, l.Key))
	}
	return p
}

// apply writes the ports given on cmd's command line into cfg. A port flag
// for a module the config does not run is an error; --port-base skips such
// modules.
func (p *portFlags) apply(cmd *cobra.Command, cfg *config.Config) error {
	f := cmd.Flags()
	if f.Changed(portBaseFlag[2:]) {
		if p.base < 1 || p.base+len(p.module) > 65535 {
			return usageError{fmt.Errorf("%s %d: want 1-%d", portBaseFlag, p.base, 65535-len(p.module))}
		}
		cfg.Engine.Port = p.base
		for i, l := range devserver.ModulePorts {
			if m, ok := cfg.Module(l.Module); ok {
				setModulePort(m, l.Key, p.base+1+i)
			}
		}
	}
	if f.Changed(devserver.EngineFlag[2:]) {
		if err := checkPort(devserver.EngineFlag, p.engine); err != nil {
			return err
		}
		cfg.Engine.Port = p.engine
	}
	for i, l := range devserver.ModulePorts {
		if !f.Changed(l.Flag[2:]) {
			continue
		}
		if err := checkPort(l.Flag, p.module[i]); err != nil {
			return err
		}
		m, ok := cfg.Module(l.Module)
		if !ok {
			return usageError{fmt.Errorf("%s: the config runs no %s module", l.Flag, l.Module)}
		}
		setModulePort(m, l.Key, p.module[i])
	}
	return nil
}

func checkPort(flag string, port int) error {
	if port < 0 || port > 65535 {
		return usageError{fmt.Errorf("%s %d: want 0-65535 (0 picks a free port)", flag, port)}
	}
	return nil
}

// setModulePort sets key in m's config mapping, adding the mapping or the
// key when absent.
func setModulePort(m *config.Module, key string, port int) {
	n := &m.Config
	if n.Kind == 0 {
		*n = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(port)}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v.Line, v.Column = n.Content[i+1].Line, n.Content[i+1].Column
			n.Content[i+1] = v
			return
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}
