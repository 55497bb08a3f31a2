// Command check validates deploy/ without a Docker engine: the compose file with Docker
// Compose's own loader (compose-go: schema, interpolation, references), the Dockerfile with
// BuildKit's parser and linter, the health probe against live HTTP servers, and the Skiff
// cluster wiring (roles, flags, quorum, storage, ports) against the built `skiff` binary.
//
// deploy/validate.sh builds and runs it; deploy/README.md says what this proves and what not.
// Every problem is reported, not just the first; the exit code is 1 when any check failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// report collects named check results and prints them as they come.
type report struct {
	out                     io.Writer
	passed, failed, skipped int
	failures                []string // names of the failed checks
}

func (r *report) ok(name string) {
	r.passed++
	fmt.Fprintf(r.out, "ok    %s\n", name)
}

func (r *report) fail(name string, problems ...string) {
	r.failed++
	r.failures = append(r.failures, name)
	fmt.Fprintf(r.out, "FAIL  %s\n", name)
	for _, p := range problems {
		fmt.Fprintf(r.out, "        - %s\n", p)
	}
}

func (r *report) skip(name, why string) {
	r.skipped++
	fmt.Fprintf(r.out, "skip  %s: %s\n", name, why)
}

// check records name as passed when problems is empty, else as failed with every problem.
func (r *report) check(name string, problems []string) {
	if len(problems) == 0 {
		r.ok(name)
	} else {
		r.fail(name, problems...)
	}
}

func main() {
	repo := flag.String("repo", ".", "repository root (the Docker build context)")
	composeFile := flag.String("compose", "deploy/docker-compose.yml", "compose file, relative to -repo")
	dockerfile := flag.String("dockerfile", "deploy/Dockerfile", "Dockerfile, relative to -repo")
	probe := flag.String("probe", "deploy/healthcheck.sh", "health probe script, relative to -repo")
	skiffBin := flag.String("skiff", "", "built skiff binary for the flag and probe checks (skipped when absent)")
	flag.Parse()

	root, err := filepath.Abs(*repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := &report{out: os.Stdout}

	var cli *skiffCLI
	if *skiffBin == "" {
		r.skip("skiff binary", "no binary given")
	} else if _, err := os.Stat(*skiffBin); err != nil {
		r.skip("skiff binary", fmt.Sprintf("%s is missing (build it first: cargo build)", *skiffBin))
	} else {
		cli = newSkiffCLI(*skiffBin)
	}

	image := checkDockerfile(r, root, filepath.Join(root, *dockerfile), cli)
	checkCompose(ctx, r, root, filepath.Join(root, *composeFile), image, cli)
	checkProbe(ctx, r, filepath.Join(root, *probe), cli)

	fmt.Println()
	// The plain closing line test runners are recognised by.
	fmt.Printf("deploy: %d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	if r.failed > 0 {
		os.Exit(1)
	}
}

// plural formats "n thing(s)".
func plural(n int, thing string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", thing)
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// quoteAll is for messages: the items, quoted and comma-separated.
func quoteAll(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
