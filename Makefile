# Thin wrapper around CMake. `make test` works on a fresh Debian bookworm machine.
BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

# Debian packages the build needs (DESIGN.md §1).
DEB_PKGS = build-essential cmake pkg-config \
	libraft-dev libuv1-dev libnng-dev libmsgpack-dev liblmdb-dev \
	libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev libxxhash-dev libcmocka-dev

.PHONY: all deps build test bench clean format help serve cluster

all: build

help:
	@echo "make deps   install missing Debian packages (as root), else print the apt-get line"
	@echo "make build  configure and build into $(BUILD)/"
	@echo "make test   deps + build + ctest --output-on-failure"
	@echo "make bench  build and run the benchmarks in bench/"
	@echo "make serve  deps + build + run memgrid on 127.0.0.1:8000 (SERVE_ARGS=\"--data DIR --listen HOST:PORT\")"
	@echo "make cluster deps + build + a local cluster (3 nodes, 2 routers) via deploy/local-cluster.sh start"
	@echo "make format clang-format every C file in place"

deps:
	@missing=""; \
	for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all present"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "deps: missing:$$missing"; \
	  echo "deps: run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	fi; \
	echo "deps: installing:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { apt-get update -q && apt-get install -y -q $$missing; }

build:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

serve: deps build
	./$(BUILD)/memgrid serve $(SERVE_ARGS)

cluster: deps build
	MEMGRID_BIN=./$(BUILD)/memgrid deploy/local-cluster.sh start

bench: build
	$(BUILD)/bench/index_bench

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)
