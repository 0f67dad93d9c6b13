#!/usr/bin/env bash
# A shipped aa-virt must never be able to swap the kernel for the test
# fake (that would run guests unconfined while reporting them confined).
# The fake is compiled only with the `test-util` feature, which only test
# builds turn on; this checks a built binary has none of it: the marker file
# name that selects the fake, and the fake's type name, must be absent.
set -euo pipefail
bin=${1:?usage: check-no-fake-kernel.sh BINARY}
for s in .aa-virt-fake-kernel FakeKernel; do
    if grep -aq -- "$s" "$bin"; then
        echo "check-no-fake-kernel: $bin contains '$s': built with the test-util feature?" >&2
        exit 1
    fi
done
echo "check-no-fake-kernel: $bin has no fake kernel"
