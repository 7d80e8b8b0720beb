/* k8s_buf.c: the codec's growable byte buffer and what writes bytes into one: printf,
 * varints, UTF-8 checking and repair (as Go does it), base64 (over core/base64). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"
#include "core/base64.h"

/* ---- buffer ---- */

void k8s_buf_init(struct buf *b)
{
	memset(b, 0, sizeof(*b));
}

/* Big enough that forgetting is rare, small enough to stay in L1: a size-only
 * render of a Pod then touches no new memory (docs/performance.md). */
#define COUNT_CAP 4096

void k8s_buf_init_count(struct buf *b)
{
	memset(b, 0, sizeof(*b));
	b->count_only = true;
}

size_t k8s_buf_size(const struct buf *b)
{
	return b->dropped + b->len;
}

void k8s_buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

bool k8s_buf_reserve(struct buf *b, size_t n)
{
	if (b->oom)
		return false;
	if (b->len + n + 1 <= b->cap)
		return true;
	if (b->count_only && b->cap && n + 1 <= b->cap) {
		b->dropped += b->len;
		b->len = 0;
		return true;
	}
	size_t cap = b->cap ? b->cap : b->count_only ? COUNT_CAP : 256;
	while (cap < b->len + n + 1) {
		if (cap > SIZE_MAX / 2) {
			b->oom = true;
			return false;
		}
		cap *= 2;
	}
	uint8_t *d = realloc(b->data, cap);
	if (!d) {
		b->oom = true;
		return false;
	}
	b->data = d;
	b->cap = cap;
	return true;
}

void k8s_buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0 || !k8s_buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void k8s_buf_addc(struct buf *b, char c)
{
	if (!k8s_buf_reserve(b, 1))
		return;
	b->data[b->len++] = (uint8_t)c;
}

void k8s_buf_adds(struct buf *b, const char *s)
{
	k8s_buf_add(b, s, strlen(s));
}

void k8s_buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char tmp[128];
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		k8s_buf_add(b, tmp, (size_t)n);
		return;
	}
	if (!k8s_buf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void k8s_buf_varint(struct buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	while (v >= 0x80) {
		tmp[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	tmp[n++] = (uint8_t)v;
	k8s_buf_add(b, tmp, n);
}

int k8s_buf_finish(struct buf *b, char **out, size_t *out_len)
{
	if (!k8s_buf_reserve(b, 0)) {
		k8s_buf_free(b);
		return -ENOMEM;
	}
	b->data[b->len] = 0;
	*out = (char *)b->data;
	if (out_len)
		*out_len = b->len;
	memset(b, 0, sizeof(*b));
	return 0;
}

char *k8s_strdup_printf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* ---- UTF-8 ---- */

size_t k8s_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint8_t c = s[0];

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf && n >= 2 && (s[1] & 0xc0) == 0x80) {
		*cp = (uint32_t)(c & 0x1f) << 6 | (s[1] & 0x3f);
		return 2;
	}
	if (c >= 0xe0 && c <= 0xef && n >= 3 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80) {
		uint32_t v =
			(uint32_t)(c & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
		if (v >= 0x800 && (v < 0xd800 || v > 0xdfff)) {
			*cp = v;
			return 3;
		}
	}
	if (c >= 0xf0 && c <= 0xf4 && n >= 4 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 &&
	    (s[3] & 0xc0) == 0x80) {
		uint32_t v = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
			     (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
		if (v >= 0x10000 && v <= 0x10ffff) {
			*cp = v;
			return 4;
		}
	}
	*cp = 0xfffd;
	return 1;
}

bool k8s_utf8_valid(const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;
	uint32_t cp;
	size_t i = 0;

	/* eight ASCII bytes at a time: nearly all of a Kubernetes object */
	for (uint64_t w; i + 8 <= n; i += 8) {
		memcpy(&w, u + i, 8);
		if (w & 0x8080808080808080u)
			break;
	}
	while (i < n) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t l = k8s_utf8_decode(u + i, n - i, &cp);
		if (cp == 0xfffd && l == 1)
			return false;
		i += l;
	}
	return true;
}

void k8s_utf8_sanitize(struct buf *b, const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;
	size_t i = 0, start = 0;
	uint32_t cp;

	while (i < n) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t l = k8s_utf8_decode(u + i, n - i, &cp);
		if (cp == 0xfffd && l == 1) {
			k8s_buf_add(b, s + start, i - start);
			k8s_buf_adds(b, "\xef\xbf\xbd");
			start = i + 1;
		}
		i += l;
	}
	k8s_buf_add(b, s + start, n - start);
}

/* ---- base64 ---- */

void k8s_base64_encode(struct buf *b, const uint8_t *p, size_t n)
{
	size_t len;
	char *s = base64_encode(p, n, &len);

	if (!s) {
		b->oom = true;
		return;
	}
	k8s_buf_add(b, s, len);
	free(s);
}

/* What this decoder has always accepted: \r and \n anywhere (Go's decoder skips them),
 * up to two '=' at the end whether or not the length needs them, and non-zero bits after
 * the last byte. So newlines go, the padding is dropped here and core base64 decodes the
 * rest unpadded and lax. */
int k8s_base64_decode(const char *s, size_t n, struct buf *out)
{
	char *clean = NULL, *dec;
	size_t len = n, dec_len;

	if (n && (memchr(s, '\r', n) || memchr(s, '\n', n))) {
		clean = malloc(n);
		if (!clean)
			return -ENOMEM;
		len = 0;
		for (size_t i = 0; i < n; i++)
			if (s[i] != '\r' && s[i] != '\n')
				clean[len++] = s[i];
		s = clean;
	}
	for (int pad = 0; pad < 2 && len > 0 && s[len - 1] == '='; pad++)
		len--;
	/* a third '=' would be taken as padding by core base64 */
	int r = len > 0 && s[len - 1] == '=' ? -EINVAL
					     : base64_decode(s, len, BASE64_LAX, &dec, &dec_len);
	free(clean);
	if (r < 0)
		return r;
	k8s_buf_add(out, dec, dec_len);
	free(dec);
	return out->oom ? -ENOMEM : 0;
}
