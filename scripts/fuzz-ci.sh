#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a bounded time (CI and by hand).
#
#   scripts/fuzz-ci.sh                 # every target, FUZZ_SECONDS each (60)
#   FUZZ_SECONDS=600 scripts/fuzz-ci.sh domain_xml
#
# Needs cargo-fuzz (installed from crates.io when missing) and a nightly
# compiler feature set: the stable toolchain is used with RUSTC_BOOTSTRAP=1
# (see fuzz/README.md for what was measured). The committed corpus in
# fuzz/corpus/<target> is read, never written: new inputs go to a scratch
# directory. A crash fails the script and leaves the input in
# fuzz/artifacts/<target>/. Prints one summary line per target.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}   # address | none
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-ci: installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

t0=$(date +%s)
(cd fuzz && cargo fuzz build -O -s "$sanitizer")
echo "fuzz-ci: built ${#targets[@]} targets in $(( $(date +%s) - t0 ))s (sanitizer: $sanitizer)"

status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  log="$work/$t.log"
  rc=0
  (cd fuzz && cargo fuzz run -O -s "$sanitizer" "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      "${dict[@]}") >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz-ci: $t: ${secs}s, ${execs:-?} execs (${rate:-?}/s), $cov, 0 crashes"
  else
    status=1
    echo "fuzz-ci: $t: FAILED (exit $rc) after ${execs:-?} execs; input in fuzz/artifacts/$t/" >&2
    grep -E "panicked|ERROR:|SUMMARY" -A3 "$log" | head -n 30 >&2 || tail -n 30 "$log" >&2
  fi
done
exit "$status"
