package mamba2

// SetLoadChunkElems makes Load fill weights n elements (whole rows) at a time and returns a
// function that restores the default. Tests only: it is not safe to call while loading.
func SetLoadChunkElems(n int) (restore func()) {
	old := loadChunkElems
	loadChunkElems = n
	return func() { loadChunkElems = old }
}
