# shellcheck shell=bash
# The Kafka-protocol broker the Kafka log's tests and scripts/cluster run: tansu, from the Rust registry, with its
# SQLite storage (libsql) so a restarted broker keeps what it acknowledged. Building it takes ~20 minutes on two
# cores, so it is installed into ~/.cache/herald/tansu, outside the checkout, where the next run (a fresh clone in
# CI) finds it; its build directory is kept beside it so a rebuild after a cache wipe is incremental. 0.6.0 is
# pinned: the tests were checked against it. The tests find it there through HERALD_TANSU.
# Sourced by scripts/test, scripts/integration-on-kafka and scripts/cluster.

TANSU_VERSION=0.6.0
TANSU_ROOT="${HERALD_TANSU_ROOT:-$HOME/.cache/herald/tansu}"

# Installs tansu into $TANSU_ROOT when it is missing or another version, and exports HERALD_TANSU.
ensure_tansu() {
  if [ ! -x "$TANSU_ROOT/bin/tansu" ] || ! "$TANSU_ROOT/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "installing tansu $TANSU_VERSION (about 20 minutes on two cores; cached in $TANSU_ROOT)"
    CARGO_TARGET_DIR="$TANSU_ROOT-build" cargo install tansu --locked --version "$TANSU_VERSION" \
      --features dynostore,libsql --root "$TANSU_ROOT" --quiet
  fi
  export HERALD_TANSU="$TANSU_ROOT/bin/tansu"
}
