package api

import (
	"math"
	"strconv"
)

// pow10 are the powers of ten that float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// float scans a JSON number at the offset and converts it to a float of
// the given bit size, exactly as strconv.ParseFloat would (ok is false
// where ParseFloat fails: out of range).
//
// Scanning and conversion are one pass. Numbers with at most 15
// significant digits and a small exponent, which is what float32 and most
// float64 data look like, take Clinger's exact fast path: the decimal
// mantissa and the power of ten are both exact in float64, so one
// multiplication or division rounds correctly. For float32 the float64
// result is rounded again, which is exact except when it falls on a
// float32 midpoint; that case, and every other, goes to strconv.
func (d *decoder) float(path jpath, bits int) (f float64, ok bool, err error) {
	b := d.b
	start, i := d.i, d.i
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	digits, exp := 0, 0 // significant digits; decimal exponent
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if digits < 19 {
				mant = mant*10 + uint64(b[i]-'0')
			} else {
				exp++
			}
			digits++
		}
	default:
		d.i = i
		return 0, false, d.syntax(path, "a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.i = i
			return 0, false, d.syntax(path, "a digit after '.'")
		}
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if mant == 0 && b[i] == '0' {
				exp-- // a leading zero
				continue
			}
			if digits < 19 {
				mant = mant*10 + uint64(b[i]-'0')
				exp--
			}
			digits++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.i = i
			return 0, false, d.syntax(path, "a digit in the exponent")
		}
		e := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if e < 100000 {
				e = e*10 + int(b[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	d.i = i
	if digits <= 15 { // 10^15 < 2^53: the mantissa is exact
		f = float64(mant)
		fast := true
		switch {
		case mant == 0 || exp == 0:
		case exp > 0 && exp <= 22:
			f *= pow10[exp]
		case exp < 0 && exp >= -22:
			f /= pow10[-exp]
		default:
			fast = false
		}
		if neg {
			f = -f
		}
		if fast {
			if bits == 64 {
				return f, true, nil
			}
			if g, ok := toFloat32(f); ok {
				return g, true, nil
			}
		}
	}
	f, perr := strconv.ParseFloat(string(b[start:i]), bits)
	return f, perr == nil, nil
}

// toFloat32 rounds f to float32 (returned as float64) when that gives
// the float32 nearest the decimal f came from: whenever f is not itself
// halfway between two float32s.
func toFloat32(f float64) (float64, bool) {
	// In float32's normal range a float64 is a midpoint when its 29
	// extra mantissa bits are exactly 1000...0.
	if a := math.Abs(f); a >= 0x1p-126 && a < math.MaxFloat32 {
		if math.Float64bits(f)&(1<<29-1) != 1<<28 {
			return float64(float32(f)), true
		}
		return 0, false
	}
	f32 := float32(f)
	g := float64(f32)
	if math.IsInf(g, 0) {
		return 0, false
	}
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
	return 0, false
}
