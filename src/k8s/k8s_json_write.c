/* k8s_json_write.c: writes a jval exactly as Go's encoding/json does (HTML-safe
 * escaping, invalid UTF-8 replaced, MarshalIndent layout). Kubernetes output is Go output,
 * so matching it byte for byte is what makes decode output equal kubectl's. */
#include <stdio.h>
#include <string.h>

#include "k8s_internal.h"

static void write_string(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *u = (const uint8_t *)s;
	size_t i = 0, start = 0;

	k8s_buf_addc(b, '"');
	while (i < n) {
		uint8_t c = u[i];
		if (c < 0x80) {
			if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' &&
			    c != '&') {
				i++;
				continue;
			}
			k8s_buf_add(b, s + start, i - start);
			int letter = k8s_json_escape_letter(c);
			if (letter >= 0) {
				k8s_buf_addc(b, '\\');
				k8s_buf_addc(b, (char)letter);
			} else {
				k8s_buf_adds(b, "\\u00");
				k8s_buf_addc(b, hex[c >> 4]);
				k8s_buf_addc(b, hex[c & 15]);
			}
			i++;
			start = i;
			continue;
		}
		uint32_t cp;
		size_t l = k8s_utf8_decode(u + i, n - i, &cp);
		if (cp == 0xfffd && l == 1) {
			k8s_buf_add(b, s + start, i - start);
			k8s_buf_adds(b, "\\ufffd");
			i += l;
			start = i;
			continue;
		}
		if (cp == 0x2028 || cp == 0x2029) {
			k8s_buf_add(b, s + start, i - start);
			k8s_buf_adds(b, cp == 0x2028 ? "\\u2028" : "\\u2029");
			i += l;
			start = i;
			continue;
		}
		i += l;
	}
	k8s_buf_add(b, s + start, n - start);
	k8s_buf_addc(b, '"');
}

static void newline_indent(struct buf *b, int indent, int depth)
{
	k8s_buf_addc(b, '\n');
	for (int i = 0; i < indent * depth; i++)
		k8s_buf_addc(b, ' ');
}

static void write_value(struct buf *b, const struct jval *v, int indent, int depth)
{
	switch (v->t) {
	case J_NULL:
	case J_BOOL:
	case J_NUM: {
		size_t n;
		const char *t = k8s_jv_scalar_text(v, &n);
		k8s_buf_add(b, t, n);
		break;
	}
	case J_STR:
		write_string(b, v->s, v->len);
		break;
	case J_ARR:
	case J_OBJ: {
		bool obj = v->t == J_OBJ;
		k8s_buf_addc(b, obj ? '{' : '[');
		if (v->n == 0) {
			k8s_buf_addc(b, obj ? '}' : ']');
			break;
		}
		for (size_t i = 0; i < v->n; i++) {
			if (i)
				k8s_buf_addc(b, ',');
			if (indent)
				newline_indent(b, indent, depth + 1);
			if (obj) {
				write_string(b, v->k[i], v->klen[i]);
				k8s_buf_adds(b, indent ? ": " : ":");
			}
			write_value(b, v->v[i], indent, depth + 1);
		}
		if (indent)
			newline_indent(b, indent, depth);
		k8s_buf_addc(b, obj ? '}' : ']');
		break;
	}
	}
}

void k8s_json_write(struct buf *b, const struct jval *v, int indent)
{
	write_value(b, v, indent, 0);
}
