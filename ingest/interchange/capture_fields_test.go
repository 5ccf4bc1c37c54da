package interchange

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gvdb/db"
)

// TestCaptureFields: run.json's "capture" per layer and "ignored", and a
// manifest's "capture" per layer and "passes" (python/gvdb_capture.py
// writes them) are read, checked against the files and each other, kept
// on the run and written back by an export's run.json.
func TestCaptureFields(t *testing.T) {
	dir := t.TempDir()
	c, _ := fuzzSeed(t, dir)
	for i := range c.Layers {
		c.Layers[i].Capture = db.CaptureHook
	}
	c.Layers[len(c.Layers)-1].Capture = db.CaptureGeneric // fc2.bias
	c.Ignored = []string{"head.weight", "pos"}
	r, err := c.Run("r")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.Ignored, ",") != "head.weight,pos" || r.Layers[0].Capture != db.CaptureHook {
		t.Fatalf("run: ignored %v, layers %+v", r.Ignored, r.Layers)
	}
	if back := RunConfigOf(r); strings.Join(back.Ignored, ",") != "head.weight,pos" || back.Layers[0].Capture != db.CaptureHook {
		t.Fatalf("export's run.json: ignored %v, layers %+v", back.Ignored, back.Layers)
	}
	if !r.Imported() {
		t.Fatal("an imported run is not marked imported")
	}
	for _, bad := range []struct {
		edit func(c *RunConfig)
		want string
	}{
		{func(c *RunConfig) { c.Layers[0].Capture = "vmap" }, `capture "vmap"`},
		{func(c *RunConfig) { c.Ignored = []string{"fc1.weight"} }, "also a layer"},
		{func(c *RunConfig) { c.Ignored = []string{"pos", "pos"} }, "listed twice"},
		{func(c *RunConfig) { c.Ignored = []string{"a/b"} }, "ignored parameter name"},
	} {
		cc := *c
		cc.Layers = append([]db.Layer(nil), c.Layers...)
		bad.edit(&cc)
		if _, err := cc.Run("r"); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("run.json: want an error saying %q, got %v", bad.want, err)
		}
	}

	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(capture map[string]string, passes int) {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		for _, l := range m["layers"].([]any) {
			l := l.(map[string]any)
			if v, ok := capture[l["name"].(string)]; ok {
				l["capture"] = v
			}
		}
		m["passes"] = passes
		out, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest(map[string]string{"fc1.weight": "factors", "fc1.bias": "dense", "fc2.bias": "bs1"}, 3)
	if _, _, err := ReadSnapshot(dir, c, r); err != nil {
		t.Fatalf("capture fields: %v", err)
	}
	for _, bad := range []struct {
		capture map[string]string
		passes  int
		want    string
	}{
		{map[string]string{"fc1.weight": "dense"}, 1, `capture "dense" with factors`},
		{map[string]string{"fc1.bias": "factors"}, 1, `capture "factors" without A and Delta`},
		{map[string]string{"fc1.bias": "generic"}, 1, `captured as "generic", but run.json says "hook"`},
		{map[string]string{"fc2.bias": "dense"}, 1, `captured as "dense", but run.json says "generic"`},
		{map[string]string{"fc1.bias": "vmap"}, 1, `capture "vmap", want`},
		{nil, 7, "7 forward passes for 6 examples"},
	} {
		manifest(bad.capture, bad.passes)
		if _, _, err := ReadSnapshot(dir, c, r); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("manifest %v passes %d: want an error saying %q, got %v", bad.capture, bad.passes, bad.want, err)
		}
	}
}
