# aa-virt: common tasks. `make demo` and `make test` are the README's two
# commands; both install what is missing first (as root).

CARGO ?= cargo
export AA_VIRT_CORPUS ?= $(abspath ../shared/corpus/libvirt)

.PHONY: deps build demo test lint

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --release

demo: build
	scripts/demo.sh

test: deps
	$(CARGO) test --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# End-to-end suite on a real AppArmor kernel: builds aa-virt, builds or
# reuses the cached Debian 12 guest image, boots it under qemu (TCG) and
# prints "N passed, M failed". See integration-vms/README.md.
.PHONY: itest itest-image

itest:
	integration-vms/run.sh

# Only build (or confirm the cache of) the guest image.
itest-image:
	integration-vms/build-image.sh
