package live

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/ingest"
	"gvdb/plots/live/internal/chrome"
	"gvdb/trainer"
)

// syncBuffer is a log the writer and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// liveRun is a small run training into an open store: an MLP 1000-16-10
// on 256 random-features examples, batch 16, a snapshot of 64 examples
// every `every` steps. Training waits at each step of pauses (after
// its update) until the test lets it go on (resume); done is closed when
// the run is finished.
type liveRun struct {
	d      *db.DB
	log    *syncBuffer
	paused chan int64    // told the step it waits at
	resume chan struct{} // lets it go on
	done   chan struct{}
	err    error
	close  func() error // closes the store (once)
}

func startRun(t *testing.T, dir string, steps, every int64, pauses ...int64) *liveRun {
	t.Helper()
	log := &syncBuffer{}
	d, err := db.Open(dir, db.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	closeOnce := sync.OnceValue(d.Close)
	t.Cleanup(func() { closeOnce() })
	setup := trainer.Setup{Config: db.Config{Model: "mlp", Dataset: "rf", Optimizer: "sgd", LR: 0.05, Momentum: 0.5, BatchSize: 16,
		Steps: steps, SnapshotEvery: every, SnapshotExamples: 64, Seed: 1}, Hidden: "16", DataSize: 256, EvalExamples: 64}
	cfg, err := setup.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	schema, _, err := cfg.Plan(0)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ingest.Record(d, &db.Run{Name: "mlp", Config: cfg.Config, Layers: schema}, false, ingest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lr := &liveRun{d: d, log: log, paused: make(chan int64), resume: make(chan struct{}), done: make(chan struct{}), close: closeOnce}
	ctx, cancel := context.WithCancel(context.Background())
	wait := map[int64]bool{}
	for _, p := range pauses {
		wait[p] = true
	}
	go func() {
		defer close(lr.done)
		res, err := trainer.Train(ctx, *cfg, rec, func(step, total int64, loss float64) {
			if wait[step] {
				select {
				case lr.paused <- step:
					<-lr.resume
				case <-ctx.Done():
				}
			}
		})
		status, n := ingest.StatusFor(err), int64(0)
		if res != nil {
			n = res.Steps
		}
		lr.err = errors.Join(err, rec.Finish(status, n))
	}()
	t.Cleanup(func() {
		cancel()
		<-lr.done
	})
	return lr
}

// TestBrowser opens the live page in a headless Chromium while a run
// trains: at two moments (training held after the snapshots of steps 0 to
// 100, then to 300) the DOM's count of points in the run's variance
// figure is the number of snapshots committed, and the second is larger;
// the runs table shows the run running, the query box answers with a
// table and a figure, and the page meets no error or CSP violation.
// Screenshots of both moments go to the test's temporary folder;
// GVDB_LIVE_SCREENSHOT=FILE also writes the second there
// (docs/live-screenshot.sh makes the README's image with it).
func TestBrowser(t *testing.T) {
	path, err := chrome.Find()
	if err != nil {
		if os.Getenv("GVDB_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("GVDB_REQUIRE_CHROMIUM=1: %v", err)
		}
		t.Skipf("the browser test needs Chromium: %v", err)
	}
	tmp := t.TempDir()
	steps, every, step1, step2 := int64(400), int64(20), int64(100), int64(300)
	shot := os.Getenv("GVDB_LIVE_SCREENSHOT")
	if shot != "" { // the README's image: a longer run
		steps, every, step1, step2 = 3000, 50, 500, 2000
	}
	run := startRun(t, filepath.Join(tmp, "store"), steps, every, step1+1, step2+1)
	ts := httptest.NewServer(New(run.d, Config{Poll: 100 * time.Millisecond}))
	defer ts.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b, err := chrome.Start(path, filepath.Join(tmp, "profile"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	at := func(step int64) int64 {
		select {
		case s := <-run.paused:
			if s != step+1 {
				t.Fatalf("training paused after step %d, want %d", s-1, step)
			}
		case <-run.done:
			t.Fatalf("training ended before step %d: %v", step, run.err)
		case <-ctx.Done():
			t.Fatalf("training did not reach step %d", step)
		}
		return step/every + 1 // snapshots at 0, every, ..., step
	}
	const points = `document.querySelectorAll('#figures .fig[data-run="mlp"] .gvdb-point[data-series="variance(16)"]').length`
	count := func(p *chrome.Page) int {
		var n int
		if err := p.Eval(ctx, points, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	screenshot := func(p *chrome.Page, name string) []byte {
		png, err := p.Screenshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		return png
	}

	want1 := at(step1)
	page, err := b.Open(ctx, ts.URL+"/", 1100, 900)
	if err != nil {
		t.Fatal(err)
	}
	if err := page.WaitFor(ctx, fmt.Sprintf("%s == %d", points, want1)); err != nil {
		t.Fatalf("first moment: %v (points now %d)", err, count(page))
	}
	first := screenshot(page, "first.png")
	n1 := count(page)
	var status string
	if err := page.Eval(ctx, `[...document.querySelectorAll("#runs td")].map((td) => td.textContent).join(" ")`, &status); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "mlp") || !strings.Contains(status, "running") {
		t.Errorf("runs table: %s", status)
	}
	run.resume <- struct{}{}

	// The same page, updated by the event stream: no reload.
	want2 := at(step2)
	if err := page.WaitFor(ctx, fmt.Sprintf("%s == %d", points, want2)); err != nil {
		t.Fatalf("second moment: %v (points now %d)", err, count(page))
	}
	var series []string
	if err := page.Eval(ctx, `[...new Set([...document.querySelectorAll('#figures .gvdb-point')].map((p) => p.dataset.series))]`, &series); err != nil {
		t.Fatal(err)
	}
	if strings.Join(series, ",") != "variance(16),variance(32),nvar(16),gns,loss" {
		var all []string
		page.Eval(ctx, `[...document.querySelectorAll('#figures .gvdb-point')].map((p) => p.dataset.series + "@" + p.dataset.step + "=" + p.dataset.value)`, &all)
		t.Log(all)
		t.Errorf("core figure's series: %v", series)
	}
	// The query box: a table and a figure of the same rows.
	q := fmt.Sprintf("SELECT step, nvar FROM 'mlp' WHERE step <= %d", step1)
	if err := page.Eval(ctx, fmt.Sprintf(`document.getElementById("q").value = %q; document.querySelector("#qform button").click()`, q), nil); err != nil {
		t.Fatal(err)
	}
	if err := page.WaitFor(ctx, fmt.Sprintf(`document.querySelectorAll("#result tr").length == %d && document.querySelectorAll("#qfig .gvdb-point").length == %d`, want1+1, want1)); err != nil {
		var qerr string
		page.Eval(ctx, `document.getElementById("qerr").textContent`, &qerr)
		t.Fatalf("query box: %v (%s)", err, qerr)
	}
	png := screenshot(page, "second.png")
	n2 := count(page)
	if !(n2 > n1) {
		t.Errorf("points in the variance figure: %d, then %d", n1, n2)
	}
	if errs, err := page.Errors(ctx); err != nil || len(errs) > 0 {
		t.Errorf("page errors: %v %v", errs, err)
	}
	var caps string
	page.Eval(ctx, `[...document.querySelectorAll(".err, .cap")].map((e) => e.textContent).join("|")`, &caps)
	t.Logf("points in the variance figure: %d at step %d, %d at step %d; captions %q", n1, step1, n2, step2, caps)
	if keep := os.Getenv("GVDB_LIVE_SHOTS_DIR"); keep != "" { // to look at them
		os.WriteFile(filepath.Join(keep, "first.png"), first, 0o644)
		os.WriteFile(filepath.Join(keep, "second.png"), png, 0o644)
	}
	if shot != "" {
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run.resume <- struct{}{}
	<-run.done
	if run.err != nil {
		t.Fatalf("training: %v", run.err)
	}
}
