# runphi: build, test and demo. `make help` lists the targets.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
# Use the Go at /usr/local/go, never a downloaded toolchain.
export GOTOOLCHAIN := local

GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
BIN      := bin
BINARIES := containerd-shim-runphi-v2 runphi
CROSS_PLATFORMS := linux/arm64 linux/arm linux/amd64

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# -X names variables of each binary's main package (-v / version print them).
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
# no_grpc leaves out containerd's generated gRPC stubs (the shim speaks only
# ttrpc), as containerd builds its own shims: importing google.golang.org/grpc
# links its transport, TLS, HTTP/2 and html/template (whose reflection keeps
# every exported method), 6 MB of a 15.6 MB shim and ~5 MiB of its RSS
# (docs/performance.md). The tests build without it; both must work.
BUILD_TAGS := no_grpc
# Static, reproducible binaries: no cgo, no build paths.
BUILD_FLAGS := -trimpath -tags '$(BUILD_TAGS)' -ldflags '$(LDFLAGS)'

# The cached containerd v2 binaries (scripts/install-deps.sh).
export RUNPHI_TOOLS_BIN ?= /opt/runphi-tools/bin
STATICCHECK_VERSION := v0.8.2
# Where `make tools` puts staticcheck (go install's GOBIN, else
# GOPATH/bin), and where lint looks first; then PATH. A shell expression,
# expanded in the recipes.
STATICCHECK = $$(gobin=$$($(GO) env GOBIN); [ -n "$$gobin" ] || gobin=$$($(GO) env GOPATH)/bin; \
	if [ -x "$$gobin/staticcheck" ]; then echo "$$gobin/staticcheck"; else command -v staticcheck || echo "$$gobin/staticcheck"; fi)

# Unit tests: every package; -race needs cgo, which only the test binaries use.
UNIT_PKGS := ./...
E2E_FLAGS ?=
# Packages with the Go benchmarks of planning cost (issue 8, P3).
BENCH_PKGS := ./pkg/partition/ ./pkg/jailhouse/
# e.g. BENCH_FLAGS='-n 20 -only P1,P2' (go run -tags bench ./test/bench -h)
BENCH_FLAGS ?=
E2E_TIMEOUT ?= 10m

.PHONY: all build test unit e2e critest bench bench-ci demo install cross lint tools deps clean help

# Prerequisites run in the order written, even under make -j: make test
# installs its dependencies before anything uses them, and the e2e suite,
# critest and the benchmarks each want the machine's 2 cores to themselves.
.NOTPARALLEL:

all: build

help:
	@echo "make build    build $(BIN)/containerd-shim-runphi-v2 and $(BIN)/runphi (static)"
	@echo "make demo     install deps, build, run the demo partition under a private containerd"
	@echo "make test     install deps and staticcheck if missing, lint, unit tests (-race), the end-to-end suite and critest against containerd 1.6.20 and 2.4.2, then make bench-ci"
	@echo "make unit     unit tests only"
	@echo "make e2e      end-to-end suite only (E2E_FLAGS='-run TestX/containerd-1.6' to narrow)"
	@echo "make critest  CRI conformance (critest PodSandbox and container basics) with the runphi handler"
	@echo "make bench    runphi vs runc side by side on a private containerd; rewrites docs/performance.md's results (not in make test)"
	@echo "make bench-ci the same, short, printed only (the end of make test)"
	@echo "make install  install the binaries into \$$(DESTDIR)\$$(PREFIX)/bin (PREFIX=$(PREFIX))"
	@echo "make cross    build for $(CROSS_PLATFORMS) into $(BIN)/<os>-<arch>/"
	@echo "make lint     gofmt, go vet, staticcheck (if installed; make tools installs it)"
	@echo "make deps     install what demo, e2e and bench need if missing: containerd 1.6.20, runc, busybox-static (apt), containerd 2.4.2, nerdctl, crictl, critest (go install), CNI plugins"
	@echo "make tools    install staticcheck $(STATICCHECK_VERSION)"
	@echo "make clean    remove $(BIN)/"

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

# deps and tools first: on a fresh machine make test installs what it runs
# (containerd, runc, crictl, critest, staticcheck), instead of skipping it;
# both return at once when everything is there.
test: deps tools lint unit e2e critest bench-ci

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)
	@# The benchmarks and the bench driver are not run here, only kept compiling.
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x $(BENCH_PKGS)
	$(GO) vet -tags bench ./test/bench/

# The e2e suite starts private containerd daemons, so it needs root and the
# binaries from `make build`; RUNPHI_BIN_DIR tells it where they are.
e2e: build
	RUNPHI_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./test/e2e/... $(E2E_FLAGS)

# critest v1.37.0 (built by `make deps`) with --runtime-handler runphi, on
# daemons in private network namespaces: docs/critest.md.
critest: build
	RUNPHI_CRITEST=1 RUNPHI_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./test/e2e/ -run '^TestCritest$$'

# Performance against runc on one private containerd 1.6.20 (issue 8):
# needs root and make deps; writes the results section of
# docs/performance.md. Takes about 3 minutes; a separate command, never
# part of make test.
bench: build
	$(GO) run -tags bench ./test/bench $(BENCH_FLAGS)

# The same measurements, short (3 rounds, 20 churn cycles, one flood), with
# the report printed and docs/performance.md left alone: make test ends
# with it so that every CI log shows the targets' ratios and a regression is
# seen (issue 8). Nothing is asserted; about a minute.
bench-ci: build
	$(GO) run -tags bench ./test/bench -n 3 -warmup 1 -churn 20 -console-rounds 1 -stall-rounds 1 -stall 3s -out ''

demo: deps build
	./scripts/demo.sh

# containerd finds the shim on its own PATH (or beside its binary), so PREFIX
# must put bin/ on the daemon's PATH; /usr/local/bin is on systemd's default.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(addprefix $(BIN)/,$(BINARIES)) $(DESTDIR)$(PREFIX)/bin/
	@echo "installed $(BINARIES) into $(DESTDIR)$(PREFIX)/bin; check the host with: runphi doctor"

cross:
	@set -e; for p in $(CROSS_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "build $$os/$$arch → $(BIN)/$$os-$$arch/"; \
		mkdir -p $(BIN)/$$os-$$arch; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build $(BUILD_FLAGS) -o $(BIN)/$$os-$$arch/ $(addprefix ./cmd/,$(BINARIES)); \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt -l:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	$(GO) vet -tags bench ./test/bench/
	@# What ships: the release tags on every platform.
	@for p in $(CROSS_PLATFORMS); do GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet -tags '$(BUILD_TAGS)' ./... || exit 1; done
	@sc=$(STATICCHECK); \
	if [ -x "$$sc" ]; then echo "$$sc ./..."; "$$sc" ./... && "$$sc" -tags e2e ./test/... && "$$sc" -tags bench ./test/bench/; \
	else echo "staticcheck not installed; skipped (make tools installs $(STATICCHECK_VERSION))"; fi

# Installs staticcheck unless that version is there already (an offline
# make test must not need the module proxy for it).
tools:
	@sc=$(STATICCHECK); \
	if [ -x "$$sc" ] && "$$sc" -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))'; then :; \
	else echo "$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)"; \
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); fi

deps:
	./scripts/install-deps.sh

clean:
	rm -rf $(BIN)
