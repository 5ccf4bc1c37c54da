package live

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/ingest"
	"gvdb/query"
	"gvdb/query/parser"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("GVDB_LIVE_READER_DIR"); dir != "" {
		os.Exit(readForever(dir))
	}
	os.Exit(m.Run())
}

// readerQueries are what TestKilledReader's reader asks, in turn: the
// page's core statistics (rollups and scalars) and a per-example column
// (every snapshot's blocks).
var readerQueries = []string{
	"SELECT step, variance(16), variance(32), nvar(16), gns, loss FROM 'mlp'",
	"SELECT step, example_id, grad_norm FROM 'mlp'",
}

// readForever is TestKilledReader's child process: it reads the store in
// dir through its writer, query after query, and prints a line after each
// answer, until it is killed (or for a minute at most).
func readForever(dir string) int {
	d, err := db.Open(dir, db.Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		fmt.Fprintln(os.Stderr, "reader:", err)
		return 1
	}
	if !d.Remote() {
		fmt.Fprintln(os.Stderr, "reader: the store is not read through its writer")
		return 1
	}
	for i, stop := 0, time.Now().Add(time.Minute); time.Now().Before(stop); i++ {
		st, err := parser.ParseStatement(readerQueries[i%len(readerQueries)])
		if err == nil {
			_, err = query.Eval(context.Background(), d, st, query.Options{})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "reader:", err)
			return 1
		}
		fmt.Println("answered", i+1)
	}
	return 0
}

// TestKilledReader: a reader process killed (SIGKILL) in the middle of a
// query, while a run trains, does not disturb training: the run completes
// with every step and snapshot, the writer logs nothing (no error, no
// warning), it stops serving the dead reader at once, and the store
// passes gvdb check.
func TestKilledReader(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	const steps, every = 600, 10
	run := startRun(t, dir, steps, every, 101)
	var done atomic.Bool
	go func() { <-run.done; done.Store(true) }()
	select {
	case <-run.paused: // the snapshots of steps 0 to 100 are in
	case <-run.done:
		t.Fatalf("training: %v", run.err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "GVDB_LIVE_READER_DIR="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	answered := make(chan bool)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && strings.HasPrefix(sc.Text(), "answered")
		answered <- ok
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-answered:
		if !ok {
			child.Wait()
			t.Fatalf("the reader answered nothing: %s", stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the reader answered nothing in 60 s")
	}
	t0 := time.Now()
	run.resume <- struct{}{}

	// Kill the reader while the writer serves it (a query under way) and
	// training runs.
	deadline := time.Now().Add(20 * time.Second)
	for run.d.Readers() == 0 {
		if time.Now().After(deadline) || done.Load() {
			t.Fatalf("the reader never held a connection while training ran (done %v): %s", done.Load(), stderr.String())
		}
		time.Sleep(time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedWhileTraining := !done.Load()
	child.Wait()
	for deadline := time.Now().Add(3 * time.Second); run.d.Readers() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the writer still serves %d readers 3 s after the reader was killed", run.d.Readers())
		}
	}
	if !killedWhileTraining {
		t.Fatal("training ended before the reader was killed: make the run longer")
	}

	tKill := time.Since(t0)
	<-run.done
	t.Logf("reader killed %v after training went on; training ended %v after", tKill.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	if run.err != nil {
		t.Fatalf("training beside a killed reader: %v", run.err)
	}
	if log := run.log.String(); log != "" {
		t.Errorf("the writer logged:\n%s", log)
	}
	r, err := run.d.Run("mlp")
	if err != nil || r.Status != db.StatusComplete || r.Steps != steps {
		t.Fatalf("run after training: %+v %v", r, err)
	}
	if err := run.close(); err != nil {
		t.Fatal(err)
	}
	d, err := db.Open(dir, db.Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rep, err := ingest.Check(d, nil)
	if err != nil || len(rep.Faults) > 0 || rep.Snapshots != steps/every+1 {
		t.Fatalf("gvdb check: %d snapshots, faults %v, %v", rep.Snapshots, rep.Faults, err)
	}
}
