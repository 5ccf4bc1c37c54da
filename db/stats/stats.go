package stats

import (
	"errors"
	"math"
)

// ErrNoInner is returned by the tests that need Moments.Inner when it was
// not computed (or the moments are pooled).
var ErrNoInner = errors.New("per-example inner products not computed (Need.Inner; no pooled form)")

// ErrNoCoords is returned by per-coordinate statistics when Moments.SumSq
// was not computed.
var ErrNoCoords = errors.New("per-coordinate moments not computed (Need.Coords)")

func nan() float64 { return math.NaN() }

// MuSq returns |μ|², the squared norm of the mean gradient.
func (m *Moments) MuSq() float64 {
	if m.NonFinite || m.N == 0 {
		return nan()
	}
	return m.SumNormSq / float64(m.N) / float64(m.N)
}

// TotalVar returns S = (1/N) Σ_i |g_i − μ|², the total per-example
// variance.
func (m *Moments) TotalVar() float64 {
	if m.NonFinite || m.N == 0 {
		return nan()
	}
	return max(m.SumSqNorm/float64(m.N)-m.MuSq(), 0)
}

// Variance returns the variance of the SG-B mini-batch mean, averaged over
// coordinates: S / (B·D). It is the paper's est_var in expectation.
func (m *Moments) Variance(b float64) float64 {
	return m.TotalVar() / (b * float64(m.D))
}

// GNS returns the gradient noise scale B_simple = S / |μ|² (McCandlish et
// al. 2018).
func (m *Moments) GNS() float64 { return m.TotalVar() / m.MuSq() }

// Norm returns |μ|, the norm of the mean gradient.
func (m *Moments) Norm() float64 { return math.Sqrt(m.MuSq()) }

// ExampleNorm returns (1/N) Σ_i |g_i|.
func (m *Moments) ExampleNorm() float64 {
	if m.NonFinite || m.N == 0 {
		return nan()
	}
	return m.SumNorm / float64(m.N)
}

// NVar returns the normalized gradient variance of SG-B, per coordinate:
// (1/D) Σ_j v_j / (μ_j² + v_j), v_j = s²_j / B; coordinates with
// μ_j² + v_j = 0 contribute 0 and still count in D.
func (m *Moments) NVar(b float64) (float64, error) {
	if !m.hasCoords() {
		return nan(), ErrNoCoords
	}
	if m.NonFinite || m.N == 0 {
		return nan(), nil
	}
	inv, invB := 1/float64(m.N), 1/b
	sq := m.SumSq[:len(m.Sum)]
	sum := 0.0
	for j, s := range m.Sum {
		mu := s * inv
		v := max(sq[j]*inv-mu*mu, 0) * invB
		if den := mu*mu + v; den > 0 {
			sum += v / den
		}
	}
	for _, r := range m.rounded {
		sum += r.vec.nvarSum(b)
	}
	return sum / float64(m.D), nil
}

// SNR returns (1/D) Σ_j ln((μ_j² + v_j) / v_j) over the coordinates with
// v_j > 0, v_j = s²_j / B.
func (m *Moments) SNR(b float64) (float64, error) {
	if !m.hasCoords() {
		return nan(), ErrNoCoords
	}
	if m.NonFinite || m.N == 0 {
		return nan(), nil
	}
	n := float64(m.N)
	sum := 0.0
	for j, s := range m.Sum {
		mu := s / n
		if v := max(m.SumSq[j]/n-mu*mu, 0) / b; v > 0 {
			sum += math.Log((mu*mu + v) / v)
		}
	}
	for _, r := range m.rounded {
		sum += r.vec.snrSum(b)
	}
	return sum / float64(m.D), nil
}

// NormTest returns the norm test for batch size B (Bollapragada et al.
// 2018): sqrt(Σ_i |g_i − μ|² / ((N−1) · B · |μ|²)), the sample estimate
// of tr Σ / (B |μ|²) under a square root. With B = N it is Cockpit's
// NormTest.
func (m *Moments) NormTest(b float64) float64 {
	if m.N < 2 {
		return nan()
	}
	n := float64(m.N)
	return math.Sqrt(n * m.TotalVar() / ((n - 1) * b * m.MuSq()))
}

// innerReady says whether the inner-product tests can be computed: an
// error without per-example inner products, NaN (ok false) for fewer than
// two examples or non-finite gradients.
func (m *Moments) innerReady() (bool, error) {
	if m.Inner == nil {
		return false, ErrNoInner
	}
	return m.N >= 2 && !m.NonFinite, nil
}

// InnerTest returns Cockpit's inner-product test for batch size B:
// sqrt(Var_i(g_i·μ) / (B |μ|⁴)), the variance with 1/(N−1). With B = N it
// is Cockpit's InnerTest.
func (m *Moments) InnerTest(b float64) (float64, error) {
	if ok, err := m.innerReady(); !ok {
		return nan(), err
	}
	mu2 := m.MuSq()
	s := 0.0
	for _, x := range m.Inner {
		s += (x - mu2) * (x - mu2)
	}
	return math.Sqrt(s / float64(m.N-1) / (b * mu2 * mu2)), nil
}

// OrthoTest returns Cockpit's orthogonality test for batch size B:
// sqrt(Σ_i |g_i − (g_i·μ/|μ|²) μ|² / ((N−1) · B · |μ|²)). With B = N it is
// Cockpit's OrthoTest.
func (m *Moments) OrthoTest(b float64) (float64, error) {
	if ok, err := m.innerReady(); !ok {
		return nan(), err
	}
	mu2 := m.MuSq()
	s := 0.0
	for i, x := range m.Inner {
		s += max(m.SqNorms[i]-x*x/mu2, 0)
	}
	return math.Sqrt(s / (float64(m.N-1) * b * mu2)), nil
}
