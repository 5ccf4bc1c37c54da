package parser

import "testing"

func TestStrArgument(t *testing.T) {
	for _, q := range []string{
		"SELECT gc_variance(128, 128, 'paper', 2000) FROM 'r'",
		"SELECT gc_distortion(16, 'exact') FROM 'r'",
	} {
		st, err := ParseStatement(q)
		if err != nil {
			t.Fatal(err)
		}
		if st.String() != q {
			t.Errorf("round trip: %s", st)
		}
	}
}
