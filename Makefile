# lifeline — see README.md. Two commands matter: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/lifeline-dev/lifeline/shared/version.Version=$(VERSION)
FUZZTIME ?= 3s
BINS := bin/lifeline-bastion bin/lifeline-agent bin/lifeline-linkcheck bin/lifeline-jumpstart

.PHONY: all build test deadcode unit integration fuzz vet fmt-check bench demo deps clean dist dist-check deb deb-version release release-check release-unsigned release-key-check release-sign

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
# The agent's jump start program (aws-sdk-go-v2), run by lifeline-agent in
# outage mode to start the jump host and found next to it.
bin/lifeline-jumpstart: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./agent/cmd/lifeline-jumpstart
FORCE:

# Every test: static checks, unit tests (root-only ones run when root),
# the integration suite in network namespaces, and a short run of every fuzz target.
test: deps vet fmt-check deadcode unit integration fuzz

deps:
	@./integration/deps.sh

vet:
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

# No production function unreachable from the programs' mains: code only
# tests use belongs in the tests (or internal/), code nobody uses goes.
# deadcode (golang.org/x/tools, pinned as a tool in go.mod) without -test.
deadcode:
	@out=$$($(GO) tool deadcode ./... | grep -E '^(agent|bastion|shared)/' || true); \
	if [ -n "$$out" ]; then echo "unreachable production code:"; echo "$$out"; exit 1; fi

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

# --- deploy (owned by the packaging work: dist, deb, release) ---
# dist: static, version-stamped binaries for the jump host and the Pi, one
# tarball per platform (binaries + systemd units + env templates), SHA256SUMS.
# deb: lifeline-bastion and lifeline-agent .deb for amd64, arm64 and armhf,
# built by nfpm from systemd/packaging/lifeline-{bastion,agent}.yaml (the
# agent's package also holds lifeline-linkcheck and lifeline-jumpstart,
# installed in /usr/lib/lifeline), with man pages made by help2man from the --help of the
# build for this machine (systemd/packaging/manpages.sh; every architecture
# gets the same pages) and a Debian changelog made from
# CHANGELOG.md (systemd/packaging/debchangelog.sh); SHA256SUMS then covers
# tarballs and packages. armhf is armv6 (GOARCH=arm GOARM=6), so the one
# 32-bit package runs on the Pi Zero W and Pi 1 (ARM1176) through the Pi 4 on
# 32-bit Raspberry Pi OS (GOARM=7 dies with SIGILL on ARMv6); 64-bit OS: arm64.
# DIST is the output directory (systemd/qemu_test.go builds into a temp dir).
# Builds are reproducible: -trimpath, no VCS stamp, an empty build ID, and
# SOURCE_DATE_EPOCH (the commit time) for every file time in tarballs and
# packages.
DIST_PLATFORMS := amd64:amd64 arm64:arm64 armv6:armhf
DIST ?= dist
# Evaluated once, so file names and the stamped version agree for the whole run.
DIST_VERSION := $(VERSION)
DIST_LDFLAGS := -s -w -buildid= -X github.com/lifeline-dev/lifeline/shared/version.Version=$(DIST_VERSION)
# Debian versions: v1.2.0-3-gabc -> 1.2.0+3+gabc; anything not a release tag
# (a bare commit like 242e48e-dirty) -> 0.0.0+242e48e+dirty, below every release.
DEB_VERSION := $(shell printf '%s' '$(subst ','\'',$(DIST_VERSION))' | sed -E 's/^v([0-9])/\1/; s/-/+/g; /^[0-9]+\.[0-9]/!s/^/0.0.0+/')
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH
# nfpm (the .deb builder) is a Go tool dependency of this module (go.mod's
# `tool` line, added by `go get -tool github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2`):
# its version is pinned and checksummed in go.mod/go.sum like any module and
# `go tool` builds it on first use, so packaging needs nothing but Go.
NFPM := $(GO) tool nfpm
# The programs of every platform, built by one `go build` (links in parallel).
DIST_PKGS := ./bastion/cmd/lifeline-bastion ./agent/cmd/lifeline-agent ./agent/cmd/lifeline-linkcheck ./agent/cmd/lifeline-jumpstart
DIST_BINS := lifeline-bastion lifeline-agent lifeline-linkcheck lifeline-jumpstart
# The man pages are made by running the build for this machine.
HOST_GOARCH = $(shell $(GO) env GOARCH 2>/dev/null)
# Checked from the environment, so that no value can break the shell.
export DIST_PLATFORMS DIST_VERSION DEB_VERSION

# Refuses, before anything is built or deleted, a VERSION that cannot name
# files or a Debian package, or an unknown DIST_PLATFORMS entry.
dist-check:
	@case "$$DIST_VERSION" in \
	'' | [!A-Za-z0-9]* | *[!A-Za-z0-9.+~-]*) \
	  echo "make: VERSION '$$DIST_VERSION' is not a version: letters, digits and . + ~ - only, a letter or digit first" >&2; exit 2;; \
	esac; \
	case "$$DEB_VERSION" in \
	[0-9]*) case "$$DEB_VERSION" in *[!A-Za-z0-9.+~]*) \
	  echo "make: VERSION '$$DIST_VERSION' makes the Debian version '$$DEB_VERSION', which dpkg refuses" >&2; exit 2;; esac;; \
	*) echo "make: VERSION '$$DIST_VERSION' makes the Debian version '$$DEB_VERSION', which dpkg refuses" >&2; exit 2;; \
	esac; \
	[ -n "$$DIST_PLATFORMS" ] || { echo "make: DIST_PLATFORMS is empty" >&2; exit 2; }; \
	for p in $$DIST_PLATFORMS; do \
	  case "$$p" in amd64:amd64 | arm64:arm64 | armv6:armhf | armv7:armhf) ;; \
	  *) echo "make: DIST_PLATFORMS entry '$$p' is not one of amd64:amd64 arm64:arm64 armv6:armhf armv7:armhf (GOARCH[vGOARM]:Debian architecture)" >&2; exit 2;; \
	  esac; \
	done

# The Debian version `make deb` gives VERSION (for scripts and tests).
deb-version: dist-check
	@echo '$(DEB_VERSION)'

dist: dist-check
	@rm -rf '$(DIST)' && mkdir -p '$(DIST)'
	@set -e; for p in $(DIST_PLATFORMS); do \
	  plat=$${p%%:*}; goarch=$$plat; goarm=; \
	  case $$plat in armv*) goarch=arm; goarm=$${plat#armv};; esac; \
	  name=lifeline_$(DIST_VERSION)_linux_$$plat; \
	  mkdir -p '$(DIST)'/$$name/systemd; \
	  echo "build $$name: $(DIST_BINS)"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch GOARM=$$goarm $(GO) build -trimpath -buildvcs=false -ldflags '$(DIST_LDFLAGS)' \
	    -o '$(DIST)'/$$name/ $(DIST_PKGS); \
	  cp systemd/*.service systemd/*.env systemd/README.md '$(DIST)'/$$name/systemd/; \
	  tar -C '$(DIST)' --sort=name --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w \
	    --mtime=@$(SOURCE_DATE_EPOCH) -cf - $$name | gzip -9n > '$(DIST)'/$$name.tar.gz; \
	done
	cd '$(DIST)' && sha256sum *.tar.gz > SHA256SUMS

deb: dist
	@set -e; gen='$(DIST)'/.deb; rm -rf "$$gen"; mkdir -p "$$gen"; \
	host='$(DIST)'/lifeline_$(DIST_VERSION)_linux_$(HOST_GOARCH); \
	if ! [ -x "$$host/lifeline-linkcheck" ] || ! [ -x "$$host/lifeline-jumpstart" ]; then \
	  host=$$gen/bin; \
	  CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '$(DIST_LDFLAGS)' -o "$$host"/ $(DIST_PKGS); \
	fi; \
	./systemd/packaging/manpages.sh "$$host" "$$gen"; \
	./systemd/packaging/debchangelog.sh CHANGELOG.md '$(DEB_VERSION)' > "$$gen/changelog"; \
	gzip -9n < "$$gen/changelog" > "$$gen/changelog.gz"; \
	$(NFPM) --version >/dev/null; \
	pids=; for p in $(DIST_PLATFORMS); do \
	  plat=$${p%%:*}; debarch=$${p##*:}; \
	  for b in bastion agent; do \
	    LIFELINE_DEB_VERSION='$(DEB_VERSION)' LIFELINE_DEB_ARCH=$$debarch LIFELINE_DEB_GEN="$$gen" \
	    LIFELINE_DEB_BIN='$(DIST)'/lifeline_$(DIST_VERSION)_linux_$$plat \
	      $(NFPM) package --packager deb --config systemd/packaging/lifeline-$$b.yaml --target '$(DIST)'/ >/dev/null & \
	    pids="$$pids $$!"; \
	  done; \
	done; \
	failed=; for pid in $$pids; do wait $$pid || failed=1; done; \
	[ -z "$$failed" ] || { echo "make deb: nfpm failed" >&2; exit 1; }; \
	for p in $(DIST_PLATFORMS); do \
	  for b in bastion agent; do \
	    deb='$(DIST)'/lifeline-$$b'_$(DEB_VERSION)_'$${p##*:}.deb; \
	    [ -f "$$deb" ] || { echo "make deb: nfpm made no $$deb" >&2; exit 1; }; \
	    echo "$$deb"; \
	  done; \
	done; \
	rm -rf "$$gen"
	cd '$(DIST)' && sha256sum *.tar.gz *.deb > SHA256SUMS

# release: what is published for a version, in dist/release/: the tarballs
# and packages of every platform, SHA256SUMS over them, and SHA256SUMS.sig,
# an SSH signature (namespace lifeline-release) by the key in
# LIFELINE_RELEASE_KEY (see systemd/README.md, Releases). VERSION (X.Y.Z) is
# the command line's, else the tag at HEAD (vX.Y.Z); without either it
# refuses. release-unsigned (or SIGN=0) builds the same without signing.
RELEASE_DIR ?= dist/release
RELEASE_PLATFORMS := amd64:amd64 arm64:arm64 armv6:armhf
ALLOWED_SIGNERS ?= systemd/packaging/allowed_signers
SIGN ?= 1
ifneq ($(filter release release-unsigned release-check,$(MAKECMDGOALS)),)
ifneq ($(filter command line environment,$(origin VERSION)),)
RELEASE_VERSION := $(patsubst v%,%,$(VERSION))
else
RELEASE_VERSION := $(patsubst v%,%,$(shell git describe --tags --exact-match 2>/dev/null))
endif
export RELEASE_VERSION
endif

release-check:
	@case "$$RELEASE_VERSION" in \
	'') echo "make release: no VERSION given and no tag at HEAD (git describe --tags --exact-match): tag the commit (git tag -a vX.Y.Z) or pass VERSION=X.Y.Z" >&2; exit 2;; \
	*[!0-9.]* | .* | *. | *..* ) echo "make release: VERSION '$$RELEASE_VERSION' is not X.Y.Z" >&2; exit 2;; \
	esac; \
	case "$$RELEASE_VERSION" in *.*.*.*) echo "make release: VERSION '$$RELEASE_VERSION' is not X.Y.Z" >&2; exit 2;; *.*.*) ;; \
	*) echo "make release: VERSION '$$RELEASE_VERSION' is not X.Y.Z" >&2; exit 2;; esac

release-unsigned: release-check
	@$(MAKE) --no-print-directory deb DIST='$(RELEASE_DIR)' VERSION='$(RELEASE_VERSION)' DIST_PLATFORMS='$(RELEASE_PLATFORMS)'
	@rm -rf '$(RELEASE_DIR)'/lifeline_$(RELEASE_VERSION)_linux_*/
	cd '$(RELEASE_DIR)' && sha256sum lifeline_$(RELEASE_VERSION)_linux_*.tar.gz lifeline-*_$(RELEASE_VERSION)_*.deb > SHA256SUMS

ifeq ($(SIGN),0)
release: release-unsigned
else
# The key (and a clean tree) is checked before anything is built.
release: release-check release-key-check
	@[ "$(ALLOW_DIRTY)" = 1 ] || { st=$$(git status --porcelain --untracked-files=no) && [ -z "$$st" ]; } || { echo "make release: not a clean git checkout: a signed release must be rebuildable from its commit (ALLOW_DIRTY=1 signs anyway, e.g. in tests)" >&2; exit 2; }
	@$(MAKE) --no-print-directory release-unsigned
	@$(MAKE) --no-print-directory release-sign
endif

release-key-check:
	@[ -n "$$LIFELINE_RELEASE_KEY" ] || { echo "make release: LIFELINE_RELEASE_KEY is not set: point it at the release signing key (its private key file, or its .pub with the key in ssh-agent); make release-unsigned (or SIGN=0) builds without signing" >&2; exit 2; }
	@[ -f "$$LIFELINE_RELEASE_KEY" ] && [ -r "$$LIFELINE_RELEASE_KEY" ] || { echo "make release: LIFELINE_RELEASE_KEY=$$LIFELINE_RELEASE_KEY is not a readable file" >&2; exit 2; }
	@command -v ssh-keygen >/dev/null || { echo "make release: ssh-keygen not found (openssh-client)" >&2; exit 2; }

# Signs RELEASE_DIR/SHA256SUMS as it is, then checks the signature, against
# ALLOWED_SIGNERS once that lists the project's key.
release-sign: release-key-check
	@[ -f '$(RELEASE_DIR)'/SHA256SUMS ] || { echo "make release-sign: no $(RELEASE_DIR)/SHA256SUMS: make release-unsigned first" >&2; exit 2; }
	@key=$$(realpath "$$LIFELINE_RELEASE_KEY"); cd '$(RELEASE_DIR)' && rm -f SHA256SUMS.sig && \
	  ssh-keygen -q -Y sign -f "$$key" -n lifeline-release SHA256SUMS && \
	  ssh-keygen -q -Y check-novalidate -n lifeline-release -s SHA256SUMS.sig < SHA256SUMS >/dev/null
	@if grep -q '^[^#[:space:]]' '$(ALLOWED_SIGNERS)' 2>/dev/null; then \
	  ssh-keygen -Y verify -f '$(ALLOWED_SIGNERS)' -I release@lifeline -n lifeline-release \
	    -s '$(RELEASE_DIR)'/SHA256SUMS.sig < '$(RELEASE_DIR)'/SHA256SUMS >/dev/null || { \
	    echo "make release: SHA256SUMS.sig is not by the key $(ALLOWED_SIGNERS) lists for release@lifeline" >&2; \
	    rm -f '$(RELEASE_DIR)'/SHA256SUMS.sig; exit 1; }; \
	else \
	  echo "make release: warning: $(ALLOWED_SIGNERS) lists no key yet: add the release key's line (systemd/README.md, Releases) so owners can verify" >&2; \
	fi
	@echo "signed $(RELEASE_DIR)/SHA256SUMS: $(RELEASE_DIR)/SHA256SUMS.sig"
# --- end deploy ---
