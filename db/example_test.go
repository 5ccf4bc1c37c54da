package db_test

import (
	"fmt"
	"io"
	"os"

	"gvdb/db"
)

func Example() {
	dir, _ := os.MkdirTemp("", "gvdb-example-")
	defer os.RemoveAll(dir)
	d, err := db.Open(dir, db.Options{Log: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	run := &db.Run{Name: "mlp", Config: db.Config{Model: "mlp", BatchSize: 128}, Layers: []db.Layer{
		{Name: "fc1.weight", Kind: db.DenseWeight, Shape: []int{784, 128}, Params: 784 * 128},
		{Name: "fc1.bias", Kind: db.Bias, Shape: []int{128}, Params: 128},
	}}
	if err := d.CreateRun(run); err != nil {
		fmt.Println(err)
		return
	}
	// Blocks are opaque to the store (db/codec encodes them).
	for _, step := range []int64{0, 500, 1000} {
		s := &db.Snapshot{Step: step, N: 2, Blocks: []db.LayerBlock{{Layer: "fc1.weight", Data: []byte("...")}}}
		if err := d.PutSnapshot("mlp", s); err != nil {
			fmt.Println(err)
			return
		}
	}
	_ = d.PutScalars("mlp", []db.ScalarRow{{Step: 0, Values: map[string]float64{"loss": 2.3}}})

	// Readers take the run's metadata, read once.
	r, _ := d.Run("mlp")
	steps, _ := d.Steps(r)
	fmt.Println("steps:", steps)
	_ = d.Snapshots(r, db.Window{From: 500, To: 2000}, db.Select{Layers: []string{"fc1.weight"}}, func(s *db.Snapshot) error {
		fmt.Println("snapshot", s.Step, "with", len(s.Blocks), "block")
		return nil
	})
	_, err = d.Run("mpl")
	fmt.Println(err)
	// Output:
	// steps: [0 500 1000]
	// snapshot 500 with 1 block
	// snapshot 1000 with 1 block
	// unknown run "mpl"; did you mean "mlp"? (runs: mlp)
}
