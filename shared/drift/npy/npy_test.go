package npy_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift/npy"
)

// The files under testdata were written by numpy.save (see the test names).
func TestReadNumPyFiles(t *testing.T) {
	want := []float64{-0.5, -0.25, 0, 0.25, 0.5, 0.75} // arange(6).reshape(3,2)/4 - 0.5
	for _, tc := range []struct {
		file    string
		float32 bool
		err     string
	}{
		{file: "f8_c.npy"},
		{file: "f4_c.npy", float32: true},
		{file: "f8_fortran.npy"},
		{file: "f8_v2.npy"},
		{file: "i8.npy", err: `dtype "<i8"`},
		{file: "f8_be.npy", err: `dtype ">f8"`},
		{file: "f8_1d.npy", err: "1 dimensions, want 2"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a, err := npy.Read(f, 1000)
			if tc.err != "" {
				if !errors.Is(err, npy.ErrFormat) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Read = %v, want ErrFormat mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Rows != 3 || a.Cols != 2 || a.Float32 != tc.float32 || !slices.Equal(a.Data, want) {
				t.Fatalf("got %d×%d float32=%v %v, want 3×2 float32=%v %v", a.Rows, a.Cols, a.Float32, a.Data, tc.float32, want)
			}
			if got := a.Column(1); !slices.Equal(got, []float64{-0.25, 0.25, 0.75}) {
				t.Errorf("Column(1) = %v", got)
			}
		})
	}
}

func TestWriteRead(t *testing.T) {
	for _, f32 := range []bool{false, true} {
		a := &npy.Array{Rows: 2, Cols: 3, Data: []float64{1, 2, 3, 4.5, -1e10, 0}, Float32: f32}
		var b bytes.Buffer
		if err := npy.Write(&b, a); err != nil {
			t.Fatal(err)
		}
		size := 8
		if f32 {
			size = 4
		}
		if hdr := b.Len() - size*len(a.Data); hdr%64 != 0 {
			t.Errorf("data starts at byte %d, not on a 64-byte boundary", hdr)
		}
		got, err := npy.Read(&b, 100)
		if err != nil {
			t.Fatal(err)
		}
		if got.Rows != 2 || got.Cols != 3 || !slices.Equal(got.Data, a.Data) || got.Float32 != f32 {
			t.Fatalf("round trip: %+v, want %+v", got, a)
		}
	}
}

func header(h string) []byte {
	b := []byte("\x93NUMPY\x01\x00")
	h += "\n"
	b = append(b, byte(len(h)), byte(len(h)>>8))
	return append(b, h...)
}

func TestReadErrors(t *testing.T) {
	eight := make([]byte, 8)
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"empty", nil, "magic"},
		{"magic", []byte("\x93NUMPX\x01\x00\x00\x00"), "magic"},
		{"version", []byte("\x93NUMPY\x04\x00\x00\x00"), "version 4.0"},
		{"minor", []byte("\x93NUMPY\x01\x01\x00\x00"), "version 1.1"},
		{"no newline", append([]byte("\x93NUMPY\x01\x00\x02\x00"), "{}"...), "newline"},
		{"short header", []byte("\x93NUMPY\x01\x00\x40\x00{"), "header"},
		{"missing key", header("{'descr': '<f8', 'shape': (1, 1), }"), `lacks "fortran_order"`},
		{"extra key", append(header("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), 'x': 1}"), eight...), `unexpected header key "x"`},
		{"repeated key", header("{'descr': '<f8', 'descr': '<f8'}"), "repeated"},
		{"object", header("{'descr': '|O', 'fortran_order': False, 'shape': (1, 1), }"), `dtype "|O"`},
		{"bad bool", header("{'descr': '<f8', 'fortran_order': false, 'shape': (1, 1), }"), "True or False"},
		{"3d", header("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1), }"), "3 dimensions"},
		{"empty shape", header("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 3), }"), "empty"},
		{"leading zero", header("{'descr': '<f8', 'fortran_order': False, 'shape': (01, 3), }"), "leading zero"},
		{"too big", header("{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }"), "more than"},
		{"short data", append(header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }"), eight...), "ends early"},
		{"trailing data", append(header("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }"), append(eight, 0)...), "continues after"},
		{"garbage after dict", header("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), } x"), "end of the header"},
		{"non-ascii", header("{'descr': '<f8\xff'}"), "ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := npy.Read(bytes.NewReader(tc.in), 1<<20)
			if !errors.Is(err, npy.ErrFormat) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Read = %v, want ErrFormat mentioning %q", err, tc.err)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.npy")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"))
	f.Add(header("{'descr': '<f8', 'fortran_order': False, 'shape': (4000000, 4000000), }"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := npy.Read(bytes.NewReader(b), 1<<16)
		if err != nil {
			if !errors.Is(err, npy.ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		if a.Rows < 1 || a.Cols < 1 || len(a.Data) != a.Rows*a.Cols {
			t.Fatalf("inconsistent array %d×%d with %d values", a.Rows, a.Cols, len(a.Data))
		}
		var w bytes.Buffer
		if err := npy.Write(&w, a); err != nil {
			t.Fatal(err)
		}
		back, err := npy.Read(&w, 1<<16)
		if err != nil {
			t.Fatalf("re-reading what Write wrote: %v", err)
		}
		if !slices.EqualFunc(back.Data, a.Data, func(x, y float64) bool { return x == y || (x != x && y != y) }) {
			t.Fatal("round trip changed the data")
		}
	})
}
