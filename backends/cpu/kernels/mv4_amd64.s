#include "textflag.h"
#include "rows4_amd64.h"

// Hand-written (not from gen_asm.go): four-row AVX-512 mat-vec kernels for float32, bfloat16
// and float16 weights. Each computes out[r] = Σ_{p<n} w[r·ldw+p]·x[p] for r < 4 (n a multiple
// of 16, ldw in elements). A row is summed in four float32 accumulators, sixteen elements each,
// taking 64 elements in turn (a last 16 to 48 go to the first), then added as (a0 + a1) +
// (a2 + a3) and across lanes; every row goes through the same steps, so its sum has the same
// bits whichever group it is in (ldw = 0 computes one row four times).
//
// Decode streams W from memory, and the rows are read one after the other: a worker's rows of W
// are then one sequential stream, which the hardware prefetcher follows. Reading the four rows
// side by side (four short streams) held a 2-thread float32 mat-vec to ~39 GB/s on the Zen 5 VM,
// against ~48 GB/s for one stream, with or without software prefetching of the next four rows
// (which an older Cascade Lake VM had needed). Four accumulators keep four FMAs in flight
// within a row, as the four rows side by side used to.

// MV4_ARGS loads the arguments n (CX), w (SI), ldw (DX, in bytes: shifted left by shift), x (DI)
// and out (BX), then runs ROWS4_SETUP.
#define MV4_ARGS(shift) \
	MOVQ n+0(FP), CX; \
	MOVQ w+8(FP), SI; \
	MOVQ ldw+16(FP), DX; \
	SHLQ $shift, DX; \
	MOVQ x+24(FP), DI; \
	MOVQ out+32(FP), BX; \
	ROWS4_SETUP

// The widening of sixteen weights at src to float32 in dst, for each weight type.
#define WIDEN_F32(src, dst) VMOVUPS src, dst
#define WIDEN_BF16(src, dst) \
	VPMOVZXWD src, dst; \
	VPSLLD    $16, dst, dst
#define WIDEN_F16(src, dst) VCVTPH2PS src, dst

// MV4_ROW sums the row at PTR times x (DI) into ACC, CX elements: 64 at a time into ACC and
// Z4–Z6 (the weights at PTR, O1(PTR), O2(PTR) and O3(PTR), O4 bytes a turn), a last 16 to 48
// into ACC (O1 bytes a turn), then ACC = (ACC + Z4) + (Z5 + Z6). AX and R8 count and walk x.
#define MV4_ROW(WIDEN, PTR, ACC, O1, O2, O3, O4, FOUR, ONE, SUM) \
	MOVQ   CX, AX; \
	MOVQ   DI, R8; \
	VPXORD Z4, Z4, Z4; \
	VPXORD Z5, Z5, Z5; \
	VPXORD Z6, Z6, Z6; \
	CMPQ   AX, $64; \
	JLT    ONE; \
FOUR: \
	WIDEN((PTR), Z12); \
	VFMADD231PS (R8), Z12, ACC; \
	WIDEN(O1(PTR), Z13); \
	VFMADD231PS 64(R8), Z13, Z4; \
	WIDEN(O2(PTR), Z14); \
	VFMADD231PS 128(R8), Z14, Z5; \
	WIDEN(O3(PTR), Z15); \
	VFMADD231PS 192(R8), Z15, Z6; \
	ADDQ   $O4, PTR; \
	ADDQ   $256, R8; \
	SUBQ   $64, AX; \
	CMPQ   AX, $64; \
	JGE    FOUR; \
ONE: \
	TESTQ  AX, AX; \
	JEQ    SUM; \
	WIDEN((PTR), Z12); \
	VFMADD231PS (R8), Z12, ACC; \
	ADDQ   $O1, PTR; \
	ADDQ   $64, R8; \
	SUBQ   $16, AX; \
	JMP    ONE; \
SUM: \
	VADDPS Z4, ACC, ACC; \
	VADDPS Z6, Z5, Z5; \
	VADDPS Z5, ACC, ACC

// func asm4F32(n int, w *float32, ldw int, x *float32, out *[4]float32)
TEXT ·asm4F32(SB), NOSPLIT, $0-40
	MV4_ARGS(2)
	TESTQ CX, CX
	JEQ   doneasm4F32
	MV4_ROW(WIDEN_F32, SI, Z0, 64, 128, 192, 256, four0asm4F32, one0asm4F32, sum0asm4F32)
	MV4_ROW(WIDEN_F32, R10, Z1, 64, 128, 192, 256, four1asm4F32, one1asm4F32, sum1asm4F32)
	MV4_ROW(WIDEN_F32, R11, Z2, 64, 128, 192, 256, four2asm4F32, one2asm4F32, sum2asm4F32)
	MV4_ROW(WIDEN_F32, R12, Z3, 64, 128, 192, 256, four3asm4F32, one3asm4F32, sum3asm4F32)

doneasm4F32:
	ROWS4_STORE
	RET

// func asm4BF16(n int, w *uint16, ldw int, x *float32, out *[4]float32)
TEXT ·asm4BF16(SB), NOSPLIT, $0-40
	MV4_ARGS(1)
	TESTQ CX, CX
	JEQ   doneasm4BF16
	MV4_ROW(WIDEN_BF16, SI, Z0, 32, 64, 96, 128, four0asm4BF16, one0asm4BF16, sum0asm4BF16)
	MV4_ROW(WIDEN_BF16, R10, Z1, 32, 64, 96, 128, four1asm4BF16, one1asm4BF16, sum1asm4BF16)
	MV4_ROW(WIDEN_BF16, R11, Z2, 32, 64, 96, 128, four2asm4BF16, one2asm4BF16, sum2asm4BF16)
	MV4_ROW(WIDEN_BF16, R12, Z3, 32, 64, 96, 128, four3asm4BF16, one3asm4BF16, sum3asm4BF16)

doneasm4BF16:
	ROWS4_STORE
	RET

// func asm4F16(n int, w *uint16, ldw int, x *float32, out *[4]float32)
TEXT ·asm4F16(SB), NOSPLIT, $0-40
	MV4_ARGS(1)
	TESTQ CX, CX
	JEQ   doneasm4F16
	MV4_ROW(WIDEN_F16, SI, Z0, 32, 64, 96, 128, four0asm4F16, one0asm4F16, sum0asm4F16)
	MV4_ROW(WIDEN_F16, R10, Z1, 32, 64, 96, 128, four1asm4F16, one1asm4F16, sum1asm4F16)
	MV4_ROW(WIDEN_F16, R11, Z2, 32, 64, 96, 128, four2asm4F16, one2asm4F16, sum2asm4F16)
	MV4_ROW(WIDEN_F16, R12, Z3, 32, 64, 96, 128, four3asm4F16, one3asm4F16, sum3asm4F16)

doneasm4F16:
	ROWS4_STORE
	RET
