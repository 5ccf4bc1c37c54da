package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"gvdb/trainer"
)

func TestTrain(t *testing.T) {
	dir := t.TempDir()
	args := []string{"train", "--db", dir, "--run", "tiny", "--model", "mlp", "--hidden", "16", "--steps", "20",
		"--batch", "32", "--snapshot-every", "10", "--snapshot-examples", "48", "--eval-examples", "500"}
	_, errs, code := gvdb(t, args...)
	if code != exitOK || !strings.Contains(errs, "trained tiny: 20 steps") || !strings.Contains(errs, "3 snapshots") {
		t.Fatalf("train: code %d, %q", code, errs)
	}
	if _, errs, code := gvdb(t, args...); code != exitError || !strings.Contains(errs, "--overwrite") {
		t.Fatalf("second train without --overwrite: code %d, %q", code, errs)
	}
	if _, errs, code := gvdb(t, append(args, "--overwrite", "--encoding", "bfloat16")...); code != exitOK {
		t.Fatalf("train --overwrite: code %d, %q", code, errs)
	}
	out, _, _ := gvdb(t, "inspect", "--db", dir, "--run", "tiny", "--step", "10", "--format", "csv")
	if !strings.Contains(out, "fc1.weight,factored,bfloat16,48,1x784x16,12544,") {
		t.Fatalf("inspect after train: %q", out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--db", dir}, "--run is required"},
		{[]string{"train", "--db", dir, "--run", "x", "--model", "rnn"}, "unknown --model"},
		{[]string{"train", "--db", dir, "--run", "x", "--data", "cifar"}, "unknown --data"},
		{[]string{"train", "--db", dir, "--run", "x", "--hidden", "12,abc"}, "hidden width"},
		{[]string{"train", "--db", dir, "--run", "x", "--lr", "-1"}, "lr must be positive"},
		{[]string{"train", "--db", dir, "--run", "x", "--encoding", "fp8"}, "unknown encoding"},
		{[]string{"train", "--db", dir, "--run", "x", "--model", "cnn", "--data", "rf"}, "needs image data"},
	} {
		if _, errs, code := gvdb(t, c.args...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v: code %d, %q (want %q)", c.args, code, errs, c.want)
		}
	}
}

// TestTrainInterrupted cancels a run mid-way, as Ctrl-C does: the run is
// kept, marked interrupted, with the snapshots taken so far.
func TestTrainInterrupted(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second) // MNIST loads in about 1 s
	defer cancel()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code := m.Exit(m.Run(ctx, []string{"train", "--db", dir, "--run", "long", "--hidden", "8", "--steps", "1000000",
		"--batch", "16", "--snapshot-every", "20", "--snapshot-examples", "32", "--eval-examples", "100"}))
	if code != exitError || !strings.Contains(errb.String(), "interrupted after") {
		t.Fatalf("interrupted train: exit %d, %q", code, errb.String())
	}
	csv, _, _ := gvdb(t, "runs", "--db", dir, "--format", "csv")
	if !strings.Contains(csv, "long,mlp,mnist,interrupted,") {
		t.Fatalf("run not marked interrupted:\n%s", csv)
	}
	steps, _, _ := gvdb(t, "query", "--db", dir, "--format", "csv", "SELECT examples FROM 'long'")
	if strings.Count(steps, "\n") < 2 {
		t.Fatalf("no snapshots kept:\n%s", steps)
	}
}

// TestModelTable: the models gvdb train offers are the trainer's model
// table, row for row: its -h lists each with its doc line and default
// widths, --model's help names them all, and each one trains.
func TestModelTable(t *testing.T) {
	help, _, _ := gvdb(t, "train", "-h")
	models := regexp.MustCompile(`(?m)^  (\w+) +(.*); --hidden: .* \(default (.*)\)$`).FindAllStringSubmatch(help, -1)
	if len(models) != len(trainer.Models) {
		t.Fatalf("train -h lists %d models, the table has %d:\n%s", len(models), len(trainer.Models), help)
	}
	for i, md := range trainer.Models {
		if models[i][1] != md.Name || models[i][2] != md.Doc {
			t.Errorf("train -h model %d: %q, %q; table: %q, %q", i, models[i][1], models[i][2], md.Name, md.Doc)
		}
		if !strings.Contains(help, "model: "+strings.Join(trainer.ModelNames(), ", ")) {
			t.Errorf("--model's help does not list the table's models")
		}
	}
	dir := t.TempDir()
	for _, md := range trainer.Models {
		args := []string{"train", "--db", dir, "--run", md.Name, "--model", md.Name, "--steps", "2", "--batch", "8",
			"--snapshot-every", "2", "--snapshot-examples", "8", "--data-size", "64", "--eval-examples", "16"}
		if md.Name == "mlp" {
			args = append(args, "--hidden", "8")
		}
		if md.Name == "cnn" {
			args = append(args, "--hidden", "2,2,4")
		}
		if _, errs, code := gvdb(t, args...); code != exitOK {
			t.Errorf("train --model %s: code %d, %s", md.Name, code, errs)
		}
	}
}

// TestTrainServe: train --serve serves the store over HTTP while it
// trains and stops serving when training ends; a non-loopback address
// without a token is refused before anything is trained.
func TestTrainServe(t *testing.T) {
	dir := t.TempDir()
	args := []string{"train", "--db", dir, "--run", "s", "--data", "rf", "--data-size", "64", "--model", "mlp", "--hidden", "4",
		"--batch", "8", "--steps", "4", "--snapshot-every", "2", "--snapshot-examples", "8", "--eval-examples", "16"}
	_, errs, code := gvdb(t, append(args, "--serve", "127.0.0.1:0")...)
	if code != exitOK || !strings.Contains(errs, "serving "+dir+" at http://127.0.0.1:") {
		t.Fatalf("train --serve: code %d, %s", code, errs)
	}
	t.Setenv("GVDB_TOKEN", "")
	_, errs, code = gvdb(t, append(args, "--run", "s2", "--serve", "0.0.0.0:0")...)
	if code != exitUsage || !strings.Contains(errs, "token") {
		t.Fatalf("train --serve 0.0.0.0 without a token: code %d, %s", code, errs)
	}
	if out, _, _ := gvdb(t, "runs", "--db", dir, "--format", "csv"); strings.Contains(out, "s2,") {
		t.Errorf("a refused --serve trained anyway:\n%s", out)
	}
}
