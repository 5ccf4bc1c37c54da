package bufpool

import "testing"

func TestPool(t *testing.T) {
	var p Pool[float64]
	for _, n := range []int{0, 1, 2, 3, 1000, 1 << 20, 1<<20 + 1} {
		s := p.Get(n)
		if len(s) != n {
			t.Fatalf("Get(%d) has length %d", n, len(s))
		}
		if c := cap(s); c&(c-1) != 0 || c < n {
			t.Fatalf("Get(%d) has capacity %d, not a power of two at least %d", n, c, n)
		}
		p.Put(s)
	}
	// A slice Get did not give (its capacity is no class) is not kept:
	// a later Get of its length never sees it.
	foreign := make([]float64, 3)
	foreign[0] = 42
	p.Put(foreign)
	for range 100 {
		if s := p.Get(3); cap(s) == 3 {
			t.Fatal("Get returned a slice Put was given by someone else")
		}
	}
}
