package main

// The checks must bite: each test case plants one defect in a copy of deploy/ and expects the
// check that guards against it to fail (and the unmodified copy to pass everything).

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stand-in for the built binary: clap-style help for the roles as the CLI spec describes them.
const fakeSkiff = `#!/usr/bin/env bash
common='      --data-dir <DATA_DIR>
          Data directory. [env: SKIFF_DATA_DIR=]
      --http-listen <HTTP_LISTEN>
          HTTP listener (/metrics, /health). [env: SKIFF_HTTP_LISTEN=]
      --storage <STORAGE>
          Object storage URL. [env: SKIFF_STORAGE=]
      --s3-endpoint <S3_ENDPOINT>
          S3 endpoint. [env: SKIFF_S3_ENDPOINT=]
      --s3-path-style <S3_PATH_STYLE>
          Path-style S3 URLs. [env: SKIFF_S3_PATH_STYLE=] [possible values: true, false]
      --node-id <NODE_ID>
          Node id. [env: SKIFF_NODE_ID=]
  -h, --help
          Print help'
case "$1" in
controller) printf 'Usage: skiff controller [OPTIONS]\n\nOptions:\n%s\n      --controller-listen <CONTROLLER_LISTEN>\n          Peers and brokers. [env: SKIFF_CONTROLLER_LISTEN=]\n      --voters <VOTERS>\n          ID=HOST:PORT,... (controller role) [env: SKIFF_VOTERS=]\n' "$common" ;;
broker) printf 'Usage: skiff broker [OPTIONS]\n\nOptions:\n%s\n      --kafka-listen <KAFKA_LISTEN>\n          Kafka listener. [env: SKIFF_KAFKA_LISTEN=]\n      --kafka-advertise <KAFKA_ADVERTISE>\n          Advertised. [env: SKIFF_KAFKA_ADVERTISE=]\n      --rack <RACK>\n          Rack. [env: SKIFF_RACK=]\n      --controllers <CONTROLLERS>\n          Controllers (broker role). [env: SKIFF_CONTROLLERS=]\n      --voters <VOTERS>\n          ID=HOST:PORT,... (controller role) [env: SKIFF_VOTERS=]\n' "$common" ;;
dev) printf 'Usage: skiff dev [OPTIONS]\n\nOptions:\n%s\n      --kafka-listen <KAFKA_LISTEN>\n          Kafka listener. [env: SKIFF_KAFKA_LISTEN=]\n' "$common" ;;
*) echo "error: unrecognized subcommand '$1'" >&2; exit 2 ;;
esac
`

type defect struct {
	name      string
	file      string // under deploy/
	old, new  string
	all       bool   // replace every occurrence (else the first)
	wantFail  string // part of the name of the check that must fail
	noBinary  bool   // run without the fake binary
	fakeSkiff string // replaces the fake binary's text
}

var defects = []defect{
	{name: "unknown key", file: "docker-compose.yml", old: "stop_grace_period:", new: "stop_grace_periods:", wantFail: "loads with"},
	{name: "undefined dependency", file: "docker-compose.yml", old: "  controller-3: {condition: service_healthy}", new: "  controller-4: {condition: service_healthy}", wantFail: "loads with"},
	{name: "missing env_file", file: "docker-compose.yml", old: "env_file: [dev.env]", new: "env_file: [prod.env]", wantFail: "loads with"},
	{name: "voters disagree", file: "docker-compose.yml", old: "3=controller-3:9093\n", new: "3=controller-3:9094\n", wantFail: "voters agree"},
	{name: "voter on the wrong port everywhere", file: "docker-compose.yml", old: "3=controller-3:9093\n", new: "3=controller-3:9094\n", all: true, wantFail: "voters agree"},
	{name: "broker misses a controller", file: "docker-compose.yml", old: "--controllers=controller-1:9093,controller-2:9093,controller-3:9093", new: "--controllers=controller-1:9093,controller-2:9093", wantFail: "every broker's --controllers"},
	{name: "broker does not wait for a controller", file: "docker-compose.yml", old: "  controller-3: {condition: service_healthy}\n", new: "", wantFail: "every broker's --controllers"},
	{name: "bucket not created", file: "docker-compose.yml", old: "local/skiff", new: "local/skiff-other", wantFail: "storage:"},
	{name: "storage URLs differ", file: "docker-compose.yml", old: "--storage=s3://skiff/cluster", new: "--storage=s3://skiff/other", wantFail: "storage:"},
	{name: "endpoint not MinIO's port", file: "docker-compose.yml", old: "--s3-endpoint=http://minio:9000", new: "--s3-endpoint=http://minio:9001", wantFail: "storage:"},
	{name: "no wait for the bucket", file: "docker-compose.yml", old: "x-controller-depends-on: &controller-depends-on\n  minio-init: {condition: service_completed_successfully}", new: "x-controller-depends-on: &controller-depends-on\n  minio: {condition: service_healthy}", wantFail: "storage:"},
	{name: "duplicate node id", file: "docker-compose.yml", old: "--node-id=102", new: "--node-id=101", wantFail: "node ids"},
	{name: "advertised port not published", file: "docker-compose.yml", old: "127.0.0.1}:19094\n", new: "127.0.0.1}:19095\n", wantFail: "brokers advertise"},
	{name: "host port published twice", file: "docker-compose.yml", old: "127.0.0.1:19645:9644", new: "127.0.0.1:19644:9644", wantFail: "published port"},
	{name: "SKIFF_HOST_IP not used for a published port", file: "docker-compose.yml", old: `"${SKIFF_HOST_IP:-127.0.0.1}:19092:9092"`, new: `"127.0.0.1:19092:9092"`, wantFail: "with SKIFF_HOST_IP set"},
	{name: "credentials differ", file: "dev.env", old: "AWS_SECRET_ACCESS_KEY=skiff-dev-only-password", new: "AWS_SECRET_ACCESS_KEY=something-else", wantFail: "credentials"},
	{name: "password too short for MinIO", file: "dev.env", old: "skiff-dev-only-password", new: "short", all: true, wantFail: "credentials"},
	{name: "healthcheck on the wrong port", file: "docker-compose.yml", old: `"skiff-healthcheck", "127.0.0.1:9644"`, new: `"skiff-healthcheck", "127.0.0.1:9645"`, wantFail: "healthchecks probe"},
	{name: "healthy-wait on a service without healthcheck", file: "docker-compose.yml", old: "      test: [\"CMD\", \"mc\", \"ready\", \"local\"]\n", new: "      disable: true\n", wantFail: "depends_on waits"},
	{name: "loopback listener", file: "docker-compose.yml", old: "--controller-listen=0.0.0.0:9093", new: "--controller-listen=127.0.0.1:9093", wantFail: "listeners bind"},
	{name: "shared volume", file: "docker-compose.yml", old: "[controller-2-data:/var/lib/skiff]", new: "[controller-1-data:/var/lib/skiff]", wantFail: "own named volume"},
	{name: "unpinned image", file: "docker-compose.yml", old: "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z", new: "quay.io/minio/mc", wantFail: "images pinned"},
	{name: "no memory limit", file: "docker-compose.yml", old: `limits: {cpus: "0.5", memory: 512M}`, new: `limits: {cpus: "0.5"}`, wantFail: "CPU and memory limits"},
	{name: "no restart policy", file: "docker-compose.yml", old: "  restart: unless-stopped\n", new: "", wantFail: "restart policy"},
	{name: "required flag missing", file: "docker-compose.yml", old: "      - --kafka-advertise=${SKIFF_HOST_IP:-127.0.0.1}:19093\n", new: "", wantFail: "flags the cluster needs"},
	{name: "flag the binary lacks", file: "docker-compose.yml", old: "--rack=rack-a", new: "--zone=rack-a", wantFail: "exists in `skiff <role> --help`"},
	{name: "value the binary refuses", file: "docker-compose.yml", old: "      - --s3-endpoint=http://minio:9000\n", new: "      - --s3-endpoint=http://minio:9000\n      - --s3-path-style=yes\n", wantFail: "exists in `skiff <role> --help`"},
	{name: "role the binary lacks", file: "docker-compose.yml", old: "x", new: "x", fakeSkiff: "#!/bin/sh\n[ \"$1\" = dev ] && { echo '      --data-dir <D>'; exit 0; }\necho \"error: unrecognized subcommand '$1'\" >&2; exit 2\n", wantFail: "exists in `skiff <role> --help`"},
	{name: "flag of the other role", file: "docker-compose.yml", old: "      - --rack=rack-a\n", new: "      - --rack=rack-a\n      - --voters=1=controller-1:9093\n", wantFail: "exists in `skiff <role> --help`"},
	{name: "flag repeated", file: "docker-compose.yml", old: "      - --node-id=101\n", new: "      - --node-id=101\n      - --node-id=101\n", wantFail: "exists in `skiff <role> --help`", noBinary: true},
	{name: "root user", file: "Dockerfile", old: "USER 10001:10001", new: "USER skiff", wantFail: "non-root, numeric"},
	{name: "shell-form entrypoint", file: "Dockerfile", old: `ENTRYPOINT ["skiff"]`, new: "ENTRYPOINT skiff", wantFail: "ENTRYPOINT"},
	{name: "COPY of a missing file", file: "Dockerfile", old: "deploy/healthcheck.sh /usr", new: "deploy/health.sh /usr", wantFail: "COPY sources"},
	{name: "unpinned base image", file: "Dockerfile", old: "FROM debian:bookworm-slim AS runtime", new: "FROM debian AS runtime", wantFail: "base images pinned"},
	{name: "lint: FROM/AS casing", file: "Dockerfile", old: "bookworm AS build", new: "bookworm as build", wantFail: "lint"},
	{name: "unknown instruction", file: "Dockerfile", old: "WORKDIR /src", new: "WORKDIRS /src", wantFail: "parses"},
	{name: "data dir not a volume", file: "Dockerfile", old: `VOLUME ["/var/lib/skiff"]`, new: `VOLUME ["/data"]`, wantFail: "VOLUME"},
	{name: "ENV no role reads", file: "Dockerfile", old: "SKIFF_DATA_DIR=/var/lib/skiff \\", new: "SKIFF_DATA_DIR=/var/lib/skiff SKIFF_NOPE=1 \\", wantFail: "every ENV SKIFF_*"},
}

// tree copies deploy/ and .dockerignore into a temporary repository root.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"deploy/docker-compose.yml", "deploy/dev.env", "deploy/Dockerfile", "deploy/healthcheck.sh", ".dockerignore"} {
		b, err := os.ReadFile(filepath.Join("..", "..", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func run(t *testing.T, root string, cli *skiffCLI) *report {
	t.Helper()
	var out bytes.Buffer
	r := &report{out: &out}
	image := checkDockerfile(r, root, filepath.Join(root, "deploy/Dockerfile"), cli)
	checkCompose(context.Background(), r, root, filepath.Join(root, "deploy/docker-compose.yml"), image, cli)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("\n" + out.String())
		}
	})
	return r
}

func fakeCLI(t *testing.T, text string) *skiffCLI {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "skiff")
	if err := os.WriteFile(bin, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return newSkiffCLI(bin)
}

func TestCommittedFilesPass(t *testing.T) {
	r := run(t, tree(t), fakeCLI(t, fakeSkiff))
	if r.failed > 0 || r.skipped > 0 {
		t.Fatalf("failed: %s; %d skipped", quoteAll(r.failures), r.skipped)
	}
}

func TestEachDefectIsCaught(t *testing.T) {
	for _, d := range defects {
		t.Run(d.name, func(t *testing.T) {
			root := tree(t)
			file := filepath.Join(root, "deploy", d.file)
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), d.old) {
				t.Fatalf("%s does not contain %q: update this test case", d.file, d.old)
			}
			n := 1
			if d.all {
				n = -1
			}
			if err := os.WriteFile(file, []byte(strings.Replace(string(b), d.old, d.new, n)), 0o644); err != nil {
				t.Fatal(err)
			}
			var cli *skiffCLI
			if !d.noBinary {
				text := fakeSkiff
				if d.fakeSkiff != "" {
					text = d.fakeSkiff
				}
				cli = fakeCLI(t, text)
			}
			r := run(t, root, cli)
			for _, f := range r.failures {
				if strings.Contains(f, d.wantFail) {
					return
				}
			}
			t.Fatalf("no failed check named like %q; failed: %s", d.wantFail, quoteAll(r.failures))
		})
	}
}

func TestParseHelpReadsClapOutput(t *testing.T) {
	h := parseHelp("Options:\n  -c, --config <CONFIG>\n          TOML file [env: SKIFF_CONFIG=]\n" +
		"      --flag <FLAG>  one line [env: SKIFF_FLAG=] [possible values: true, false]\n  -h, --help\n          Print help\n")
	if f := h.flags["config"]; !f.takesValue || h.envs["SKIFF_CONFIG"] != "config" {
		t.Fatalf("config: %+v, envs %v", f, h.envs)
	}
	if f := h.flags["flag"]; len(f.values) != 2 || h.envs["SKIFF_FLAG"] != "flag" {
		t.Fatalf("flag: %+v", f)
	}
	if f, ok := h.flags["help"]; !ok || f.takesValue {
		t.Fatalf("help: %+v", f)
	}
	flags, problems := parseArgs([]string{"--config", "x.toml", "--flag=true", "--help", "stray"}, h)
	if flags["config"] != "x.toml" || flags["flag"] != "true" || len(problems) != 1 {
		t.Fatalf("%v %v", flags, problems)
	}
}
