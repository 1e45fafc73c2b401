// Package audio synthesizes speech-like audio for tests, benchmarks and
// demos of the Silero VAD bundle: 16 kHz mono, as 16-bit little-endian
// PCM or float samples.
//
// Speech is a sequence of syllables: a harmonic tone whose fundamental
// glides around a speaker's pitch, its harmonics shaped by three
// formant-like resonances of a vowel (changing every syllable), with some
// breathiness, sometimes opened by a fricative (noise above about 3 kHz).
// Syllables group into phrases of one to four, which rise and fall over
// tens of milliseconds and are separated by pauses. A background of
// white noise at a set level (the noise floor) runs throughout. Time is
// planned in blocks of BlockSeconds, each with the configured share of
// speech, so that the share of speech in any window of a few blocks is
// steady: windows of the same configuration differ only by chance
// details, not by how much of them is speech.
//
// The output is a deterministic function of the Config (seeded PCG),
// pure Go, so profiles built from it are reproducible.
package audio

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// SampleRate is the sample rate in Hz.
const SampleRate = 16000

// BlockSeconds is the length of the blocks speech is planned in.
const BlockSeconds = 2.0

// Config describes the audio.
type Config struct {
	// Seed selects the random sequence.
	Seed uint64
	// SpeechDBFS is the RMS level of voiced speech, in dB relative to
	// full scale (a full-scale sine is −3 dBFS).
	SpeechDBFS float64
	// NoiseDBFS is the RMS level of the background white noise.
	NoiseDBFS float64
	// SpeechShare is the share of time with speech, in (0, 1).
	SpeechShare float64
}

// Normal is quiet-room speech: voice at −22 dBFS over a −60 dBFS noise
// floor, 30% of the time.
func Normal(seed uint64) Config {
	return Config{Seed: seed, SpeechDBFS: -22, NoiseDBFS: -60, SpeechShare: 0.3}
}

// RaisedNoise is Normal with the noise floor raised by 18 dB, to −42 dBFS
// (a fan, a street, a worse microphone).
func RaisedNoise(seed uint64) Config {
	c := Normal(seed)
	c.NoiseDBFS = -42
	return c
}

func (c Config) validate() error {
	switch {
	case !(c.SpeechShare > 0 && c.SpeechShare < 1):
		return fmt.Errorf("audio: speech share %g not in (0, 1)", c.SpeechShare)
	case !(c.SpeechDBFS <= 0 && c.SpeechDBFS > -120), !(c.NoiseDBFS <= 0 && c.NoiseDBFS > -150):
		return fmt.Errorf("audio: levels %g and %g dBFS out of range", c.SpeechDBFS, c.NoiseDBFS)
	}
	return nil
}

// vowel formants (Hz) and bandwidths, after Peterson and Barney's averages.
var vowels = [][3]float64{
	{730, 1090, 2440}, // a
	{530, 1840, 2480}, // e
	{270, 2290, 3010}, // i
	{570, 840, 2410},  // o
	{300, 870, 2240},  // u
	{660, 1720, 2410}, // æ
}

var bandwidths = [3]float64{90, 110, 170}

// Generator produces the audio one sample at a time; it never ends.
type Generator struct {
	c     Config
	r     *rand.Rand
	noise float64 // noise RMS (linear)
	level float64 // voiced speech RMS (linear)

	plan []segment // the rest of the current block
	seg  segment
	pos  int // samples into seg

	// Voice state.
	phase float64
	amps  []float64 // harmonic amplitudes of the current syllable
	hp    float64   // last noise sample, for the fricative's high-pass
	hb    float64   // the same for breathiness
}

type segment struct {
	n        int     // samples
	speech   bool    // a syllable (else a pause)
	f0, f1   float64 // pitch glide, Hz
	fricN    int     // samples of fricative at the start
	vowel    int
	loudness float64 // gain relative to the level
	// The first and last syllable of a phrase rise and fall; between
	// syllables of a phrase the voice goes on.
	first, last bool
}

// New returns a generator for c.
func New(c Config) (*Generator, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &Generator{
		c:     c,
		r:     rand.New(rand.NewPCG(c.Seed, 0x5eed)),
		noise: math.Pow(10, c.NoiseDBFS/20),
		level: math.Pow(10, c.SpeechDBFS/20),
	}, nil
}

// planBlock lays out one block: syllables adding up to the speech share,
// grouped into phrases, with the rest split into pauses around them.
func (g *Generator) planBlock() {
	total := int(BlockSeconds * SampleRate)
	speech := int(math.Round(g.c.SpeechShare * float64(total)))
	var syll []int
	for left := speech; left > 0; {
		n := int((0.12 + 0.16*g.r.Float64()) * SampleRate)
		if left-n < int(0.08*SampleRate) {
			n = left
		}
		syll = append(syll, n)
		left -= n
	}
	// Phrases of 1 to 4 syllables.
	var phrases [][]int
	for i := 0; i < len(syll); {
		k := min(1+g.r.IntN(4), len(syll)-i)
		phrases = append(phrases, syll[i:i+k])
		i += k
	}
	// Pauses: before each phrase, and at the end, random shares of the
	// silence.
	w := make([]float64, len(phrases)+1)
	var sum float64
	for i := range w {
		w[i] = 0.3 + g.r.Float64()
		sum += w[i]
	}
	silence := total - speech
	used := 0
	pitch := 95 + 135*g.r.Float64() // this block's speaker
	g.plan = g.plan[:0]
	for i, ph := range phrases {
		p := int(float64(silence) * w[i] / sum)
		used += p
		g.plan = append(g.plan, segment{n: p})
		for j, n := range ph {
			f0 := pitch * (0.9 + 0.2*g.r.Float64())
			s := segment{
				n:        n,
				speech:   true,
				first:    j == 0,
				last:     j == len(ph)-1,
				f0:       f0,
				f1:       f0 * (0.9 + 0.2*g.r.Float64()),
				vowel:    g.r.IntN(len(vowels)),
				loudness: math.Pow(10, (g.r.Float64()*8-4)/20), // ±4 dB
			}
			if g.r.IntN(3) == 0 {
				s.fricN = int((0.03 + 0.05*g.r.Float64()) * SampleRate)
			}
			g.plan = append(g.plan, s)
		}
	}
	g.plan = append(g.plan, segment{n: silence - used})
}

// next moves to the next segment.
func (g *Generator) next() {
	for len(g.plan) == 0 {
		g.planBlock()
	}
	g.seg, g.plan, g.pos = g.plan[0], g.plan[1:], 0
	if !g.seg.speech {
		return
	}
	// Harmonic amplitudes: formant resonances with a −6 dB/octave tilt,
	// normalized so that the voiced part has the configured RMS.
	f0 := (g.seg.f0 + g.seg.f1) / 2
	g.amps = g.amps[:0]
	var power float64
	for h := 1; float64(h)*f0 < 7000; h++ {
		f := float64(h) * f0
		var a float64
		for k, F := range vowels[g.seg.vowel] {
			d := (f - F) / bandwidths[k]
			a += 1 / math.Sqrt(1+d*d) / float64(k+1)
		}
		a /= float64(h)
		g.amps = append(g.amps, a)
		power += a * a / 2
	}
	scale := g.level * g.seg.loudness / math.Sqrt(power)
	for i := range g.amps {
		g.amps[i] *= scale
	}
}

// sample returns the next sample in [−1, 1].
func (g *Generator) sample() float64 {
	for g.pos >= g.seg.n {
		g.next()
	}
	s := &g.seg
	x := g.noise * g.r.NormFloat64()
	if s.speech {
		t := float64(g.pos) / float64(s.n)
		env := envelope(g.pos, s.n, s.first, s.last)
		f0 := s.f0 + (s.f1-s.f0)*t
		g.phase += 2 * math.Pi * f0 / SampleRate
		if g.phase > 2*math.Pi {
			g.phase -= 2 * math.Pi
		}
		// Σ a_h sin(hφ) by the Chebyshev recurrence
		// sin(hφ) = 2cos(φ)·sin((h−1)φ) − sin((h−2)φ).
		sin1, cos1 := math.Sincos(g.phase)
		prev, cur := 0.0, sin1
		var v float64
		for _, a := range g.amps {
			v += a * cur
			prev, cur = cur, 2*cos1*cur-prev
		}
		// Breathiness: high-passed noise 20 dB under the voice.
		n := g.r.NormFloat64()
		x += env * (n - g.hb) * 0.5 * g.level * g.seg.loudness * breath
		g.hb = n
		x += env * v
		if g.pos < s.fricN {
			// Fricative: differenced noise (a high-pass), fading out.
			n := g.r.NormFloat64()
			fric := (n - g.hp) * 0.5
			g.hp = n
			x += fric * g.level * 0.6 * (1 - float64(g.pos)/float64(s.fricN))
		}
	}
	g.pos++
	return min(max(x, -1), 1)
}

// Phrase envelope: a raised-cosine rise over attack samples at the start
// of a phrase's first syllable and fall over release samples at the end
// of its last, flat between.
const (
	attack  = SampleRate * 25 / 1000
	release = SampleRate * 45 / 1000
)

func envelope(pos, n int, first, last bool) float64 {
	a, r := min(attack, n/2), min(release, n/2)
	switch {
	case first && pos < a:
		return 0.5 - 0.5*math.Cos(math.Pi*float64(pos)/float64(a))
	case last && pos >= n-r:
		return 0.5 - 0.5*math.Cos(math.Pi*float64(n-pos)/float64(r))
	}
	return 1
}

// breath is the breathiness level relative to the voice (−20 dB).
const breath = 0.1

// Samples fills dst with samples in [−1, 1].
func (g *Generator) Samples(dst []float64) {
	for i := range dst {
		dst[i] = g.sample()
	}
}

// Read fills p with 16-bit little-endian PCM (an even number of bytes;
// a trailing odd byte is left unwritten). It never fails.
func (g *Generator) Read(p []byte) (int, error) {
	n := len(p) &^ 1
	for i := 0; i < n; i += 2 {
		binary.LittleEndian.PutUint16(p[i:], uint16(PCM16(g.sample())))
	}
	return n, nil
}

// PCM16 converts a sample in [−1, 1] to 16-bit PCM, rounding and
// saturating.
func PCM16(x float64) int16 {
	v := math.Round(x * 32768)
	return int16(min(max(v, -32768), 32767))
}
