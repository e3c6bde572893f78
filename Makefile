# ringpost - a thin wrapper around CMake.
#   make run     install missing packages, build, run the daemon with ringpost.conf
#   make demo    install missing packages, build, send 10,000 messages through
#                ringpost to a local sink and print what happened (bench/run --demo);
#                then a screenshot of the dashboard with live numbers
#                (bench/dashboard-shot -> bench/results/dashboard.png)
#   make test    install missing packages, build, run the whole suite twice:
#                the normal build and an ASan+UBSan build; also compile the
#                Release build that packagers make (warnings are errors), and
#                run every libFuzzer target for a few seconds (clang build)
#   make test-fuzz   build and run just the libFuzzer targets (build-fuzz/fuzz/)
#   make deb     build the Debian package (Release, build-deb/, cpack -G DEB)
#                and print its path: see README.md, Install as a service
#   make format  apply .clang-format to every tracked .c/.h file
BUILD  ?= build
ASAN   ?= build-asan
RELEASE ?= build-release
FUZZ   ?= build-fuzz
DEB    ?= build-deb
CONFIG ?= ringpost.conf
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build build-asan build-release build-fuzz run test test-unit test-asan test-fuzz \
        demo clean format deb

all: build

deps:
	@./.ci/deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DRINGPOST_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j$(JOBS)

# What `cmake -DCMAKE_BUILD_TYPE=Release` gives a packager (-O3 warns about
# more, e.g. -Wformat-truncation) must compile too.
build-release: deps
	@cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(RELEASE) -j$(JOBS)

# The libFuzzer targets of tests/fuzz (clang-14, ASan+UBSan, no Criterion
# tests): see README.md, Testing.
build-fuzz: deps
	@cmake -S . -B $(FUZZ) -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=Debug \
	       -DRINGPOST_FUZZ=ON -DRINGPOST_TESTS=OFF >/dev/null
	@cmake --build $(FUZZ) -j$(JOBS)

# The .deb: Debian's hardening flags (dpkg-buildflags: fortify, stack
# protector, relro, now) on top of the Release build; no tests compiled.
deb: deps
	@cmake -S . -B $(DEB) -DCMAKE_BUILD_TYPE=Release -DRINGPOST_TESTS=OFF \
	       -DCMAKE_C_FLAGS="$$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS) $$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)" \
	       -DCMAKE_EXE_LINKER_FLAGS="$$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)" >/dev/null
	@cmake --build $(DEB) -j$(JOBS)
	@rm -f $(DEB)/ringpost_*.deb
	@cd $(DEB) && cpack -G DEB >cpack.log 2>&1 || { cat cpack.log; exit 1; }
	@readlink -f $(DEB)/ringpost_*.deb

run: build
	exec $(BUILD)/bin/ringpost serve -c $(CONFIG)

demo: build
	python3 bench/run --demo --bin-dir $(BUILD)/bin
	python3 bench/dashboard-shot --bin-dir $(BUILD)/bin --out bench/results/dashboard.png

# Sanitizer runs fail on any report, leaks included.
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS := suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0

test: build build-asan build-release build-fuzz
	ctest --test-dir $(BUILD) --output-on-failure -j2
	ctest --test-dir $(ASAN) --output-on-failure -j2
	ctest --test-dir $(FUZZ) --output-on-failure -L fuzz -j2

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -L unit -j2

test-asan: build-asan
	ctest --test-dir $(ASAN) --output-on-failure -j2

test-fuzz: build-fuzz
	ctest --test-dir $(FUZZ) --output-on-failure -L fuzz -j2

clean:
	rm -rf $(BUILD) $(ASAN) $(RELEASE) $(FUZZ) $(DEB)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
