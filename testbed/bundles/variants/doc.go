// Package variants documents and tests deliberately different builds of
// the Silero VAD pre-processor (testbed/bundles/silero-vad/pre), for the
// rollout and shadow tests. Each is a WASI reactor built from Go
// (shared/processor/guest) around the same transform, package frame, and
// each passes the bundle's smoke vectors, as a regression that reaches a
// fleet would:
//
//   - slowpre burns a fixed amount of CPU (BurnRounds xorshift rounds,
//     35 to 150 ms under wazero on this project's busy 2-core machines)
//     before the transform: the same answers, a much higher latency (the
//     latencyP95 gate).
//   - limiter attenuates frames that come near full scale (peak at least
//     LimiterThreshold) by LimiterGain before the model sees them, a
//     plausible limiter bug: quiet and normal frames, the smoke frame
//     among them, give the same answers; loud ones do not (shadow
//     agreement).
//
// Build them with testenv.BuildWASM(t, SlowPre) and BuildWASM(t, Limiter),
// or, like any Go processor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath \
//	    -o slowpre.wasm ./testbed/bundles/variants/slowpre
package variants

// Package directories of the variants, relative to the repository root.
const (
	SlowPre = "testbed/bundles/variants/slowpre"
	Limiter = "testbed/bundles/variants/limiter"
)

// The variants' constants (their main packages are wasip1-only and keep
// their own copies; the tests check that they agree).
const (
	// BurnRounds is how many xorshift rounds slowpre runs per frame.
	BurnRounds = 20_000_000
	// LimiterThreshold is the peak (of samples normalized to [-1, 1))
	// from which limiter attenuates a frame; the smoke frame peaks at
	// 0.6.
	LimiterThreshold = 0.9
	// LimiterGain is the factor limiter applies to such a frame.
	LimiterGain = 0.1
)
