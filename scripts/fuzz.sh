#!/usr/bin/env bash
# Builds and runs every fuzz target (docs/fuzzing.md), one after the other:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 s per target, all targets
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target
# starts from its seeds in fuzz/corpus/<target>/ (read only: what the run finds goes to
# a scratch corpus in fuzz/target/corpus/<target>/, kept between runs, not committed).
# Prints libFuzzer's final line per target (`#N DONE cov: … exec/s: …`) and any crash
# (its input is saved in fuzz/artifacts/<target>/); exits 1 when a target crashed.
# FUZZ_JOBS (default 1) runs that many libFuzzer processes per target.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
jobs="${FUZZ_JOBS:-1}"

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)

cargo +nightly fuzz build || exit 2

failed=()
summary=()
for t in "${targets[@]}"; do
    scratch="target/corpus/$t"
    mkdir -p "$scratch" "corpus/$t" "artifacts/$t"
    log="target/fuzz-$t.log"
    echo "== $t: ${secs}s"
    # -jobs (even -jobs=1) forks workers that log to fuzz-<n>.log: only with FUZZ_JOBS > 1.
    par=()
    [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
    cargo +nightly fuzz run "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$secs" "${par[@]}" -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1
    rc=$?
    if [ "$jobs" -gt 1 ]; then
        cat fuzz-*.log >>"$log" 2>/dev/null
        rm -f fuzz-*.log
    fi
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
    if [ $rc -ne 0 ] || grep -qE '^==[0-9]+== ?ERROR|panicked at|deadly signal' "$log"; then
        failed+=("$t")
        echo "   CRASH (exit $rc); log $PWD/$log:"
        grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|Test unit written|SUMMARY' "$log" | head -8 | sed 's/^/   /'
        summary+=("$t: CRASH, $runs runs")
    else
        echo "   $done_line"
        summary+=("$t: $runs runs, ${done_line:-no DONE line}")
    fi
done

echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with cargo +nightly fuzz run <target> <input>)"
    exit 1
fi
