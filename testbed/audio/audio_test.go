package audio_test

import (
	"bytes"
	"io"
	"math"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/testbed/audio"
)

func frameRMS(t *testing.T, c audio.Config, seconds int) []float64 {
	t.Helper()
	g, err := audio.New(c)
	if err != nil {
		t.Fatal(err)
	}
	const n = 512
	buf := make([]float64, n)
	var out []float64
	for range seconds * audio.SampleRate / n {
		g.Samples(buf)
		var ss float64
		for _, x := range buf {
			ss += x * x
		}
		out = append(out, math.Sqrt(ss/n))
	}
	return out
}

func db(x float64) float64 { return 20 * math.Log10(x) }

// TestLevels: the noise floor, the voice level and the share of speech
// are what the configuration says.
func TestLevels(t *testing.T) {
	for _, c := range []audio.Config{audio.Normal(1), audio.RaisedNoise(2), {Seed: 3, SpeechDBFS: -10, NoiseDBFS: -50, SpeechShare: 0.6}} {
		rms := frameRMS(t, c, 60)
		sorted := slices.Sorted(slices.Values(rms))
		floor := db(sorted[len(sorted)/10])
		if math.Abs(floor-c.NoiseDBFS) > 1 {
			t.Errorf("%+v: quietest frames at %.1f dBFS, want the noise floor %g", c, floor, c.NoiseDBFS)
		}
		voice := db(sorted[len(sorted)-int(c.SpeechShare*float64(len(sorted)))/3])
		if math.Abs(voice-c.SpeechDBFS) > 3 {
			t.Errorf("%+v: loud frames at %.1f dBFS, want about %g", c, voice, c.SpeechDBFS)
		}
		loud := 0
		for _, r := range rms {
			if db(r) > c.NoiseDBFS+12 {
				loud++
			}
		}
		if share := float64(loud) / float64(len(rms)); math.Abs(share-c.SpeechShare) > 0.06 {
			t.Errorf("%+v: %.2f of frames are speech, want %g", c, share, c.SpeechShare)
		}
	}
}

func TestDeterministic(t *testing.T) {
	read := func(seed uint64) []byte {
		g, err := audio.New(audio.Normal(seed))
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 64000)
		if _, err := io.ReadFull(g, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read(7), read(7)) {
		t.Error("the same seed gave different audio")
	}
	if bytes.Equal(read(7), read(8)) {
		t.Error("different seeds gave the same audio")
	}
	g, _ := audio.New(audio.Normal(1))
	if n, err := g.Read(make([]byte, 5)); n != 4 || err != nil {
		t.Errorf("Read of 5 bytes = %d, %v; want 4 (whole samples)", n, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []audio.Config{
		{SpeechDBFS: -20, NoiseDBFS: -60, SpeechShare: 0},
		{SpeechDBFS: -20, NoiseDBFS: -60, SpeechShare: 1},
		{SpeechDBFS: 3, NoiseDBFS: -60, SpeechShare: 0.5},
		{SpeechDBFS: -20, NoiseDBFS: math.NaN(), SpeechShare: 0.5},
	} {
		if _, err := audio.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if audio.PCM16(1) != 32767 || audio.PCM16(-1) != -32768 || audio.PCM16(0.5) != 16384 {
		t.Error("PCM16 does not round and saturate")
	}
}

func BenchmarkGenerate(b *testing.B) {
	g, _ := audio.New(audio.Normal(1))
	buf := make([]byte, 1024) // one Silero frame
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		g.Read(buf)
	}
}
