package inventory

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    []Requirement
		canon   string
		wantErr string // substring; "" means success
	}{
		{in: "", canon: ""},
		{in: "   ", canon: ""},
		{
			in: "hw=jetson-orin,region=eu,tier!=canary,gpu",
			want: []Requirement{
				{"hw", OpEqual, "jetson-orin"}, {"region", OpEqual, "eu"},
				{"tier", OpNotEqual, "canary"}, {"gpu", OpExists, ""},
			},
			canon: "hw=jetson-orin,region=eu,tier!=canary,gpu",
		},
		{in: " a == b , !c ", want: []Requirement{{"a", OpEqual, "b"}, {"c", OpNotExists, ""}}, canon: "a=b,!c"},
		{in: "example.com/zone=eu-1:a", want: []Requirement{{"example.com/zone", OpEqual, "eu-1:a"}}, canon: "example.com/zone=eu-1:a"},
		{in: "a=1,a=2", want: []Requirement{{"a", OpEqual, "1"}, {"a", OpEqual, "2"}}, canon: "a=1,a=2"},
		{in: "! gpu", want: []Requirement{{"gpu", OpNotExists, ""}}, canon: "!gpu"},

		{in: "a=b,", wantErr: `term 2 "": empty term`},
		{in: ",a", wantErr: `term 1 "": empty term`},
		{in: "a=b,,c", wantErr: `term 2 "": empty term`},
		{in: "tier=", wantErr: `term 1 "tier=": missing value`},
		{in: "tier!=", wantErr: `term 1 "tier!=": missing value`},
		{in: "=eu", wantErr: `term 1 "=eu": missing label key`},
		{in: "!", wantErr: `term 1 "!": missing label key`},
		{in: "hw=a,region eu=x", wantErr: `term 2 "region eu=x": label key "region eu"`},
		{in: "a=b=c", wantErr: `term 1 "a=b=c": value "b=c": more than one operator`},
		{in: "a!==b", wantErr: `more than one operator`},
		{in: "a=!b", wantErr: `more than one operator`},
		{in: "!a=b", wantErr: `label key "!a": must start with a letter or digit`},
		{in: "-a", wantErr: `must start with a letter or digit`},
		{in: "a=b c", wantErr: `value "b c": character ' '`},
		{in: "a=é", wantErr: `term 1 "a=é": value`},
		{in: strings.Repeat("k", 64), wantErr: "64 bytes, the limit is 63"},
		{in: "a<b", wantErr: `character '<'`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			sel, err := ParseSelector(tc.in)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSelector(%q) = %v, want an error containing %q", tc.in, sel, tc.wantErr)
				}
				if !errors.Is(err, ErrSelector) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSelector(%q) error = %v, want ErrSelector containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tc.in, err)
			}
			if got := sel.Requirements(); !slices.Equal(got, tc.want) {
				t.Errorf("requirements = %+v, want %+v", got, tc.want)
			}
			if got := sel.String(); got != tc.canon {
				t.Errorf("String() = %q, want %q", got, tc.canon)
			}
			if sel.Empty() != (len(tc.want) == 0) {
				t.Errorf("Empty() = %v", sel.Empty())
			}
		})
	}
}

func TestSelectorMatches(t *testing.T) {
	orin := map[string]string{"hw": "jetson-orin", "region": "eu", "gpu": "", "tier": "prod"}
	pi := map[string]string{"hw": "rpi4", "region": "eu", "tier": "canary"}
	tests := []struct {
		sel       string
		orin, rpi bool
	}{
		{"", true, true},
		{"region=eu", true, true},
		{"hw=jetson-orin,region=eu,tier!=canary,gpu", true, false},
		{"tier!=canary", true, false},
		{"missing!=x", true, true}, // absent counts as not equal
		{"gpu", true, false},
		{"!gpu", false, true},
		{"hw==rpi4", false, true},
		{"region=us", false, false},
		{"a=1,a=2", false, false},
	}
	for _, tc := range tests {
		sel := MustParseSelector(tc.sel)
		if got := sel.Matches(orin); got != tc.orin {
			t.Errorf("%q matches orin = %v, want %v", tc.sel, got, tc.orin)
		}
		if got := sel.Matches(pi); got != tc.rpi {
			t.Errorf("%q matches rpi = %v, want %v", tc.sel, got, tc.rpi)
		}
	}
}

func TestValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	tests := []struct {
		labels  map[string]string
		wantErr string
	}{
		{labels: nil},
		{labels: map[string]string{"hw": "jetson-orin", "example.com/zone": "eu-1:a", "gpu": "", "v": "1.2.3+meta@x"}},
		{labels: map[string]string{"": "x"}, wantErr: `label key "": empty`},
		{labels: map[string]string{"_a": "x"}, wantErr: `label key "_a": must start with a letter or digit`},
		{labels: map[string]string{"a": "x,y"}, wantErr: `label "a" value "x,y": character ','`},
		{labels: map[string]string{"a": "x=y"}, wantErr: `character '='`},
		{labels: map[string]string{"a": strings.Repeat("v", 256)}, wantErr: "256 bytes, the limit is 255"},
		{labels: many, wantErr: "65 labels, the limit is 64"},
	}
	for _, tc := range tests {
		err := ValidateLabels(tc.labels)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ValidateLabels(%v): %v", tc.labels, err)
		case tc.wantErr != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ValidateLabels error = %v, want ErrInvalid containing %q", err, tc.wantErr)
		}
	}
}

// FuzzParseSelector: the parser never panics, and what it accepts prints
// back to a selector that parses to the same requirements.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"", "hw=jetson-orin,region=eu,tier!=canary,gpu", "!gpu", "a==b", "a!=b", "a=b,", "=", "!", "a=b=c",
		"a!==b", " a = b ", "example.com/x=y:z", "\x00", "a=\xff", ",,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			if !errors.Is(err, ErrSelector) {
				t.Fatalf("error %v does not wrap ErrSelector", err)
			}
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("ParseSelector(%q) ok, but its String %q does not parse: %v", s, sel.String(), err)
		}
		if !slices.Equal(again.Requirements(), sel.Requirements()) {
			t.Fatalf("round trip of %q: %v != %v", s, again.Requirements(), sel.Requirements())
		}
		labels := map[string]string{}
		for _, r := range sel.Requirements() {
			if r.Op == OpEqual {
				labels[r.Key] = r.Value
			}
			if err := ValidateLabels(map[string]string{r.Key: r.Value}); err != nil {
				t.Fatalf("accepted term %v is not a valid label: %v", r, err)
			}
		}
		sel.Matches(labels)
	})
}
