/*
 * eft.h: the binary tensor-list encoding of the edgefleet WASM processor
 * ABI (docs/wasm-abi.md, section 3; shared/tensor/binary.go) for
 * processors written in C, and a small message builder for their errors.
 * Header-only, freestanding: no libc, no allocation.
 *
 *   magic   "EFT1"
 *   count   u32
 *   count × { name_len u16, name, dtype u8, rank u8, dims [rank]i64,
 *             nbytes u32, data [nbytes] }          (all little endian)
 *
 * The decoder is as strict as tensor.DecodeBinary and reports the same
 * errors in the same words, so a C processor rejects exactly what a Go one
 * rejects, with the same message.
 */
#ifndef EFT_H
#define EFT_H

#include <stddef.h>
#include <stdint.h>

/* Datatype codes, in the order of tensor.Datatypes. */
enum {
	EFT_BOOL,
	EFT_UINT8,
	EFT_INT8,
	EFT_INT16,
	EFT_INT32,
	EFT_INT64,
	EFT_FP32,
	EFT_FP64,
	EFT_NTYPES
};

#define EFT_MAX_TENSORS 1024
#define EFT_MAX_RANK 16

static const char *const eft_type_names[EFT_NTYPES] = {
	"BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64",
};
static const uint8_t eft_type_sizes[EFT_NTYPES] = {1, 1, 1, 2, 4, 8, 4, 8};

/* Little-endian loads and stores at any alignment (wasm is little endian;
 * the builtins compile to single unaligned loads and stores). */
static inline uint16_t eft_u16(const uint8_t *p) { uint16_t v; __builtin_memcpy(&v, p, 2); return v; }
static inline uint32_t eft_u32(const uint8_t *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
static inline uint64_t eft_u64(const uint8_t *p) { uint64_t v; __builtin_memcpy(&v, p, 8); return v; }
static inline void eft_put16(uint8_t *p, uint16_t v) { __builtin_memcpy(p, &v, 2); }
static inline void eft_put32(uint8_t *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
static inline void eft_put64(uint8_t *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }

/* ---- Messages ---------------------------------------------------------- */

/* eft_msg builds a UTF-8 message in a fixed buffer; what does not fit is
 * dropped (the host shows at most the first 1024 bytes anyway). */
typedef struct {
	char *buf;
	size_t len, cap;
} eft_msg;

static inline void eft_msg_bytes(eft_msg *m, const char *s, size_t n)
{
	for (size_t i = 0; i < n && m->len < m->cap; i++)
		m->buf[m->len++] = s[i];
}

static inline void eft_msg_str(eft_msg *m, const char *s)
{
	while (*s && m->len < m->cap)
		m->buf[m->len++] = *s++;
}

static inline void eft_msg_u64(eft_msg *m, uint64_t v)
{
	char d[20];
	int n = 0;
	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		eft_msg_bytes(m, &d[--n], 1);
}

static inline void eft_msg_i64(eft_msg *m, int64_t v)
{
	if (v < 0) {
		eft_msg_str(m, "-");
		eft_msg_u64(m, -(uint64_t)v);
		return;
	}
	eft_msg_u64(m, (uint64_t)v);
}

/* eft_utf8 decodes the rune at s[0:n] like Go's utf8.DecodeRune: it
 * returns the rune and sets *w to its width, or returns -1 with *w = 1 for
 * an invalid or truncated sequence (overlong forms and surrogates are
 * invalid). */
static inline int32_t eft_utf8(const uint8_t *s, size_t n, size_t *w)
{
	uint8_t c = s[0];
	*w = 1;
	if (c < 0x80)
		return c;
	size_t need;
	int32_t r;
	uint8_t lo = 0x80, hi = 0xbf; /* the range of the second byte */
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2, r = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3, r = c & 0x0f;
		if (c == 0xe0)
			lo = 0xa0;
		if (c == 0xed)
			hi = 0x9f; /* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4, r = c & 0x07;
		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f;
	} else {
		return -1;
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return -1;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		r = r << 6 | (s[i] & 0x3f);
	}
	*w = need;
	return r;
}

/* eft_unprintable reports whether Go's strconv.Quote escapes the rune r
 * (r >= 0x80): C1 controls, spaces other than the ASCII one, format
 * characters (the bidirectional overrides among them), private use and
 * noncharacters, tags. Unassigned code points, which Go escapes too, pass. */
static inline int eft_unprintable(int32_t r)
{
	return (r >= 0x80 && r <= 0xa0) || r == 0xad || r == 0x1680 || r == 0x180e || (r >= 0x2000 && r <= 0x200f) ||
	       (r >= 0x2028 && r <= 0x202f) || (r >= 0x205f && r <= 0x206f) || r == 0x3000 ||
	       (r >= 0xe000 && r <= 0xf8ff) || r == 0xfeff || (r >= 0xfff0 && r <= 0xfffb) || r == 0xfffe || r == 0xffff ||
	       (r >= 0xe0000 && r <= 0xe00ff) || r >= 0xf0000;
}

/* eft_msg_quoted appends s quoted like Go's %q (strconv.Quote): quotes and
 * backslashes escaped, ASCII controls as \n, \t... or \xNN, invalid UTF-8
 * bytes as \xNN, unprintable runes (eft_unprintable) as \uNNNN or
 * \UNNNNNNNN. A message never carries a raw control or bidi character. */
static inline void eft_msg_quoted(eft_msg *m, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	eft_msg_str(m, "\"");
	for (size_t i = 0; i < n;) {
		size_t w;
		int32_t r = eft_utf8(s + i, n - i, &w);
		if (r < 0) {
			char e[4] = {'\\', 'x', hex[s[i] >> 4], hex[s[i] & 15]};
			eft_msg_bytes(m, e, 4);
		} else if (r == '"' || r == '\\') {
			char e[2] = {'\\', (char)r};
			eft_msg_bytes(m, e, 2);
		} else if (r >= 0x20 && r < 0x7f) {
			eft_msg_bytes(m, (const char *)s + i, 1);
		} else if (r >= 0x80 && !eft_unprintable(r)) {
			eft_msg_bytes(m, (const char *)s + i, w);
		} else if (r >= 0x80) {
			int digits = r > 0xffff ? 8 : 4;
			char u[10] = {'\\', r > 0xffff ? 'U' : 'u'};
			for (int d = 0; d < digits; d++)
				u[2 + d] = hex[(r >> (4 * (digits - 1 - d))) & 15];
			eft_msg_bytes(m, u, 2 + digits);
		} else {
			const char *e = 0;
			switch (r) {
			case '\a': e = "\\a"; break;
			case '\b': e = "\\b"; break;
			case '\f': e = "\\f"; break;
			case '\n': e = "\\n"; break;
			case '\r': e = "\\r"; break;
			case '\t': e = "\\t"; break;
			case '\v': e = "\\v"; break;
			}
			if (e) {
				eft_msg_str(m, e);
			} else {
				char x[4] = {'\\', 'x', hex[r >> 4], hex[r & 15]};
				eft_msg_bytes(m, x, 4);
			}
		}
		i += w;
	}
	eft_msg_str(m, "\"");
}

/* ---- Decoding ------------------------------------------------------------ */

/* eft_tensor is one decoded tensor, pointing into the encoded list. */
typedef struct {
	const uint8_t *name;
	uint16_t name_len;
	uint8_t dtype;
	uint8_t rank;
	const uint8_t *dims; /* rank little-endian i64s */
	const uint8_t *data;
	uint32_t nbytes;
	int64_t elements;
} eft_tensor;

static inline int64_t eft_dim(const eft_tensor *t, int i) { return (int64_t)eft_u64(t->dims + 8 * i); }

/* eft_reader walks an encoded list. */
typedef struct {
	const uint8_t *p;
	uint32_t left;
	int truncated;
	uint32_t count, index;
} eft_reader;

static inline const uint8_t *eft_next_bytes(eft_reader *r, uint32_t n)
{
	if (r->truncated || n > r->left) {
		r->truncated = 1;
		return 0;
	}
	const uint8_t *p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

static inline uint64_t eft_next_uint(eft_reader *r, uint32_t size)
{
	const uint8_t *p = eft_next_bytes(r, size);
	if (!p)
		return 0;
	switch (size) {
	case 1: return p[0];
	case 2: return eft_u16(p);
	case 4: return eft_u32(p);
	}
	return eft_u64(p);
}

/* eft_elements is tensor.Elements: the element count of a shape, or -1 if
 * a dimension is negative or the product overflows. */
static inline int64_t eft_elements(const uint8_t *dims, int rank)
{
	int64_t n = 1;
	for (int i = 0; i < rank; i++) {
		int64_t d = (int64_t)eft_u64(dims + 8 * i);
		if (d < 0)
			return -1;
		if (d != 0 && n > INT64_MAX / d)
			return -1;
		n *= d;
	}
	return n;
}

#define EFT_ERR_DATA "invalid tensor data"
#define EFT_ERR_TRUNCATED EFT_ERR_DATA ": binary tensor list truncated"

/* eft_begin starts reading the list at [p, p+n). It returns 0, or -1 with
 * the error in m. */
static inline int eft_begin(eft_reader *r, const uint8_t *p, uint32_t n, eft_msg *m)
{
	*r = (eft_reader){.p = p, .left = n};
	const uint8_t *magic = eft_next_bytes(r, 4);
	if (!magic || magic[0] != 'E' || magic[1] != 'F' || magic[2] != 'T' || magic[3] != '1') {
		eft_msg_str(m, EFT_ERR_DATA ": binary tensor list: bad magic");
		return -1;
	}
	r->count = (uint32_t)eft_next_uint(r, 4);
	if (r->truncated) {
		eft_msg_str(m, EFT_ERR_TRUNCATED);
		return -1;
	}
	if (r->count > EFT_MAX_TENSORS) {
		eft_msg_str(m, EFT_ERR_DATA ": binary tensor list: ");
		eft_msg_u64(m, r->count);
		eft_msg_str(m, " tensors (limit 1024)");
		return -1;
	}
	return 0;
}

static inline void eft_msg_tensor(eft_msg *m, const eft_tensor *t)
{
	eft_msg_str(m, "tensor ");
	eft_msg_quoted(m, t->name, t->name_len);
	eft_msg_str(m, ": ");
}

/* eft_msg_shape appends a shape like Go's %v of an []int64: [1 512]. */
static inline void eft_msg_shape(eft_msg *m, const eft_tensor *t)
{
	eft_msg_str(m, "[");
	for (int i = 0; i < t->rank; i++) {
		if (i)
			eft_msg_str(m, " ");
		eft_msg_i64(m, eft_dim(t, i));
	}
	eft_msg_str(m, "]");
}

/* eft_next decodes the next tensor into t: 1 if there was one, 0 at the
 * end of a valid list, -1 with the error in m. */
static inline int eft_next(eft_reader *r, eft_tensor *t, eft_msg *m)
{
	if (r->index == r->count) {
		if (r->left) {
			eft_msg_str(m, EFT_ERR_DATA ": binary tensor list: ");
			eft_msg_u64(m, r->left);
			eft_msg_str(m, " trailing bytes");
			return -1;
		}
		return 0;
	}
	*t = (eft_tensor){0};
	t->name_len = (uint16_t)eft_next_uint(r, 2);
	t->name = eft_next_bytes(r, t->name_len);
	t->dtype = (uint8_t)eft_next_uint(r, 1);
	t->rank = (uint8_t)eft_next_uint(r, 1);
	if (r->truncated) {
		eft_msg_str(m, EFT_ERR_TRUNCATED);
		return -1;
	}
	if (t->dtype >= EFT_NTYPES) {
		eft_msg_tensor(m, t);
		eft_msg_str(m, "datatype mismatch: unknown datatype code ");
		eft_msg_u64(m, t->dtype);
		return -1;
	}
	if (t->rank > EFT_MAX_RANK) {
		eft_msg_tensor(m, t);
		eft_msg_str(m, "shape mismatch: rank ");
		eft_msg_u64(m, t->rank);
		return -1;
	}
	t->dims = eft_next_bytes(r, 8u * t->rank);
	t->nbytes = (uint32_t)eft_next_uint(r, 4);
	if (r->truncated) {
		eft_msg_str(m, EFT_ERR_TRUNCATED);
		return -1;
	}
	int64_t n = eft_elements(t->dims, t->rank);
	if (n < 0 || n > (int64_t)t->nbytes || n * eft_type_sizes[t->dtype] != (int64_t)t->nbytes) {
		eft_msg_tensor(m, t);
		eft_msg_str(m, "shape mismatch: shape ");
		eft_msg_shape(m, t);
		eft_msg_str(m, " of ");
		eft_msg_str(m, eft_type_names[t->dtype]);
		eft_msg_str(m, " does not take ");
		eft_msg_u64(m, t->nbytes);
		eft_msg_str(m, " bytes");
		return -1;
	}
	t->elements = n;
	t->data = eft_next_bytes(r, t->nbytes);
	if (r->truncated) {
		eft_msg_str(m, EFT_ERR_TRUNCATED);
		return -1;
	}
	if (t->dtype == EFT_BOOL) {
		for (uint32_t j = 0; j < t->nbytes; j++) {
			if (t->data[j] > 1) {
				eft_msg_tensor(m, t);
				eft_msg_str(m, EFT_ERR_DATA ": BOOL element ");
				eft_msg_u64(m, j);
				eft_msg_str(m, " is ");
				eft_msg_u64(m, t->data[j]);
				eft_msg_str(m, ", want 0 or 1");
				return -1;
			}
		}
	}
	r->index++;
	return 1;
}

/* ---- Encoding -------------------------------------------------------------- */

/* eft_put_header writes the list header for count tensors at p and returns
 * the end. */
static inline uint8_t *eft_put_header(uint8_t *p, uint32_t count)
{
	__builtin_memcpy(p, "EFT1", 4);
	eft_put32(p + 4, count);
	return p + 8;
}

/* eft_put_tensor writes one tensor's header (name, datatype, shape, byte
 * count) at p and returns where its nbytes of data go. */
static inline uint8_t *eft_put_tensor(uint8_t *p, const char *name, uint8_t dtype, int rank, const int64_t *dims)
{
	size_t n = __builtin_strlen(name);
	int64_t elements = 1;
	eft_put16(p, (uint16_t)n);
	__builtin_memcpy(p + 2, name, n);
	p += 2 + n;
	*p++ = dtype;
	*p++ = (uint8_t)rank;
	for (int i = 0; i < rank; i++, p += 8) {
		eft_put64(p, (uint64_t)dims[i]);
		elements *= dims[i];
	}
	eft_put32(p, (uint32_t)(elements * eft_type_sizes[dtype]));
	return p + 4;
}

#endif /* EFT_H */
