#include "textflag.h"

// Hand-written: the one-token state-space step of SSMStepRows.

// func ssmStepRowsAVX512(n, rows int, o, s, x, y, b, c *float32, decay, dt, d float32)
//
// For each row p < rows: f = dt·x[p]; o[p,:] = s[p,:]·decay + b·f (b·f rounded, then one FMA);
// y[p] = Σ o[p,:]·c + d·x[p]. The dot product takes 32 values a turn into two accumulators (a
// last 16 into the first), adds them, then halves 16 → 8 → 4 lanes and adds pairs twice. n is a
// multiple of 16 (≥ 16); o may be s.
TEXT ·ssmStepRowsAVX512(SB), NOSPLIT, $0-76
	MOVQ n+0(FP), DX
	SHLQ $2, DX              // row bytes
	MOVQ rows+8(FP), R9
	MOVQ o+16(FP), DI
	MOVQ s+24(FP), SI
	MOVQ x+32(FP), R10
	MOVQ y+40(FP), R11
	MOVQ b+48(FP), R12
	MOVQ c+56(FP), R13
	VBROADCASTSS decay+64(FP), Z20
	VMOVSS dt+68(FP), X21
	VMOVSS d+72(FP), X22
	TESTQ R9, R9
	JEQ   done

row:
	VMOVSS       (R10), X0
	VMULSS       X0, X21, X1 // f = dt·x[p]
	VBROADCASTSS X1, Z1
	VPXORD       Z2, Z2, Z2
	VPXORD       Z3, Z3, Z3
	XORQ         AX, AX      // byte offset in the row
	MOVQ         DX, CX
	CMPQ         CX, $128
	JLT          one

pair:
	VMULPS       (R12)(AX*1), Z1, Z4
	VMOVUPS      (SI)(AX*1), Z5
	VFMADD213PS  Z4, Z20, Z5 // s·decay + b·f
	VMOVUPS      Z5, (DI)(AX*1)
	VFMADD231PS  (R13)(AX*1), Z5, Z2
	VMULPS       64(R12)(AX*1), Z1, Z6
	VMOVUPS      64(SI)(AX*1), Z7
	VFMADD213PS  Z6, Z20, Z7
	VMOVUPS      Z7, 64(DI)(AX*1)
	VFMADD231PS  64(R13)(AX*1), Z7, Z3
	ADDQ         $128, AX
	SUBQ         $128, CX
	CMPQ         CX, $128
	JGE          pair

one:
	TESTQ        CX, CX
	JEQ          sum
	VMULPS       (R12)(AX*1), Z1, Z4
	VMOVUPS      (SI)(AX*1), Z5
	VFMADD213PS  Z4, Z20, Z5
	VMOVUPS      Z5, (DI)(AX*1)
	VFMADD231PS  (R13)(AX*1), Z5, Z2

sum:
	VADDPS        Z3, Z2, Z2
	VEXTRACTF32X8 $1, Z2, Y3
	VADDPS        Y3, Y2, Y2
	VEXTRACTF128  $1, Y2, X3
	VADDPS        X3, X2, X2
	VHADDPS       X2, X2, X2
	VHADDPS       X2, X2, X2
	VMULSS        X0, X22, X6 // d·x[p]
	VADDSS        X6, X2, X2
	VMOVSS        X2, (R11)
	ADDQ          DX, SI
	ADDQ          DX, DI
	ADDQ          $4, R10
	ADDQ          $4, R11
	DECQ          R9
	JNE           row

done:
	VZEROUPPER
	RET
