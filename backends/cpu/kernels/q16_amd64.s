#include "textflag.h"
#include "rows4_amd64.h"

// Hand-written (not from gen_asm.go): the int8 × int16 dot products of MatVecTInt8Q16.

// SCALE4_ACC converts the four rows' exact int32 sums in Z12–Z15 to float32 and adds them, times
// the scales in Z10, to the rows' accumulators Z0–Z3.
#define SCALE4_ACC \
	VCVTDQ2PS   Z12, Z12; \
	VCVTDQ2PS   Z13, Z13; \
	VCVTDQ2PS   Z14, Z14; \
	VCVTDQ2PS   Z15, Z15; \
	VFMADD231PS Z10, Z12, Z0; \
	VFMADD231PS Z10, Z13, Z1; \
	VFMADD231PS Z10, Z14, Z2; \
	VFMADD231PS Z10, Z15, Z3

// func dotQ16P4(n int, w *int8, ldw int, xp *int16, sp *float32, out *[4]float32)
//
// Σ_p w[r·ldw+p]·x[p]·scale[p/32] for the four rows r < 4 of int8 weights (ldw bytes apart; ldw
// = 0 computes one row four times, with the same bits) and activations rounded to int16 per
// block of 32, over n values (a multiple of 32), into out. The activations come in the order
// Q16Vector.pack lays out: for each 64 values, the 32 at even positions, then the 32 at odd ones,
// and sp holds sixteen scales per 64 values, the first block's eight times, then the second's.
//
// Each row's 64 weights are one load: VPSLLW and VPSRAW by 8 sign-extend its even bytes to words
// and VPSRAW by 8 its odd bytes (in-lane shifts, where VPMOVSXBW is a cross-lane shuffle), so
// that VPMADDWD and VPDPWSSD sum products of four consecutive values into each dword, exactly:
// dwords 0–7 hold the first block, 8–15 the second. They are converted to float32, times their
// blocks' scales, into one accumulator per row. A last block of 32 (n not a multiple of 64)
// is widened with VPMOVSXBW against its 32 activations in order and sp's one scale. Per 64
// weights of a row that is 7 instructions instead of 10 with VPMOVSXBW, which matters because
// this project's two vCPUs share one core.
TEXT ·dotQ16P4(SB), NOSPLIT, $0-48
	MOVQ n+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ ldw+16(FP), DX
	MOVQ xp+24(FP), DI
	MOVQ sp+32(FP), R9
	MOVQ out+40(FP), BX
	ROWS4_SETUP // R13: the next four rows, which the loop prefetches 256 bytes at a time
	CMPQ CX, $64
	JLT  tailp4

loopp4:
	PREFETCHT0  (R13)
	PREFETCHT0  64(R13)
	PREFETCHT0  128(R13)
	PREFETCHT0  192(R13)
	VMOVDQU16   (DI), Z8
	VMOVDQU16   64(DI), Z9
	VMOVUPS     (R9), Z10
	VPSLLW      $8, (SI), Z12
	VPSLLW      $8, (R10), Z13
	VPSLLW      $8, (R11), Z14
	VPSLLW      $8, (R12), Z15
	VPSRAW      $8, Z12, Z12
	VPSRAW      $8, Z13, Z13
	VPSRAW      $8, Z14, Z14
	VPSRAW      $8, Z15, Z15
	VPSRAW      $8, (SI), Z16
	VPSRAW      $8, (R10), Z17
	VPSRAW      $8, (R11), Z18
	VPSRAW      $8, (R12), Z19
	VPMADDWD    Z8, Z12, Z12
	VPMADDWD    Z8, Z13, Z13
	VPMADDWD    Z8, Z14, Z14
	VPMADDWD    Z8, Z15, Z15
	VPDPWSSD    Z9, Z16, Z12
	VPDPWSSD    Z9, Z17, Z13
	VPDPWSSD    Z9, Z18, Z14
	VPDPWSSD    Z9, Z19, Z15
	SCALE4_ACC
	ADDQ $64, SI
	ADDQ $64, R10
	ADDQ $64, R11
	ADDQ $64, R12
	ADDQ $256, R13
	ADDQ $128, DI
	ADDQ $64, R9
	SUBQ $64, CX
	CMPQ CX, $64
	JGE  loopp4

tailp4:
	TESTQ CX, CX
	JEQ   donep4
	VMOVDQU16    (DI), Z9
	VBROADCASTSS (R9), Z10
	VPMOVSXBW    (SI), Z12
	VPMOVSXBW    (R10), Z13
	VPMOVSXBW    (R11), Z14
	VPMOVSXBW    (R12), Z15
	VPMADDWD     Z9, Z12, Z12
	VPMADDWD     Z9, Z13, Z13
	VPMADDWD     Z9, Z14, Z14
	VPMADDWD     Z9, Z15, Z15
	SCALE4_ACC

donep4:
	ROWS4_STORE
	RET

// func q16RoundAVX512(nblocks int, x *float32, q *int16, scale *float32, deq *float32)
//
// quant.Int16Blocks for nblocks whole blocks of 32 values of x: scale[b] = max|block|/32767,
// q = x/scale (float32 division) rounded to nearest even (VCVTPS2DQ under Go's default MXCSR)
// and saturated to int16 (VPMOVSDW; |x/scale| ≤ 32767·(1+2⁻²⁴) never reaches −32768), and
// deq = scale·q. A block holding an Inf or NaN gets scale NaN, q 0 and deq NaN; one whose scale
// is 0 gets zeros. q or deq may be nil, to skip that output.
TEXT ·q16RoundAVX512(SB), NOSPLIT, $0-40
	MOVQ nblocks+0(FP), CX
	MOVQ x+8(FP), SI
	MOVQ q+16(FP), DI
	MOVQ scale+24(FP), R8
	MOVQ deq+32(FP), R9
	XORQ R12, R12 // how far q advances per block: 64 bytes, or 0 when nil
	TESTQ DI, DI
	JEQ  qnil
	MOVQ $64, R12
qnil:
	XORQ R13, R13 // the same for deq: 128 bytes
	TESTQ R9, R9
	JEQ  dnil
	MOVQ $128, R13
dnil:
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z31
	MOVL $0x46fffe00, AX // 32767.0
	VMOVD AX, X30
	MOVL $0x7fc00000, AX // NaN
	VPBROADCASTD AX, Z29
	VXORPS X28, X28, X28
	TESTQ CX, CX
	JEQ  rdone

rloop:
	VMOVUPS    (SI), Z0
	VMOVUPS    64(SI), Z1
	VFPCLASSPSZ $0x99, Z0, K1 // NaN or ±Inf
	VFPCLASSPSZ $0x99, Z1, K2
	KORW       K1, K2, K1
	KORTESTW   K1, K1
	JNE        rbad
	VPANDD     Z31, Z0, Z2
	VPANDD     Z31, Z1, Z3
	VMAXPS     Z3, Z2, Z2
	VEXTRACTF32X8 $1, Z2, Y3
	VMAXPS     Y3, Y2, Y2
	VEXTRACTF128 $1, Y2, X3
	VMAXPS     X3, X2, X2
	VPERMILPS  $0x4e, X2, X3
	VMAXPS     X3, X2, X2
	VPERMILPS  $0xb1, X2, X3
	VMAXPS     X3, X2, X2
	VDIVSS     X30, X2, X4 // s = amax / 32767
	VMOVSS     X4, (R8)
	VUCOMISS   X28, X4
	JEQ        rzero
	VBROADCASTSS X4, Z4
	VDIVPS     Z4, Z0, Z5
	VDIVPS     Z4, Z1, Z6
	VCVTPS2DQ  Z5, Z5
	VCVTPS2DQ  Z6, Z6
	TESTQ      DI, DI
	JEQ        rnoq
	VPMOVSDW   Z5, (DI)
	VPMOVSDW   Z6, 32(DI)
rnoq:
	TESTQ      R9, R9
	JEQ        rnext
	VCVTDQ2PS  Z5, Z5
	VCVTDQ2PS  Z6, Z6
	VMULPS     Z4, Z5, Z5
	VMULPS     Z4, Z6, Z6
	VMOVUPS    Z5, (R9)
	VMOVUPS    Z6, 64(R9)
	JMP        rnext

rzero:
	VPXORD Z5, Z5, Z5
	TESTQ  DI, DI
	JEQ    rzq
	VMOVDQU16 Y5, (DI)
	VMOVDQU16 Y5, 32(DI)
rzq:
	TESTQ  R9, R9
	JEQ    rnext
	VMOVUPS Z5, (R9)
	VMOVUPS Z5, 64(R9)
	JMP    rnext

rbad:
	VMOVSS X29, (R8)
	VPXORD Z5, Z5, Z5
	TESTQ  DI, DI
	JEQ    rbq
	VMOVDQU16 Y5, (DI)
	VMOVDQU16 Y5, 32(DI)
rbq:
	TESTQ  R9, R9
	JEQ    rnext
	VMOVUPS Z29, (R9)
	VMOVUPS Z29, 64(R9)

rnext:
	ADDQ $128, SI
	ADDQ R12, DI
	ADDQ $4, R8
	ADDQ R13, R9
	DECQ CX
	JNE  rloop

rdone:
	VZEROUPPER
	RET
