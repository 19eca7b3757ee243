#!/usr/bin/env bash
# docs/design.md §10: peak RSS and wall time of loading, validating and indexing the
# synthetic 10x k8s.io corpus in the release binary (`index stats`).
# Usage: bash benches/scripts/index-rss.sh [corpus dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-$(mktemp -d)}
cargo build --release --quiet --example gen_corpus --bin image-auditor
[ -d "$dir/manifests" ] || ./target/release/examples/gen_corpus "$dir" --scale x10
find "$dir/images" -name images.yaml -printf "%s\n" | awk '{s+=$1} END {printf "images.yaml bytes: %d\n", s}'
./target/release/image-auditor --manifests "$dir" index stats --json
