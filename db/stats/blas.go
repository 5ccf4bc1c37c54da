package stats

import (
	"os"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/blas/gonum"
)

// Impl is a complete BLAS implementation (what Gorgonia's Use takes).
type Impl interface {
	blas.Float32
	blas.Float64
	blas.Complex64
	blas.Complex128
}

// BLASName names the BLAS implementation the matrix products use:
// "openblas (FILE)" when OpenBLAS was found and loaded at run time, else
// "gonum" (gonum's pure Go). It loads OpenBLAS if no product has yet.
func BLASName() string {
	if lazy == nil {
		return "gonum"
	}
	if o := lazy.load(); o != nil {
		return "openblas (" + o.file + ")"
	}
	return "gonum"
}

// openBLASFiles are the shared objects tried, in order: Debian's
// libopenblas0 (any of its -pthread, -openmp, -serial variants) installs
// the first.
var openBLASFiles = []string{"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"}

// The matrix products (Dgemm, Sgemm) run in OpenBLAS when its shared
// object can be loaded, without cgo: it is opened through purego's dlopen
// on the first product large enough to use it (not at start-up: opening
// it starts its threads, which a command that multiplies nothing should
// not pay for). GVDB_BLAS=gonum keeps gonum's pure Go; GVDB_BLAS=PATH
// names the shared object to load. Every other routine is gonum's own, and
// results agree with the pure-Go ones to rounding.
func init() {
	impl = gonum.Implementation{}
	choice := os.Getenv("GVDB_BLAS")
	if choice == "gonum" {
		return
	}
	files := openBLASFiles
	if choice != "" {
		files = []string{choice}
	}
	lazy = &lazyBLAS{files: files}
	impl = lazy
	blas64.Use(lazy)
	blas32.Use(lazy)
}

// serial counts the callers inside SerialBLAS; threads is OpenBLAS's
// thread count before the first of them.
var (
	serialMu sync.Mutex
	serial   int
	threads  int32
)

// SerialBLAS makes OpenBLAS run each product on one thread until the
// returned function is called, for a caller that runs products on
// several goroutines itself: OpenBLAS's own threads would contend with
// them (measured: a query's block path on 2 workers takes 0.65 s with
// one OpenBLAS thread each, 1.14 s with two). Calls may overlap; the
// thread count comes back when the last one ends. A no-op on gonum.
func SerialBLAS() (restore func()) {
	if lazy == nil {
		return func() {}
	}
	serialMu.Lock()
	serial++
	if serial == 1 {
		lazy.serialize()
	}
	serialMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			serialMu.Lock()
			serial--
			if serial == 0 {
				lazy.restore()
			}
			serialMu.Unlock()
		})
	}
}

// serialize sets OpenBLAS to one thread, if it is loaded (load does it
// otherwise); serialMu is held.
func (l *lazyBLAS) serialize() {
	if o := l.o; o != nil && o.setThreads != nil {
		threads = o.getThreads()
		o.setThreads(1)
	}
}

// restore sets OpenBLAS's thread count back; serialMu is held.
func (l *lazyBLAS) restore() {
	if o := l.o; o != nil && o.setThreads != nil && threads > 0 {
		o.setThreads(threads)
	}
}

// lazy is the BLAS that loads OpenBLAS on first use (nil with
// GVDB_BLAS=gonum).
var lazy *lazyBLAS

// lazyBLAS is gonum's BLAS whose large products go to OpenBLAS, loaded
// on the first of them.
type lazyBLAS struct {
	gonum.Implementation
	files []string
	once  sync.Once
	o     *openBLAS // set under serialMu
}

// load opens OpenBLAS once; nil when it cannot. Inside SerialBLAS it
// starts on one thread.
func (l *lazyBLAS) load() *openBLAS {
	l.once.Do(func() {
		for _, f := range l.files {
			if o, ok := loadOpenBLAS(f); ok {
				o.file = f
				serialMu.Lock()
				l.o = o
				if serial > 0 {
					l.serialize()
				}
				serialMu.Unlock()
				return
			}
		}
	})
	return l.o
}

// large returns OpenBLAS for an m×k by k×n product large enough for it
// (loading it), nil for gonum's.
func (l *lazyBLAS) large(m, n, k int) *openBLAS {
	if m*n*k < smallGemm {
		return nil
	}
	return l.load()
}

// Dgemm is OpenBLAS's for large products (see openBLAS.Dgemm), else gonum's.
func (l *lazyBLAS) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if o := l.large(m, n, k); o != nil {
		o.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	} else {
		l.Implementation.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	}
}

// Sgemm is Dgemm's float32 twin.
func (l *lazyBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if o := l.large(m, n, k); o != nil {
		o.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	} else {
		l.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	}
}

var impl Impl

// Implementation returns the BLAS implementation the statistics use, so
// that the CLI can hand the same one to the trainer.
func Implementation() Impl { return impl }

// cblas constants.
const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

type openBLAS struct {
	gonum.Implementation
	file string
	// setThreads and getThreads are openblas_set_num_threads and
	// openblas_get_num_threads (nil where the library lacks them).
	setThreads func(n int32)
	getThreads func() int32
	dgemm      func(order, ta, tb, m, n, k int32, alpha float64, a unsafe.Pointer, lda int32, b unsafe.Pointer, ldb int32, beta float64, c unsafe.Pointer, ldc int32)
	sgemm      func(order, ta, tb, m, n, k int32, alpha float32, a unsafe.Pointer, lda int32, b unsafe.Pointer, ldb int32, beta float32, c unsafe.Pointer, ldc int32)
}

var loadMu sync.Mutex

// loadOpenBLAS opens file and binds its cblas_dgemm and cblas_sgemm.
func loadOpenBLAS(file string) (o *openBLAS, ok bool) {
	loadMu.Lock()
	defer loadMu.Unlock()
	defer func() {
		if recover() != nil { // a symbol purego cannot bind
			o, ok = nil, false
		}
	}()
	lib, err := purego.Dlopen(file, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, false
	}
	for _, sym := range []string{"cblas_dgemm", "cblas_sgemm"} {
		if _, err := purego.Dlsym(lib, sym); err != nil {
			return nil, false
		}
	}
	o = &openBLAS{}
	purego.RegisterLibFunc(&o.dgemm, lib, "cblas_dgemm")
	purego.RegisterLibFunc(&o.sgemm, lib, "cblas_sgemm")
	if _, err := purego.Dlsym(lib, "openblas_set_num_threads"); err == nil {
		if _, err := purego.Dlsym(lib, "openblas_get_num_threads"); err == nil {
			purego.RegisterLibFunc(&o.setThreads, lib, "openblas_set_num_threads")
			purego.RegisterLibFunc(&o.getThreads, lib, "openblas_get_num_threads")
		}
	}
	return o, true
}

func trans(t blas.Transpose) int32 {
	if t == blas.NoTrans {
		return cblasNoTrans
	}
	return cblasTrans
}

// smallGemm is the size (m·n·k) under which gonum's own product is at
// least as fast as a call into OpenBLAS.
const smallGemm = 4096

// Dgemm calls cblas_dgemm; small and degenerate shapes, and arguments
// gonum would reject, go to gonum (which checks them and panics alike).
func (o *openBLAS) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if m*n*k < smallGemm || len(a) == 0 || len(b) == 0 || len(c) == 0 || !gemmOK(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc) {
		o.Implementation.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	o.dgemm(cblasRowMajor, trans(tA), trans(tB), int32(m), int32(n), int32(k), alpha, unsafe.Pointer(&a[0]), int32(lda),
		unsafe.Pointer(&b[0]), int32(ldb), beta, unsafe.Pointer(&c[0]), int32(ldc))
}

// Sgemm calls cblas_sgemm, as Dgemm does cblas_dgemm.
func (o *openBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m*n*k < smallGemm || len(a) == 0 || len(b) == 0 || len(c) == 0 || !gemmOK(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc) {
		o.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	o.sgemm(cblasRowMajor, trans(tA), trans(tB), int32(m), int32(n), int32(k), alpha, unsafe.Pointer(&a[0]), int32(lda),
		unsafe.Pointer(&b[0]), int32(ldb), beta, unsafe.Pointer(&c[0]), int32(ldc))
}

// gemmOK checks a row-major product's shapes against its slices, as gonum
// does, so that C never reads or writes outside them; every dimension must
// fit a 32-bit blasint.
func gemmOK(tA, tB blas.Transpose, m, n, k, la, lda, lb, ldb, lc, ldc int) bool {
	const max32 = 1<<31 - 1
	if m <= 0 || n <= 0 || k <= 0 || m > max32 || n > max32 || k > max32 || lda > max32 || ldb > max32 || ldc > max32 {
		return false
	}
	rowsA, colsA := m, k
	if tA != blas.NoTrans {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if tB != blas.NoTrans {
		rowsB, colsB = n, k
	}
	return lda >= max(1, colsA) && ldb >= max(1, colsB) && ldc >= max(1, n) &&
		la >= lda*(rowsA-1)+colsA && lb >= ldb*(rowsB-1)+colsB && lc >= ldc*(m-1)+n
}
