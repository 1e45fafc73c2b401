package rollout

import "math"

// twoProportionZ tests whether two proportions x1/n1 and x2/n2 differ
// (pooled two-proportion z-test); it returns z (positive when the first
// is larger) and the two-sided p-value.
func twoProportionZ(x1, n1, x2, n2 int64) (z, p float64) {
	if n1 <= 0 || n2 <= 0 {
		return 0, 1
	}
	p1, p2 := float64(x1)/float64(n1), float64(x2)/float64(n2)
	pool := float64(x1+x2) / float64(n1+n2)
	se := math.Sqrt(pool * (1 - pool) * (1/float64(n1) + 1/float64(n2)))
	if se == 0 {
		return 0, 1
	}
	z = (p1 - p2) / se
	return z, math.Erfc(math.Abs(z) / math.Sqrt2)
}

// welchT tests whether two means differ with unequal variances (Welch's
// t-test); it returns t (positive when the first mean is larger), the
// Welch-Satterthwaite degrees of freedom and the two-sided p-value. It
// needs at least two values on each side (p is 1 otherwise).
func welchT(a, b Summary) (t, df, p float64) {
	if a.Count < 2 || b.Count < 2 {
		return 0, 0, 1
	}
	va, vb := a.Variance()/float64(a.Count), b.Variance()/float64(b.Count)
	se2 := va + vb
	if se2 == 0 {
		if a.Mean == b.Mean {
			return 0, 0, 1
		}
		// No spread: the difference is certain. The statistic stays
		// finite, as it is stored and served as JSON.
		return math.Copysign(math.MaxFloat64, a.Mean-b.Mean), 0, 0
	}
	t = (a.Mean - b.Mean) / math.Sqrt(se2)
	df = se2 * se2 / (va*va/float64(a.Count-1) + vb*vb/float64(b.Count-1))
	return t, df, studentTwoSided(t, df)
}

// studentTwoSided is P(|T| >= |t|) for Student's t with df degrees of
// freedom: I_{df/(df+t²)}(df/2, 1/2).
func studentTwoSided(t, df float64) float64 {
	if math.IsInf(df, 1) {
		return math.Erfc(math.Abs(t) / math.Sqrt2)
	}
	return regIncBeta(df/2, 0.5, df/(df+t*t))
}

// regIncBeta is the regularized incomplete beta function I_x(a, b), by
// its continued fraction (modified Lentz), as in Numerical Recipes.
func regIncBeta(a, b, x float64) float64 {
	switch {
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	la, _ := math.Lgamma(a + b)
	lb, _ := math.Lgamma(a)
	lc, _ := math.Lgamma(b)
	front := math.Exp(la - lb - lc + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaCF(a, b, x) / a
	}
	return 1 - front*betaCF(b, a, 1-x)/b
}

func betaCF(a, b, x float64) float64 {
	const (
		maxIter = 300
		eps     = 1e-14
	)
	c, d := 1.0, 1/notTiny(1-(a+b)*x/(a+1))
	h := d
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		var del float64
		c, d, del = lentzStep(fm*(b-fm)*x/((a+2*fm-1)*(a+2*fm)), c, d)
		h *= del
		c, d, del = lentzStep(-(a+fm)*(a+b+fm)*x/((a+2*fm)*(a+2*fm+1)), c, d)
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return h
}

// lentzStep feeds the coefficient num of a continued fraction into the
// modified Lentz method's c and d, returning them and the factor (d*c)
// the term multiplies the fraction's value by.
func lentzStep(num, c, d float64) (c2, d2, factor float64) {
	d = 1 / notTiny(1+num*d)
	c = notTiny(1 + num/c)
	return c, d, d * c
}

// notTiny is v, or a tiny number in its place when v is all but zero, so
// that the Lentz method never divides by zero.
func notTiny(v float64) float64 {
	const tiny = 1e-300
	if math.Abs(v) < tiny {
		return tiny
	}
	return v
}
