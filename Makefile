# lifeline — see README.md. Two commands matter: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/lifeline-dev/lifeline/shared/version.Version=$(VERSION)
FUZZTIME ?= 3s
BINS := bin/lifeline-bastion bin/lifeline-agent bin/lifeline-linkcheck

.PHONY: all build test unit integration fuzz vet fmt-check bench demo deps clean dist deb

all: build

build: $(BINS)

bin/lifeline-%: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./$(firstword $(subst -, ,$*))/cmd/lifeline-$*
# The agent's link check program (speedtest-go), run by lifeline-agent for
# each check and found next to it.
bin/lifeline-linkcheck: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./agent/cmd/lifeline-linkcheck
FORCE:

# Every test: static checks, unit tests (root-only ones run when root),
# the integration suite in network namespaces, and a short run of every fuzz target.
test: deps vet fmt-check unit integration fuzz

deps:
	@./integration/deps.sh

vet:
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

unit:
	$(GO) test -count=1 -timeout 10m ./...

integration: build
	$(GO) test -count=1 -timeout 15m -tags integration ./integration/...

# A target that finds a crasher writes it to the package's testdata/fuzz and
# fails. A failure that wrote nothing (the fuzzing engine itself, e.g. a
# worker starved on a loaded machine) is retried once.
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      if $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1; then break; fi; \
	      if [ $$try = 2 ] || [ -n "$$(git status --porcelain -- "$$dir/testdata/fuzz/$$t" 2>/dev/null)" ]; then cat $$log; exit 1; fi; \
	      echo "  $$t failed without a crasher (fuzzing engine); retrying once:"; tail -n 5 $$log; \
	    done; \
	  done; \
	done

# Every benchmark, each run once: lifeline against stock OpenSSH/autossh in
# the same run (tables are printed as markdown; about 20 minutes, needs root).
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m -tags integration ./... 2>&1 | tee bench.out

demo: build
	@./integration/demo.sh

clean:
	rm -rf bin dist

# --- deploy (owned by the packaging work: dist, deb) ---
# dist: static, version-stamped binaries for the jump host and the Pi, one
# tarball per platform (binaries + systemd units + env templates), SHA256SUMS.
# deb: lifeline-bastion and lifeline-agent .deb for amd64, arm64 and armhf,
# built with dpkg-deb by systemd/packaging/mkdeb.sh (the agent's package also
# holds lifeline-linkcheck, taken from next to lifeline-agent, installed in
# /usr/lib/lifeline); SHA256SUMS then covers
# tarballs and packages. armhf is armv6 (GOARCH=arm GOARM=6), so the one
# 32-bit package runs on the Pi Zero W and Pi 1 (ARM1176) through the Pi 4 on
# 32-bit Raspberry Pi OS (GOARM=7 dies with SIGILL on ARMv6); 64-bit OS: arm64.
# DIST is the output directory (systemd/qemu_test.go builds into a temp dir).
DIST_PLATFORMS := amd64:amd64 arm64:arm64 armv6:armhf
DIST ?= dist
# Evaluated once, so file names and the stamped version agree for the whole run.
DIST_VERSION := $(VERSION)
DIST_LDFLAGS := -s -w -X github.com/lifeline-dev/lifeline/shared/version.Version=$(DIST_VERSION)
# Debian versions: v1.2.0-3-gabc -> 1.2.0+3+gabc; anything not a release tag
# (a bare commit like 242e48e-dirty) -> 0.0.0+242e48e+dirty, below every release.
DEB_VERSION := $(shell printf '%s' '$(DIST_VERSION)' | sed -E 's/^v([0-9])/\1/; s/-/+/g; /^[0-9]+\.[0-9]/!s/^/0.0.0+/')
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

dist:
	@rm -rf '$(DIST)' && mkdir -p '$(DIST)'
	@set -e; for p in $(DIST_PLATFORMS); do \
	  plat=$${p%%:*}; goarch=$$plat; goarm=; \
	  case $$plat in armv*) goarch=arm; goarm=$${plat#armv};; esac; \
	  name=lifeline_$(DIST_VERSION)_linux_$$plat; \
	  mkdir -p '$(DIST)'/$$name/systemd; \
	  for b in bastion agent agent/linkcheck; do \
	    bin=lifeline-$${b#*/}; \
	    echo "build $$name/$$bin"; \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch GOARM=$$goarm $(GO) build -trimpath -ldflags '$(DIST_LDFLAGS)' \
	      -o '$(DIST)'/$$name/$$bin ./$${b%/*}/cmd/$$bin; \
	  done; \
	  cp systemd/*.service systemd/*.env systemd/README.md '$(DIST)'/$$name/systemd/; \
	  tar -C '$(DIST)' --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
	    -czf '$(DIST)'/$$name.tar.gz $$name; \
	done
	cd '$(DIST)' && sha256sum *.tar.gz > SHA256SUMS

deb: dist
	@set -e; for p in $(DIST_PLATFORMS); do \
	  plat=$${p%%:*}; debarch=$${p##*:}; \
	  for b in bastion agent; do \
	    ./systemd/packaging/mkdeb.sh lifeline-$$b $$debarch $(DEB_VERSION) \
	      '$(DIST)'/lifeline_$(DIST_VERSION)_linux_$$plat/lifeline-$$b '$(DIST)'; \
	  done; \
	done
	cd '$(DIST)' && sha256sum *.tar.gz *.deb > SHA256SUMS
# --- end deploy ---
