package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a one-line progress bar on a terminal and nothing
// elsewhere (pipes, tests).
type progress struct {
	w     io.Writer
	on    bool
	label string
	total int64
	start time.Time
	last  time.Time
	drawn bool
}

func (m *Main) newProgress(label string, total int64) *progress {
	return &progress{w: m.Stderr, on: m.Interactive, label: label, total: total, start: time.Now()}
}

// update redraws at most ten times a second; extra is appended (e.g. the
// loss).
func (p *progress) update(done int64, extra string) {
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < p.total {
		return
	}
	p.last = now
	const width = 30
	frac := float64(done) / float64(max(p.total, 1))
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	el := now.Sub(p.start).Seconds()
	rate := float64(done) / max(el, 1e-9)
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(p.total-done)/rate) * time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%s [%s] %d/%d %.1f/s ETA %s %s\033[K", p.label, bar, done, p.total, rate, eta, extra)
	p.drawn = true
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
