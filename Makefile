# aa-virt: common tasks. `make demo` and `make test` are the README's two
# commands; both install what is missing first (as root).

CARGO ?= cargo
export AA_VIRT_CORPUS ?= $(abspath ../shared/corpus/libvirt)

.PHONY: deps build demo test lint docs deb deb-path deb-test

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --release
	# The shipped binary must not contain the test-only fake kernel.
	scripts/check-no-fake-kernel.sh target/release/aa-virt

demo: build
	scripts/demo.sh

# Two oracles: Debian 12's libvirt 9.0 and AppArmor 3.0 on the host, and
# Debian 13's libvirt 11.3 and AppArmor 4.1 in a chroot built once and cached
# (scripts/trixie-chroot.sh). A chroot that cannot be built fails the run.
test: deps
	scripts/trixie-chroot.sh >/dev/null
	# RUST_TEST_THREADS, not --test-threads: the criterion bench binaries
	# (run once each in test mode) reject libtest's flags.
	AA_VIRT_TRIXIE_ROOT=$$(scripts/trixie-chroot.sh --path) RUST_TEST_THREADS=2 $(CARGO) test --all-targets
	@cat target/tmp/differential-summary.txt target/tmp/differential-summary-trixie.txt
	scripts/libvirt-suite.sh target/debug/aa-virt
	scripts/libvirt-suite.sh --root "$$(scripts/trixie-chroot.sh --path)" target/debug/aa-virt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# End-to-end suite on a real AppArmor kernel: builds aa-virt, then for
# Debian 12 and Debian 13 in turn builds or reuses the cached guest image,
# boots it under qemu (TCG) and prints "Debian N: X passed, Y failed"; the
# last line is the total "N passed, M failed". AA_VIRT_ITEST_DEBIAN=12 or 13
# runs one release. See integration-vms/README.md.
.PHONY: itest itest-image

itest:
	integration-vms/run.sh

# Only build (or confirm the cache of) the guest images.
itest-image:
	for r in $${AA_VIRT_ITEST_DEBIAN:-12 13}; do AA_VIRT_ITEST_DEBIAN=$$r integration-vms/build-image.sh || exit 1; done

# Man pages and completions generated from the command line definition.
docs: build
	$(MAKE) --no-print-directory docs-files

# The same from an already built binary, no cargo run (integration-vms
# builds the .deb of its upgrade case this way, from the binary under test).
AA_VIRT_DOCS_BIN ?= target/release/aa-virt
.PHONY: docs-files
docs-files:
	rm -rf target/docs
	$(AA_VIRT_DOCS_BIN) gen-docs target/docs >/dev/null
	gzip -9n target/docs/man/*.1 target/docs/man/*.5
	mkdir -p target/docs/systemd
	sed 's|@AA_VIRT@|/usr/bin/aa-virt|' packaging/systemd/aa-virt-load.service >target/docs/systemd/aa-virt-load.service

# The Debian package (cargo-deb; `cargo install cargo-deb` once).
deb: docs
	@command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }
	$(CARGO) deb --no-build --no-strip -o target/debian/

deb-path:
	@echo target/debian/aa-virt_$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)-1_$$(dpkg --print-architecture).deb

# Install the package, use it, purge it, check nothing is left (changes the system).
deb-test: deb
	scripts/deb-test.sh
