package trainer

import (
	"testing"
)

// BenchmarkStep compares, for the paper's MLP 784-1024-1024-10 at batch
// 128: a plain SGD step; the same step that also captures the batch's
// per-example gradient factors from its backward pass; and batch-size-1
// backward passes for the same 128 per-example gradients.
func BenchmarkStep(b *testing.B) {
	data := fakeImages(1024, 9)
	spec := Spec{Kind: "mlp", Hidden: DefaultHidden("mlp")}
	const batch = 128
	net, err := NewNet(spec, data, batch, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer net.Close()
	idx := make([]int, batch)
	for i := range idx {
		idx[i] = i
	}
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := net.Step(data, idx, 0.01, 0.5, 5e-4); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("capture", func(b *testing.B) {
		for b.Loop() {
			if _, _, _, err := net.StepCapture(data, idx, 0.01, 0.5, 5e-4); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("batch-size-1", func(b *testing.B) {
		one, err := NewNet(spec, data, 1, 1)
		if err != nil {
			b.Fatal(err)
		}
		defer one.Close()
		one.CopyParams(net)
		for b.Loop() {
			for _, i := range idx {
				if err := one.run(data, []int{i}); err != nil {
					b.Fatal(err)
				}
				for _, l := range one.layers {
					gw, gb, _ := one.grads(l)
					_, _ = gw[0], gb[0] // the per-example gradient of i
				}
				if err := one.zeroGrads(); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
