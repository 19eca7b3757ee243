#!/usr/bin/env bash
# Builds (and links) every cargo-fuzz target in fuzz/ without running any, so
# that a parser change that breaks a target fails CI. Installs cargo-fuzz
# (pinned) when it is missing; needs the nightly toolchain (`cargo +nightly`),
# which the CI machine has.
#
# The build is the cheapest one that is still a real cargo-fuzz build:
# `--dev` (no optimisation) and `-s none` (no AddressSanitizer), so the
# libFuzzer runtime and the coverage instrumentation are compiled and linked
# but not optimised. Measured cold times are in BENCHMARKS.md ("Fuzzing").
# To fuzz, use the default ASan release build: see README.md ("Fuzzing").
#
# The fuzz build always gets its own target directory, fuzz/target
# (git-ignored; FUZZ_TARGET_DIR overrides it), even when CARGO_TARGET_DIR is
# set, so it never touches the artifacts of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target_dir=${FUZZ_TARGET_DIR:-$PWD/target}

CARGO_FUZZ_VERSION=0.13.2

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "build-fuzz-targets: the nightly toolchain is missing: 'cargo +nightly' does not run." >&2
  echo "build-fuzz-targets: install it with 'rustup toolchain install nightly' (cargo-fuzz needs it)." >&2
  exit 1
fi

installed=$(cargo fuzz --version 2>/dev/null || true)
if [ "$installed" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "build-fuzz-targets: installing cargo-fuzz $CARGO_FUZZ_VERSION (found: ${installed:-none})"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# `cargo fuzz build` has no --locked; the fuzz crate's own Cargo.lock is
# committed, and this fails if the build would have to change it (and
# downloads the host's dependencies only).
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
cargo +nightly fetch --locked --target "$host"

targets=$(cargo fuzz list)
echo "build-fuzz-targets: building $(echo "$targets" | wc -l) targets:" $targets
start=$(date +%s)
cargo +nightly fuzz build --dev -s none --target-dir "$target_dir"
for t in $targets; do
  bin=$(find "$target_dir" -path "*/debug/$t" -type f -perm -u+x | head -n 1)
  if [ -z "$bin" ]; then
    echo "build-fuzz-targets: no binary for target $t" >&2
    exit 1
  fi
done
echo "build-fuzz-targets: all targets built and linked in $(($(date +%s) - start)) s"
