/* k8s_json_parse.c: a JSON parser (RFC 8259) that keeps what Go output needs kept:
 * number text, member order, source lines and byte spans. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"

#include "core/util.h"

/* the one-letter escapes as (letter, byte) pairs; '/' is only ever read */
static const char short_esc[] = "\"\"\\\\//b\bf\fn\nr\rt\t";

int k8s_json_unescape(unsigned char letter)
{
	for (size_t i = 0; i + 1 < sizeof(short_esc); i += 2)
		if ((unsigned char)short_esc[i] == letter)
			return (unsigned char)short_esc[i + 1];
	return -1;
}

int k8s_json_escape_letter(unsigned char c)
{
	for (size_t i = 0; i + 1 < sizeof(short_esc); i += 2)
		if ((unsigned char)short_esc[i + 1] == c && c != '/')
			return (unsigned char)short_esc[i];
	return -1;
}

#define JSON_MAX_DEPTH 1000

struct jparser {
	const char *s;
	size_t len, pos;
	int line;
	char *err;
};

static int jerr(struct jparser *p, const char *what)
{
	if (!p->err)
		p->err = k8s_strdup_printf("invalid JSON at line %d: %s", p->line, what);
	return -EINVAL;
}

static void skip_ws(struct jparser *p)
{
	while (p->pos < p->len) {
		char c = p->s[p->pos];
		if (c == '\n')
			p->line++;
		else if (c != ' ' && c != '\t' && c != '\r')
			break;
		p->pos++;
	}
}

static void put_utf8(struct buf *b, uint32_t cp)
{
	char t[4];

	if (cp < 0x80) {
		k8s_buf_addc(b, (char)cp);
	} else if (cp < 0x800) {
		t[0] = (char)(0xc0 | (cp >> 6));
		t[1] = (char)(0x80 | (cp & 0x3f));
		k8s_buf_add(b, t, 2);
	} else if (cp < 0x10000) {
		t[0] = (char)(0xe0 | (cp >> 12));
		t[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		t[2] = (char)(0x80 | (cp & 0x3f));
		k8s_buf_add(b, t, 3);
	} else {
		t[0] = (char)(0xf0 | (cp >> 18));
		t[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		t[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		t[3] = (char)(0x80 | (cp & 0x3f));
		k8s_buf_add(b, t, 4);
	}
}

static int read_u4(struct jparser *p, uint32_t *cp)
{
	uint32_t v = 0;

	if (p->pos + 4 > p->len)
		return jerr(p, "short \\u escape");
	for (int i = 0; i < 4; i++) {
		int h = util_hexval(p->s[p->pos + i]);
		if (h < 0)
			return jerr(p, "bad \\u escape");
		v = v << 4 | (uint32_t)h;
	}
	p->pos += 4;
	*cp = v;
	return 0;
}

static int parse_string(struct jparser *p, struct buf *b)
{
	p->pos++; /* opening quote */
	for (;;) {
		if (p->pos >= p->len)
			return jerr(p, "unterminated string");
		unsigned char c = (unsigned char)p->s[p->pos];
		if (c == '"') {
			p->pos++;
			return b->oom ? -ENOMEM : 0;
		}
		if (c < 0x20)
			return jerr(p, "control character in string");
		if (c != '\\') {
			size_t st = p->pos;
			while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
			       (unsigned char)p->s[p->pos] >= 0x20)
				p->pos++;
			/* Go's decoder turns invalid UTF-8 into U+FFFD */
			k8s_utf8_sanitize(b, p->s + st, p->pos - st);
			continue;
		}
		p->pos++;
		if (p->pos >= p->len)
			return jerr(p, "unterminated escape");
		c = (unsigned char)p->s[p->pos++];
		switch (c) {
		case 'u': {
			uint32_t cp, lo;
			if (read_u4(p, &cp))
				return -EINVAL;
			if (cp >= 0xd800 && cp < 0xdc00 && p->pos + 1 < p->len &&
			    p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
				size_t save = p->pos;
				p->pos += 2;
				if (read_u4(p, &lo))
					return -EINVAL;
				if (lo >= 0xdc00 && lo < 0xe000) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else {
					p->pos = save;
					cp = 0xfffd;
				}
			} else if (cp >= 0xd800 && cp < 0xe000) {
				cp = 0xfffd; /* lone surrogate, as Go does */
			}
			put_utf8(b, cp);
			break;
		}
		default: {
			int e = k8s_json_unescape(c);
			if (e < 0)
				return jerr(p, "bad escape");
			k8s_buf_addc(b, (char)e);
		}
		}
	}
}

static int parse_value(struct jparser *p, struct jval **out, int depth);

static int parse_number(struct jparser *p, struct jval **out)
{
	size_t st = p->pos;
	const char *s = p->s;

	if (p->pos < p->len && s[p->pos] == '-')
		p->pos++;
	if (p->pos >= p->len)
		return jerr(p, "bad number");
	if (s[p->pos] == '0') {
		p->pos++;
	} else if (s[p->pos] >= '1' && s[p->pos] <= '9') {
		while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
			p->pos++;
	} else {
		return jerr(p, "bad number");
	}
	if (p->pos < p->len && s[p->pos] == '.') {
		p->pos++;
		if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9')
			return jerr(p, "bad number");
		while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
			p->pos++;
	}
	if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
		p->pos++;
		if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-'))
			p->pos++;
		if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9')
			return jerr(p, "bad number");
		while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9')
			p->pos++;
	}
	*out = k8s_jv_str(s + st, p->pos - st);
	if (!*out)
		return -ENOMEM;
	(*out)->t = J_NUM;
	return 0;
}

static int parse_value(struct jparser *p, struct jval **out, int depth)
{
	struct jval *v = NULL;
	int line, r;
	size_t st;

	if (depth > JSON_MAX_DEPTH)
		return jerr(p, "nesting too deep");
	skip_ws(p);
	if (p->pos >= p->len)
		return jerr(p, "unexpected end of input");
	line = p->line;
	st = p->pos;
	char c = p->s[p->pos];
	if (c == '{' || c == '[') {
		bool obj = c == '{';
		char close = obj ? '}' : ']';
		v = k8s_jv_new(obj ? J_OBJ : J_ARR);
		if (!v)
			return -ENOMEM;
		p->pos++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == close) {
			p->pos++;
			goto done;
		}
		for (;;) {
			struct buf key;
			struct jval *item = NULL;

			k8s_buf_init(&key);
			skip_ws(p);
			if (obj) {
				if (p->pos >= p->len || p->s[p->pos] != '"') {
					r = jerr(p, "expected string key");
					goto fail;
				}
				r = parse_string(p, &key);
				if (r) {
					k8s_buf_free(&key);
					goto fail;
				}
				skip_ws(p);
				if (p->pos >= p->len || p->s[p->pos] != ':') {
					k8s_buf_free(&key);
					r = jerr(p, "expected ':'");
					goto fail;
				}
				p->pos++;
			}
			r = parse_value(p, &item, depth + 1);
			if (r) {
				k8s_buf_free(&key);
				goto fail;
			}
			if (obj)
				r = k8s_jv_set(v, key.data ? (char *)key.data : "", key.len, item);
			else
				r = k8s_jv_push(v, item);
			k8s_buf_free(&key);
			if (r)
				goto fail;
			skip_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ',') {
				p->pos++;
				continue;
			}
			if (p->pos < p->len && p->s[p->pos] == close) {
				p->pos++;
				break;
			}
			r = jerr(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
			goto fail;
		}
	} else if (c == '"') {
		struct buf sb;
		k8s_buf_init(&sb);
		r = parse_string(p, &sb);
		if (r) {
			k8s_buf_free(&sb);
			return r;
		}
		v = k8s_jv_str(sb.data ? (char *)sb.data : "", sb.len);
		k8s_buf_free(&sb);
		if (!v)
			return -ENOMEM;
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		r = parse_number(p, &v);
		if (r)
			return r;
	} else if (p->len - p->pos >= 4 && memcmp(p->s + p->pos, "true", 4) == 0) {
		v = k8s_jv_bool(true);
		p->pos += 4;
	} else if (p->len - p->pos >= 5 && memcmp(p->s + p->pos, "false", 5) == 0) {
		v = k8s_jv_bool(false);
		p->pos += 5;
	} else if (p->len - p->pos >= 4 && memcmp(p->s + p->pos, "null", 4) == 0) {
		v = k8s_jv_new(J_NULL);
		p->pos += 4;
	} else {
		return jerr(p, "unexpected character");
	}
	if (!v)
		return -ENOMEM;
done:
	v->line = line;
	v->src = p->s;
	v->src_off = st;
	v->src_len = p->pos - st;
	*out = v;
	return 0;
fail:
	k8s_jv_free(v);
	return r;
}

int k8s_json_parse(const char *text, size_t len, struct jval **out, char **err)
{
	struct jparser p = {.s = text, .len = len, .line = 1};
	struct jval *v = NULL;
	int r;

	*out = NULL;
	r = parse_value(&p, &v, 0);
	if (!r) {
		skip_ws(&p);
		if (p.pos != p.len) {
			k8s_jv_free(v);
			v = NULL;
			r = jerr(&p, "trailing data after value");
		}
	}
	if (r) {
		if (err)
			*err = p.err ? p.err : k8s_strdup_printf("out of memory");
		else
			free(p.err);
		return r;
	}
	*out = v;
	return 0;
}
