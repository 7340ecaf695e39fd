#include "textflag.h"
#include "rows4_amd64.h"

// Hand-written (not from gen_asm.go): four-row AVX-512 mat-vec kernels for float32, bfloat16 and
// float16 weights. Each computes out[r] = Σ_{p<n} w[r·ldw+p]·x[p] for r < 4 (n a multiple of 16,
// ldw in elements), one float32 accumulator per row, sixteen elements at a time, so that a row's
// sum has the same bits whichever group it is in (ldw = 0 computes one row four times). Decode
// streams W from memory: the loop prefetches the next four rows (which follow these when ldw is
// the row length) as it goes, one group ahead, which kept the memory busy where the hardware
// prefetcher, seeing four short streams, did not.

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

// MV4_NEXT moves the four rows on by wbytes (sixteen elements), the prefetch pointer by
// pbytes (four times that), x by sixteen float32, and counts sixteen elements off CX.
#define MV4_NEXT(wbytes, pbytes) \
	ADDQ $wbytes, SI; \
	ADDQ $wbytes, R10; \
	ADDQ $wbytes, R11; \
	ADDQ $wbytes, R12; \
	ADDQ $pbytes, R13; \
	ADDQ $64, DI; \
	SUBQ $16, CX

// func asm4F32(n int, w *float32, ldw int, x *float32, out *[4]float32)
TEXT ·asm4F32(SB), NOSPLIT, $0-40
	MV4_ARGS(2)
	TESTQ CX, CX
	JEQ   doneasm4F32
loopasm4F32:
	PREFETCHT0 (R13)
	PREFETCHT0 64(R13)
	PREFETCHT0 128(R13)
	PREFETCHT0 192(R13)
	VMOVUPS (DI), Z9
	VMOVUPS (SI), Z12
	VMOVUPS (R10), Z13
	VMOVUPS (R11), Z14
	VMOVUPS (R12), Z15
	VFMADD231PS Z9, Z12, Z0
	VFMADD231PS Z9, Z13, Z1
	VFMADD231PS Z9, Z14, Z2
	VFMADD231PS Z9, Z15, Z3
	MV4_NEXT(64, 256)
	JNE  loopasm4F32
doneasm4F32:
	ROWS4_STORE
	RET

// func asm4BF16(n int, w *uint16, ldw int, x *float32, out *[4]float32)
TEXT ·asm4BF16(SB), NOSPLIT, $0-40
	MV4_ARGS(1)
	TESTQ CX, CX
	JEQ   doneasm4BF16
loopasm4BF16:
	PREFETCHT0 (R13)
	PREFETCHT0 64(R13)
	VMOVUPS (DI), Z9
	VPMOVZXWD (SI), Z12
	VPSLLD $16, Z12, Z12
	VPMOVZXWD (R10), Z13
	VPSLLD $16, Z13, Z13
	VPMOVZXWD (R11), Z14
	VPSLLD $16, Z14, Z14
	VPMOVZXWD (R12), Z15
	VPSLLD $16, Z15, Z15
	VFMADD231PS Z9, Z12, Z0
	VFMADD231PS Z9, Z13, Z1
	VFMADD231PS Z9, Z14, Z2
	VFMADD231PS Z9, Z15, Z3
	MV4_NEXT(32, 128)
	JNE  loopasm4BF16
doneasm4BF16:
	ROWS4_STORE
	RET

// func asm4F16(n int, w *uint16, ldw int, x *float32, out *[4]float32)
TEXT ·asm4F16(SB), NOSPLIT, $0-40
	MV4_ARGS(1)
	TESTQ CX, CX
	JEQ   doneasm4F16
loopasm4F16:
	PREFETCHT0 (R13)
	PREFETCHT0 64(R13)
	VMOVUPS (DI), Z9
	VCVTPH2PS (SI), Z12
	VCVTPH2PS (R10), Z13
	VCVTPH2PS (R11), Z14
	VCVTPH2PS (R12), Z15
	VFMADD231PS Z9, Z12, Z0
	VFMADD231PS Z9, Z13, Z1
	VFMADD231PS Z9, Z14, Z2
	VFMADD231PS Z9, Z15, Z3
	MV4_NEXT(32, 128)
	JNE  loopasm4F16
doneasm4F16:
	ROWS4_STORE
	RET
