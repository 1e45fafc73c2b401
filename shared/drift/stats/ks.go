package stats

import (
	"math"
)

// MaxExactKS is the largest sample size for which KSPValue computes the
// exact two-sample distribution (SciPy's MAX_AUTO_N).
const MaxExactKS = 10000

// KS is the two-sample Kolmogorov-Smirnov statistic of two samples sorted
// in ascending order: the largest distance between their empirical
// distribution functions. Either sample empty gives 0.
func KS(a, b []float64) float64 {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	na, nb := float64(len(a)), float64(len(b))
	var d float64
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		t := math.Min(a[i], b[j])
		for i < len(a) && a[i] <= t {
			i++
		}
		for j < len(b) && b[j] <= t {
			j++
		}
		if diff := math.Abs(float64(i)/na - float64(j)/nb); diff > d {
			d = diff
		}
	}
	return d
}

// KSPValue is the two-sided p-value of the two-sample K-S statistic d for
// samples of n1 and n2 points, as scipy.stats.ks_2samp computes it with
// method="auto": the exact distribution when both sizes are at most
// MaxExactKS, else the asymptotic one (KSPValueAsymp). Sizes below 1 give
// 1.
func KSPValue(d float64, n1, n2 int64) float64 {
	if n1 < 1 || n2 < 1 {
		return 1
	}
	if n1 <= MaxExactKS && n2 <= MaxExactKS {
		return KSPValueExact(d, n1, n2)
	}
	return KSPValueAsymp(d, n1, n2)
}

// KSPValueAsymp is ks_2samp's method="asymp" two-sided p-value:
// kstwo.sf(d, round(n1·n2/(n1+n2))), the one-sample distribution at the
// effective sample size (rounded half to even, like numpy).
func KSPValueAsymp(d float64, n1, n2 int64) float64 {
	if n1 < 1 || n2 < 1 {
		return 1
	}
	m, n := float64(max(n1, n2)), float64(min(n1, n2))
	en := math.RoundToEven(m * n / (m + n))
	if en < 1 {
		en = 1
	}
	return KolmogorovSF(int64(en), d)
}

// KSPValueExact is the exact two-sided p-value P(D ≥ d) of the two-sample
// K-S statistic under the null hypothesis, counting lattice paths (Hodges,
// 1958) with the recursion for 1−p of Viehmann (2021) that keeps small
// p-values accurate. Its cost is O(n1·n2) at worst; KSPValue uses it only
// up to MaxExactKS. Like SciPy, d is first rounded to the nearest
// attainable value h/lcm(n1, n2).
func KSPValueExact(d float64, n1, n2 int64) float64 {
	if n1 < 1 || n2 < 1 || !(d > 0) {
		return 1
	}
	g := gcd(n1, n2)
	lcm := float64(n1/g) * float64(n2)
	h := int64(math.Round(math.Min(d, 1) * lcm))
	if h == 0 {
		return 1
	}
	if n1 == n2 {
		return clamp01(outsideSquare(n1, h))
	}
	return clamp01(outsideBand(n1, n2, g, h))
}

// outsideSquare is P(D_{n,n} ≥ h/n) = 2 Σ_{k≥1} (−1)^(k−1) C(2n, n−kh)/C(2n, n),
// evaluated from the innermost term outwards as 2·A0·(1 − A1·(1 − A2·…))
// with A_k = C(2n, n−(k+1)h)/C(2n, n−kh), which avoids the cancellation
// of the alternating sum.
func outsideSquare(n, h int64) float64 {
	var p float64
	for k := n / h; k >= 0; k-- {
		a := 1.0
		for j := int64(0); j < h; j++ {
			a *= float64(n-k*h-j) / float64(n+k*h+j+1)
		}
		p = a * (1 - p)
	}
	return 2 * p
}

// outsideBand is the share of monotone lattice paths from (0,0) to (m,n)
// that leave the band |x/m − y/n| < h/lcm(m,n) at some point: the exact
// p-value for unequal sample sizes. b(x,y), the share of paths to (x,y)
// that left the band, is 1 outside it and inside follows
// b(x,y) = (x·b(x−1,y) + y·b(x,y−1)) / (x+y), the weights being the shares
// of paths arriving from the left and from below.
func outsideBand(m, n, g, h int64) float64 {
	if m < n {
		m, n = n, m
	}
	mg, ng := m/g, n/g
	// Inside: |ng·x − mg·y| < h.
	band := func(x int64) (lo, hi int64) {
		lo = max(floorDiv(ng*x-h, mg)+1, 0)
		hi = min(ceilDiv(ng*x+h, mg), n+1)
		return lo, hi
	}
	prev := make([]float64, n+1)
	cur := make([]float64, n+1)
	prevLo, prevHi := int64(0), min(ceilDiv(h, mg), n+1)
	for y := prevLo; y < prevHi; y++ {
		prev[y] = 0
	}
	for x := int64(1); x <= m; x++ {
		lo, hi := band(x)
		if hi <= lo {
			return 1
		}
		below := 1.0 // b(x, lo−1): outside the band
		xf := float64(x)
		for y := lo; y < hi; y++ {
			left := 1.0
			if y >= prevLo && y < prevHi {
				left = prev[y]
			}
			// The reciprocal keeps the division off the chain through
			// below, which bounds the loop's speed.
			r := 1 / (xf + float64(y))
			v := xf*left*r + float64(y)*r*below
			cur[y] = v
			below = v
		}
		prev, cur = cur, prev
		prevLo, prevHi = lo, hi
	}
	if n < prevLo || n >= prevHi {
		return 1
	}
	return prev[n]
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

// KolmogorovSF is the survival function P(D_n ≥ x) of the one-sample
// two-sided Kolmogorov-Smirnov statistic for n points (scipy.stats.kstwo),
// computed as Simard and L'Ecuyer (2011) recommend: the Ruben-Gambino
// formulas at the extremes, the Durbin matrix (Marsaglia, Tsang and Wang,
// 2003) where it is fast, twice the exact one-sided Smirnov tail where
// that is accurate, and the Pelz-Good expansion for large n. SciPy uses
// Pomeranz's recursion where this uses the Durbin matrix (both exact).
func KolmogorovSF(n int64, x float64) float64 {
	if n < 1 || math.IsNaN(x) {
		return 1
	}
	if x >= 1 {
		return 0
	}
	if x <= 0 {
		return 1
	}
	nf := float64(n)
	t := nf * x
	if t <= 1 {
		if t <= 0.5 {
			return 1
		}
		// Ruben-Gambino: CDF = n!/n^n · (2t−1)^n.
		var cdf float64
		if n <= 140 {
			cdf = 1
			for i := int64(1); i <= n; i++ {
				cdf *= float64(i) / nf * (2*t - 1)
			}
		} else {
			lg, _ := math.Lgamma(nf + 1)
			cdf = math.Exp(lg - nf*math.Log(nf) + nf*math.Log(2*t-1))
		}
		return clamp01(1 - cdf)
	}
	if t >= nf-1 {
		return clamp01(2 * math.Pow(1-x, nf))
	}
	if x >= 0.5 {
		return clamp01(2 * smirnov(n, x))
	}
	nx2 := t * x
	if n <= 140 {
		if nx2 <= 4 {
			return clamp01(1 - durbin(n, x))
		}
		return clamp01(2 * smirnov(n, x))
	}
	if nx2 >= 370 {
		return 0
	}
	if nx2 >= 2.2 {
		return clamp01(2 * smirnov(n, x))
	}
	var cdf float64
	if n <= 100000 && nf*math.Pow(x, 1.5) <= 1.4 {
		cdf = durbin(n, x)
	} else {
		cdf = pelzGood(n, x)
	}
	return clamp01(1 - cdf)
}

// smirnov is the exact one-sided Smirnov tail P(D_n^+ ≥ x) =
// x · Σ_{j=0}^{⌊n(1−x)⌋} C(n,j) (1−x−j/n)^(n−j) (x+j/n)^(j−1), summed in
// log space. All terms are positive; the sum stops once they are
// negligible.
func smirnov(n int64, x float64) float64 {
	if x <= 0 {
		return 1
	}
	if x >= 1 {
		return 0
	}
	nf := float64(n)
	jmax := int64(math.Floor(nf * (1 - x)))
	lgn, _ := math.Lgamma(nf + 1)
	maxLog := math.Inf(-1)
	var sum float64 // scaled by exp(−maxLog)
	prevLog := math.Inf(-1)
	for j := int64(0); j <= jmax; j++ {
		jf := float64(j)
		rest := 1 - x - jf/nf
		if rest <= 0 && n-j > 0 {
			continue
		}
		lgj, _ := math.Lgamma(jf + 1)
		lgnj, _ := math.Lgamma(nf - jf + 1)
		l := lgn - lgj - lgnj + (jf-1)*math.Log(x+jf/nf)
		if n-j > 0 {
			l += (nf - jf) * math.Log(rest)
		}
		if l > maxLog {
			sum = sum*math.Exp(maxLog-l) + 1
			maxLog = l
		} else {
			sum += math.Exp(l - maxLog)
		}
		// Terms rise then fall; stop when they no longer matter.
		if l < prevLog && l < maxLog-50 {
			break
		}
		prevLog = l
	}
	return x * sum * math.Exp(maxLog)
}

// durbin is the CDF P(D_n < d) by the Durbin matrix method as programmed
// by Marsaglia, Tsang and Wang (2003): a power of a (2k−1)-square matrix,
// k = ⌊nd⌋+1, with a separately kept decimal exponent against overflow.
func durbin(n int64, d float64) float64 {
	nf := float64(n)
	k := int(nf*d) + 1
	m := 2*k - 1
	h := float64(k) - nf*d
	H := make([]float64, m*m)
	for i := range m {
		for j := range m {
			if i-j+1 >= 0 {
				H[i*m+j] = 1
			}
		}
	}
	for i := range m {
		H[i*m] -= math.Pow(h, float64(i+1))
		H[(m-1)*m+i] -= math.Pow(h, float64(m-i))
	}
	if 2*h-1 > 0 {
		H[(m-1)*m] += math.Pow(2*h-1, float64(m))
	}
	for i := range m {
		for j := range m {
			if i-j+1 > 0 {
				for g := 1; g <= i-j+1; g++ {
					H[i*m+j] /= float64(g)
				}
			}
		}
	}
	Q, eQ := matPow(H, m, n)
	s := Q[(k-1)*m+k-1]
	for i := int64(1); i <= n; i++ {
		s = s * float64(i) / nf
		if s < 1e-140 {
			s *= 1e140
			eQ -= 140
		}
	}
	return clamp01(s * math.Pow(10, float64(eQ)))
}

// matPow returns A^n for an m×m matrix, as a matrix and a power-of-ten
// exponent.
func matPow(A []float64, m int, n int64) ([]float64, int) {
	if n == 1 {
		return append([]float64(nil), A...), 0
	}
	V, eV := matPow(A, m, n/2)
	B := matMul(V, V, m)
	eB := 2 * eV
	if n%2 == 1 {
		B = matMul(A, B, m)
	}
	if B[(m/2)*m+m/2] > 1e140 {
		for i := range B {
			B[i] *= 1e-140
		}
		eB += 140
	}
	return B, eB
}

func matMul(A, B []float64, m int) []float64 {
	C := make([]float64, m*m)
	for i := range m {
		for k := range m {
			a := A[i*m+k]
			if a == 0 {
				continue
			}
			row, brow := C[i*m:i*m+m], B[k*m:k*m+m]
			for j := range row {
				row[j] += a * brow[j]
			}
		}
	}
	return C
}

// pelzGood is the Pelz-Good (1976) asymptotic expansion of P(D_n ≤ x):
// K0(z) + K1(z)/√n + K2(z)/n + K3(z)/n^1.5 with z = x√n, each K written
// with Jacobi theta transforms that converge fast for small z.
func pelzGood(n int64, x float64) float64 {
	const (
		pi2 = math.Pi * math.Pi
		pi4 = pi2 * pi2
		pi6 = pi4 * pi2
	)
	sqrt2pi := math.Sqrt(2 * math.Pi)
	z := math.Sqrt(float64(n)) * x
	z2 := z * z
	z4 := z2 * z2
	z6 := z4 * z2
	qlog := -pi2 / 8 / z2
	if qlog < -707 { // exp underflows: the CDF is 0 to double precision
		return 0
	}
	q := math.Exp(qlog)

	k1a, k1b := -z2, pi2/4
	k2a, k2b, k2c := 6*z6+2*z4, (2*z4-5*z2)*pi2/4, pi4*(1-2*z2)/16
	k3a := -30*z6 - 90*z4*z4
	k3b := pi2 * (135*z4 - 96*z6) / 4
	k3c := pi4 * (212*z4 - 60*z2) / 16
	k3d := pi6 * (5 - 30*z2) / 64

	// Σ over odd m = 2k−1 of c(m)·q^(m²), by Horner in q^(8k).
	var K [4]float64
	maxk := int(math.Ceil(16 * z / math.Pi))
	for k := maxk; k >= 1; k-- {
		m := float64(2*k - 1)
		m2 := m * m
		m4 := m2 * m2
		qp := math.Pow(q, float64(8*k))
		c := [4]float64{
			1,
			k1a + k1b*m2,
			k2a + k2b*m2 + k2c*m4,
			k3a + k3b*m2 + k3c*m4 + k3d*m4*m2,
		}
		for i := range K {
			K[i] = K[i]*qp + c[i]
		}
	}
	div := [4]float64{z, 6 * z4, 72 * z4 * z2 * z, 6480 * z6 * z4}
	for i := range K {
		K[i] *= q * sqrt2pi / div[i]
	}
	// The sums over all integers k in K2 and K3.
	q = math.Exp(-pi2 / 2 / z2)
	var k2extra, k3extra float64
	sqrt3z := math.Sqrt(3) * z
	for k := maxk; k >= 1; k-- {
		kf := float64(k)
		qk := math.Pow(q, kf*kf)
		k2extra += kf * kf * qk
		kpi := math.Pi * kf
		k3extra += (sqrt3z + kpi) * (sqrt3z - kpi) * kf * kf * qk
	}
	K[2] += k2extra * pi2 * sqrt2pi / (-36 * z2 * z)
	K[3] += k3extra * pi2 * sqrt2pi / (216 * z6)
	sqrtn := math.Sqrt(float64(n))
	return clamp01(K[0] + K[1]/sqrtn + K[2]/float64(n) + K[3]/(float64(n)*sqrtn))
}
