#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short fixed time (FUZZ_SECONDS each, default 15),
# starting from the committed seeds in fuzz/seeds/<target> when there are any. A crash fails
# the run; libFuzzer prints the input and saves it under fuzz/artifacts/<target>/.
#
#   scripts/test-fuzz.sh                 # all targets, 15 s each
#   FUZZ_SECONDS=300 scripts/test-fuzz.sh admin_api
#
# cargo-fuzz is installed from crates.io if missing. libFuzzer's instrumentation needs
# nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain pass them. No sanitizer (`-s none`):
# the code under test is safe Rust, and ASan would need a nightly std. The dev profile (`--dev`,
# dependencies at opt-level 1, see fuzz/Cargo.toml): an optimised instrumented build of the
# whole workspace took 15 minutes on two cores, the dev build 7.5, and a smoke run of seconds
# needs coverage more than speed. A long run: `cargo fuzz run -s none admin_api` (optimised).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# fuzz/target, cargo-fuzz's own: the instrumented build's flags differ from the workspace's.
unset CARGO_TARGET_DIR
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --dev -s none
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  corpus="$(mktemp -d)"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  status=0
  cargo fuzz run --dev -s none "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="${FUZZ_SECONDS:-15}" -print_final_stats=1 >"$log" 2>&1 || status=$?
  rm -rf "$corpus"
  runs="$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
  echo "fuzz: $t: ${runs:-?} inputs in ${FUZZ_SECONDS:-15} s, exit $status"
  if [ "$status" -ne 0 ]; then
    tail -60 "$log" >&2
    echo "fuzz: $t failed; replay with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --dev -s none $t artifacts/$t/<file>" >&2
    exit "$status"
  fi
done
