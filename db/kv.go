package db

import (
	"github.com/dgraph-io/badger/v4"
)

// db's read methods see the store through readTxn, the part of a Badger
// read transaction they use: get one key, iterate a prefix from a key,
// read an item's key, value and value size. A store opened directly reads
// Badger's transactions (badgerTxn); a store whose writer is alive is
// read through the writer's socket (remote.go), which answers the same
// requests from its own Badger read transactions.

// readTxn is a read transaction.
type readTxn interface {
	// Get returns the key's item, or badger.ErrKeyNotFound.
	Get(key []byte) (readItem, error)
	// NewIterator iterates opt.Prefix (the other options are hints).
	NewIterator(opt badger.IteratorOptions) readIter
}

// readIter walks keys in order; it is used once, from Rewind or Seek.
type readIter interface {
	Rewind()
	Seek(key []byte)
	Valid() bool
	Next()
	Item() readItem
	Close()
}

// readItem is one key and its value.
type readItem interface {
	Key() []byte
	KeyCopy(dst []byte) []byte
	Value(fn func(v []byte) error) error
	ValueCopy(dst []byte) ([]byte, error)
	ValueSize() int64
}

// badgerTxn reads a local Badger transaction.
type badgerTxn struct{ txn *badger.Txn }

func (t badgerTxn) Get(key []byte) (readItem, error) {
	item, err := t.txn.Get(key)
	if err != nil {
		return nil, err
	}
	return item, nil
}

func (t badgerTxn) NewIterator(opt badger.IteratorOptions) readIter {
	return badgerIter{t.txn.NewIterator(opt)}
}

type badgerIter struct{ *badger.Iterator }

func (it badgerIter) Item() readItem { return it.Iterator.Item() }
