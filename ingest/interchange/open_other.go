//go:build !unix

package interchange

// openFlags: elsewhere the Lstat check and the check of the open file
// (openFile) stand alone.
const openFlags = 0
