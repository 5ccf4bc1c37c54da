package main

import (
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress draws a progress bar (schollz/progressbar) on a terminal and
// nothing elsewhere (pipes, files, tests).
type progress struct {
	bar   *progressbar.ProgressBar
	label string
}

func (m *Main) newProgress(label string, total int64) *progress {
	p := &progress{label: label}
	if m.Interactive {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(m.Stderr),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// update sets the work done; extra (the loss, say) follows the label.
func (p *progress) update(done int64, extra string) {
	if p.bar == nil {
		return
	}
	if extra != "" {
		p.bar.Describe(p.label + " " + extra)
	}
	_ = p.bar.Set64(done)
}

// finish removes the bar.
func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
