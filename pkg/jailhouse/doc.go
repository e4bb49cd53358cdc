// Package jailhouse owns everything that touches the Jailhouse partitioning
// hypervisor's Linux userspace ABI: the binary cell and system configuration
// format (revisions 12 to 14), the ioctl interface of /dev/jailhouse, the
// sysfs tree under /sys/devices/jailhouse and the hypervisor console ring.
//
// It knows nothing about containers. Callers drive cells through the Driver
// interface, which has two implementations: Device, the real driver over
// /dev/jailhouse, and the simulator in package sim, which enforces the same
// checks in the same order with the same errnos.
//
// Security: cell configurations may be derived from container images, so the
// decoders distrust every count and length in their input and never allocate
// from a count before checking it against the input size.
package jailhouse
