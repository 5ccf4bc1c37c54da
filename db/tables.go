package db

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// checkTables verifies the footer and every block checksum of every table
// file (.sst) of a store
// before Badger opens it: Badger reads a table's index by lengths stored
// at the end of the file and, in a goroutine no caller can recover,
// panics when they point outside it. Here they are bounds-checked and the
// index checked against its checksum, so a damaged table is an error
// naming the file.
func checkTables(dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	// The tables are checked on every open: on all cores, the first
	// error (in file order) reported.
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = checkTable(name)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%w: table %s: %v", ErrCorruptStore, filepath.Base(names[i]), err)
		}
	}
	return nil
}

func checkTable(name string) (err error) {
	raw, done, err := mapTable(name)
	if err != nil {
		return err
	}
	defer done()
	defer func() {
		if err == nil {
			err = parseTable(raw)
		}
	}()
	pos := len(raw)
	take := func(n int, what string) ([]byte, error) {
		if n < 0 || n > pos {
			return nil, fmt.Errorf("%s of %d bytes past the start of the %d-byte file", what, n, len(raw))
		}
		pos -= n
		return raw[pos : pos+n], nil
	}
	b, err := take(4, "checksum length")
	if err != nil {
		return err
	}
	b, err = take(int(binary.BigEndian.Uint32(b)), "checksum")
	if err != nil {
		return err
	}
	var sum pb.Checksum
	if err := proto.Unmarshal(b, &sum); err != nil {
		return fmt.Errorf("checksum: %v", err)
	}
	if b, err = take(4, "index length"); err != nil {
		return err
	}
	index, err := take(int(binary.BigEndian.Uint32(b)), "index")
	if err != nil {
		return err
	}
	if err := y.VerifyChecksum(index, &sum); err != nil {
		return fmt.Errorf("index: %s", strings.TrimSpace(err.Error()))
	}
	return nil
}

// parseTable runs Badger's own table parsing on a copy of the file, in
// this goroutine, where a panic can be caught: what passes here opens in
// Badger without panicking. gvdb's tables are uncompressed; a store some
// other program wrote may compress them, so each compression is tried.
func parseTable(raw []byte) (err error) {
	for i, c := range []options.CompressionType{options.None, options.ZSTD, options.Snappy} {
		e := parseTableAs(raw, c)
		if e == nil {
			return nil
		}
		if i == 0 {
			err = e // gvdb's own tables are uncompressed: say what fails there
		}
	}
	return err
}

func parseTableAs(raw []byte, c options.CompressionType) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable index: %v", r)
		}
	}()
	t, err := table.OpenInMemoryTable(raw, 0, &table.Options{ChkMode: options.NoVerification, BlockSize: 4 << 10, Compression: c})
	if err != nil {
		return err
	}
	// Every block's checksum: Badger's iterators end silently at a block
	// that fails it, so a damaged block would shorten a listing.
	if err := t.VerifyChecksum(); err != nil {
		return fmt.Errorf("block checksum: %v", strings.TrimSpace(err.Error()))
	}
	return nil
}

// mapTable maps a table file privately (copy on write: nothing reaches the
// file) for reading, which costs a fraction of reading it into fresh
// memory: every open checks every table. done unmaps it. An empty file,
// or one that cannot be mapped, is read instead.
func mapTable(name string) (raw []byte, done func(), err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if size := st.Size(); size > 0 && size == int64(int(size)) {
		if m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE); err == nil {
			return m, func() { unix.Munmap(m) }, nil
		}
	}
	raw, err = io.ReadAll(f)
	return raw, func() {}, err
}
