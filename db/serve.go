package db

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// A process that opens a store for writing serves its committed data to
// readers on a Unix socket, so that gvdb's read commands work while it
// trains (the store's lock keeps them from opening it): Open in another
// process finds the store locked by a live writer and reads through the
// socket (remote.go). The writer answers two requests from Badger read
// transactions, which see committed writes only: get a key, and iterate a
// prefix from a key, streaming keys, value sizes and the values up to
// InlineValue bytes (the client fetches larger ones by get, when it reads
// them). Everything else (decoding, statistics, figures) runs in the
// reader.
//
// The socket is SocketName in the store directory, mode 0600. A directory
// whose path is too long for a socket address (108 bytes) gets a Linux
// abstract socket instead, whose name ("@gvdb-…") is written into a
// regular file of the same name. Either way the writer accepts only
// connections from its own user (SO_PEERCRED), removes the socket (or the
// file) when it closes the store, and removes a stale one when it opens
// it; a reader never removes one.
//
// The protocol: the client sends kvMagic once, then requests; a request
// is an op byte and length-prefixed (uvarint) fields:
//
//	'G' key                    → 'V' size value | 'N' (no such key) | 'X' message
//	'I' prefix start inlineMax → ('E' key size 1 value | 'E' key size 0)* then 'D' | 'X' message
//	'L'                        → the names of the runs it writes (live.go)
//
// A client that stops reading an iteration closes the connection: the
// writer's next write fails and its iteration ends. Requests on one
// connection are served one at a time.

// SocketName is the name of the writer's socket in a store directory.
const SocketName = "gvdb.sock"

const (
	kvMagic = "gvdb-kv 1\n"
	// InlineValue is the largest value an iteration carries: Badger keeps
	// smaller ones in its tables (read anyway by the iteration); larger
	// ones are in its value log and read only when asked for.
	InlineValue = 64 << 10
	// maxKVConns bounds the readers a writer serves at once.
	maxKVConns = 64
	// kvIOTimeout bounds one write to (or read from) a peer that stopped.
	kvIOTimeout = 2 * time.Minute
	maxKeyLen   = 1 << 16
	maxValueLen = 1 << 31
)

// kvServer is a writer's socket server.
type kvServer struct {
	d        *DB
	ln       *net.UnixListener
	nameFile string // the file naming an abstract socket ("" for a path)
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

// socketAddress returns where the writer of dir listens: the socket's
// path, or an abstract name and the file that records it.
func socketAddress(dir string) (addr, nameFile string, err error) {
	abs, err := filepath.Abs(filepath.Join(dir, SocketName))
	if err != nil {
		return "", "", err
	}
	if len(abs) < 108 {
		return abs, "", nil
	}
	sum := sha256.Sum256([]byte(abs))
	return fmt.Sprintf("@gvdb-%x-%d", sum[:8], os.Getpid()), abs, nil
}

// serve starts the writer's socket server; a store it cannot serve is
// still written (readers then wait, as before), with a warning.
func (d *DB) serve() {
	s, err := listenKV(d)
	if err != nil {
		newLogger(d.opts.Log).Warningf("readers cannot connect while this process writes %s: %v", d.dir, err)
		return
	}
	d.srv = s
	s.wg.Add(1)
	go s.accept()
}

func listenKV(d *DB) (*kvServer, error) {
	addr, nameFile, err := socketAddress(d.dir)
	if err != nil {
		return nil, err
	}
	// The store's lock is ours: what is there is stale.
	path := filepath.Join(d.dir, SocketName)
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if nameFile == "" {
		err = os.Chmod(addr, 0o600)
	} else {
		err = os.WriteFile(nameFile, []byte(addr+"\n"), 0o600)
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &kvServer{d: d, ln: ln, nameFile: nameFile, ctx: ctx, cancel: cancel, conns: map[net.Conn]bool{}}, nil
}

// stopServing closes the socket and every connection, waits for their
// transactions to end, and removes the socket (or its name file).
func (d *DB) stopServing() {
	s := d.srv
	if s == nil {
		return
	}
	d.srv = nil
	s.cancel()
	s.ln.Close() // removes a socket file
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.nameFile != "" {
		os.Remove(s.nameFile)
	}
}

// Readers is the number of reader connections a writer serves now (0
// for a store that is not open for writing). A reader that goes away
// (closed, killed) is no longer counted once the writer has noticed: at
// its next read or write on the connection.
func (d *DB) Readers() int {
	s := d.srv
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *kvServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors, say
			continue
		}
		if !sameUser(c) {
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.ctx.Err() != nil || len(s.conns) >= maxKVConns {
			s.mu.Unlock()
			w := bufio.NewWriter(c)
			writeErr(w, fmt.Errorf("the writer serves %d readers already; try again", maxKVConns))
			w.Flush()
			c.Close()
			continue
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// sameUser says whether the peer runs as this process's user.
func sameUser(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		ok = err == nil && int(cred.Uid) == os.Getuid()
	})
	return ok
}

// deadlineConn bounds each read and write.
type deadlineConn struct{ net.Conn }

func (c deadlineConn) Read(p []byte) (int, error) {
	c.SetReadDeadline(time.Now().Add(kvIOTimeout))
	return c.Conn.Read(p)
}

func (c deadlineConn) Write(p []byte) (int, error) {
	c.SetWriteDeadline(time.Now().Add(kvIOTimeout))
	return c.Conn.Write(p)
}

func (s *kvServer) handle(c net.Conn) {
	dc := deadlineConn{c}
	r := bufio.NewReader(dc)
	w := bufio.NewWriterSize(dc, 64<<10)
	magic := make([]byte, len(kvMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != kvMagic {
		return
	}
	for s.ctx.Err() == nil {
		op, err := r.ReadByte()
		if err != nil {
			return
		}
		switch op {
		case 'G':
			key, err := readField(r, maxKeyLen)
			if err != nil {
				return
			}
			s.get(w, key)
		case 'I':
			prefix, err := readField(r, maxKeyLen)
			if err != nil {
				return
			}
			start, err := readField(r, maxKeyLen)
			if err != nil {
				return
			}
			inline, err := binary.ReadUvarint(r)
			if err != nil {
				return
			}
			if err := s.iterate(w, prefix, start, int64(min(inline, maxValueLen))); err != nil {
				return
			}
		case 'L':
			s.serveLive(w)
		default:
			writeErr(w, fmt.Errorf("unknown request %q", op))
			w.Flush()
			return
		}
		if w.Flush() != nil {
			return
		}
	}
}

func (s *kvServer) get(w *bufio.Writer, key []byte) {
	err := s.d.view(func(txn readTxn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			w.WriteByte('V')
			writeUvarint(w, uint64(item.ValueSize()))
			writeField(w, v)
			return nil
		})
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		w.WriteByte('N')
	case err != nil:
		writeErr(w, err)
	}
}

// iterate streams the entries of prefix from start. An error writing to
// the client (it went away) ends the iteration and is returned.
func (s *kvServer) iterate(w *bufio.Writer, prefix, start []byte, inline int64) error {
	var werr error
	err := s.d.view(func(txn readTxn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			if err := s.ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			w.WriteByte('E')
			writeField(w, item.Key())
			size := item.ValueSize()
			writeUvarint(w, uint64(size))
			if size > inline {
				w.WriteByte(0)
			} else {
				w.WriteByte(1)
				if err := item.Value(func(v []byte) error { writeField(w, v); return nil }); err != nil {
					return err
				}
			}
			// bufio keeps its first write error: a client that left ends
			// the scan at the next full buffer.
			if _, werr = w.Write(nil); werr != nil {
				return werr
			}
		}
		return nil
	})
	if werr != nil {
		return werr
	}
	if err != nil {
		writeErr(w, err)
		return nil
	}
	return w.WriteByte('D')
}

func writeUvarint(w *bufio.Writer, n uint64) {
	var b [binary.MaxVarintLen64]byte
	w.Write(b[:binary.PutUvarint(b[:], n)])
}

func writeField(w *bufio.Writer, b []byte) {
	writeUvarint(w, uint64(len(b)))
	w.Write(b)
}

func writeErr(w *bufio.Writer, err error) {
	w.WriteByte('X')
	writeField(w, []byte(err.Error()))
}

func readField(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("field of %d bytes (at most %d)", n, limit)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}
