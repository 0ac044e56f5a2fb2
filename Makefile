# Mayfly developer tasks. `make test` is the whole suite (what CI runs).
GO  ?= go
BUF := $(GO) tool -modfile=deploy/tools/buf/go.mod buf

.PHONY: all build test quick proto proto-check lint fmt vet dev bench bench-full fuzz chaos

all: build

build:
	$(GO) build -o bin/ ./cmd/...

## test: the whole suite, installing and starting every service it needs.
test:
	bash deploy/scripts/test.sh

## quick: unit tests only; tests needing real services skip (never under CI=true).
quick:
	$(GO) test ./...

proto:
	$(BUF) generate

## proto-check: buf lint passes and regeneration leaves no diff.
proto-check:
	bash deploy/scripts/proto-check.sh

lint: proto-check vet fmt

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

dev:
	$(GO) run ./cmd/mayflyd dev

bench:
	$(GO) test -run='^$$' -bench=. -benchtime=3s ./broker/api/

## bench-full: every mayfly-bench scenario at full scale (10-15 minutes on 2 cores)
bench-full:
	$(GO) run ./cmd/mayfly-bench

fuzz:
	FUZZTIME=60s bash deploy/scripts/fuzz.sh

## chaos: the fault and attack matrix (deploy/chaos) at full length, each
## fault case with CHAOS_RUNS random seeds, without the race detector so
## that the latency figures are the real ones (CI runs the short matrix
## with -race as part of `make test`); prints the results table and
## writes it to .cache/chaos-report.md. Replay one run with the seed it printed:
##   go test ./deploy/chaos -run '^TestCase1SIGKILLMidIssuance$$' -args -chaos.seed=N
CHAOS_RUNS ?= 5
chaos:
	mkdir -p .cache
	CI=true $(GO) test -count=1 -timeout 90m -v ./deploy/chaos/ \
		-args -chaos.runs=$(CHAOS_RUNS) -chaos.full -chaos.report=$(CURDIR)/.cache/chaos-report.md
