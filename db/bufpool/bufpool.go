// Package bufpool recycles large slices in power-of-two size classes.
//
// A fresh multi-megabyte slice costs a page fault on each of its pages
// when it is first written, and the collector must later reclaim it: the
// block path of a query allocates several per layer and snapshot (float64
// copies of the factors, products), and the rollup reads one buffer per
// snapshot. Reusing them keeps those pages mapped.
package bufpool

import (
	"math/bits"
	"sync"
)

// Pool holds slices of T by capacity class (1<<c elements). The zero Pool
// is ready to use and safe for concurrent use.
type Pool[T any] struct{ classes [48]sync.Pool }

// Get returns a slice of length n. Its contents are whatever the last user
// left: callers overwrite it, or clear it first.
func (p *Pool[T]) Get(n int) []T {
	c := bits.Len(uint(max(n, 1) - 1))
	if c >= len(p.classes) {
		return make([]T, n)
	}
	if b, ok := p.classes[c].Get().(*[]T); ok {
		return (*b)[:n]
	}
	return make([]T, n, 1<<c)
}

// Put returns a slice that Get gave; others are left to the collector.
// The caller must not use s afterwards.
func (p *Pool[T]) Put(s []T) {
	c := bits.Len(uint(max(cap(s), 1) - 1))
	if c >= len(p.classes) || cap(s) != 1<<c {
		return
	}
	s = s[:0]
	p.classes[c].Put(&s)
}
