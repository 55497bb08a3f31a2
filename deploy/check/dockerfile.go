package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// imageInfo is what the compose checks need to know about the image the Dockerfile builds.
type imageInfo struct {
	dataDir   string   // the VOLUME that SKIFF_DATA_DIR points at
	probe     string   // the health probe's name on PATH in the image
	exposed   []string // EXPOSE ports
	user      string
	skiffEnvs map[string]string // SKIFF_* set by ENV
}

// checkDockerfile parses the Dockerfile as `docker build` would (BuildKit's parser and its
// instruction-level lint rules) and checks the shape the compose file and Kubernetes rely on.
func checkDockerfile(r *report, root, file string, cli *skiffCLI) *imageInfo {
	rel, _ := filepath.Rel(root, file)
	name := func(s string) string { return "Dockerfile: " + s }
	f, err := os.Open(file)
	if err != nil {
		r.fail(name("readable"), err.Error())
		return nil
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		r.fail(name(fmt.Sprintf("%s parses (BuildKit parser)", rel)), err.Error())
		return nil
	}
	var lints []string
	for _, w := range ast.Warnings {
		lints = append(lints, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		lints = append(lints, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, metaArgs, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		r.fail(name(fmt.Sprintf("%s parses (BuildKit parser)", rel)), err.Error())
		return nil
	}
	r.ok(name(fmt.Sprintf("%s parses (BuildKit parser, %s)", rel, plural(len(stages), "stage"))))
	r.check(name("no BuildKit lint warnings"), lints)

	// Base images: an earlier stage, or a registry image with an explicit tag that is not latest.
	var problems []string
	if len(metaArgs) > 0 {
		problems = append(problems, "ARG before FROM: base images must be literal so they can be checked")
	}
	seen := map[string]bool{}
	for _, s := range stages {
		base := strings.ToLower(s.BaseName)
		if !seen[base] {
			if tag := imageTag(base); tag == "" || tag == "latest" {
				problems = append(problems, fmt.Sprintf("FROM %s: pin a tag (not latest)", s.BaseName))
			}
		}
		if s.Name != "" {
			seen[strings.ToLower(s.Name)] = true
		}
	}
	r.check(name("base images pinned"), problems)

	// COPY --from names an earlier stage; COPY from the context copies files that exist and that
	// .dockerignore does not drop.
	ignore := readDockerignore(root)
	problems = nil
	seen = map[string]bool{}
	for _, s := range stages {
		for _, c := range s.Commands {
			cp, ok := c.(*instructions.CopyCommand)
			if !ok {
				continue
			}
			if cp.From != "" {
				if !seen[strings.ToLower(cp.From)] {
					problems = append(problems, fmt.Sprintf("COPY --from=%s: no earlier stage of that name", cp.From))
				}
				continue
			}
			for _, src := range cp.SourcePaths {
				clean := path.Clean(strings.TrimPrefix(src, "/"))
				if clean == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, clean)); err != nil {
					problems = append(problems, fmt.Sprintf("COPY %s: not in the build context", src))
				} else if ignore != nil {
					if excluded, _ := ignore.MatchesOrParentMatches(clean); excluded {
						problems = append(problems, fmt.Sprintf("COPY %s: excluded by .dockerignore", src))
					}
				}
			}
		}
		if s.Name != "" {
			seen[strings.ToLower(s.Name)] = true
		}
	}
	r.check(name("COPY sources exist (stages, build context)"), problems)

	problems = nil
	if ignore == nil {
		problems = append(problems, ".dockerignore is missing at the context root: the build would send target/ and .git/")
	} else {
		for _, heavy := range []string{"target", ".git"} {
			if excluded, _ := ignore.MatchesOrParentMatches(heavy); !excluded {
				problems = append(problems, fmt.Sprintf(".dockerignore does not exclude %s/", heavy))
			}
		}
	}
	r.check(name(".dockerignore keeps target/ and .git/ out of the build context"), problems)

	return checkRuntimeStage(r, stages[len(stages)-1], cli, name)
}

// checkRuntimeStage checks the final stage: what `docker run` and the compose file get.
func checkRuntimeStage(r *report, s instructions.Stage, cli *skiffCLI, name func(string) string) *imageInfo {
	info := &imageInfo{skiffEnvs: map[string]string{}}
	var entrypoint, cmd *instructions.ShellDependantCmdLine
	var volumes, copiedTo []string
	var health []string
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			info.user = c.User
		case *instructions.EntrypointCommand:
			entrypoint = &c.ShellDependantCmdLine
		case *instructions.CmdCommand:
			cmd = &c.ShellDependantCmdLine
		case *instructions.VolumeCommand:
			volumes = append(volumes, c.Volumes...)
		case *instructions.ExposeCommand:
			info.exposed = append(info.exposed, c.Ports...)
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				if strings.HasPrefix(kv.Key, "SKIFF_") {
					info.skiffEnvs[kv.Key] = kv.Value
				}
			}
		case *instructions.CopyCommand:
			copiedTo = append(copiedTo, c.DestPath)
		case *instructions.HealthCheckCommand:
			if c.Health != nil {
				health = c.Health.Test
			}
		}
	}

	var problems []string
	user := strings.SplitN(info.user, ":", 2)[0]
	if user == "" || user == "root" || user == "0" {
		problems = append(problems, fmt.Sprintf("the final stage runs as %q: add a non-root USER", info.user))
	} else if strings.Trim(user, "0123456789") != "" {
		problems = append(problems, fmt.Sprintf("USER %s: use a numeric uid so Kubernetes' runAsNonRoot can verify it", info.user))
	}
	r.check(name("runs as a non-root, numeric user"), problems)

	problems = nil
	if entrypoint == nil || entrypoint.PrependShell || !slices.Equal(entrypoint.CmdLine, []string{"skiff"}) {
		problems = append(problems, `ENTRYPOINT must be the exec form ["skiff"] (one image, any role; signals reach skiff)`)
	}
	if cmd == nil || cmd.PrependShell || len(cmd.CmdLine) == 0 {
		problems = append(problems, `CMD must be the exec form, e.g. ["dev"]`)
	}
	r.check(name(`ENTRYPOINT ["skiff"] and an exec-form CMD`), problems)
	if cli != nil && cmd != nil && len(cmd.CmdLine) > 0 {
		if _, err := cli.role(cmd.CmdLine[0]); err != nil {
			r.fail(name(fmt.Sprintf("default command %q is a skiff subcommand", cmd.CmdLine[0])), err.Error())
		} else {
			r.ok(name(fmt.Sprintf("default command %q is a skiff subcommand", cmd.CmdLine[0])))
		}
	}

	problems = nil
	info.dataDir = info.skiffEnvs["SKIFF_DATA_DIR"]
	if info.dataDir == "" {
		problems = append(problems, "ENV SKIFF_DATA_DIR is not set")
	} else if !slices.Contains(volumes, info.dataDir) {
		problems = append(problems, fmt.Sprintf("SKIFF_DATA_DIR=%s is not a VOLUME (have %s)", info.dataDir, quoteAll(volumes)))
	}
	r.check(name("the data directory is a VOLUME"), problems)

	problems = nil
	if len(health) < 2 || health[0] != "CMD" {
		problems = append(problems, `HEALTHCHECK must be the exec form CMD ["<probe>", …]`)
	} else {
		info.probe = health[1]
		installed := false
		for _, dest := range copiedTo {
			if path.Base(dest) == info.probe {
				installed = true
			}
		}
		if !installed && info.probe != "skiff" {
			problems = append(problems, fmt.Sprintf("HEALTHCHECK runs %q but no COPY installs it", info.probe))
		}
	}
	r.check(name("HEALTHCHECK runs a probe the image installs"), problems)

	// Every SKIFF_* the image sets is read by at least one role of the binary.
	if cli == nil {
		r.skip(name("every ENV SKIFF_* is read by some skiff role"), "no skiff binary")
		return info
	}
	problems = nil
	var unavailable []string
	for _, role := range []string{"dev", "controller", "broker"} {
		if _, err := cli.role(role); err != nil {
			unavailable = append(unavailable, role)
		}
	}
	for env := range info.skiffEnvs {
		read := false
		for _, role := range []string{"dev", "controller", "broker"} {
			if h, err := cli.role(role); err == nil {
				if _, ok := h.envs[env]; ok {
					read = true
				}
			}
		}
		if !read {
			msg := fmt.Sprintf("ENV %s is read by none of skiff dev/controller/broker", env)
			if len(unavailable) > 0 {
				msg += fmt.Sprintf(" (the binary has no %s role)", strings.Join(unavailable, ", "))
			}
			problems = append(problems, msg)
		}
	}
	slices.Sort(problems)
	r.check(name("every ENV SKIFF_* is read by some skiff role"), problems)
	return info
}

// imageTag returns the tag of an image reference ("" when none; a digest counts as pinned).
func imageTag(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		return last[i+1:]
	}
	return ""
}

func readDockerignore(root string) *patternmatcher.PatternMatcher {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return nil
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil
	}
	return pm
}
