package drift

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/shared/drift/npy"
)

// Data is a table of feature values, one column per feature: the reference
// data a profile is built from, or a window's raw values for CompareData.
type Data struct {
	rows    int
	columns map[string]*column
	// Ignored lists columns of the file the schema does not name.
	Ignored []string
}

type column struct {
	num []float64 // numerical values; NaN = missing
	cat []string  // categorical labels; "" = missing
}

// NewData returns an empty table.
func NewData() *Data { return &Data{columns: map[string]*column{}} }

// Rows is the number of rows.
func (d *Data) Rows() int { return d.rows }

// SetNumerical sets a column of numbers; NaN and ±Inf are missing values.
// Every column must have the same length.
func (d *Data) SetNumerical(name string, values []float64) error {
	return d.set(name, &column{num: values}, len(values))
}

// SetCategorical sets a column of labels; "" is a missing value.
func (d *Data) SetCategorical(name string, labels []string) error {
	return d.set(name, &column{cat: labels}, len(labels))
}

func (d *Data) set(name string, c *column, n int) error {
	if len(d.columns) > 0 && n != d.rows {
		return fmt.Errorf("%w: column %q has %d rows, the others %d", ErrData, name, n, d.rows)
	}
	d.rows = n
	d.columns[name] = c
	return nil
}

// numbers returns the column's values as numbers (categorical labels that
// are not numbers are an error).
func (d *Data) numbers(name string) ([]float64, error) {
	c, ok := d.columns[name]
	if !ok {
		return nil, fmt.Errorf("%w: no column %q", ErrData, name)
	}
	if c.num != nil || c.cat == nil {
		return c.num, nil
	}
	out := make([]float64, len(c.cat))
	for i, s := range c.cat {
		v, err := parseNumber(s)
		if err != nil {
			return nil, fmt.Errorf("%w: column %q, row %d: %v", ErrData, name, i+1, err)
		}
		out[i] = v
	}
	return out, nil
}

// labels returns the column's values as category labels; numbers become
// their shortest decimal form (3 → "3").
func (d *Data) labels(name string) ([]string, error) {
	c, ok := d.columns[name]
	if !ok {
		return nil, fmt.Errorf("%w: no column %q", ErrData, name)
	}
	if c.cat != nil || c.num == nil {
		return c.cat, nil
	}
	out := make([]string, len(c.num))
	for i, v := range c.num {
		out[i] = codeLabel(v)
	}
	return out, nil
}

// codeLabel is the category label of a numeric code: its shortest decimal
// form, or "" (missing) for NaN and ±Inf.
func codeLabel(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	if v == 0 {
		v = 0 // -0 and 0 are one category
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// missingCell reports whether a CSV cell means "no value".
func missingCell(s string) bool {
	switch strings.ToLower(s) {
	case "", "na", "nan", "null", "none":
		return true
	}
	return false
}

func parseNumber(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if missingCell(s) {
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return v, nil
}

// MaxRows bounds the rows ReadCSV and ReadNPY accept.
const MaxRows = 50_000_000

// ReadCSV reads a CSV table whose first row names the columns. Every
// feature of the schema must be a column; other columns are listed in
// Data.Ignored. Numerical cells must be numbers or empty/NA/NaN/null
// (missing); categorical cells are labels, empty meaning missing.
func ReadCSV(r io.Reader, s *Schema) (*Data, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: CSV is empty (want a header row of feature names)", ErrData)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: CSV header: %w", ErrData, err)
	}
	names := make([]string, len(header))
	index := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := index[h]; dup {
			return nil, fmt.Errorf("%w: CSV column %q appears twice", ErrData, h)
		}
		names[i] = h
		index[h] = i
	}
	kinds := make([]Kind, len(names)) // "" = ignored
	for _, f := range s.Features {
		i, ok := index[f.Name]
		if !ok {
			return nil, fmt.Errorf("%w: CSV has no column %q (columns: %s)", ErrData, f.Name, strings.Join(names, ", "))
		}
		kinds[i] = f.Kind
	}
	d := NewData()
	nums := make([][]float64, len(names))
	cats := make([][]string, len(names))
	for i, k := range kinds {
		if k == "" {
			d.Ignored = append(d.Ignored, names[i])
		}
	}
	for row := 2; ; row++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: CSV: %w", ErrData, err)
		}
		if row-1 > MaxRows {
			return nil, fmt.Errorf("%w: CSV has more than %d rows", ErrData, MaxRows)
		}
		for i, k := range kinds {
			switch k {
			case Numerical:
				v, err := parseNumber(rec[i])
				if err != nil {
					return nil, fmt.Errorf("%w: CSV line %d, column %q: %v", ErrData, row, names[i], err)
				}
				nums[i] = append(nums[i], v)
			case Categorical:
				v := strings.TrimSpace(rec[i])
				if missingCell(v) {
					v = ""
				}
				cats[i] = append(cats[i], v)
			}
		}
	}
	for i, k := range kinds {
		switch k {
		case Numerical:
			err = d.SetNumerical(names[i], orEmpty(nums[i]))
		case Categorical:
			err = d.SetCategorical(names[i], orEmpty(cats[i]))
		}
		if err != nil {
			return nil, err
		}
	}
	if d.rows == 0 {
		return nil, fmt.Errorf("%w: CSV has a header but no rows", ErrData)
	}
	return d, nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ReadNPY reads a 2-D float32 or float64 .npy array whose columns are the
// schema's features, in order. Categorical features hold numeric codes.
func ReadNPY(r io.Reader, s *Schema) (*Data, error) {
	a, err := npy.Read(r, MaxRows*len(s.Features))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrData, err)
	}
	if a.Cols != len(s.Features) {
		return nil, fmt.Errorf("%w: the array has %d columns and the schema %d features (the columns are the features, in order)", ErrData, a.Cols, len(s.Features))
	}
	d := NewData()
	for j, f := range s.Features {
		if err := d.SetNumerical(f.Name, a.Column(j)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// ReadFile reads reference data from a .csv or .npy file (by extension).
func ReadFile(path string, s *Schema) (*Data, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("drift: %w", err)
	}
	defer f.Close()
	var d *Data
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		d, err = ReadCSV(f, s)
	case ".npy":
		d, err = ReadNPY(f, s)
	default:
		return nil, fmt.Errorf("%w: %s: unknown file type %q (want .csv or .npy)", ErrData, path, filepath.Ext(path))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}
