package interchange

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// gvdb reads and writes .npy files itself (format versions 1.0 to 3.0,
// little-endian, C order, the dtypes below): a hostile header is an
// error, never a panic, and no allocation exceeds what the file holds.

// npyArray is a .npy file's header and raw values.
type npyArray struct {
	Dtype string // NumPy's type string: "<f4", "<f8", "<i8", "<u8", "|b1"
	Shape []int
	data  []byte // the values, little-endian, C order
}

// maxNpyHeader bounds a header (NumPy's own are under 4 KiB).
const maxNpyHeader = 1 << 20

var (
	npyDescr   = regexp.MustCompile(`['"]descr['"]\s*:\s*['"]([^'"]*)['"]`)
	npyFortran = regexp.MustCompile(`['"]fortran_order['"]\s*:\s*(True|False)`)
	npyShape   = regexp.MustCompile(`['"]shape['"]\s*:\s*\(([^)]*)\)`)
)

// npyWidth is the byte width of each dtype gvdb reads.
var npyWidth = map[string]int{"<f4": 4, "<f8": 8, "<i8": 8, "<u8": 8, "|b1": 1, "<b1": 1}

// readNpy reads the .npy file dir/name through the resolver (openFile:
// field, the manifest field that names it, is named in its errors),
// checks it is C-ordered, that its values fill the rest of the file
// exactly and, when shape is given, its shape, then hands it to read.
func readNpy(dir, field, name string, shape []int, read func(*npyArray) error) error {
	f, size, err := openFile(dir, field, name)
	if err != nil {
		return err
	}
	defer f.Close()
	base := name
	a, err := parseNpy(f, size)
	if err != nil {
		return fmt.Errorf("%s: %w", base, err)
	}
	if shape != nil && !slices.Equal(a.Shape, shape) {
		return fmt.Errorf("%s: shape %v, want %v", base, a.Shape, shape)
	}
	if err := read(a); err != nil {
		return fmt.Errorf("%s: %w", base, err)
	}
	return nil
}

// parseNpy reads a .npy stream of size bytes.
func parseNpy(r io.Reader, size int64) (*npyArray, error) {
	var pre [10]byte
	if _, err := io.ReadFull(r, pre[:8]); err != nil {
		return nil, errors.New("not a .npy file (too short)")
	}
	if !bytes.Equal(pre[:6], []byte("\x93NUMPY")) {
		return nil, errors.New("not a .npy file (no \\x93NUMPY magic)")
	}
	var hlen, off int64
	switch pre[6] {
	case 1:
		if _, err := io.ReadFull(r, pre[8:10]); err != nil {
			return nil, errors.New("truncated .npy header")
		}
		hlen, off = int64(binary.LittleEndian.Uint16(pre[8:10])), 10
	case 2, 3:
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, errors.New("truncated .npy header")
		}
		hlen, off = int64(binary.LittleEndian.Uint32(l[:])), 12
	default:
		return nil, fmt.Errorf(".npy format version %d.%d (gvdb reads 1.0 to 3.0)", pre[6], pre[7])
	}
	if hlen > maxNpyHeader || off+hlen > size {
		return nil, fmt.Errorf(".npy header of %d bytes does not fit the file", hlen)
	}
	hb := make([]byte, hlen)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, errors.New("truncated .npy header")
	}
	h := string(hb)
	a := &npyArray{}
	m := npyDescr.FindStringSubmatch(h)
	if m == nil {
		return nil, fmt.Errorf(".npy header without a simple 'descr' (structured dtypes are not read): %.80q", h)
	}
	a.Dtype = m[1]
	width, ok := npyWidth[a.Dtype]
	if !ok {
		return nil, fmt.Errorf("dtype %s (gvdb reads <f4, <f8, <i8, <u8 and |b1; big-endian is not read)", a.Dtype)
	}
	if a.Dtype == "<b1" {
		a.Dtype = "|b1"
	}
	m = npyFortran.FindStringSubmatch(h)
	if m == nil {
		return nil, errors.New(".npy header without 'fortran_order'")
	}
	if m[1] == "True" {
		return nil, errors.New("Fortran order; write C order (np.ascontiguousarray)")
	}
	m = npyShape.FindStringSubmatch(h)
	if m == nil {
		return nil, errors.New(".npy header without a 'shape' tuple")
	}
	elems := int64(1)
	for _, d := range strings.Split(m[1], ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		k, err := strconv.ParseInt(strings.TrimSuffix(d, "L"), 10, 64)
		if err != nil || k < 0 || k > math.MaxInt32 {
			return nil, fmt.Errorf(".npy shape (%s): %q is not a dimension", m[1], d)
		}
		a.Shape = append(a.Shape, int(k))
		if k > 0 && elems > size/k {
			return nil, fmt.Errorf("shape %v does not fit the file (%d bytes)", a.Shape, size)
		}
		elems *= k
	}
	data := size - off - hlen
	if want := elems * int64(width); data != want {
		return nil, fmt.Errorf("shape %v of %s needs %d bytes of values, the file has %d", a.Shape, a.Dtype, want, data)
	}
	a.data = make([]byte, data)
	if _, err := io.ReadFull(r, a.data); err != nil {
		return nil, fmt.Errorf("reading values: %w", err)
	}
	return a, nil
}

// Read converts the values into dst: *[]float32 for <f4, *[]float64 for
// <f8, *[]int64 for <i8, *[]uint64 for <u8, *[]bool for |b1.
func (a *npyArray) Read(dst any) error {
	d := a.data
	bad := func(want string) error { return fmt.Errorf("dtype %s, want %s", a.Dtype, want) }
	switch p := dst.(type) {
	case *[]float32:
		if a.Dtype != "<f4" {
			return bad("<f4")
		}
		v := make([]float32, len(d)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
		*p = v
	case *[]float64:
		if a.Dtype != "<f8" {
			return bad("<f8")
		}
		v := make([]float64, len(d)/8)
		for i := range v {
			v[i] = math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:]))
		}
		*p = v
	case *[]int64:
		if a.Dtype != "<i8" {
			return bad("<i8")
		}
		v := make([]int64, len(d)/8)
		for i := range v {
			v[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
		}
		*p = v
	case *[]uint64:
		if a.Dtype != "<u8" {
			return bad("<u8")
		}
		v := make([]uint64, len(d)/8)
		for i := range v {
			v[i] = binary.LittleEndian.Uint64(d[8*i:])
		}
		*p = v
	case *[]bool:
		if a.Dtype != "|b1" {
			return bad("|b1")
		}
		v := make([]bool, len(d))
		for i, b := range d {
			if b > 1 {
				return fmt.Errorf("bool value %d at %d (want 0 or 1)", b, i)
			}
			v[i] = b == 1
		}
		*p = v
	default:
		return fmt.Errorf("cannot read .npy values into %T", dst)
	}
	return nil
}
