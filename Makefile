# lifeline — see README.md. Two commands matter: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/lifeline-dev/lifeline/shared/version.Version=$(VERSION)
FUZZTIME ?= 3s
BINS := bin/lifeline-bastion bin/lifeline-agent

.PHONY: all build test unit integration fuzz vet fmt-check bench demo deps clean dist deb

all: build

build: $(BINS)

bin/lifeline-%: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./$(firstword $(subst -, ,$*))/cmd/lifeline-$*
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

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null || { $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; exit 1; }; \
	  done; \
	done

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m -tags integration ./integration/...

demo: build
	@./integration/demo.sh

clean:
	rm -rf bin dist

# --- deploy (owned by the packaging work: dist, deb) ---
dist:
	@echo "dist: not yet implemented"; exit 1

deb:
	@echo "deb: not yet implemented"; exit 1
# --- end deploy ---
