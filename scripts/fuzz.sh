#!/usr/bin/env bash
# Fuzzes the mapping engine and the request parsers with cargo-fuzz (libFuzzer), every target
# of fuzz/ for SECONDS each (default 20): a short, bounded run meant for CI. Installs cargo-fuzz
# from crates.io if it is missing. Exits non-zero, naming the target, if any input panics; the
# input is kept in fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>`, shrink with
# `cargo fuzz tmin <target> <file>`).
#
# Usage: scripts/fuzz.sh [SECONDS]
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. The first build instruments the whole gateway (rustls/ring included)
# and takes several minutes on a 2-core machine; later runs reuse it.
#
# A longer local run, e.g. an hour per target on both cores, keeping the corpus between runs:
#   scripts/fuzz.sh 3600
# or one target, in parallel jobs:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run mapping_render fuzz/corpus/mapping_render fuzz/seeds/mapping_render \
#     -- -max_total_time=3600 -jobs=2 -workers=2
set -euo pipefail

secs="${1:-20}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=(mapping_render request_parse mapping_compile)

echo "==> building fuzz targets"
cargo fuzz build

failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  # Read-only seed directories: the committed seeds, and for the compiler the shipped files.
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds+=("fuzz/seeds/$target")
  [ "$target" = mapping_compile ] && seeds+=("mappings")
  echo "==> $target for ${secs}s"
  log="$(mktemp)"
  if cargo fuzz run "$target" "$corpus" "${seeds[@]}" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    echo "    corpus: $(find "$corpus" -type f | wc -l) inputs"
  else
    tail -n 60 "$log"
    failed+=("$target")
  fi
  rm -f "$log"
done

# The count line, one test per target; the same counts as JSON to the file IG_TEST_RESULT names,
# when set (scripts/test.sh adds those up).
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ -n "${IG_TEST_RESULT:-}" ]; then
  printf '{"passed": %d, "failed": %d, "skipped": 0}\n' "$((${#targets[@]} - ${#failed[@]}))" "${#failed[@]}" >"$IG_TEST_RESULT"
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "==> no crash in ${#targets[@]} targets (${secs}s each)"
