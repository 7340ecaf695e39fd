// Macros shared by the four-row kernels (mv4_amd64.s, q16_amd64.s).

// ROWS4_SETUP: with SI at row 0 and DX the row stride in bytes, points R10, R11 and R12 at rows 1
// to 3 and R13 at row 4 (the next group, which the int8 loop prefetches), and zeroes the four
// accumulators Z0–Z3.
#define ROWS4_SETUP \
	LEAQ (SI)(DX*1), R10; \
	LEAQ (SI)(DX*2), R11; \
	LEAQ (R10)(DX*2), R12; \
	LEAQ (R11)(DX*2), R13; \
	VPXORD Z0, Z0, Z0; \
	VPXORD Z1, Z1, Z1; \
	VPXORD Z2, Z2, Z2; \
	VPXORD Z3, Z3, Z3

// ROWS4_STORE sums the sixteen lanes of each of Z0–Z3 (the same order for each) and stores the
// four sums at (BX), then clears the upper vector state.
#define ROWS4_STORE \
	VEXTRACTF32X8 $1, Z0, Y4; \
	VEXTRACTF32X8 $1, Z1, Y5; \
	VEXTRACTF32X8 $1, Z2, Y6; \
	VEXTRACTF32X8 $1, Z3, Y7; \
	VADDPS Y4, Y0, Y0; \
	VADDPS Y5, Y1, Y1; \
	VADDPS Y6, Y2, Y2; \
	VADDPS Y7, Y3, Y3; \
	VEXTRACTF128 $1, Y0, X4; \
	VEXTRACTF128 $1, Y1, X5; \
	VEXTRACTF128 $1, Y2, X6; \
	VEXTRACTF128 $1, Y3, X7; \
	VADDPS X4, X0, X0; \
	VADDPS X5, X1, X1; \
	VADDPS X6, X2, X2; \
	VADDPS X7, X3, X3; \
	VHADDPS X1, X0, X0; \
	VHADDPS X3, X2, X2; \
	VHADDPS X2, X0, X0; \
	VMOVUPS X0, (BX); \
	VZEROUPPER
