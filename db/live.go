package db

import (
	"bufio"
	"fmt"
	"slices"
	"sync"
)

// A run marked running is being written only if the store's live writer
// writes it; any other was left so by a writer that died (ShownStatus). A
// writer remembers the runs it created or updated while running; its
// socket answers 'L' with their names, one field each, then an empty one.

type liveRuns struct {
	mu    sync.Mutex
	names map[string]bool
}

// noteWriting records whether this process is writing run r.
func (d *DB) noteWriting(r *Run) {
	d.live.mu.Lock()
	defer d.live.mu.Unlock()
	if d.live.names == nil {
		d.live.names = map[string]bool{}
	}
	if r.Status == StatusRunning {
		d.live.names[r.Name] = true
	} else {
		delete(d.live.names, r.Name)
	}
	r.live = r.Status == StatusRunning
}

func (d *DB) writing() []string {
	d.live.mu.Lock()
	defer d.live.mu.Unlock()
	var out []string
	for n := range d.live.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// markLive marks the runs the live writer is writing.
func (d *DB) markLive(runs ...*Run) {
	names := d.writing()
	if d.remote != nil {
		names, _ = d.remote.liveRuns() // unknown: shown as killed
	}
	for _, r := range runs {
		r.live = r.Status == StatusRunning && slices.Contains(names, r.Name)
	}
}

func (s *kvServer) serveLive(w *bufio.Writer) {
	for _, n := range s.d.writing() {
		writeField(w, []byte(n))
	}
	writeField(w, nil)
}

func (rs *remoteStore) liveRuns() ([]string, error) {
	c, err := rs.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	w := bufio.NewWriter(deadlineConn{c})
	w.WriteByte('L')
	if err := w.Flush(); err != nil {
		return nil, err
	}
	r := bufio.NewReader(deadlineConn{c})
	var out []string
	for {
		n, err := readField(r, maxKeyLen)
		if err != nil {
			return nil, fmt.Errorf("live runs: %w", err)
		}
		if len(n) == 0 {
			return out, nil
		}
		out = append(out, string(n))
	}
}
