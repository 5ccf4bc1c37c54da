package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"unicode"
)

// Attributes are per-example values of a snapshot, in the examples' row
// order: the label, the example's own loss, perturbation flags and
// whatever else a trainer or importer records. Each column holds N values
// of one type.
type Attributes struct {
	N       int
	Columns []Column
}

// ColumnType is the type of an attribute column's values.
type ColumnType byte

// Column types.
const (
	Int   ColumnType = 1 // int64
	Float ColumnType = 2 // float64
	Bool  ColumnType = 3 // one byte, 0 or 1
)

// String returns "int", "float" or "bool".
func (t ColumnType) String() string {
	switch t {
	case Int:
		return "int"
	case Float:
		return "float"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// Column is one attribute: a name and N values in the slice of its type.
type Column struct {
	Name   string
	Type   ColumnType
	Ints   []int64
	Floats []float64
	Bools  []bool
}

// Value returns the column's value for example row i as a float64 (bools
// as 0 and 1).
func (c *Column) Value(i int) float64 {
	switch c.Type {
	case Int:
		return float64(c.Ints[i])
	case Float:
		return c.Floats[i]
	}
	if c.Bools[i] {
		return 1
	}
	return 0
}

// Column returns the named column, or nil.
func (a *Attributes) Column(name string) *Column {
	if a == nil {
		return nil
	}
	for i := range a.Columns {
		if a.Columns[i].Name == name {
			return &a.Columns[i]
		}
	}
	return nil
}

// ErrInvalidAttributes is wrapped by Validate's and DecodeAttributes'
// errors.
var ErrInvalidAttributes = errors.New("invalid example attributes")

// Validate checks names (1 to 64 letters, digits and '_', starting with a
// letter, each once) and that every column holds N values of its type.
func (a *Attributes) Validate() error {
	seen := map[string]bool{}
	for _, c := range a.Columns {
		if c.Name == "" || len(c.Name) > 64 || !unicode.IsLetter(rune(c.Name[0])) {
			return fmt.Errorf("%w: column name %q", ErrInvalidAttributes, c.Name)
		}
		for _, r := range c.Name {
			if !(r == '_' || r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
				return fmt.Errorf("%w: column name %q", ErrInvalidAttributes, c.Name)
			}
		}
		if seen[c.Name] {
			return fmt.Errorf("%w: column %q twice", ErrInvalidAttributes, c.Name)
		}
		seen[c.Name] = true
		n := map[ColumnType]int{Int: len(c.Ints), Float: len(c.Floats), Bool: len(c.Bools)}[c.Type]
		if c.Type < Int || c.Type > Bool || n != a.N || len(c.Ints)+len(c.Floats)+len(c.Bools) != n {
			return fmt.Errorf("%w: column %s (%s) has %d values for %d examples", ErrInvalidAttributes, c.Name, c.Type, len(c.Ints)+len(c.Floats)+len(c.Bools), a.N)
		}
	}
	return nil
}

const attributesVersion = 1

// EncodeAttributes encodes a's columns:
//
//	version 1 B = 1 | N uvarint | columns uvarint |
//	per column: name length uvarint, name, type 1 B, N values
//	(int: int64 LE; float: float64 LE; bool: 1 B) | CRC32C u32 LE
func EncodeAttributes(a *Attributes) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	v := []byte{attributesVersion}
	v = binary.AppendUvarint(v, uint64(a.N))
	v = binary.AppendUvarint(v, uint64(len(a.Columns)))
	for _, c := range a.Columns {
		v = binary.AppendUvarint(v, uint64(len(c.Name)))
		v = append(v, c.Name...)
		v = append(v, byte(c.Type))
		switch c.Type {
		case Int:
			for _, x := range c.Ints {
				v = binary.LittleEndian.AppendUint64(v, uint64(x))
			}
		case Float:
			for _, x := range c.Floats {
				v = binary.LittleEndian.AppendUint64(v, math.Float64bits(x))
			}
		case Bool:
			for _, x := range c.Bools {
				b := byte(0)
				if x {
					b = 1
				}
				v = append(v, b)
			}
		}
	}
	return binary.LittleEndian.AppendUint32(v, crc32.Checksum(v, crcTable)), nil
}

// DecodeAttributes decodes attributes of n examples, checking the
// checksum, the sizes and the names.
func DecodeAttributes(v []byte, n int) (*Attributes, error) {
	bad := func(what string) (*Attributes, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidAttributes, what)
	}
	if len(v) < 5 {
		return bad("truncated")
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(v[len(v)-4:]) {
		return bad("checksum mismatch")
	}
	if body[0] != attributesVersion {
		return bad(fmt.Sprintf("version %d", body[0]))
	}
	body = body[1:]
	uv := func() (int, bool) {
		x, k := binary.Uvarint(body)
		if k <= 0 || x > uint64(len(v)) {
			return 0, false
		}
		body = body[k:]
		return int(x), true
	}
	got, ok1 := uv()
	cols, ok2 := uv()
	if !ok1 || !ok2 || got != n {
		return bad(fmt.Sprintf("%d examples, the snapshot has %d", got, n))
	}
	a := &Attributes{N: n}
	for range cols {
		l, ok := uv()
		if !ok || l > len(body) {
			return bad("column name")
		}
		c := Column{Name: string(body[:l])}
		body = body[l:]
		if len(body) < 1 {
			return bad("truncated")
		}
		c.Type = ColumnType(body[0])
		body = body[1:]
		if c.Type < Int || c.Type > Bool {
			return bad(fmt.Sprintf("column %q of unknown type %d", c.Name, c.Type))
		}
		width := 8
		if c.Type == Bool {
			width = 1
		}
		if len(body) < width*n {
			return bad("truncated values")
		}
		for i := range n {
			switch c.Type {
			case Int:
				c.Ints = append(c.Ints, int64(binary.LittleEndian.Uint64(body[8*i:])))
			case Float:
				c.Floats = append(c.Floats, math.Float64frombits(binary.LittleEndian.Uint64(body[8*i:])))
			case Bool:
				c.Bools = append(c.Bools, body[i] != 0)
			}
		}
		body = body[width*n:]
		a.Columns = append(a.Columns, c)
	}
	if len(body) != 0 {
		return bad("trailing bytes")
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}
