//go:build !(goexperiment.simd && amd64)

package cpu

// Without GOEXPERIMENT=simd (or off amd64) the float32 vector loops are the portable ones.

func scale32(x []float32, s float32)             { scaleGeneric(x, s) }
func mulScaled32(dst, a, b []float32, s float32) { mulScaledGeneric(dst, a, b, s) }
func stepRow32(o, s, b, c []float32, decay, f float32) float32 {
	return stepRowGeneric(o, s, b, c, decay, f)
}
func expAffine32(dst, src []float32, a, sgn float32) { expAffineGeneric(dst, src, a, sgn) }
func mulExp32(dst, c, cs []float32, a float32)       { mulExpGeneric(dst, c, cs, a) }
func scaleTo32(dst, src []float32, s float32)        { scaleToGeneric(dst, src, s) }
func addScaled32(dst, a, x []float32, s float32)     { addScaledGeneric(dst, a, x, s) }

func advRow32(o, s, b []float32, decay, f float32) { advRowGeneric(o, s, b, decay, f) }

func gradRow32(g, s, sp, c, b, dC, dB []float32, gp, f, decay float32) (v, gsum float32) {
	return gradRowGeneric(g, s, sp, c, b, dC, dB, gp, f, decay)
}

func sigmoid32(dst, src []float32, silu bool) { sigmoidGeneric(dst, src, silu) }
func mulAdd32(dst, a, b []float32)            { mulAddGeneric(dst, a, b) }
func gatedSiLU32(dst, x, z []float32)         { gatedSiLUGeneric(dst, x, z) }
