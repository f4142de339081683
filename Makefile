# rrloader front end. Every target installs what it needs first (scripts/setup.sh is idempotent).
PY ?= python3
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 30

.PHONY: setup build demo test cpp-test py-test asan fuzz fuzz-build fuzz-smoke lint tidy bench ci clean

setup:
	PYTHON=$(PY) bash scripts/setup.sh

# The Python package with its native module (incremental: scikit-build-core keeps build/<tag>).
build: setup
	$(PY) -m pip install --no-build-isolation --no-deps -q .

# Writes the demo dataset with rerun-sdk, opens it with rrloader and prints what is inside.
demo: build
	$(PY) -m rrloader.demo --out demo_data

# The C++ test build (warnings as errors); its compile commands also serve `make tidy`.
CPP_CONFIGURE = cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRRLOADER_BUILD_TESTS=ON \
  -DRRLOADER_BUILD_PYTHON=OFF -DRRLOADER_WERROR=ON > /dev/null

# The README's test command: C++ unit tests (warnings as errors) and the Python suite.
test: build cpp-test py-test

cpp-test: setup
	$(CPP_CONFIGURE)
	cmake --build build/cpp -j $(JOBS)
	ctest --test-dir build/cpp --output-on-failure

py-test: build
	$(PY) -m pytest -q -p no:cacheprovider tests/python

# C++ unit tests under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: setup
	cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRRLOADER_BUILD_TESTS=ON \
	  -DRRLOADER_BUILD_PYTHON=OFF -DRRLOADER_WERROR=ON -DRRLOADER_SANITIZE=ON > /dev/null
	cmake --build build/asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir build/asan --output-on-failure

# Every libFuzzer target (one per fuzz/fuzz_*.cc), built with clang.
FUZZ_TARGETS = fuzz_rrd_reader fuzz_image_decoder fuzz_selector fuzz_video_bitstream fuzz_redap

fuzz-build: setup
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DRRLOADER_BUILD_PYTHON=OFF -DRRLOADER_BUILD_FUZZERS=ON > /dev/null
	cmake --build build/fuzz -j $(JOBS) --target $(FUZZ_TARGETS)

# A short fuzz run (CI): each target runs for FUZZ_SECONDS, one after the other (so the
# whole run takes about twice that); `make fuzz FUZZ_SECONDS=600` for a longer one.
fuzz-smoke fuzz: fuzz-build build
	$(PY) tools/make_fuzz_corpus.py build/fuzz-corpus
	$(PY) tools/make_image_fuzz_corpus.py build/fuzz-corpus-image
	mkdir -p build/fuzz-run build/fuzz-run-image
	./build/fuzz/fuzz_rrd_reader fuzz/regressions/fuzz_rrd_reader/*
	./build/fuzz/fuzz_redap fuzz/regressions/fuzz_redap/*
	./build/fuzz/fuzz_rrd_reader -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
	  -rss_limit_mb=4096 -print_final_stats=1 build/fuzz-run build/fuzz-corpus
	./build/fuzz/fuzz_image_decoder -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
	  -rss_limit_mb=4096 -print_final_stats=1 build/fuzz-run-image build/fuzz-corpus-image
	mkdir -p build/fuzz-run-selector build/fuzz-corpus-selector
	printf '.[0].a' > build/fuzz-corpus-selector/chain; printf '.[0].b[1]' > build/fuzz-corpus-selector/nested
	printf '.c.d' > build/fuzz-corpus-selector/map; printf '.[-1]' > build/fuzz-corpus-selector/negative
	./build/fuzz/fuzz_selector -max_total_time=$(FUZZ_SECONDS) -max_len=256 -timeout=10 \
	  -rss_limit_mb=4096 -print_final_stats=1 build/fuzz-run-selector build/fuzz-corpus-selector
	$(PY) tools/make_video_fuzz_corpus.py build/fuzz-corpus-video
	mkdir -p build/fuzz-run-video
	./build/fuzz/fuzz_video_bitstream -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
	  -rss_limit_mb=4096 -print_final_stats=1 build/fuzz-run-video build/fuzz-corpus-video
	$(PY) tools/make_redap_fuzz_corpus.py build/fuzz-corpus-redap
	mkdir -p build/fuzz-run-redap
	./build/fuzz/fuzz_redap -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
	  -rss_limit_mb=4096 -print_final_stats=1 build/fuzz-run-redap build/fuzz-corpus-redap

lint: setup
	$(PY) -m ruff check python tests bench tools
	clang-format --dry-run --Werror $$(git ls-files 'cpp/*.h' 'cpp/*.cc' 'fuzz/*.cc')

# clang-tidy over the engine's sources, its C++ tests and the bindings (.clang-tidy: every
# warning an error), with the compile commands of the C++ test build and of the Python module's build.
TIDY = bash -c 'clang-tidy -p "$$1" --quiet "$$0" 2> >(grep -v "warnings generated" >&2)'
tidy: build
	$(CPP_CONFIGURE)
	git ls-files 'cpp/rrloader/*.cc' 'cpp/tests/*.cc' | xargs -P $(JOBS) -I{} $(TIDY) {} build/cpp
	git ls-files 'cpp/bindings/*.cc' | xargs -P $(JOBS) -I{} $(TIDY) {} \
	  "$$(dirname "$$(ls build/cp*/compile_commands.json | head -n 1)")"

bench: build
	bash bench/run_all.sh

ci: test asan fuzz-smoke lint tidy

clean:
	rm -rf build demo_data
