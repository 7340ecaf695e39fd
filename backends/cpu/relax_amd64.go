package cpu

// canSpin reports whether pool workers may spin between loops: with PAUSE in the loop, a
// spinning thread leaves the core's resources to the thread beside it (the two vCPUs of this
// project's VMs share one core; spinning without PAUSE slowed the other by a third).
const canSpin = true

// cpuRelax executes PAUSE.
//
//go:noescape
func cpuRelax()
