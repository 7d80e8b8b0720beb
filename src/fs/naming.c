/* naming.c: key segment <-> file name escaping (naming.h, docs/naming.md). */
#include "naming.h"
#include "core/util.h"

#include <errno.h>
#include <string.h>

static const char hexd[] = "0123456789ABCDEF";

static bool must_escape(unsigned char b)
{
	return b < 0x20 || b == 0x7f || b == '%' || b == '/';
}

ssize_t naming_encode(const char *seg, size_t seg_len, int ns, char *out, size_t outsz)
{
	size_t cap = outsz - 1 < NAMING_NAME_MAX ? outsz - 1 : NAMING_NAME_MAX;
	size_t o = 0;
	if (ns == 1) {
		if (cap < 2)
			return -ENAMETOOLONG;
		out[o++] = '%';
		out[o++] = '+';
	}
	if (seg_len == 0) {
		if (o + 1 > cap)
			return -ENAMETOOLONG;
		out[o++] = '%';
		out[o] = 0;
		return o;
	}
	/* "." and ".." are reserved by every filesystem. */
	bool dots =
		(seg_len == 1 && seg[0] == '.') || (seg_len == 2 && seg[0] == '.' && seg[1] == '.');
	for (size_t i = 0; i < seg_len; i++) {
		unsigned char b = seg[i];
		if (must_escape(b) || (dots && b == '.')) {
			if (o + 3 > cap)
				return -ENAMETOOLONG;
			out[o++] = '%';
			out[o++] = hexd[b >> 4];
			out[o++] = hexd[b & 15];
		} else {
			if (o + 1 > cap)
				return -ENAMETOOLONG;
			out[o++] = b;
		}
	}
	out[o] = 0;
	return o;
}

/* Escapes are canonical (upper-case hex only), so that every key has exactly one name. */
static int upper_hexval(char ch)
{
	return ch >= 'a' && ch <= 'f' ? -1 : util_hexval(ch);
}

ssize_t naming_decode(const char *name, char *out, size_t outsz, int *ns)
{
	size_t n = strlen(name);
	size_t i = 0, o = 0, escaped_dots = 0;
	*ns = 0;
	if (n >= 2 && name[0] == '%' && name[1] == '+') {
		*ns = 1;
		i = 2;
	}
	if (i == n)
		return -EINVAL;
	if (n - i == 1 && name[i] == '%')
		return 0; /* empty segment */
	for (; i < n; i++) {
		if (o + 1 >= outsz)
			return -ENAMETOOLONG;
		unsigned char b = name[i];
		if (b != '%') {
			if (must_escape(b))
				return -EINVAL;
			out[o++] = (char)b;
			continue;
		}
		if (i + 2 >= n)
			return -EINVAL;
		int hi = upper_hexval(name[i + 1]);
		int lo = upper_hexval(name[i + 2]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		unsigned char v = (unsigned char)(hi * 16 + lo);
		/* Only canonical escapes are valid, so that every segment has
		 * exactly one name. */
		if (v == '.')
			escaped_dots++;
		else if (!must_escape(v))
			return -EINVAL;
		out[o++] = (char)v;
		i += 2;
	}
	out[o] = 0;
	/* A '.' is escaped exactly when the segment is "." or "..". */
	bool dots = (o == 1 && out[0] == '.') || (o == 2 && out[0] == '.' && out[1] == '.');
	if (dots ? escaped_dots != o : escaped_dots != 0)
		return -EINVAL;
	return o;
}
