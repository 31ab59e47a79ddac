# cutover — the two commands of the quick start are `make demo` and `make test`.
.PHONY: all setup build release test unit e2e demo bench fuzz format tidy clean

JOBS ?= $(shell nproc)
# ccache hits across clones of the repository (CI builds a fresh clone on a warm machine).
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

all: build

setup:
	@scripts/setup

build/dev/build.ninja:
	cmake --preset dev >/dev/null

build/release/build.ninja:
	cmake --preset release >/dev/null

# Debug + ASan + UBSan: what the tests run against.
build: setup build/dev/build.ninja
	cmake --build build/dev -j $(JOBS)

release: setup build/release/build.ninja
	cmake --build build/release -j $(JOBS)

test: build
	scripts/test

unit: build
	cd build/dev && ctest -L unit --output-on-failure -j $(JOBS)

e2e: build
	cd build/dev && ctest -L e2e --output-on-failure -j 1

demo: release
	scripts/demo

bench: release
	bench/run

fuzz: setup
	cmake --preset fuzz >/dev/null && cmake --build build/fuzz -j $(JOBS) --target fuzzers
	scripts/fuzz

format:
	git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

tidy: build/dev/build.ninja
	git ls-files 'src/*.cpp' | xargs clang-tidy -p build/dev --quiet

clean:
	rm -rf build
