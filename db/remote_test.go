package db

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fillStore writes runs a and b, snapshots (one with a block past
// InlineValue, fetched by get) and scalars.
func fillStore(t *testing.T, w *DB, steps ...int64) {
	t.Helper()
	for _, name := range []string{"a", "b"} {
		if _, err := w.Run(name); err == nil {
			continue
		}
		if err := w.CreateRun(testRun(name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range steps {
		s := snap(step, "fc1.weight", "fc1.bias", "fc2.weight")
		s.Blocks[2].Data = bytes.Repeat([]byte{byte(step)}, InlineValue+1000)
		s.Rollups = []LayerBlock{{Layer: "fc1.bias", Data: []byte("rollup")}}
		if err := w.PutSnapshot("a", s); err != nil {
			t.Fatal(err)
		}
		if err := w.PutScalars("a", []ScalarRow{{Step: step, Values: map[string]float64{"loss": float64(step)}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll is everything a reader sees of the store.
func readAll(t *testing.T, d *DB) map[string]any {
	t.Helper()
	out := map[string]any{}
	runs, err := d.Runs()
	if err != nil {
		t.Fatal(err)
	}
	out["runs"] = runs
	r := runs[0]
	var snaps []*Snapshot
	if err := d.Snapshots(r, AllSteps, Select{Rollups: true, Anchor: true, Attributes: true}, func(s *Snapshot) error {
		snaps = append(snaps, s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out["snapshots"] = snaps
	if out["infos"], err = d.SnapshotInfos(r, Window{10, 30}); err != nil {
		t.Fatal(err)
	}
	var sc []ScalarRow
	if err := d.Scalars(r, AllSteps, func(row ScalarRow) error { sc = append(sc, row); return nil }); err != nil {
		t.Fatal(err)
	}
	out["scalars"] = sc
	_, err = d.Run("c")
	out["missing"] = err.Error()
	_, err = d.Snapshot(r, 15, Select{})
	out["missing step"] = err.Error()
	return out
}

func TestReadThroughWriter(t *testing.T) {
	for _, long := range []bool{false, true} {
		dir := t.TempDir()
		if long { // too long for a socket path: an abstract socket
			dir = filepath.Join(dir, strings.Repeat("d", 120))
		}
		w, err := Open(dir, Options{Log: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		fillStore(t, w, 0, 10, 20)
		st, err := os.Lstat(filepath.Join(dir, SocketName))
		if err != nil {
			t.Fatal(err)
		}
		if long != st.Mode().IsRegular() || !long && st.Mode().Perm() != 0o600 {
			t.Fatalf("long path %v: %s is %v", long, SocketName, st.Mode())
		}
		rd, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
		if err != nil || !rd.Remote() {
			t.Fatalf("reader beside a writer: %v", err)
		}
		live := readAll(t, rd)
		if err := rd.CreateRun(testRun("x")); !errors.Is(err, errRemoteWrite) {
			t.Fatalf("write through a reader: %v", err)
		}
		if err := rd.PutSnapshot("a", snap(99, "fc1.bias")); !errors.Is(err, errRemoteWrite) {
			t.Fatalf("snapshot through a reader: %v", err)
		}
		// A reader that stops mid-scan closes its connection; the writer
		// goes on, and new snapshots are seen once committed.
		stop := errors.New("stop")
		if err := rd.Snapshots(mustRun(t, rd, "a"), AllSteps, Select{}, func(*Snapshot) error { return stop }); err != stop {
			t.Fatalf("stopped scan: %v", err)
		}
		fillStore(t, w, 30)
		if steps, err := rd.Steps(mustRun(t, rd, "a")); err != nil || len(steps) != 4 {
			t.Fatalf("steps after a new snapshot: %v %v", steps, err)
		}
		rd.Close()
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(dir, SocketName)); !os.IsNotExist(err) {
			t.Fatalf("after close: %s: %v", SocketName, err)
		}
		local, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
		if err != nil || local.Remote() {
			t.Fatal(err)
		}
		after := readAll(t, local)
		local.Close()
		live["snapshots"] = append(live["snapshots"].([]*Snapshot), after["snapshots"].([]*Snapshot)[3])
		live["scalars"] = append(live["scalars"].([]ScalarRow), after["scalars"].([]ScalarRow)[3])
		live["missing step"] = strings.Replace(live["missing step"].(string), "20)", "20, 30)", 1)
		for k, v := range after {
			if !reflect.DeepEqual(live[k], v) {
				t.Errorf("long path %v: %s through the writer:\n%v\nafter it closed:\n%v", long, k, live[k], v)
			}
		}
	}
}

// A stale socket (a killed writer's) is not connected to: the reader is
// told the store is unclean or reads it, and the next writer replaces it.
func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	fillStore(t, w, 0)
	w.Close()
	if err := os.WriteFile(filepath.Join(dir, SocketName), []byte("@gvdb-stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rd, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
	if err != nil || rd.Remote() {
		t.Fatalf("reader beside a stale socket: %v", err)
	}
	rd.Close()
	w, err = Open(dir, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(dir, SocketName)); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("writer's socket: %v", err)
	}
	w.Close()
}

// A run marked running shows as running to the writer and to readers
// through it, and as killed once the writer is gone.
func TestLiveStatus(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	r := testRun("a")
	r.Status = StatusRunning
	if err := w.CreateRun(r); err != nil {
		t.Fatal(err)
	}
	rd, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if got, mine := mustRun(t, rd, "a").ShownStatus(), mustRun(t, w, "a").ShownStatus(); got != StatusRunning || mine != StatusRunning {
		t.Fatalf("through the writer: %s; in the writer: %s", got, mine)
	}
	rd.Close()
	w.Close()
	rd, err = Open(dir, Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if got := mustRun(t, rd, "a").ShownStatus(); got != StatusKilled {
		t.Fatalf("after the writer: %s", got)
	}
}

// A reader that goes away (its connection closed, as when its process is
// killed) ends the writer's work for it, whether the writer is streaming
// a scan the reader had stopped reading, part-way through one, or waiting
// for its next request; the writer serves the next reader as before.
func TestReaderGoesAway(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.CreateRun(testRun("a")); err != nil {
		t.Fatal(err)
	}
	// 40 blocks of 60 KiB: carried by a scan, about 2.4 MB, more than the
	// socket and the writer's buffers hold.
	for step := int64(0); step < 40; step++ {
		s := snap(step, "fc1.weight")
		s.Blocks[0].Data = bytes.Repeat([]byte{byte(step)}, 60<<10)
		if err := w.PutSnapshot("a", s); err != nil {
			t.Fatal(err)
		}
	}
	addr, ok := writerAddress(dir)
	if !ok {
		t.Fatal("no writer socket")
	}
	gone := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); w.Readers() != 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the writer still serves %d readers 3 s after the reader left", what, w.Readers())
			}
		}
	}
	for _, c := range []struct {
		what string
		read int  // bytes of a whole-store scan read before leaving
		idle bool // a get answered, then no request
	}{{"scan not read", 0, false}, {"scan read in part", 300 << 10, false}, {"between requests", 0, true}} {
		conn, err := (&remoteStore{addr: addr}).dial()
		if err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriter(conn)
		if c.idle {
			bw.WriteByte('G')
			writeField(bw, runKey("a"))
		} else {
			bw.WriteByte('I')
			writeField(bw, nil)
			writeField(bw, nil)
			writeUvarint(bw, InlineValue)
		}
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		n := c.read
		if c.idle {
			n = 1
		}
		if _, err := io.ReadFull(conn, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(3 * time.Second); w.Readers() != 1; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the writer serves %d readers, want 1", c.what, w.Readers())
			}
		}
		conn.Close()
		gone(c.what)
	}
	rd, err := Open(dir, Options{ReadOnly: true, Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if steps, err := rd.Steps(mustRun(t, rd, "a")); err != nil || len(steps) != 40 {
		t.Fatalf("the next reader: %d steps, %v", len(steps), err)
	}
}
