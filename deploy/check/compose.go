package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads the file the way `docker compose config` does (compose-go: YAML, the
// compose-spec JSON schema, interpolation, env_file, path resolution, normalisation, and the
// cross-references between services, volumes and networks), with only env as the environment,
// so the committed defaults are what gets checked.
func loadCompose(ctx context.Context, file string, env []string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithEnv(env),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(ctx)
}

// checkCompose runs the generic compose checks, then the Skiff cluster checks.
func checkCompose(ctx context.Context, r *report, root, file string, image *imageInfo, cli *skiffCLI) {
	rel, _ := filepath.Rel(root, file)
	name := func(s string) string { return "compose: " + s }
	p, err := loadCompose(ctx, file, nil)
	if err != nil {
		r.fail(name(fmt.Sprintf("%s loads with Docker Compose's loader (compose-go)", rel)), err.Error())
		return
	}
	r.ok(name(fmt.Sprintf("%s loads with Docker Compose's loader (compose-go: schema, interpolation, references; %s)",
		rel, plural(len(p.Services), "service"))))
	services := sortedServices(p)

	var problems []string
	for _, s := range services {
		if s.Build != nil {
			ctxDir := s.Build.Context
			if st, err := os.Stat(ctxDir); err != nil || !st.IsDir() {
				problems = append(problems, fmt.Sprintf("%s: build context %s is not a directory", s.Name, ctxDir))
			}
			if _, err := os.Stat(filepath.Join(ctxDir, s.Build.Dockerfile)); err != nil {
				problems = append(problems, fmt.Sprintf("%s: no Dockerfile at %s", s.Name, s.Build.Dockerfile))
			}
			continue
		}
		if tag := imageTag(s.Image); tag == "" || tag == "latest" {
			problems = append(problems, fmt.Sprintf("%s: image %q is not pinned to a tag", s.Name, s.Image))
		}
	}
	r.check(name("images pinned, build contexts and Dockerfiles exist"), problems)

	problems = nil
	for _, s := range services {
		if oneShot(s) {
			continue
		}
		switch s.Restart {
		case types.RestartPolicyAlways, types.RestartPolicyUnlessStopped, types.RestartPolicyOnFailure:
		default:
			problems = append(problems, fmt.Sprintf("%s: restart %q (long-running services restart on failure)", s.Name, s.Restart))
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			problems = append(problems, fmt.Sprintf("%s: no healthcheck", s.Name))
		}
	}
	r.check(name("every long-running service has a restart policy and a healthcheck"), problems)

	problems = nil
	for _, s := range services {
		var lim *types.Resource
		if s.Deploy != nil {
			lim = s.Deploy.Resources.Limits
		}
		if lim == nil || lim.NanoCPUs <= 0 || lim.MemoryBytes <= 0 {
			problems = append(problems, fmt.Sprintf("%s: no deploy.resources.limits cpus and memory", s.Name))
		}
	}
	r.check(name("every service has CPU and memory limits"), problems)

	// depends_on conditions that `docker compose up` can actually satisfy.
	problems = nil
	for _, s := range services {
		for _, dep := range sortedKeys(s.DependsOn) {
			d := s.DependsOn[dep]
			target := p.Services[dep]
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0 {
					problems = append(problems, fmt.Sprintf("%s waits for %s to be healthy, which has no healthcheck", s.Name, dep))
				}
			case types.ServiceConditionCompletedSuccessfully:
				if !oneShot(target) {
					problems = append(problems, fmt.Sprintf("%s waits for %s to complete, which restarts (%q)", s.Name, dep, target.Restart))
				}
			default:
				problems = append(problems, fmt.Sprintf("%s depends on %s with condition %q: wait for healthy or completed", s.Name, dep, d.Condition))
			}
		}
	}
	r.check(name("depends_on waits for healthy services and completed one-shots"), problems)

	problems = nil
	published := map[string]string{}
	for _, s := range services {
		for _, port := range s.Ports {
			if port.Published == "" {
				continue
			}
			key := fmt.Sprintf("%s:%s/%s", hostIP(port), port.Published, port.Protocol)
			if other, dup := published[key]; dup {
				problems = append(problems, fmt.Sprintf("host port %s published by both %s and %s", key, other, s.Name))
			}
			published[key] = s.Name
		}
	}
	r.check(name(fmt.Sprintf("%s on the host, none twice", plural(len(published), "published port"))), problems)

	checkCluster(ctx, r, p, file, image, cli)
}

// oneShot: a service meant to run once and exit: no healthcheck, and not restarted once it
// has exited successfully (restart "no" or on-failure).
func oneShot(s types.ServiceConfig) bool {
	if s.HealthCheck != nil && !s.HealthCheck.Disable {
		return false
	}
	return s.Restart == "" || s.Restart == types.RestartPolicyNo || strings.HasPrefix(s.Restart, types.RestartPolicyOnFailure)
}

func hostIP(p types.ServicePortConfig) string {
	if p.HostIP == "" {
		return "0.0.0.0"
	}
	return p.HostIP
}

func sortedServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, n := range sortedKeys(p.Services) {
		s := p.Services[n]
		s.Name = n
		out = append(out, s)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
