/* base64.c: RFC 4648 base64 (see base64.h). Table-driven: the JSON transport decodes every
 * key and value through it, and a branchy per-character lookup once cost a fifth of a
 * JSON sync's CPU. */
#include "core/base64.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* value + 1 of each character (0: not base64); [1] for the URL-safe alphabet. Written once
 * under table_once, read-only afterwards. */
static uint8_t table[2][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	for (int i = 0; i < 64; i++) {
		table[0][(unsigned char)alphabet[i]] = (uint8_t)(i + 1);
		table[1][(unsigned char)alphabet[i]] = (uint8_t)(i + 1);
	}
	table[1]['-'] = 62 + 1;
	table[1]['_'] = 63 + 1;
}

char *base64_encode(const void *data, size_t len, size_t *out_len)
{
	const unsigned char *p = data;
	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return NULL;
	size_t n = (len + 2) / 3 * 4;
	char *out = malloc(n + 1);
	if (!out)
		return NULL;
	char *o = out;
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
		*o++ = alphabet[v >> 18];
		*o++ = alphabet[(v >> 12) & 63];
		*o++ = alphabet[(v >> 6) & 63];
		*o++ = alphabet[v & 63];
	}
	if (i < len) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)p[i + 1] << 8;
		*o++ = alphabet[v >> 18];
		*o++ = alphabet[(v >> 12) & 63];
		*o++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = 0;
	if (out_len)
		*out_len = (size_t)(o - out);
	return out;
}

int base64_decode(const char *s, size_t len, int flags, char **out, size_t *out_len)
{
	pthread_once(&table_once, table_init);
	const uint8_t *t = table[(flags & BASE64_URL_SAFE) ? 1 : 0];
	size_t pad = 0;
	while (len > 0 && s[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	if (len % 4 == 1 || (pad && (len + pad) % 4 != 0))
		return -EINVAL;
	char *buf = malloc(len / 4 * 3 + 3);
	if (!buf)
		return -ENOMEM;
	const unsigned char *u = (const unsigned char *)s;
	size_t n = 0, i = 0;
	/* Whole quanta: four characters, three bytes. */
	for (; i + 4 <= len; i += 4) {
		unsigned a = t[u[i]], b = t[u[i + 1]], c = t[u[i + 2]], d = t[u[i + 3]];
		if (!a || !b || !c || !d)
			goto out_inval;
		unsigned v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
		buf[n++] = (char)(v >> 16);
		buf[n++] = (char)(v >> 8);
		buf[n++] = (char)v;
	}
	/* The tail: two or three characters, one or two bytes. */
	if (i < len) {
		unsigned a = t[u[i]], b = t[u[i + 1]], c = len - i == 3 ? t[u[i + 2]] : 1;
		if (!a || !b || !c)
			goto out_inval;
		unsigned v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6;
		buf[n++] = (char)(v >> 16);
		if (len - i == 3)
			buf[n++] = (char)(v >> 8);
		/* Leftover bits of the last character must be zero (canonical encoding). */
		unsigned rest = len - i == 3 ? v & 0xff : v & 0xffff;
		if (rest && !(flags & BASE64_LAX))
			goto out_inval;
	}
	buf[n] = 0;
	*out = buf;
	*out_len = n;
	return 0;
out_inval:
	free(buf);
	return -EINVAL;
}
