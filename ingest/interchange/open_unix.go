//go:build unix

package interchange

import "syscall"

// openFlags open a run directory's file without following a symbolic
// link swapped in after the Lstat check, and without blocking should it
// have become a FIFO (openFile then refuses it).
const openFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK
