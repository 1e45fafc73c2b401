package api

import (
	"math"
	"strconv"
)

// pow10 are the powers of ten that float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat converts n, the text of a valid JSON number, to a float of
// the given bit size, exactly as strconv.ParseFloat does (ok is false
// where ParseFloat fails: out of range). Numbers with at most 15
// significant digits and a small exponent, which is what float32 and
// most float64 data look like, take Clinger's exact fast path: the
// decimal mantissa and the power of ten are both exact in float64, so one
// multiplication or division rounds correctly. For float32 the float64
// result is rounded again, which is exact except when it falls on a
// float32 midpoint; that case, and every other, goes to strconv.
func parseFloat(n []byte, bits int) (float64, bool) {
	if f, ok := fastFloat(n); ok {
		if bits == 64 {
			return f, true
		}
		// In float32's normal range a float64 is a float32 midpoint when
		// its 29 extra mantissa bits are exactly 1000...0.
		if a := math.Abs(f); a >= 0x1p-126 && a < math.MaxFloat32 {
			if math.Float64bits(f)&(1<<29-1) != 1<<28 {
				return float64(float32(f)), true
			}
		} else if f32 := float32(f); !math.IsInf(float64(f32), 0) {
			g := float64(f32)
			if g == f {
				return g, true
			}
			other := math.Nextafter32(f32, float32(math.Inf(1)))
			if f < g {
				other = math.Nextafter32(f32, float32(math.Inf(-1)))
			}
			if mid := (g + float64(other)) / 2; f != mid {
				return g, true
			}
		}
	}
	f, err := strconv.ParseFloat(string(n), bits)
	return f, err == nil
}

// fastFloat converts n when Clinger's fast path applies.
func fastFloat(n []byte) (float64, bool) {
	i := 0
	neg := false
	if i < len(n) && n[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	digits, exp := 0, 0
	for ; i < len(n) && n[i] >= '0' && n[i] <= '9'; i++ {
		if mant != 0 || n[i] != '0' {
			digits++
		}
		mant = mant*10 + uint64(n[i]-'0')
	}
	if i < len(n) && n[i] == '.' {
		for i++; i < len(n) && n[i] >= '0' && n[i] <= '9'; i++ {
			if mant != 0 || n[i] != '0' {
				digits++
			}
			mant = mant*10 + uint64(n[i]-'0')
			exp--
		}
	}
	if digits > 15 { // 10^15 < 2^53: the mantissa is exact below
		return 0, false
	}
	if i < len(n) && (n[i] == 'e' || n[i] == 'E') {
		i++
		eneg := false
		if n[i] == '+' || n[i] == '-' {
			eneg = n[i] == '-'
			i++
		}
		e := 0
		for ; i < len(n); i++ {
			if e > 1000 {
				return 0, false
			}
			e = e*10 + int(n[i]-'0')
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	f := float64(mant)
	switch {
	case mant == 0:
	case exp == 0:
	case exp > 0 && exp <= 22:
		f *= pow10[exp]
	case exp < 0 && exp >= -22:
		f /= pow10[-exp]
	default:
		return 0, false
	}
	if neg {
		f = -f
	}
	return f, true
}
