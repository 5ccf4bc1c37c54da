package db

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The reader's side of serve.go: a store locked by a live writer is read
// through the writer's socket. Each iteration has its own connection
// (closing it stops the writer's scan); the gets of a transaction share
// one.

// writerWait is how long a reader waits for a writer that holds the lock
// without a socket (opening or closing the store).
const writerWait = 3 * time.Second

// errRemoteWrite refuses a write to a store read through its writer.
var errRemoteWrite = errors.New("store is read through its live writer: read-only")

// remoteStore reads a store through its writer's socket.
type remoteStore struct {
	dir  string
	addr string
}

// openRemote opens dir through its writer's socket when a live writer
// holds it, and returns nil, nil when none does or it does not answer
// (Open then says who holds the store, as before).
//
// A writer that is opening or closing the store holds its lock without a
// socket for a moment: the reader waits up to writerWait for one or the
// other to end.
func openRemote(dir string, opts Options) (*DB, error) {
	var rs *remoteStore
	for deadline := time.Now().Add(writerWait); rs == nil; time.Sleep(50 * time.Millisecond) {
		held, err := probeLock(dir, false)
		if err != nil || !held {
			return nil, nil
		}
		if addr, ok := writerAddress(dir); ok {
			if c, err := (&remoteStore{addr: addr}).dial(); err == nil {
				c.Close()
				rs = &remoteStore{dir: dir, addr: addr}
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, nil
		}
	}
	d := &DB{dir: dir, opts: opts, remote: rs}
	d.opts.ReadOnly = true
	if err := d.checkMarker(); err != nil {
		return nil, err
	}
	return d, nil
}

// Remote says whether the store is read through its live writer.
func (d *DB) Remote() bool { return d.remote != nil }

// writerAddress returns the address of dir's writer socket: the socket's
// path, or the abstract name its file records.
func writerAddress(dir string) (string, bool) {
	path, err := filepath.Abs(filepath.Join(dir, SocketName))
	if err != nil {
		return "", false
	}
	st, err := os.Lstat(path)
	switch {
	case err != nil:
		return "", false
	case st.Mode()&os.ModeSocket != 0:
		return path, len(path) < 108
	case !st.Mode().IsRegular() || st.Size() > 256:
		return "", false
	}
	raw, err := os.ReadFile(path)
	name := strings.TrimSpace(string(raw))
	if err != nil || !strings.HasPrefix(name, "@gvdb-") {
		return "", false
	}
	return name, true
}

func (rs *remoteStore) dial() (net.Conn, error) {
	c, err := net.DialTimeout("unix", rs.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := (deadlineConn{c}).Write([]byte(kvMagic)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (rs *remoteStore) close() error { return nil }

func (rs *remoteStore) view(fn func(readTxn) error) error {
	t := &remoteTxn{rs: rs}
	err := fn(t)
	t.close()
	if errors.Is(t.err, io.ErrUnexpectedEOF) || errors.Is(t.err, io.EOF) || errors.Is(t.err, syscall.ECONNRESET) {
		return fmt.Errorf("read store %s through its writer: the writer closed the store during the read (run the command again): %w", rs.dir, t.err)
	}
	if t.err != nil {
		return fmt.Errorf("read store %s through its writer: %w", rs.dir, t.err)
	}
	return err
}

// remoteTxn is a read "transaction" over the socket: each request sees
// what the writer had committed when it was served.
type remoteTxn struct {
	rs  *remoteStore
	err error // the first failure of the connection: ends the view
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
}

func (t *remoteTxn) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *remoteTxn) close() {
	if t.c != nil {
		t.c.Close()
		t.c = nil
	}
}

func (t *remoteTxn) Get(key []byte) (readItem, error) {
	if t.err != nil {
		return nil, t.err
	}
	if t.c == nil {
		c, err := t.rs.dial()
		if err != nil {
			t.fail(err)
			return nil, err
		}
		t.c, t.r, t.w = c, bufio.NewReaderSize(deadlineConn{c}, 64<<10), bufio.NewWriter(deadlineConn{c})
	}
	t.w.WriteByte('G')
	writeField(t.w, key)
	if err := t.w.Flush(); err != nil {
		t.fail(err)
		return nil, err
	}
	op, err := t.r.ReadByte()
	if err != nil {
		t.fail(err)
		return nil, err
	}
	switch op {
	case 'N':
		return nil, badger.ErrKeyNotFound
	case 'V':
		size, err := readUvarint(t.r)
		if err != nil {
			t.fail(err)
			return nil, err
		}
		v, err := readField(t.r, maxValueLen)
		if err != nil {
			t.fail(err)
			return nil, err
		}
		return &remoteItem{t: t, key: key, size: int64(size), value: v, has: true}, nil
	}
	err = readFailure(t.r, op)
	t.fail(err)
	return nil, err
}

func (t *remoteTxn) NewIterator(opt badger.IteratorOptions) readIter {
	return &remoteIter{t: t, prefix: opt.Prefix}
}

// readFailure reads the message of an 'X' reply (or names an unexpected
// byte).
func readFailure(r *bufio.Reader, op byte) error {
	if op != 'X' {
		return fmt.Errorf("protocol: unexpected reply %q", op)
	}
	msg, err := readField(r, 1<<20)
	if err != nil {
		return err
	}
	return errors.New(string(msg))
}

func readUvarint(r *bufio.Reader) (uint64, error) {
	n, err := binary.ReadUvarint(r)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// remoteIter streams one iteration on its own connection.
type remoteIter struct {
	t      *remoteTxn
	prefix []byte
	c      net.Conn
	r      *bufio.Reader
	cur    *remoteItem
}

func (it *remoteIter) Rewind() { it.Seek(it.prefix) }

func (it *remoteIter) Seek(key []byte) {
	it.Close()
	if it.t.err != nil {
		return
	}
	c, err := it.t.rs.dial()
	if err != nil {
		it.t.fail(err)
		return
	}
	it.c, it.r = c, bufio.NewReaderSize(deadlineConn{c}, 256<<10)
	w := bufio.NewWriter(deadlineConn{c})
	w.WriteByte('I')
	writeField(w, it.prefix)
	writeField(w, key)
	writeUvarint(w, InlineValue)
	if err := w.Flush(); err != nil {
		it.t.fail(err)
		it.Close()
		return
	}
	it.Next()
}

func (it *remoteIter) Valid() bool { return it.cur != nil }

func (it *remoteIter) Item() readItem { return it.cur }

func (it *remoteIter) Next() {
	it.cur = nil
	if it.r == nil {
		return
	}
	item, err := it.read()
	if err != nil {
		it.t.fail(err)
	}
	if item == nil {
		it.Close()
		return
	}
	it.cur = item
}

func (it *remoteIter) read() (*remoteItem, error) {
	op, err := it.r.ReadByte()
	if err != nil {
		return nil, unexpected(err)
	}
	switch op {
	case 'D':
		return nil, nil
	case 'E':
	default:
		return nil, readFailure(it.r, op)
	}
	key, err := readField(it.r, maxKeyLen)
	if err != nil {
		return nil, unexpected(err)
	}
	size, err := readUvarint(it.r)
	if err != nil {
		return nil, err
	}
	has, err := it.r.ReadByte()
	if err != nil {
		return nil, unexpected(err)
	}
	item := &remoteItem{t: it.t, key: key, size: int64(size), has: has == 1}
	if item.has {
		if item.value, err = readField(it.r, maxValueLen); err != nil {
			return nil, unexpected(err)
		}
	}
	return item, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return fmt.Errorf("the writer closed the connection: %w", io.ErrUnexpectedEOF)
	}
	return err
}

func (it *remoteIter) Close() {
	if it.c != nil {
		it.c.Close()
		it.c, it.r = nil, nil
	}
}

// remoteItem is an entry read from the writer; a value larger than
// InlineValue is fetched when read.
type remoteItem struct {
	t     *remoteTxn
	key   []byte
	size  int64
	value []byte
	has   bool
}

func (i *remoteItem) Key() []byte { return i.key }

func (i *remoteItem) KeyCopy(dst []byte) []byte { return append(dst[:0], i.key...) }

func (i *remoteItem) ValueSize() int64 { return i.size }

func (i *remoteItem) Value(fn func([]byte) error) error {
	if !i.has {
		got, err := i.t.Get(i.key)
		if err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("key %x vanished while it was read", i.key)
			}
			return err
		}
		i.value, i.has = got.(*remoteItem).value, true
	}
	return fn(i.value)
}

func (i *remoteItem) ValueCopy(dst []byte) ([]byte, error) {
	var out []byte
	err := i.Value(func(v []byte) error { out = append(dst[:0], v...); return nil })
	return out, err
}
