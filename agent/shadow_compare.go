package agent

// The shadow comparison: whether the candidate's outputs agree with the
// active model's (classifiers by top class, other numbers within the
// smoke vectors' tolerance, the rest exactly), and that tolerance.

import (
	"math"
	"reflect"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// The comparison's tolerance when the candidate's smoke vectors give
// none: |candidate - active| <= abs + rel·|active|.
const (
	defaultShadowAbs = 1e-4
	defaultShadowRel = 1e-3
)

// agree compares the candidate's outputs with the active model's. Every
// output of the active model must come from the candidate too, with the
// same datatype and shape, and:
//
//   - a classifier's scores (a float [N, C] output, C ≥ 2, whose rows are
//     probability distributions: values in [0, 1] summing to 1) agree
//     when every row has the same top class;
//   - other numeric outputs agree when every element is within tol of the
//     active one (|c - a| <= abs + rel·|a|; NaN only matches NaN);
//   - outputs that do not read as numbers must be deeply equal.
//
// It also returns the largest element difference seen.
func agree(active, cand []tensor.Tensor, tol bundle.Tolerance) (bool, float64) {
	ok, worst := true, 0.0
	for _, a := range active {
		var c *tensor.Tensor
		for i := range cand {
			if cand[i].Name == a.Name {
				c = &cand[i]
				break
			}
		}
		if c == nil || c.Datatype != a.Datatype || !reflect.DeepEqual(c.Shape, a.Shape) {
			ok = false
			continue
		}
		av, aerr := a.Float64s()
		cv, cerr := c.Float64s()
		if aerr != nil || cerr != nil || len(av) != len(cv) {
			if !reflect.DeepEqual(a.Data, c.Data) {
				ok = false
			}
			continue
		}
		if rows, cols, isClassifier := classifier(a, av); isClassifier {
			for r := range rows {
				if argmax(av[r*cols:(r+1)*cols]) != argmax(cv[r*cols:(r+1)*cols]) {
					ok = false
				}
			}
			for i := range av {
				worst = max(worst, math.Abs(av[i]-cv[i]))
			}
			continue
		}
		for i := range av {
			x, y := av[i], cv[i]
			switch {
			case math.IsNaN(x) || math.IsNaN(y):
				if math.IsNaN(x) != math.IsNaN(y) {
					ok = false
				}
			case x == y: // infinities included
			default:
				d := math.Abs(x - y)
				if !math.IsInf(d, 0) {
					worst = max(worst, d)
				}
				if !(d <= tol.Abs+tol.Rel*math.Abs(x)) {
					ok = false
				}
			}
		}
	}
	return ok, worst
}

// classifier reports whether t (with values v) is a batch of class
// probabilities: float, [N, C] with C ≥ 2, each row in [0, 1] summing to 1.
func classifier(t tensor.Tensor, v []float64) (rows, cols int, ok bool) {
	if (t.Datatype != tensor.FP32 && t.Datatype != tensor.FP64) || len(t.Shape) != 2 || t.Shape[1] < 2 || t.Shape[0] < 1 {
		return 0, 0, false
	}
	rows, cols = int(t.Shape[0]), int(t.Shape[1])
	if rows*cols != len(v) {
		return 0, 0, false
	}
	for r := range rows {
		sum := 0.0
		for _, x := range v[r*cols : (r+1)*cols] {
			if !(x >= 0 && x <= 1) {
				return 0, 0, false
			}
			sum += x
		}
		if math.Abs(sum-1) > 1e-3 {
			return 0, 0, false
		}
	}
	return rows, cols, true
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// shadowTolerance is the widest tolerance of m's smoke vectors, or the
// default when they give none.
func shadowTolerance(m *bundle.Manifest) bundle.Tolerance {
	var t bundle.Tolerance
	for _, v := range m.Smoke {
		t.Abs, t.Rel = max(t.Abs, v.Tolerance.Abs), max(t.Rel, v.Tolerance.Rel)
	}
	if t.Abs == 0 && t.Rel == 0 {
		t = bundle.Tolerance{Abs: defaultShadowAbs, Rel: defaultShadowRel}
	}
	return t
}
