package db

import (
	"encoding/binary"
)

// Key prefixes; FORMAT.md draws the full layout.
const (
	prefixRun      = 'r' // 'r' name                       -> run metadata (JSON)
	prefixNextID   = 'n' // 'n'                            -> next run id (uint32 BE)
	prefixSnapshot = 's' // 's' id(4) step(8) layer(2)      -> manifest (layer 0) or block
	prefixScalars  = 'c' // 'c' id(4) step(8)               -> step scalars
)

func runKey(name string) []byte { return append([]byte{prefixRun}, name...) }

func runPrefix(p byte, id uint32) []byte {
	k := make([]byte, 5, 15)
	k[0] = p
	binary.BigEndian.PutUint32(k[1:], id)
	return k
}

func stepKey(p byte, id uint32, step int64) []byte {
	return binary.BigEndian.AppendUint64(runPrefix(p, id), uint64(step))
}

// blockKey is the key of a snapshot's layer block; layer 0 is the manifest,
// layer k >= 1 the run schema's layer k-1.
func blockKey(id uint32, step int64, layer uint16) []byte {
	return binary.BigEndian.AppendUint16(stepKey(prefixSnapshot, id, step), layer)
}

// parseBlockKey splits a snapshot key; ok is false for foreign keys.
func parseBlockKey(k []byte) (step int64, layer uint16, ok bool) {
	if len(k) != 15 || k[0] != prefixSnapshot {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k[5:13])), binary.BigEndian.Uint16(k[13:]), true
}
