# ringpost - a thin wrapper around CMake.
#   make run     install missing packages, build, run the daemon with ringpost.conf
#   make demo    install missing packages, build, send 10,000 messages through
#                ringpost to a local sink and print what happened (bench/run --demo)
#   make test    install missing packages, build, run the whole suite twice:
#                the normal build and an ASan+UBSan build
BUILD  ?= build
ASAN   ?= build-asan
CONFIG ?= ringpost.conf
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build build-asan run test test-unit test-asan demo clean format

all: build

deps:
	@./.ci/deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DRINGPOST_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j$(JOBS)

run: build
	exec $(BUILD)/bin/ringpost serve -c $(CONFIG)

demo: build
	python3 bench/run --demo --bin-dir $(BUILD)/bin

# Sanitizer runs fail on any report, leaks included.
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1

test: build build-asan
	ctest --test-dir $(BUILD) --output-on-failure -j2
	ctest --test-dir $(ASAN) --output-on-failure -j2

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -L unit -j2

test-asan: build-asan
	ctest --test-dir $(ASAN) --output-on-failure -j2

clean:
	rm -rf $(BUILD) $(ASAN)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
