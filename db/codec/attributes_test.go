package codec

import (
	"bytes"
	"errors"
	"testing"
)

func TestAttributes(t *testing.T) {
	a := &Attributes{N: 3, Columns: []Column{
		{Name: "label", Type: Int, Ints: []int64{3, -1, 7}},
		{Name: "example_loss", Type: Float, Floats: []float64{0.5, 2, 0}},
		{Name: "corrupted", Type: Bool, Bools: []bool{false, true, false}},
	}}
	raw, err := EncodeAttributes(a)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeAttributes(raw, 3)
	if err != nil {
		t.Fatal(err)
	}
	if back.Column("label").Ints[2] != 7 || back.Column("example_loss").Value(1) != 2 || back.Column("corrupted").Value(1) != 1 || back.Column("nope") != nil {
		t.Fatalf("round trip: %+v", back)
	}
	for i := range raw {
		for bit := range 8 {
			bad := bytes.Clone(raw)
			bad[i] ^= 1 << bit
			if _, err := DecodeAttributes(bad, 3); !errors.Is(err, ErrInvalidAttributes) {
				t.Fatalf("flipped bit %d of byte %d accepted: %v", bit, i, err)
			}
		}
	}
	if _, err := DecodeAttributes(raw, 4); err == nil {
		t.Error("attributes of 3 examples accepted for 4")
	}
	for _, bad := range []*Attributes{
		{N: 2, Columns: []Column{{Name: "x", Type: Int, Ints: []int64{1}}}},
		{N: 1, Columns: []Column{{Name: "1x", Type: Int, Ints: []int64{1}}}},
		{N: 1, Columns: []Column{{Name: "a b", Type: Int, Ints: []int64{1}}}},
		{N: 1, Columns: []Column{{Name: "x", Type: Int, Ints: []int64{1}}, {Name: "x", Type: Int, Ints: []int64{1}}}},
	} {
		if _, err := EncodeAttributes(bad); !errors.Is(err, ErrInvalidAttributes) {
			t.Errorf("%+v accepted", bad)
		}
	}
}
