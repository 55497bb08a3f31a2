#!/usr/bin/env bash
# Builds every image deploy/docker-compose.yml and the tests use without any container registry
# (air-gapped machines, and the project's CI, which reaches package registries only):
#
#   deploy/images-offline.sh
#
#   skiff-base:bookworm            Debian bookworm from `debootstrap --variant=minbase` (Debian
#                                  mirror), with ca-certificates, piped into `docker import`
#   skiff:dev                      the locally built `skiff` binary on that base
#                                  (deploy/Dockerfile.offline: the runtime stage of deploy/Dockerfile)
#   quay.io/minio/minio:<compose tag>, minio/minio:<testcontainers tag>
#                                  the `minio` server (scripts/install-minio.sh: `go install`) and
#                                  `mc` (the compose healthcheck runs `mc ready local` in it)
#   quay.io/minio/mc:<compose tag> `mc`, built with `go install` from the Go module proxy
#
# The MinIO and mc tags are the names the compose file and testcontainers' MinIO module ask
# for; what is inside is the binary built here (its Go module version is the image label
# org.opencontainers.image.version), not MinIO's published release of that name.
#
# Inputs are cached under $SKIFF_CACHE/images (outside the clone): the debootstrap tarball, and
# the mc binary under $SKIFF_CACHE/go-bin. An image is rebuilt only when the hash of its inputs
# (label skiff.input) changed, so a second run takes a few seconds.
#
#   SKIFF_BIN          the skiff binary (default $CARGO_TARGET_DIR/debug/skiff, else
#                      target/release/skiff, else target/debug/skiff); for a small image use
#                      `cargo build --release` and SKIFF_BIN=target/release/skiff
#   SKIFF_MINIO_BIN    the minio binary (default: what scripts/install-minio.sh finds or installs)
#   SKIFF_DEBIAN_MIRROR  default http://deb.debian.org/debian (a local mirror for air-gapped use)
#   SKIFF_BASE_TARBALL   use this root-filesystem tarball instead of running debootstrap
#
# Needs a running Docker engine, and root for debootstrap (once; the tarball is then cached).
# No BuildKit: the classic builder (DOCKER_BUILDKIT=0) needs no frontend image from a registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
SKIFF_CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
export DOCKER_BUILDKIT=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
cache="$SKIFF_CACHE/images"
mkdir -p "$cache"
started=$SECONDS

# The tags the consumers expect: read from the compose file and the testcontainers module
# source, so they cannot drift apart silently.
compose_image() {
  sed -n "s|^ *image: *\\(quay.io/minio/$1:[^ ]*\\).*|\\1|p" deploy/docker-compose.yml | head -1
}
minio_compose="$(compose_image minio)"
mc_compose="$(compose_image mc)"
[ -n "$minio_compose" ] && [ -n "$mc_compose" ] || { echo "images: no quay.io/minio/{minio,mc} image in deploy/docker-compose.yml" >&2; exit 1; }
# testcontainers-modules' MinIO module: NAME and TAG constants in src/minio/mod.rs of the
# version Cargo.lock pins.
tc_version="$(awk '/^name = "testcontainers-modules"$/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)"
tc_src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"testcontainers-modules-$tc_version" 2>/dev/null | head -1 || true)"
if [ -n "$tc_src" ] && [ -f "$tc_src/src/minio/mod.rs" ]; then
  tc_name="$(sed -n 's/^const NAME: &str = "\(.*\)";/\1/p' "$tc_src/src/minio/mod.rs")"
  tc_tag="$(sed -n 's/^const TAG: &str = "\(.*\)";/\1/p' "$tc_src/src/minio/mod.rs")"
  minio_tc="$tc_name:$tc_tag"
else
  # Not fetched yet (cargo fetches it on the first `--features testcontainers` build).
  minio_tc="minio/minio:RELEASE.2025-02-28T09-55-16Z"
fi

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
input_of() { docker image inspect -f '{{index .Config.Labels "skiff.input"}}' "$1" 2>/dev/null || true; }
hash_files() { cat "$@" | sha256sum | cut -c1-16; }

# ---- base: debootstrap tarball (cached) → docker import
base=skiff-base:bookworm
mirror="${SKIFF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tarball="${SKIFF_BASE_TARBALL:-$cache/debian-bookworm-minbase.tar}"
if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null 2>&1 || {
    echo "images: installing debootstrap (Debian package)"
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null; }
    apt_install || { apt-get -o DPkg::Lock::Timeout=300 update -qq && apt_install; } || { echo "images: apt-get install debootstrap failed" >&2; exit 1; }
  }
  echo "images: debootstrap --variant=minbase bookworm from $mirror (about a minute, once)"
  t=$SECONDS
  root="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; echo "images: debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 1; }
  # Nothing in the image needs apt's package lists, documentation or locales.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  rm -rf "$root"
  trap - EXIT
  sha256sum "$tarball.tmp" | cut -c1-16 >"$tarball.sha"
  mv "$tarball.tmp" "$tarball"
  echo "images: base tarball $(du -h "$tarball" | cut -f1) in $((SECONDS - t)) s"
fi
[ -f "$tarball.sha" ] || sha256sum "$tarball" | cut -c1-16 >"$tarball.sha"
want="base-$(cat "$tarball.sha")"
if [ "$(input_of "$base")" != "$want" ]; then
  echo "images: docker import $base"
  docker import -c "LABEL skiff.input=$want" -c 'CMD ["/bin/bash"]' -m "debootstrap --variant=minbase bookworm" "$tarball" "$base" >/dev/null
fi
base_id="$(docker image inspect -f '{{.Id}}' "$base")"

# Builds image $1 from Dockerfile $2 in context directory $3 unless its input hash ($4)
# is unchanged; the hash is stored as label skiff.input.
build() {
  local tag="$1" dockerfile="$2" ctx="$3" want="$4"
  shift 4
  if [ "$(input_of "$tag")" = "$want" ]; then
    echo "images: $tag up to date"
    return
  fi
  echo "images: building $tag"
  # The classic builder's deprecation notice is noise here; any real error is printed.
  if ! docker build -q -f "$dockerfile" --build-arg "BASE=$base" --label "skiff.input=$want" "$@" -t "$tag" "$ctx" >"$cache/build.log" 2>&1; then
    grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e '^ *environment-variable' "$cache/build.log" >&2
    echo "images: building $tag failed" >&2
    exit 1
  fi
}

# ---- skiff:dev from the built binary
bin="${SKIFF_BIN:-}"
if [ -z "$bin" ]; then
  for c in "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/debug/skiff}" target/release/skiff target/debug/skiff; do
    if [ -n "$c" ] && [ -x "$c" ]; then bin="$c"; break; fi
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "images: no skiff binary: run cargo build (or set SKIFF_BIN)" >&2; exit 1; }
ctx="$cache/ctx-skiff"
rm -rf "$ctx" && mkdir -p "$ctx"
# Debug info is most of a debug build's size and nothing in a container reads it.
objcopy --strip-debug "$bin" "$ctx/skiff" 2>/dev/null || cp "$bin" "$ctx/skiff"
install -m 0755 deploy/healthcheck.sh "$ctx/skiff-healthcheck"
cp deploy/Dockerfile.offline "$ctx/Dockerfile"
build skiff:dev "$ctx/Dockerfile" "$ctx" "skiff-$base_id-$(hash_files "$ctx/Dockerfile" "$ctx/skiff" "$ctx/skiff-healthcheck")"

# ---- mc from the Go module proxy (cached binary)
mc_module="github.com/minio/mc@v0.0.0-20250313080218-cf909e1063a9"
mc_dir="$SKIFF_CACHE/go-bin/mc-${mc_module##*@}"
if [ ! -x "$mc_dir/mc" ]; then
  command -v go >/dev/null 2>&1 || { echo "images: Go is required to build mc" >&2; exit 1; }
  echo "images: go install $mc_module (a few minutes, once)"
  mkdir -p "$mc_dir"
  GOBIN="$mc_dir" go install -trimpath -ldflags "-s -w" "$mc_module"
fi

# ---- MinIO server (+ mc for the healthcheck), and the mc image
minio="${SKIFF_MINIO_BIN:-}"
if [ -z "$minio" ] || [ ! -x "$minio" ]; then
  minio="$(scripts/install-minio.sh | tail -1)"
  minio="${minio#minio: }"
fi
minio_version="$(go version -m "$minio" 2>/dev/null | awk '$1 == "mod" {print $3; exit}' || true)"
ctx="$cache/ctx-minio"
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$minio" "$ctx/minio" && cp "$mc_dir/mc" "$ctx/mc"
cat >"$ctx/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
ARG VERSION
LABEL org.opencontainers.image.title="MinIO (built locally from its Go module)" \
      org.opencontainers.image.version="${VERSION}"
COPY minio mc /usr/bin/
# MinIO's own image: data in /data, API 9000, console 9001, entrypoint the server binary.
# Update checks off: nothing in a container talks to anything outside the compose network.
ENV MINIO_UPDATE=off MC_DISABLE_PAGER=1
VOLUME ["/data"]
EXPOSE 9000 9001
ENTRYPOINT ["minio"]
CMD ["server", "/data"]
EOF
build "$minio_compose" "$ctx/Dockerfile" "$ctx" "minio-$base_id-$(hash_files "$ctx/Dockerfile" "$ctx/minio" "$ctx/mc")" --build-arg "VERSION=$minio_version"
docker tag "$minio_compose" "$minio_tc"

ctx="$cache/ctx-mc"
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$mc_dir/mc" "$ctx/mc"
cat >"$ctx/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
ARG VERSION
LABEL org.opencontainers.image.title="MinIO client mc (built locally from its Go module)" \
      org.opencontainers.image.version="${VERSION}"
COPY mc /usr/bin/
ENV MC_DISABLE_PAGER=1
ENTRYPOINT ["mc"]
EOF
build "$mc_compose" "$ctx/Dockerfile" "$ctx" "mc-$base_id-$(hash_files "$ctx/Dockerfile" "$ctx/mc")" --build-arg "VERSION=${mc_module##*@}"

# Dangling layers of replaced images.
docker image prune -f --filter label=skiff.input >/dev/null 2>&1 || true
echo "images: $base skiff:dev $minio_compose $minio_tc $mc_compose ready in $((SECONDS - started)) s"
