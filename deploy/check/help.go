package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// skiffCLI answers what the built binary accepts, from `skiff <role> --help` (clap's output).
type skiffCLI struct {
	bin   string
	roles map[string]*roleHelp // cached per role; nil value: the role does not exist
	errs  map[string]string
}

// roleHelp is what one subcommand accepts.
type roleHelp struct {
	flags map[string]flagHelp // by long name, without the leading "--"
	envs  map[string]string   // SKIFF_* variable → flag name
}

type flagHelp struct {
	takesValue bool
	values     []string // clap's [possible values: …], empty when free-form
	role       string   // "controller" or "broker" when the help says "(… role)"
}

var (
	// A clap flag line: "  -c, --config <CONFIG>  text" or "      --node-id <NODE_ID>".
	flagLine = regexp.MustCompile(`^\s+(?:-[A-Za-z0-9], )?--([a-z0-9][a-z0-9-]*)(?:[ =][<\[]([^>\]]+)[>\]])?`)
	envNote  = regexp.MustCompile(`\[env: ([A-Z0-9_]+)=`)
	possible = regexp.MustCompile(`\[possible values: ([^\]]+)\]`)
	roleNote = regexp.MustCompile(`\((controller|broker) role\)`)
)

func newSkiffCLI(bin string) *skiffCLI {
	return &skiffCLI{bin: bin, roles: map[string]*roleHelp{}, errs: map[string]string{}}
}

// role returns the subcommand's help, or an error saying why there is none.
func (c *skiffCLI) role(name string) (*roleHelp, error) {
	if h, ok := c.roles[name]; ok {
		if h == nil {
			return nil, fmt.Errorf("%s", c.errs[name])
		}
		return h, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, c.bin, name, "--help")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		first := strings.SplitN(strings.TrimSpace(errOut.String()), "\n", 2)[0]
		c.roles[name] = nil
		c.errs[name] = fmt.Sprintf("`%s %s --help` failed (%v): %s", c.bin, name, err, first)
		return nil, fmt.Errorf("%s", c.errs[name])
	}
	h := parseHelp(out.String())
	c.roles[name] = h
	return h, nil
}

// parseHelp reads clap's help text: each flag line starts a block that runs to the next one;
// the block's [env: …] and [possible values: …] notes belong to that flag.
func parseHelp(text string) *roleHelp {
	h := &roleHelp{flags: map[string]flagHelp{}, envs: map[string]string{}}
	current := ""
	var block strings.Builder
	flush := func() {
		if current == "" {
			return
		}
		f := h.flags[current]
		b := block.String()
		if m := envNote.FindStringSubmatch(b); m != nil {
			h.envs[m[1]] = current
		}
		if m := roleNote.FindStringSubmatch(b); m != nil {
			f.role = m[1]
		}
		if m := possible.FindStringSubmatch(b); m != nil {
			for _, v := range strings.Split(m[1], ",") {
				f.values = append(f.values, strings.TrimSpace(v))
			}
		}
		h.flags[current] = f
	}
	for _, line := range strings.Split(text, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flush()
			current = m[1]
			block.Reset()
			h.flags[current] = flagHelp{takesValue: m[2] != ""}
		}
		if current != "" {
			block.WriteString(line)
			block.WriteByte('\n')
		}
	}
	flush()
	return h
}

// parseArgs splits a role's arguments into flag → value, reporting repeats and stray words.
// With help at hand it knows which flags take a value; without, "--flag value" is guessed.
func parseArgs(args []string, help *roleHelp) (map[string]string, []string) {
	flags := map[string]string{}
	var problems []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			problems = append(problems, fmt.Sprintf("stray argument %q (expected --flag=value)", a))
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !hasValue {
			takes := i+1 < len(args) && !strings.HasPrefix(args[i+1], "--")
			if help != nil {
				if f, ok := help.flags[name]; ok {
					takes = f.takesValue
				}
			}
			if takes && i+1 < len(args) {
				value = args[i+1]
				i++
			}
		}
		if _, seen := flags[name]; seen {
			problems = append(problems, fmt.Sprintf("--%s given twice", name))
		}
		flags[name] = value
	}
	return flags, problems
}
