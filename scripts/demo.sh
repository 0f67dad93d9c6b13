#!/usr/bin/env bash
# The main job on an embedded default: render and compile-check the profile
# of every example guest, then print one profile in full.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${AA_VIRT_BIN:-target/release/aa-virt}
n=0
for x in examples/*.xml; do
  "$bin" profile --check "$x" >/dev/null
  n=$((n + 1))
done
echo "demo: $n example guests rendered and compiled with apparmor_parser"
first=$(ls examples/*.xml | head -n1)
echo "demo: the profile for $first:"
"$bin" profile "$first"
