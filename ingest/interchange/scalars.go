package interchange

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strconv"
)

// ScalarLine is one line of scalars.jsonl.
type ScalarLine struct {
	Line   int
	Step   int64
	Values map[string]float64
}

// ReadScalars reads the lines of scalars.jsonl from byte offset off (line
// is the number of lines before it), returning them and the offset after
// the last line read. A line is complete when it ends with a newline. The
// last line without one is left for a later call while the writer may
// still be appending (final false: import --follow before DONE) and is an
// error once the writer has finished (final: DONE exists, or a plain
// import), so that no scalar is dropped silently. A line over
// MaxScalarLine is an error either way. A missing file has no scalars.
func ReadScalars(dir string, off int64, line int, final bool) ([]ScalarLine, int64, error) {
	f, _, err := openFile(dir, "scalars.jsonl", "scalars.jsonl")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, off, nil
	}
	if err != nil {
		return nil, off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off, err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var out []ScalarLine
	for {
		raw, err := readLine(br, MaxScalarLine)
		switch {
		case errors.Is(err, errLineTooLong):
			return out, off, fmt.Errorf("scalars.jsonl line %d: longer than %d bytes (1 MiB)", line+1, MaxScalarLine)
		case err == io.EOF && len(bytes.TrimSpace(raw)) == 0:
			if final {
				off += int64(len(raw)) // only blanks after the last line
			}
			return out, off, nil
		case err == io.EOF && !final:
			return out, off, nil // a line still being written waits
		case err == io.EOF:
			return out, off, fmt.Errorf("scalars.jsonl line %d: the file ends inside the line (no newline) after the writer finished", line+1)
		case err != nil:
			return out, off, fmt.Errorf("scalars.jsonl: %w", err)
		}
		off += int64(len(raw))
		line++
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		sl, err := parseScalarLine(raw, line)
		if err != nil {
			return out, off, err
		}
		out = append(out, sl)
	}
}

// errLineTooLong is readLine's error for a line over its limit.
var errLineTooLong = errors.New("line too long")

// readLine reads up to and including the next newline, at most max bytes;
// at the end of the file it returns what is left with io.EOF.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// parseScalarLine parses one line: a JSON object with an integer "step"
// (>= 0) and scalars, each a number or null (NaN), every key once.
func parseScalarLine(raw []byte, line int) (ScalarLine, error) {
	fail := func(format string, args ...any) (ScalarLine, error) {
		return ScalarLine{}, fmt.Errorf("scalars.jsonl line %d: %s", line, fmt.Sprintf(format, args...))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fail("not a JSON object")
	}
	sl := ScalarLine{Line: line, Values: map[string]float64{}}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fail("%v", err)
		}
		k, _ := t.(string) // an object's keys are strings
		if seen[k] {
			return fail("key %q appears twice", k)
		}
		seen[k] = true
		if t, err = dec.Token(); err != nil {
			return fail("%v", err)
		}
		v := math.NaN()
		switch x := t.(type) {
		case json.Number:
			if v, err = strconv.ParseFloat(string(x), 64); err != nil {
				return fail("%q: %s is not a float64", k, x)
			}
		case nil:
			if k == "step" {
				return fail(`"step" must be a non-negative integer`)
			}
		default:
			if k == "step" {
				return fail(`"step" must be a non-negative integer`)
			}
			return fail("scalar %q is not a number", k)
		}
		if k == "step" {
			if v < 0 || v != math.Trunc(v) || v > 1<<53 {
				return fail(`"step" must be a non-negative integer`)
			}
			sl.Step = int64(v)
			continue
		}
		if Reserved(k) || !validName(k) {
			return fail("scalar name %q is reserved or not a name (letters, digits, _)", k)
		}
		sl.Values[k] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return fail("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("data after the JSON object")
	}
	if !seen["step"] {
		return fail(`"step" must be a non-negative integer`)
	}
	return sl, nil
}
