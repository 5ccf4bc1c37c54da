package db

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Badger's log files (the write-ahead logs *.mem and the value logs
// *.vlog) hold entries: a header (meta, user meta, then the key length,
// value length and expiry as uvarints), the key, the value, and a
// big-endian CRC-32C of all three. Badger reads an entry by allocating its
// lengths first (three times the value length), so a damaged length would
// ask for up to 12 GiB before any check. checkLogs walks the entries the
// way Badger does and refuses an entry whose lengths run past the end of
// its file, which no healthy store has: the files are preallocated and
// every entry written whole within them.

// logHeaderSize is the encryption header at the start of a log file.
const logHeaderSize = 20

// badgerMaxKey is the key length above which Badger stops reading a log.
const badgerMaxKey = 1 << 16

// checkLogs checks the write-ahead logs, which every open replays, and,
// for a writer (which also reads the last value log to the end), the
// value log with the highest number; allVlogs checks every value log
// (before a value-log garbage collection reads them).
func checkLogs(dir string, writer, allVlogs bool) error {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return err
	}
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	sort.Slice(vlogs, func(a, b int) bool { return logNumber(vlogs[a]) < logNumber(vlogs[b]) })
	files := mems
	switch {
	case allVlogs:
		files = append(files, vlogs...)
	case writer && len(vlogs) > 0:
		files = append(files, vlogs[len(vlogs)-1])
	}
	// Badger asserts (exits the process) on a log shorter than its header:
	// every log file must hold one.
	for _, f := range append(mems, vlogs...) {
		if st, err := os.Stat(f); err == nil && st.Size() < logHeaderSize {
			return fmt.Errorf("%w: log %s has %d bytes, less than its %d-byte header", ErrCorruptStore, filepath.Base(f), st.Size(), logHeaderSize)
		}
	}
	for _, f := range files {
		if err := checkLog(f); err != nil {
			return fmt.Errorf("%w: log %s: %w", ErrCorruptStore, filepath.Base(f), err)
		}
	}
	return nil
}

// logNumber is the number in a log file's name (000012.vlog: 12).
func logNumber(path string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	return n
}

// checkLog walks one log file's entries as Badger's replay does, stopping
// where Badger stops (the end, a zero or over-long key, a checksum
// mismatch). It returns an error for an entry that claims more bytes than
// the file has left, and errCommittedAfterDamage when Badger's replay
// would stop before whole entries that follow (damage in the middle of
// the log, which would silently drop committed writes).
func checkLog(path string) error {
	_, err := logDamage(path)
	return err
}

// errCommittedAfterDamage: a log's replay stops at a damaged entry, and
// whole entries follow it.
var errCommittedAfterDamage = errors.New("committed entries follow a damaged one")

// logDamage walks a log like checkLog and returns the offset where its
// replay stops (the bytes in use).
func logDamage(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size <= logHeaderSize {
		return size, nil
	}
	if _, err := f.Seek(logHeaderSize, io.SeekStart); err != nil {
		return 0, err
	}
	r := &countingReader{r: bufio.NewReaderSize(f, 1<<20), h: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
	off := int64(logHeaderSize)
	for {
		r.h.Reset()
		r.n = 0
		klen, vlen, err := r.header()
		if err != nil || klen > badgerMaxKey {
			return off, afterStop(f, off, size) // a partial header: Badger stops here too
		}
		need := int64(r.n) + int64(klen) + int64(vlen) + crc32.Size
		if off+need > size {
			return off, fmt.Errorf("the entry at offset %d claims a %d-byte key and a %d-byte value, past the end of the %d-byte file", off, klen, vlen, size)
		}
		if klen == 0 {
			return off, afterStop(f, off, size) // a zeroed tail
		}
		if _, err := io.CopyN(r.h, r.r, int64(klen)+int64(vlen)); err != nil {
			return off, nil
		}
		var sum [crc32.Size]byte
		if _, err := io.ReadFull(r.r, sum[:]); err != nil {
			return off, nil
		}
		if binary.BigEndian.Uint32(sum[:]) != r.h.Sum32() {
			return off, afterStop(f, off, size) // a torn entry: Badger stops here
		}
		off += need
	}
}

// afterStop looks past the point where a log's replay stops for a whole
// entry (a plausible header whose checksum matches): a torn last entry or
// the zeroed tail of a preallocated file has none after it, damage in the
// middle of the log does.
func afterStop(f *os.File, stop, size int64) error {
	if filepath.Ext(f.Name()) != ".mem" {
		// Value logs are not replayed past their last entry by readers,
		// and every value read from them is checked against its checksum.
		return nil
	}
	// The written part ends at the last non-zero byte: the rest of the
	// preallocated (sparse) file is zeros.
	last := stop
	buf := make([]byte, 1<<20)
	for off := stop; off < size; off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return err
		}
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				last = off + int64(i) + 1
				break
			}
		}
	}
	raw := make([]byte, last-stop)
	if _, err := f.ReadAt(raw, stop); err != nil && err != io.EOF {
		return err
	}
	end := len(raw)
	table := crc32.MakeTable(crc32.Castagnoli)
	for i := 1; i < end; i++ {
		b := raw[i:]
		n := 2
		var v [3]uint64
		ok := len(b) > n
		for j := 0; ok && j < 3; j++ {
			x, k := binary.Uvarint(b[n:])
			ok = k > 0
			v[j], n = x, n+k
		}
		klen, vlen := uint32(v[0]), uint32(v[1])
		if !ok || klen == 0 || klen > badgerMaxKey {
			continue
		}
		total := n + int(klen) + int(vlen)
		if total+crc32.Size > len(b) || total < 0 {
			continue
		}
		if crc32.Checksum(b[:total], table) == binary.BigEndian.Uint32(b[total:]) {
			return fmt.Errorf("%w: replay stops at offset %d, but a whole entry starts at offset %d", errCommittedAfterDamage, stop, stop+int64(i))
		}
	}
	return nil
}

// countingReader reads an entry header, hashing and counting its bytes.
type countingReader struct {
	r *bufio.Reader
	h hash.Hash32
	n int
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.h.Write([]byte{b})
		c.n++
	}
	return b, err
}

// header reads meta, user meta, and the key length, value length and
// expiry uvarints.
func (c *countingReader) header() (klen, vlen uint32, err error) {
	for range 2 {
		if _, err := c.ReadByte(); err != nil {
			return 0, 0, err
		}
	}
	var v [3]uint64
	for i := range v {
		if v[i], err = binary.ReadUvarint(c); err != nil {
			return 0, 0, err
		}
	}
	// Badger keeps the low 32 bits.
	return uint32(v[0]), uint32(v[1]), nil
}
