# Targets: test (what CI runs), bench, demo.
GO      ?= go
# The whole suite must finish well inside 10 minutes on 2 cores.
TIMEOUT ?= 8m

.PHONY: test vet fmt unit race bench demo

test: vet fmt unit race

vet:
	$(GO) vet ./...

fmt:
	@out="$$(gofmt -l . | grep -v ^testdata || true)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -timeout $(TIMEOUT) ./...

# -short: the cpu compliance suite runs on one (pooled) backend variant instead of three.
race:
	$(GO) test -race -short -timeout $(TIMEOUT) ./graph/ ./backends/cpu/ ./backends/backendtest/ ./cache/ ./models/mamba2/ ./models/encdec/

bench:
	$(GO) test -bench . -benchmem -run '^$$' ./graph/ ./backends/...

demo:
	$(GO) run ./cmd/mamba2 demo
