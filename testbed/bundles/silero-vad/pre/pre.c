/*
 * pre.c: the Silero VAD bundle's WASM pre-processor. One frame of 16-bit
 * little-endian PCM at 16 kHz in (a UINT8 tensor "raw" of 1024 bytes); the
 * model's inputs (input, state, sr) and the frame's drift features out.
 * It implements the processor ABI of docs/wasm-abi.md and computes what
 * the native Go transform, package frame, computes: the same model inputs
 * bit for bit, the same features up to floating-point rounding (the tests
 * in frame hold them to 1e-5), the same rejections in the same words.
 *
 * Built as a WASI reactor with clang and wasi-libc (Debian: clang lld
 * wasi-libc libclang-rt-dev-wasm32); `make wasm` and the tests
 * (testenv.BuildWASM) run:
 *
 *   clang --target=wasm32-wasi -O2 -msimd128 -std=c11 -Wall -Wextra -Werror \
 *       -mexec-model=reactor -Wl,--stack-first -Wl,-z,stack-size=16384 -Wl,--strip-debug \
 *       -o testbed/bundles/silero-vad/pre.wasm testbed/bundles/silero-vad/pre/pre.c
 *
 * -msimd128 lets clang vectorize the FFT (wazero compiles wasm SIMD to
 * SSE or NEON; it runs about twice as fast). The reactor's _initialize
 * (from wasi-libc's crt1-reactor.o) runs init, which fills the tables.
 *
 * Memory: nothing is allocated per call, and the module lives in one 64 KiB
 * page. The stack comes first (an overflow traps instead of overwriting
 * data). The output list lives in a static buffer whose constant parts
 * (names, shapes, the zero state, sr) are written once, at _initialize; a
 * call fills in the samples and the features. Error messages go to a
 * second static buffer. The input buffer that ef_alloc hands the host
 * starts at __heap_base and grows the linear memory when an input is
 * larger than any before. From libc the module uses only cos, sin and
 * log10, so it imports nothing.
 */
#include <math.h>
#include <stdint.h>

#include "eft.h"

#define EXPORT(name) __attribute__((export_name(name), visibility("default")))

/* The frame format (package frame). */
enum {
	SAMPLE_RATE = 16000,
	SAMPLES = 512,
	BYTES = 2 * SAMPLES,
	FEATURES = 6,
	ABI_VERSION = 1,
};
#define ERROR_FLAG 0x80000000u
#define PREFIX "silero-vad pre: invalid input: "

/* ---- The transform (frame.features) ---------------------------------------- */

/*
 * The band powers need the spectrum of the 512 real, Hann-windowed samples.
 * Package frame takes a 512-point complex FFT of them; here the samples are
 * packed in pairs into 256 complex points z[n] = x[2n] + i·x[2n+1], whose
 * 256-point FFT Z gives the real signal's spectrum (bins 0..256) as
 *
 *   2·X[k] = (Z[k] + conj Z[256-k]) - i·W^k·(Z[k] - conj Z[256-k]),
 *   W = e^(-2πi/512), Z[256] = Z[0]:
 *
 * the same numbers in about half the operations. The results differ from
 * frame's only by floating-point rounding.
 */
enum { HALF = SAMPLES / 2 };

/* The spectral bands as FFT bin ranges [lo, hi). */
static const int bands[4][2] = {{1, 10}, {10, 32}, {32, 96}, {96, SAMPLES / 2 + 1}};

static double hann[SAMPLES], hann_power;
static double w_re[HALF + 1], w_im[HALF + 1]; /* W^k, k = 0..256 */
static double tw_re[HALF], tw_im[HALF];       /* the FFT's twiddles by stage: see fft256 */
static uint8_t bitrev[HALF];                  /* n with its 8 bits reversed */

static void init_tables(void)
{
	const double pi = 3.14159265358979323846;
	hann_power = 0;
	for (int i = 0; i < SAMPLES; i++) {
		hann[i] = 0.5 - 0.5 * cos(2 * pi * (double)i / SAMPLES);
		hann_power += hann[i] * hann[i];
	}
	for (int k = 0; k <= HALF; k++) {
		w_re[k] = cos(2 * pi * (double)k / SAMPLES);
		w_im[k] = -sin(2 * pi * (double)k / SAMPLES);
	}
	for (int half = 1; half < HALF; half <<= 1) {
		for (int k = 0; k < half; k++) {
			tw_re[half + k] = w_re[k * (HALF / half)];
			tw_im[half + k] = w_im[k * (HALF / half)];
		}
	}
	for (int n = 0; n < HALF; n++) {
		int r = 0;
		for (int b = 0; b < 8; b++)
			r |= (n >> b & 1) << (7 - b);
		bitrev[n] = (uint8_t)r;
	}
}

/* fft256 is an in-place iterative radix-2 FFT of HALF points whose input
 * is already in bit-reversed order. The first two stages, whose twiddles
 * are 1 and -i, run as one radix-4 pass without multiplications. The
 * twiddles of the stage combining blocks of half points are
 * tw[half..2·half), contiguous so that clang vectorizes the loop. */
static void fft256(double *restrict re, double *restrict im)
{
	for (int s = 0; s < HALF; s += 4) {
		double a0r = re[s] + re[s + 1], a0i = im[s] + im[s + 1];
		double a1r = re[s] - re[s + 1], a1i = im[s] - im[s + 1];
		double b0r = re[s + 2] + re[s + 3], b0i = im[s + 2] + im[s + 3];
		double b1r = re[s + 2] - re[s + 3], b1i = im[s + 2] - im[s + 3];
		re[s] = a0r + b0r, im[s] = a0i + b0i;
		re[s + 2] = a0r - b0r, im[s + 2] = a0i - b0i;
		re[s + 1] = a1r + b1i, im[s + 1] = a1i - b1r; /* -i·b1 */
		re[s + 3] = a1r - b1i, im[s + 3] = a1i + b1r;
	}
	for (int half = 4; half < HALF; half <<= 1) {
		const double *wr = tw_re + half, *wi = tw_im + half;
		for (int start = 0; start < HALF; start += 2 * half) {
			double *restrict ar = re + start, *restrict ai = im + start;
			double *restrict br = ar + half, *restrict bi = ai + half;
			for (int k = 0; k < half; k++) {
				double tr = wr[k] * br[k] - wi[k] * bi[k];
				double ti = wr[k] * bi[k] + wi[k] * br[k];
				br[k] = ar[k] - tr, bi[k] = ai[k] - ti;
				ar[k] += tr, ai[k] += ti;
			}
		}
	}
}

/* transform converts one frame of PCM to normalized samples (into x) and
 * computes frame.Features (rms, zcr, four band powers in dB) into f. */
static void transform(const uint8_t *pcm, uint8_t *x, float *f)
{
	static double re[HALF], im[HALF];
	double sum = 0;
	int crossings = 0;
	int negative = (int16_t)eft_u16(pcm) < 0;
	for (int n = 0; n < HALF; n++) {
		float x0 = (float)(int16_t)eft_u16(pcm + 4 * n) / 32768.0f;
		float x1 = (float)(int16_t)eft_u16(pcm + 4 * n + 2) / 32768.0f;
		__builtin_memcpy(x + 8 * n, &x0, 4);
		__builtin_memcpy(x + 8 * n + 4, &x1, 4);
		sum += (double)x0 * (double)x0;
		sum += (double)x1 * (double)x1;
		crossings += (x0 < 0) != negative;
		crossings += (x1 < 0) != (x0 < 0);
		negative = x1 < 0;
		re[bitrev[n]] = (double)x0 * hann[2 * n];
		im[bitrev[n]] = (double)x1 * hann[2 * n + 1];
	}
	f[0] = (float)sqrt(sum / SAMPLES);
	f[1] = (float)crossings / (float)(SAMPLES - 1);

	fft256(re, im);
	int band = 0;
	double p = 0;
	for (int k = 1; k <= HALF; k++) {
		int j = (HALF - k) & (HALF - 1), i = k & (HALF - 1);
		double sr = re[i] + re[j], si = im[i] - im[j]; /* Z[k] + conj Z[256-k] */
		double dr = re[i] - re[j], di = im[i] + im[j]; /* Z[k] - conj Z[256-k] */
		/* -i·W^k·d = (wi·dr + wr·di) - i·(wr·dr - wi·di) */
		double xr = sr + (w_im[k] * dr + w_re[k] * di);
		double xi = si - (w_re[k] * dr - w_im[k] * di);
		p += xr * xr + xi * xi; /* |2·X[k]|² */
		if (k + 1 == bands[band][1]) {
			p *= 0.25 * 2 / (SAMPLES * hann_power);
			f[2 + band] = (float)(10 * log10(p + 1e-10));
			band++;
			p = 0;
		}
	}
}

/* ---- The output --------------------------------------------------------------- */

/* The encoded output: input FP32 [1,512], state FP32 [2,1,128] (zeros),
 * sr INT64 [1] (16000), features FP32 [1,6]. */
#define OUTPUT_SIZE (8 + (2 + 5 + 2 + 16 + 4 + 4 * SAMPLES) + (2 + 5 + 2 + 24 + 4 + 4 * 256) + \
		     (2 + 2 + 2 + 8 + 4 + 8) + (2 + 8 + 2 + 16 + 4 + 4 * FEATURES))
static uint8_t output[OUTPUT_SIZE];
static uint8_t *output_input, *output_features; /* where the variable data goes */

static void init_output(void)
{
	static const int64_t input_shape[] = {1, SAMPLES}, state_shape[] = {2, 1, 128}, sr_shape[] = {1},
			     features_shape[] = {1, FEATURES};
	uint8_t *p = eft_put_header(output, 4);
	output_input = eft_put_tensor(p, "input", EFT_FP32, 2, input_shape);
	p = eft_put_tensor(output_input + 4 * SAMPLES, "state", EFT_FP32, 3, state_shape);
	__builtin_memset(p, 0, 4 * 256);
	p = eft_put_tensor(p + 4 * 256, "sr", EFT_INT64, 1, sr_shape);
	eft_put64(p, SAMPLE_RATE);
	output_features = eft_put_tensor(p + 8, "features", EFT_FP32, 2, features_shape);
	if (output_features + 4 * FEATURES != output + OUTPUT_SIZE)
		__builtin_trap(); /* OUTPUT_SIZE is wrong */
}

__attribute__((constructor)) static void init(void)
{
	init_tables();
	init_output();
}

/* ---- The ABI ------------------------------------------------------------------ */

static char message[4096];

static uint64_t pack(const void *p, uint32_t len) { return (uint64_t)(uintptr_t)p << 32 | len; }

static uint64_t fail(const eft_msg *m) { return pack(m->buf, (uint32_t)m->len | ERROR_FLAG); }

EXPORT("ef_abi_version") uint32_t ef_abi_version(void) { return ABI_VERSION; }

extern unsigned char __heap_base;
static uint8_t *input;   /* the ef_alloc buffer: the host's until the next ef_alloc */
static uint32_t input_cap;

/* ef_alloc returns a buffer of at least size bytes for the host to write
 * the input into: always the start of the heap, grown as needed. It traps
 * if the memory cannot grow (the host reports its memory limit). */
EXPORT("ef_alloc") uint32_t ef_alloc(uint32_t size)
{
	if (size == 0)
		size = 1;
	if (size > input_cap) {
		uint64_t base = ((uintptr_t)&__heap_base + 15) & ~(uintptr_t)15;
		uint64_t end = base + size, have = (uint64_t)__builtin_wasm_memory_size(0) << 16;
		if (end > have && __builtin_wasm_memory_grow(0, (size_t)((end - have + 0xffff) >> 16)) == (size_t)-1)
			__builtin_trap();
		input = (uint8_t *)(uintptr_t)base;
		input_cap = size;
	}
	return (uint32_t)(uintptr_t)input;
}

/* describe appends what the input holds, like frame's describe: the
 * number of tensors and each one's name, datatype and shape. The list was
 * decoded once already, so it is valid. */
static void describe(eft_msg *m, const uint8_t *in, uint32_t n)
{
	eft_reader r;
	eft_tensor t;
	eft_msg ignore = {0}; /* holds nothing: the list is valid */
	eft_begin(&r, in, n, &ignore);
	if (r.count == 0) {
		eft_msg_str(m, "no tensors");
		return;
	}
	eft_msg_u64(m, r.count);
	eft_msg_str(m, " tensors:");
	while (eft_next(&r, &t, &ignore) == 1 && m->len < m->cap) {
		eft_msg_str(m, " ");
		eft_msg_quoted(m, t.name, t.name_len);
		eft_msg_str(m, " ");
		eft_msg_str(m, eft_type_names[t.dtype]);
		eft_msg_str(m, " ");
		eft_msg_shape(m, &t);
	}
}

/* ef_process decodes the tensor list at [ptr, ptr+n), checks that it is
 * one frame of PCM and returns the encoded outputs (ptr<<32 | len), or an
 * error message with ERROR_FLAG set in len. */
EXPORT("ef_process") uint64_t ef_process(uint32_t ptr, uint32_t n)
{
	eft_msg m = {message, 0, sizeof message};
	const uint8_t *in = (const uint8_t *)(uintptr_t)ptr;
	if (input_cap == 0 || in < input || (uint64_t)(in - input) + n > input_cap) {
		eft_msg_str(&m, "input region [");
		eft_msg_u64(&m, ptr);
		eft_msg_str(&m, ", +");
		eft_msg_u64(&m, n);
		eft_msg_str(&m, ") is not inside the ef_alloc buffer");
		return fail(&m);
	}

	/* Decode the whole list first, as strictly as the Go guest does. */
	eft_reader r;
	eft_tensor t, first = {0};
	int more;
	eft_msg_str(&m, "decoding input: ");
	if (eft_begin(&r, in, n, &m) < 0)
		return fail(&m);
	while ((more = eft_next(&r, &t, &m)) == 1) {
		if (r.index == 1)
			first = t;
	}
	if (more < 0)
		return fail(&m);
	m.len = 0;

	if (r.count != 1 || first.name_len != 3 || __builtin_memcmp(first.name, "raw", 3) != 0) {
		eft_msg_str(&m, PREFIX "want one UINT8 tensor \"raw\" of 1024 bytes (512 samples of 16-bit "
				    "little-endian PCM at 16000 Hz), got ");
		describe(&m, in, n);
		return fail(&m);
	}
	if (first.dtype != EFT_UINT8) {
		eft_msg_str(&m, PREFIX "tensor \"raw\" is ");
		eft_msg_str(&m, eft_type_names[first.dtype]);
		eft_msg_str(&m, ", want UINT8");
		return fail(&m);
	}
	if (first.nbytes != BYTES) {
		eft_msg_str(&m, PREFIX);
		eft_msg_u64(&m, first.nbytes);
		eft_msg_str(&m, " bytes of PCM, want exactly 1024 (512 samples of 16-bit little-endian at 16000 Hz)");
		return fail(&m);
	}

	float f[FEATURES];
	transform(first.data, output_input, f);
	__builtin_memcpy(output_features, f, sizeof f);
	return pack(output, OUTPUT_SIZE);
}
