package db

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sort"

	"github.com/dgraph-io/badger/v4"
)

// ScalarRow is the named scalars (loss, accuracy, lr, ...) of one step.
type ScalarRow struct {
	Step   int64
	Values map[string]float64
}

// scalarsV2 marks version 2 step scalars (a checksum at the end); a
// version 1 value starts with its uvarint name count, never this byte
// pair for fewer than 69 names.
var scalarsV2 = []byte{0xC5, 0x02}

func encodeScalars(vals map[string]float64) []byte {
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	v := append([]byte(nil), scalarsV2...)
	v = binary.AppendUvarint(v, uint64(len(names)))
	for _, k := range names {
		v = binary.AppendUvarint(v, uint64(len(k)))
		v = append(v, k...)
		v = binary.LittleEndian.AppendUint64(v, math.Float64bits(vals[k]))
	}
	return binary.LittleEndian.AppendUint32(v, crc32.Checksum(v, castagnoli))
}

func decodeScalars(v []byte) (map[string]float64, error) {
	bad := func(what string) error { return fmt.Errorf("%w: step scalars: %s", ErrCorruptMetadata, what) }
	if bytes.HasPrefix(v, scalarsV2) {
		if len(v) < len(scalarsV2)+4 {
			return nil, bad("truncated")
		}
		body := v[:len(v)-4]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(v[len(v)-4:]) {
			return nil, bad("checksum mismatch")
		}
		v = body[len(scalarsV2):]
	}
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)) {
		return nil, bad("name count")
	}
	v = v[k:]
	out := make(map[string]float64, n)
	for range n {
		l, k := binary.Uvarint(v)
		if k <= 0 || l > uint64(len(v)-k) || len(v)-k-int(l) < 8 {
			return nil, bad("truncated")
		}
		name := string(v[k : k+int(l)])
		v = v[k+int(l):]
		out[name] = math.Float64frombits(binary.LittleEndian.Uint64(v))
		v = v[8:]
	}
	if len(v) != 0 {
		return nil, bad("trailing bytes")
	}
	return out, nil
}

// PutScalars records step scalars for run, merging with values already
// stored at the same steps (a name written again is replaced).
func (d *DB) PutScalars(run string, rows []ScalarRow) error {
	r, err := d.Run(run)
	if err != nil {
		return fmt.Errorf("put scalars: %w", err)
	}
	for _, row := range rows {
		if row.Step < 0 {
			return fmt.Errorf("put scalars: %w %d", ErrNegativeStep, row.Step)
		}
	}
	err = d.update(func(txn *badger.Txn) error {
		for _, row := range rows {
			key := stepKey(prefixScalars, r.ID, row.Step)
			vals := row.Values
			item, err := txn.Get(key)
			switch {
			case err == nil:
				var old map[string]float64
				if err := item.Value(func(v []byte) (err error) { old, err = decodeScalars(v); return err }); err != nil {
					return err
				}
				for k, v := range row.Values {
					old[k] = v
				}
				vals = old
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
			if err := txn.Set(key, encodeScalars(vals)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put scalars of %q: %w", run, err)
	}
	return nil
}

// Scalars calls fn for each step of run r in window w that has scalars,
// in step order.
func (d *DB) Scalars(r *Run, w Window, fn func(ScalarRow) error) error {
	return d.view(func(txn readTxn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: runPrefix(prefixScalars, r.ID), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Seek(stepKey(prefixScalars, r.ID, max(w.From, 0))); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 13 {
				continue
			}
			step := int64(binary.BigEndian.Uint64(k[5:]))
			if step >= w.To {
				break
			}
			var vals map[string]float64
			if err := it.Item().Value(func(v []byte) (err error) { vals, err = decodeScalars(v); return err }); err != nil {
				return fmt.Errorf("%s step %d: %w", r.Name, step, err)
			}
			if err := fn(ScalarRow{Step: step, Values: vals}); err != nil {
				return err
			}
		}
		return nil
	})
}
