#include "textflag.h"
#include "rows4_amd64.h"

// Hand-written (not from gen_asm.go): the int8 × int16 dot products of MatVecTInt8Q16.

// func dotQ16VNNI(n int, w *int8, x *int16, scale *float32) float32
//
// Σ_p w[p]·x[p]·scale[p/32] over n (a multiple of 32) int8 weights and int16 activations, a
// block of 32 at a time: VPMOVSXBW widens the 32 weights to words, VPDPWSSD adds the products of
// word pairs to sixteen dwords (exact), which are converted to float32 and multiplied by the
// block's scale into one float32 accumulator. One accumulator, as in dotQ16VNNI4, so that a row
// sums to the same bits whichever of the two takes it.
TEXT ·dotQ16VNNI(SB), NOSPLIT, $0-36
	MOVQ n+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	MOVQ scale+24(FP), R9
	VPXORD Z0, Z0, Z0
	TESTQ CX, CX
	JEQ   done1

loop1:
	VPMOVSXBW        (SI), Z4
	VPXORD           Z8, Z8, Z8
	VPDPWSSD         (DI), Z4, Z8
	VCVTDQ2PS        Z8, Z8
	VFMADD231PS.BCST (R9), Z8, Z0
	ADDQ $32, SI
	ADDQ $64, DI
	ADDQ $4, R9
	SUBQ $32, CX
	JNE  loop1

done1:
	VEXTRACTF32X8 $1, Z0, Y1
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func dotQ16VNNI4(n int, w *int8, ldw int, x *int16, scale *float32, out *[4]float32)
//
// dotQ16VNNI for the four rows of w that start ldw bytes apart, sharing the loads of x and the
// scales; the four sums go to out[0..3].
TEXT ·dotQ16VNNI4(SB), NOSPLIT, $0-48
	MOVQ n+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ ldw+16(FP), DX
	MOVQ x+24(FP), DI
	MOVQ scale+32(FP), R9
	MOVQ out+40(FP), BX
	ROWS4_SETUP // R13: the next four rows, which the loop prefetches 128 bytes at a time
	TESTQ CX, CX
	JEQ   done4

loop4:
	PREFETCHT0   (R13)
	PREFETCHT0   64(R13)
	VMOVDQU16    (DI), Z9
	VBROADCASTSS (R9), Z10
	VPMOVSXBW    (SI), Z12
	VPMOVSXBW    (R10), Z13
	VPMOVSXBW    (R11), Z14
	VPMOVSXBW    (R12), Z15
	VPXORD       Z16, Z16, Z16
	VPXORD       Z17, Z17, Z17
	VPXORD       Z18, Z18, Z18
	VPXORD       Z19, Z19, Z19
	VPDPWSSD     Z9, Z12, Z16
	VPDPWSSD     Z9, Z13, Z17
	VPDPWSSD     Z9, Z14, Z18
	VPDPWSSD     Z9, Z15, Z19
	VCVTDQ2PS    Z16, Z16
	VCVTDQ2PS    Z17, Z17
	VCVTDQ2PS    Z18, Z18
	VCVTDQ2PS    Z19, Z19
	VFMADD231PS  Z10, Z16, Z0
	VFMADD231PS  Z10, Z17, Z1
	VFMADD231PS  Z10, Z18, Z2
	VFMADD231PS  Z10, Z19, Z3
	ADDQ $32, SI
	ADDQ $32, R10
	ADDQ $32, R11
	ADDQ $32, R12
	ADDQ $128, R13
	ADDQ $64, DI
	ADDQ $4, R9
	SUBQ $32, CX
	JNE  loop4

done4:
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
