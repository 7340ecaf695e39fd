package main

// sumFloat32 reads every element (eight accumulators keep the loads independent).
func sumFloat32(x []float32) float32 {
	var a [8]float32
	i := 0
	for ; i+8 <= len(x); i += 8 {
		a[0] += x[i]
		a[1] += x[i+1]
		a[2] += x[i+2]
		a[3] += x[i+3]
		a[4] += x[i+4]
		a[5] += x[i+5]
		a[6] += x[i+6]
		a[7] += x[i+7]
	}
	for ; i < len(x); i++ {
		a[0] += x[i]
	}
	return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7]
}
