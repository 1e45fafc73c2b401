package main

import (
	"strings"
	"testing"
)

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkInfer/in-process-2         	    9757	    113031 ns/op	    1976 B/op	      33 allocs/op
BenchmarkInfer/unix-socket-2        	    4947	    285516 ns/op	       172.5 added-µs	   20216 B/op	     184 allocs/op
BenchmarkAppend/outbox/appenders=64 	    2000	      9486.5 ns/op
BenchmarkNoProcs 	    10	      7 ns/op
BenchmarkDrainAfterCut-2   	       1	1296735816 ns/op	    137614 backlog-records/s	       570.0 reconnect-ms
BenchmarkNotAResult-2 	 some text
PASS
`
	got, err := parseBench([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"BenchmarkInfer/in-process":                113031,
		"BenchmarkInfer/unix-socket":               285516,
		"BenchmarkAppend/outbox/appenders=64":      9486.5,
		"BenchmarkNoProcs":                         7,
		"BenchmarkInfer/in-process B/op":           1976,
		"BenchmarkInfer/in-process allocs/op":      33,
		"BenchmarkInfer/unix-socket added-µs":      172.5,
		"BenchmarkInfer/unix-socket B/op":          20216,
		"BenchmarkInfer/unix-socket allocs/op":     184,
		"BenchmarkDrainAfterCut":                   1296735816,
		"BenchmarkDrainAfterCut backlog-records/s": 137614,
		"BenchmarkDrainAfterCut reconnect-ms":      570,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, err := parseBench([]byte("FAIL\n")); err == nil || !strings.Contains(err.Error(), "no benchmark results") {
		t.Errorf("no results: err = %v", err)
	}
}

func TestMedianConvert(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{5}, 5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := convert([]float64{2000, 1e6}, "records/s", false); got[0] != 5e5 || got[1] != 1000 {
		t.Errorf("records/s = %v", got)
	}
	if got := convert([]float64{2000}, "µs/op", false); got[0] != 2 {
		t.Errorf("µs/op = %v", got)
	}
	// A metric is in its unit already.
	if got := convert([]float64{137614}, "records/s", true); got[0] != 137614 {
		t.Errorf("records/s metric = %v", got)
	}
	if got := convert([]float64{570}, "ms", true); got[0] != 570 {
		t.Errorf("ms metric = %v", got)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--rounds", "0"}, {"--only", "nope"}, {"--bogus"}} {
		err := run(t.Context(), args, new(strings.Builder))
		if _, ok := err.(usageError); !ok {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

func FuzzParseBench(f *testing.F) {
	f.Add([]byte("BenchmarkX-2 10 7 ns/op\n"))
	f.Add([]byte("BenchmarkX 1 1e309 ns/op\n"))
	f.Add([]byte("BenchmarkX-2 1 5 ns/op 3 x-ms 4\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseBench(b)
		if err == nil && len(got) == 0 {
			t.Fatal("no error and no results")
		}
	})
}

func TestPrintTableTarget(t *testing.T) {
	g := group{name: "cut", rows: []row{
		{label: "reconnect", key: "BenchmarkX reconnect-ms", unit: "ms", target: 2000},
		{label: "drain", key: "BenchmarkX backlog-records/s", unit: "records/s", target: 20000},
	}}
	var out strings.Builder
	printTable(&out, g, map[string][]float64{
		"BenchmarkX reconnect-ms":      {500, 700, 600},
		"BenchmarkX backlog-records/s": {140000, 120000, 130000},
	}, 3)
	for _, want := range []string{
		"reconnect  ms         500.0   600.0   700.0   0.30x  target 2000",
		"drain      records/s  120000  130000  140000  6.50x  target 20000",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
