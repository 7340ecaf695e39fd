# Targets: test (what CI runs), bench, demo.
GO      ?= go
# The whole suite must finish well inside 10 minutes on 2 cores.
TIMEOUT ?= 8m

.PHONY: test vet fmt unit race kernelsets bench demo

test: vet fmt unit race kernelsets

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

# Parity, split invariance and the compliance suite with each kernel set: SIMD (GOEXPERIMENT=simd)
# and, in the default build, with OpenBLAS (opt-in, used when the library is installed).
kernelsets:
	GOEXPERIMENT=simd $(GO) test -short -timeout $(TIMEOUT) ./backends/cpu/... ./models/mamba2/
	MAMBA2_BLAS=on $(GO) test -short -count=1 -timeout $(TIMEOUT) ./backends/cpu/... ./models/mamba2/

bench: bin/m130
	GOEXPERIMENT=simd $(GO) build -o bin/mamba2-simd ./cmd/mamba2
	$(GO) build -o bin/mamba2 ./cmd/mamba2
	@echo "== 130m shape, SIMD build (GOEXPERIMENT=simd), each weight format"
	for w in f32 bf16 f16 int8; do bin/mamba2-simd bench --model bin/m130 --threads 2 --weights $$w --json || exit 1; done
	@echo "== step latency at position 10 and at position 4000, timed in turn (SIMD build, int8)"
	bin/mamba2-simd bench --model bin/m130 --threads 2 --weights int8 --prompt 10 --gen 200 --far 4000 --json
	@echo "== 130m shape, default build"
	for w in f32 int8; do bin/mamba2 bench --model bin/m130 --threads 2 --weights $$w --json || exit 1; done
	@echo "== kernel micro-benchmarks"
	GOEXPERIMENT=simd $(GO) test -bench . -benchmem -benchtime 200ms -run '^$$' ./graph/ ./backends/cpu/kernels/
	GOEXPERIMENT=simd $(GO) test -bench QuantMatMul -benchtime 200ms -run '^$$' ./backends/cpu/

bin/m130:
	$(GO) run ./cmd/mamba2 init --config testdata/configs/mamba2-130m.json --out bin/m130


demo:
	$(GO) run ./cmd/mamba2 demo
