package cuda

// SetQuantPanelBytes sets the bound on the float32 scratch of QuantMatMul's cuBLAS route for
// kernels compiled afterwards and returns the previous bound, so that a test can make small
// weights span several panels.
func SetQuantPanelBytes(n int) int {
	old := quantPanelBytes
	quantPanelBytes = n
	return old
}
