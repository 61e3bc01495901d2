# nalcast: two commands on a fresh Debian/Ubuntu machine.
#   make run   install what is missing, build, start on the built-in test pattern
#   make test  install what is missing, run every test (make test-fast: the quick ones)
#   make dist  cross-build the Raspberry Pi binaries and .debs into dist/ (make dist-check checks them)
.PHONY: run test test-fast setup setup-test build lint bench fuzz soak clean dist dist-check setup-dist

ARGS ?=

# The test pattern unless ARGS names a source of its own.
run: setup
	cargo build --release -p nalcast
	./target/release/nalcast $(if $(filter --source%,$(ARGS)),,--source test) $(ARGS)

test: setup-test
	scripts/test.sh

# While editing: formatting, unit and property tests, the page's pure tests (seconds).
test-fast: setup-test
	scripts/test.sh --fast

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

setup-dist:
	@scripts/setup.sh --dist

dist: setup-dist
	scripts/dist.sh

dist-check: setup-dist
	scripts/dist-check.sh

build: setup
	cargo build --release -p nalcast

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: setup-test
	scripts/bench.sh

fuzz: setup
	scripts/fuzz.sh

soak: setup
	scripts/soak.sh

clean:
	cargo clean
	rm -rf web/node_modules test-output
