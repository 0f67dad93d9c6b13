#!/bin/bash
# Run one case in its own bash process: lib.sh, then the case, then its
# on_exit cleanups. Used by run-suite.sh; not meant to be called directly.
set -u
SUITE_DIR=$(cd "$(dirname "$0")" && pwd)
CASE=$(basename "$1" .sh)
CASE_TMP=$(mktemp -d "/tmp/itest-$CASE.XXXXXX")
export CASE CASE_TMP
. "$SUITE_DIR/lib.sh"
trap '_run_on_exit; rm -rf "$CASE_TMP"' EXIT
cd "$CASE_TMP"
. "$1"
