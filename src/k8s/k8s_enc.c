/* k8s_enc.c: JSON value + schema -> protobuf, losslessly against an original.
 *
 * Without an original the output is what Go's generated marshalers write:
 * fields in field-number order, non-pointer scalars and structs always, pointers
 * and []byte only when set, map entries sorted by key.
 *
 * With an original message, every field whose JSON view (k8s_pbjson.c) equals the
 * edited value is copied from the original bytes verbatim, in its original
 * place; unknown fields are copied too. A changed field is re-encoded where its
 * first original occurrence was (sub-messages again against their originals),
 * and a field new to the message goes before the first original field with a
 * higher number. So unedited text re-encodes to the original bytes exactly and
 * an edit touches only the edited field. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"

#define ENC_MAX_DEPTH 500

struct ectx {
	char **err;
	unsigned release; /* new objects as release 1.<release> wrote them; 0: newest */
	int depth;
	char path[512];
	size_t plen;
};

static const char *jtype_name(const struct jval *v)
{
	static const char *const names[] = {"null",   "boolean", "number",
					    "string", "array",	 "object"};
	return v ? names[v->t] : "nothing";
}

static int eerr(struct ectx *c, const struct jval *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int eerr(struct ectx *c, const struct jval *at, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	if (!c->err || *c->err)
		return -EINVAL;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (at && at->line)
		*c->err = k8s_strdup_printf("field \"%s\" (line %d): %s", c->plen ? c->path : ".",
					    at->line, msg ? msg : "error");
	else
		*c->err = k8s_strdup_printf("field \"%s\": %s", c->plen ? c->path : ".",
					    msg ? msg : "error");
	free(msg);
	return -EINVAL;
}

/* path handling: push ".name" (name != NULL) or "[i]"; pop restores the
 * previous length. Too long paths are cut (they only feed error messages). */
static size_t path_push(struct ectx *c, const char *name, size_t i)
{
	size_t old = c->plen, room = sizeof(c->path) - 1 - c->plen;

	if (name) {
		size_t l = strlen(name);
		if (c->plen && room) {
			c->path[c->plen++] = '.';
			room--;
		}
		if (l > room)
			l = room;
		memcpy(c->path + c->plen, name, l);
		c->plen += l;
	} else {
		char tmp[32];
		int l = snprintf(tmp, sizeof(tmp), "[%zu]", i);
		if (l > 0 && (size_t)l <= room) {
			memcpy(c->path + c->plen, tmp, (size_t)l);
			c->plen += (size_t)l;
		}
	}
	c->path[c->plen] = 0;
	return old;
}

static void path_pop(struct ectx *c, size_t old)
{
	c->plen = old;
	c->path[old] = 0;
}

static int enc_msg(struct ectx *c, const struct k8s_msg *m, const struct jval *j,
		   const uint8_t *orig, size_t orig_len, bool have_orig, struct buf *out);
static int enc_msg2(struct ectx *c, const struct k8s_msg *m, const struct jval *j,
		    const uint8_t *orig, size_t orig_len, bool have_orig, bool inline_part,
		    struct buf *out);

static void put_tag(struct buf *b, uint32_t num, int wt)
{
	k8s_buf_varint(b, (uint64_t)num << 3 | (uint64_t)wt);
}

static void put_bytes(struct buf *b, uint32_t num, const void *p, size_t n)
{
	put_tag(b, num, 2);
	k8s_buf_varint(b, n);
	k8s_buf_add(b, p, n);
}

/* Encode one scalar (tag included). v NULL or null means the zero value. */
static int enc_scalar(struct ectx *c, uint8_t t, uint32_t num, const struct jval *v,
		      struct buf *out)
{
	int64_t i = 0;
	double d = 0;
	bool null = !v || v->t == J_NULL;

	switch (t) {
	case K8S_T_STRING:
		if (!null && v->t != J_STR)
			return eerr(c, v, "expected string, got %s", jtype_name(v));
		put_bytes(out, num, null ? "" : v->s, null ? 0 : v->len);
		return 0;
	case K8S_T_BYTES: {
		struct buf b;
		int r;
		if (!null && v->t != J_STR)
			return eerr(c, v, "expected base64 string, got %s", jtype_name(v));
		k8s_buf_init(&b);
		r = null ? 0 : k8s_base64_decode(v->s, v->len, &b);
		if (r) {
			k8s_buf_free(&b);
			return r == -ENOMEM ? r : eerr(c, v, "invalid base64 data");
		}
		put_bytes(out, num, b.data ? b.data : (const uint8_t *)"", b.len);
		k8s_buf_free(&b);
		return 0;
	}
	case K8S_T_BOOL:
		if (!null && v->t != J_BOOL)
			return eerr(c, v, "expected boolean, got %s", jtype_name(v));
		put_tag(out, num, 0);
		k8s_buf_varint(out, !null && v->b);
		return 0;
	case K8S_T_DOUBLE:
	case K8S_T_FLOAT:
		if (!null && (v->t != J_NUM || !k8s_jv_double(v, &d)))
			return eerr(c, v, "expected number, got %s", jtype_name(v));
		if (t == K8S_T_DOUBLE) {
			uint64_t u;
			memcpy(&u, &d, 8);
			put_tag(out, num, 1);
			for (int k = 0; k < 8; k++)
				k8s_buf_addc(out, (char)(u >> (8 * k)));
		} else {
			float f = (float)d;
			uint32_t u;
			memcpy(&u, &f, 4);
			put_tag(out, num, 5);
			for (int k = 0; k < 4; k++)
				k8s_buf_addc(out, (char)(u >> (8 * k)));
		}
		return 0;
	default:
		break;
	}
	/* integers */
	if (!null) {
		if (v->t != J_NUM)
			return eerr(c, v, "expected integer, got %s", jtype_name(v));
		if (!k8s_jv_int(v, &i)) {
			/* uint64 beyond int64 */
			char *end;
			unsigned long long u;
			errno = 0;
			u = strtoull(v->s, &end, 10);
			if ((t != K8S_T_UINT64 && t != K8S_T_FIXED64) || errno || *end ||
			    v->s[0] == '-')
				return eerr(c, v, "expected integer, got %s", v->s);
			i = (int64_t)u;
		}
	}
	switch (t) {
	case K8S_T_INT32:
	case K8S_T_SINT32:
	case K8S_T_SFIXED32:
		if (i < INT32_MIN || i > INT32_MAX)
			return eerr(c, v, "integer %" PRId64 " out of int32 range", i);
		break;
	case K8S_T_UINT32:
	case K8S_T_FIXED32:
		if (i < 0 || i > UINT32_MAX)
			return eerr(c, v, "integer %" PRId64 " out of uint32 range", i);
		break;
	case K8S_T_UINT64:
	case K8S_T_FIXED64:
		if (i < 0 && !(v && v->s[0] != '-'))
			return eerr(c, v, "integer %" PRId64 " out of uint64 range", i);
		break;
	default:
		break;
	}
	int wt = k8s_pb_wire_type(t);
	put_tag(out, num, wt);
	if (wt == 0) {
		uint64_t u = (uint64_t)i;
		if (t == K8S_T_SINT32)
			u = (uint32_t)(((uint32_t)i << 1) ^ (uint32_t)((int32_t)i >> 31));
		else if (t == K8S_T_SINT64)
			u = ((uint64_t)i << 1) ^ (uint64_t)(i >> 63);
		else if (t == K8S_T_UINT32)
			u = (uint32_t)i;
		k8s_buf_varint(out, u);
	} else {
		int n = wt == 1 ? 8 : 4;
		for (int k = 0; k < n; k++)
			k8s_buf_addc(out, (char)((uint64_t)i >> (8 * k)));
	}
	return 0;
}

/* ---- special messages ---- */

static int two(const char *s)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return -1;
	return (s[0] - '0') * 10 + (s[1] - '0');
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* Go time.Parse(time.RFC3339): "2006-01-02T15:04:05Z07:00", optional fraction */
static bool parse_rfc3339(const char *s, size_t n, int64_t *sec, int32_t *nsec)
{
	int y, mo, d, h, mi, se;

	if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
	    s[13] != ':' || s[16] != ':')
		return false;
	if (two(s) < 0 || two(s + 2) < 0)
		return false;
	y = two(s) * 100 + two(s + 2);
	mo = two(s + 5);
	d = two(s + 8);
	h = two(s + 11);
	mi = two(s + 14);
	se = two(s + 17);
	if (mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 59)
		return false;
	static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int maxd = dim[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
	if (d > maxd)
		return false;
	size_t i = 19;
	int32_t ns = 0;
	if (i < n && (s[i] == '.' || s[i] == ',')) {
		int digits = 0;
		i++;
		if (i >= n || s[i] < '0' || s[i] > '9')
			return false;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			if (digits < 9) {
				ns = ns * 10 + (s[i] - '0');
				digits++;
			}
			i++;
		}
		while (digits++ < 9)
			ns *= 10;
	}
	int off = 0;
	if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
		int oh = two(s + i + 1), om = two(s + i + 4);
		if (oh < 0 || om < 0 || oh > 23 || om > 59)
			return false;
		off = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return false;
	}
	if (i != n)
		return false;
	*sec = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se -
	       off;
	*nsec = ns;
	return true;
}

/* Go time.ParseDuration */
static bool parse_duration(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	bool neg = false;
	double total = 0;

	if (i < n && (s[i] == '-' || s[i] == '+')) {
		neg = s[i] == '-';
		i++;
	}
	if (n - i == 1 && s[i] == '0') {
		*out = 0;
		return true;
	}
	if (i == n)
		return false;
	while (i < n) {
		double v = 0, scale = 1;
		bool any = false;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			v = v * 10 + (s[i++] - '0');
			any = true;
		}
		if (i < n && s[i] == '.') {
			i++;
			while (i < n && s[i] >= '0' && s[i] <= '9') {
				scale /= 10;
				v += (s[i++] - '0') * scale;
				any = true;
			}
		}
		if (!any)
			return false;
		double unit;
		if (n - i >= 2 && !memcmp(s + i, "ns", 2)) {
			unit = 1;
			i += 2;
		} else if (n - i >= 2 && (!memcmp(s + i, "us", 2))) {
			unit = 1e3;
			i += 2;
		} else if (n - i >= 3 &&
			   (!memcmp(s + i, "\xc2\xb5s", 3) || !memcmp(s + i, "\xce\xbcs", 3))) {
			unit = 1e3;
			i += 3;
		} else if (n - i >= 2 && !memcmp(s + i, "ms", 2)) {
			unit = 1e6;
			i += 2;
		} else if (i < n && s[i] == 's') {
			unit = 1e9;
			i++;
		} else if (i < n && s[i] == 'm') {
			unit = 60e9;
			i++;
		} else if (i < n && s[i] == 'h') {
			unit = 3600e9;
			i++;
		} else {
			return false;
		}
		total += v * unit;
	}
	if (total > 9.223372036854775807e18)
		return false;
	*out = (int64_t)llround(neg ? -total : total);
	return true;
}

/* resource.Quantity syntax: sign, digits[.digits], optional suffix
 * (Ki..Ei, n u m k M G T P E, or e/E exponent) */
static bool valid_quantity(const char *s, size_t n)
{
	size_t i = 0, digits = 0;

	if (n == 0)
		return false;
	if (s[i] == '+' || s[i] == '-')
		i++;
	while (i < n && s[i] >= '0' && s[i] <= '9') {
		i++;
		digits++;
	}
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			i++;
			digits++;
		}
	}
	if (!digits)
		return false;
	const char *suf = s + i;
	size_t sl = n - i;
	if (sl == 0)
		return true;
	static const char *const sufs[] = {"Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u",
					   "m",	 "k",  "M",  "G",  "T",	 "P",  "E"};
	for (size_t k = 0; k < sizeof(sufs) / sizeof(sufs[0]); k++)
		if (strlen(sufs[k]) == sl && !memcmp(sufs[k], suf, sl))
			return true;
	if (suf[0] == 'e' || suf[0] == 'E') {
		size_t k = 1;
		if (k < sl && (suf[k] == '+' || suf[k] == '-'))
			k++;
		if (k == sl)
			return false;
		for (; k < sl; k++)
			if (suf[k] < '0' || suf[k] > '9')
				return false;
		return true;
	}
	return false;
}

/* compact Go-style JSON of an embedded value */
static void put_json(struct buf *out, uint32_t num, const struct jval *j)
{
	struct buf b;

	k8s_buf_init(&b);
	k8s_json_write(&b, j, 0);
	put_bytes(out, num, b.data ? b.data : (const uint8_t *)"", b.len);
	if (b.oom)
		out->oom = true;
	k8s_buf_free(&b);
}

/* the n-th occurrence of field num (wire type 2) in a split message */
static const struct pbf *nth_occ(const struct pbmsg *m, const struct k8s_field *fd, size_t n)
{
	for (size_t i = 0; i < m->n; i++)
		if (k8s_occ_matches(fd, &m->f[i]) && n-- == 0)
			return &m->f[i];
	return NULL;
}

static int enc_field(struct ectx *c, const struct k8s_field *fd, const struct jval *j,
		     const struct pbmsg *om, struct buf *out);

static int enc_special(struct ectx *c, const struct k8s_msg *m, const struct jval *j,
		       const uint8_t *orig, size_t orig_len, bool have_orig, struct buf *out)
{
	bool null = !j || j->t == J_NULL;
	struct pbmsg om = {0};
	int r = 0;

	switch (m->special) {
	case K8S_S_TIME:
	case K8S_S_MICROTIME: {
		int64_t sec;
		int32_t nsec;
		if (null)
			return 0; /* zero time: empty message */
		if (j->t != J_STR || !parse_rfc3339(j->s, j->len, &sec, &nsec))
			return eerr(c, j, "expected an RFC 3339 time like 2006-01-02T15:04:05Z");
		if (sec == -62135596800LL && (nsec == 0 || m->special == K8S_S_TIME))
			return 0; /* Go's zero time marshals to nothing */
		put_tag(out, 1, 0);
		k8s_buf_varint(out, (uint64_t)sec);
		put_tag(out, 2, 0);
		/* Time keeps whole seconds only; MicroTime truncates to microseconds */
		k8s_buf_varint(out, m->special == K8S_S_TIME ? 0 : (uint64_t)(nsec - nsec % 1000));
		return 0;
	}
	case K8S_S_DURATION: {
		int64_t d = 0;
		if (!null && (j->t != J_STR || !parse_duration(j->s, j->len, &d)))
			return eerr(c, j, "expected a duration like 1m30s");
		put_tag(out, 1, 0);
		k8s_buf_varint(out, (uint64_t)d);
		return 0;
	}
	case K8S_S_QUANTITY:
		if (null) {
			put_bytes(out, 1, "0", 1);
			return 0;
		}
		if ((j->t != J_STR && j->t != J_NUM) || !valid_quantity(j->s, j->len))
			return eerr(c, j, "expected a quantity like 100m or 1Gi");
		put_bytes(out, 1, j->s, j->len);
		return 0;
	case K8S_S_INTORSTRING: {
		int64_t i = 0;
		if (!null && j->t == J_STR) {
			put_tag(out, 1, 0);
			k8s_buf_varint(out, 1);
			put_tag(out, 2, 0);
			k8s_buf_varint(out, 0);
			put_bytes(out, 3, j->s, j->len);
			return 0;
		}
		if (!null && (!k8s_jv_int(j, &i) || i < INT32_MIN || i > INT32_MAX))
			return eerr(c, j, "expected an int32 or a string, got %s", jtype_name(j));
		put_tag(out, 1, 0);
		k8s_buf_varint(out, 0);
		put_tag(out, 2, 0);
		k8s_buf_varint(out, (uint64_t)i);
		put_bytes(out, 3, "", 0);
		return 0;
	}
	case K8S_S_RAWEXT:
	case K8S_S_RAWJSON:
		if (!null)
			put_json(out, 1, j);
		return 0;
	case K8S_S_SLICE: {
		if (null)
			return 0;
		if (j->t != J_ARR)
			return eerr(c, j, "expected array of strings, got %s", jtype_name(j));
		for (size_t i = 0; i < j->n; i++) {
			size_t old = path_push(c, NULL, i);
			r = enc_scalar(c, K8S_T_STRING, 1, j->v[i], out);
			path_pop(c, old);
			if (r)
				return r;
		}
		return 0;
	}
	case K8S_S_MAPWRAP: {
		const struct k8s_field *fd = k8s_schema_field_by_num(m, 1);
		if (!fd || !(fd->flags & K8S_F_MAP))
			return eerr(c, j, "schema table lacks the map of %s", m->name);
		if (have_orig && k8s_pb_split(orig, orig_len, &om))
			have_orig = false;
		r = enc_field(c, fd, j, have_orig ? &om : NULL, out);
		break;
	}
	case K8S_S_PROPS_OR_ARRAY:
	case K8S_S_PROPS_OR_BOOL:
	case K8S_S_PROPS_OR_STRARRAY: {
		bool is_bool = m->special == K8S_S_PROPS_OR_BOOL;
		uint32_t sn = is_bool ? 2 : 1, ln = is_bool ? 1 : 2;
		const struct k8s_field *sf = k8s_schema_field_by_num(m, sn);
		const struct k8s_field *lf = k8s_schema_field_by_num(m, ln);
		const struct k8s_msg *props = sf ? k8s_schema_sub(sf) : NULL;
		const struct pbf *os = NULL;

		if (!props || !lf)
			return eerr(c, j, "schema table lacks JSONSchemaProps");
		if (have_orig && k8s_pb_split(orig, orig_len, &om) == 0)
			os = nth_occ(&om, sf, 0);
		if (is_bool) {
			if (!null && j->t == J_BOOL) {
				put_tag(out, 1, 0);
				k8s_buf_varint(out, j->b);
			} else if (!null && j->t == J_OBJ) {
				struct buf sb;
				put_tag(out, 1, 0);
				k8s_buf_varint(out, 1);
				k8s_buf_init(&sb);
				r = enc_msg(c, props, j, os ? os->p : NULL, os ? os->len : 0, os,
					    &sb);
				if (!r)
					put_bytes(out, 2, sb.data, sb.len);
				k8s_buf_free(&sb);
			} else if (null) {
				put_tag(out, 1, 0);
				k8s_buf_varint(out, 0);
			} else {
				r = eerr(c, j, "expected boolean or object, got %s", jtype_name(j));
			}
			break;
		}
		if (null)
			break;
		if (j->t == J_OBJ) {
			struct buf sb;
			k8s_buf_init(&sb);
			r = enc_msg(c, props, j, os ? os->p : NULL, os ? os->len : 0, os, &sb);
			if (!r)
				put_bytes(out, 1, sb.data, sb.len);
			k8s_buf_free(&sb);
			break;
		}
		if (j->t != J_ARR) {
			r = eerr(c, j, "expected object or array, got %s", jtype_name(j));
			break;
		}
		for (size_t i = 0; i < j->n && !r; i++) {
			size_t old = path_push(c, NULL, i);
			if (m->special == K8S_S_PROPS_OR_STRARRAY) {
				r = enc_scalar(c, K8S_T_STRING, 2, j->v[i], out);
			} else {
				struct buf sb;
				const struct pbf *oe =
					have_orig && om.f ? nth_occ(&om, lf, i) : NULL;
				k8s_buf_init(&sb);
				r = enc_msg(c, props, j->v[i], oe ? oe->p : NULL, oe ? oe->len : 0,
					    oe, &sb);
				if (!r)
					put_bytes(out, 2, sb.data, sb.len);
				k8s_buf_free(&sb);
			}
			path_pop(c, old);
		}
		break;
	}
	default:
		return eerr(c, j, "unsupported special type");
	}
	k8s_pb_free(&om);
	return r;
}

/* ---- fields ---- */

/* Is a present JSON value the same Go value as "omitted" for this field? */
static bool zero_like(const struct k8s_field *fd, const struct jval *v)
{
	if (v->t == J_NULL)
		return true;
	if (fd->flags & (K8S_F_PTR | K8S_F_REPEATED | K8S_F_MAP))
		return (fd->flags & (K8S_F_REPEATED | K8S_F_MAP)) && v->n == 0 &&
		       (v->t == J_ARR || v->t == J_OBJ);
	switch (fd->type) {
	case K8S_T_STRING:
		return v->t == J_STR && v->len == 0;
	case K8S_T_BOOL:
		return v->t == J_BOOL && !v->b;
	case K8S_T_MESSAGE:
	case K8S_T_BYTES:
		return false;
	default: {
		double d;
		return v->t == J_NUM && k8s_jv_double(v, &d) && d == 0;
	}
	}
}

static bool field_unchanged(const struct k8s_field *fd, const struct jval *view,
			    const struct jval *j)
{
	if (view && j)
		return k8s_jv_equal(view, j);
	if (!view && !j)
		return true;
	return zero_like(fd, view ? view : j);
}

/* map keys, for sorting (Go order) and for finding original entries */
struct mkey {
	const uint8_t *k;
	size_t len;
	const struct pbf *f; /* original entry (okeys only) */
	size_t ord;	     /* position, to keep equal keys in order */
};

static int cmp_mkey(const void *x, const void *y)
{
	const struct mkey *a = x, *b = y;
	int c = k8s_key_cmp(a->k, a->len, b->k, b->len);

	return c ? c : (a->ord < b->ord ? -1 : a->ord > b->ord);
}

/* the last original entry with key k, or NULL */
static const struct pbf *find_mkey(const struct mkey *ks, size_t n, const uint8_t *k, size_t len)
{
	size_t lo = 0, hi = n;
	const struct pbf *found = NULL;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		struct mkey probe = {k, len, NULL, SIZE_MAX};
		/* probe sorts after every entry with this key */
		if (cmp_mkey(&ks[mid], &probe) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && ks[lo - 1].len == len && (!len || !memcmp(ks[lo - 1].k, k, len)))
		found = ks[lo - 1].f;
	return found;
}

/* Pair the edited list elements j->v[i] with original elements occ[k]:
 * ref[i] = k or -1, same[i] when the values are equal (the original bytes are
 * kept). Equal values are found first, wherever they moved (by hash); the rest
 * pair with the original at the same position when the length is unchanged,
 * else with the unused original of the same "name". So when elements are
 * inserted or removed, each original's unknown fields stay with their own
 * element instead of landing on a neighbour. */
struct vhash {
	uint64_t h;
	size_t k;
};

static int cmp_vhash(const void *x, const void *y)
{
	const struct vhash *a = x, *b = y;

	if (a->h != b->h)
		return a->h < b->h ? -1 : 1;
	return a->k < b->k ? -1 : a->k > b->k;
}

static const char *name_of(const struct jval *v)
{
	const struct jval *n = v && v->t == J_OBJ ? k8s_jv_get(v, "name") : NULL;

	return n && n->t == J_STR ? n->s : NULL;
}

static int pair_elements(const struct k8s_msg *sub, const struct pbf **occ, size_t nocc,
			 const struct jval *j, long *ref, bool *same)
{
	struct jval **views = calloc(nocc, sizeof(*views));
	struct vhash *hs = calloc(nocc, sizeof(*hs));
	bool *used = calloc(nocc, sizeof(*used));
	int r = 0;

	if (!views || !hs || !used) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < nocc; k++) {
		char *e = NULL;
		if (k8s_pbjson_message(sub, occ[k]->p, occ[k]->len, NULL, &views[k], &e))
			views[k] = NULL; /* an undecodable original never compares equal */
		free(e);
		hs[k] = (struct vhash){views[k] ? k8s_jv_hash(views[k]) : 0, k};
	}
	qsort(hs, nocc, sizeof(*hs), cmp_vhash);
	for (size_t i = 0; i < j->n; i++) {
		ref[i] = -1;
		same[i] = false;
		if (i < nocc && views[i] && k8s_jv_equal(views[i], j->v[i])) {
			ref[i] = (long)i;
			same[i] = used[i] = true;
		}
	}
	for (size_t i = 0; i < j->n; i++) {
		if (same[i])
			continue;
		uint64_t h = k8s_jv_hash(j->v[i]);
		size_t lo = 0, hi = nocc;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (hs[mid].h < h)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (; lo < nocc && hs[lo].h == h; lo++) {
			size_t k = hs[lo].k;
			if (!used[k] && views[k] && k8s_jv_equal(views[k], j->v[i])) {
				ref[i] = (long)k;
				same[i] = used[k] = true;
				break;
			}
		}
	}
	for (size_t i = 0; i < j->n; i++) {
		if (ref[i] >= 0)
			continue;
		if (nocc == j->n) {
			if (!used[i]) {
				ref[i] = (long)i;
				used[i] = true;
			}
			continue;
		}
		const char *name = name_of(j->v[i]);
		for (size_t k = 0; name && k < nocc; k++) {
			const char *on = name_of(views[k]);
			if (!used[k] && on && !strcmp(on, name)) {
				ref[i] = (long)k;
				used[k] = true;
				break;
			}
		}
	}
out:
	for (size_t k = 0; views && k < nocc; k++)
		k8s_jv_free(views[k]);
	free(views);
	free(hs);
	free(used);
	return r;
}

/* Encode the whole field fd (all its occurrences, tags included) from j, with
 * the original split message om (may be NULL) as reference. */
/* Is fd left out when the text has no value for it? Fields the target release
 * did not define are; for the newest release that is every OLD field. */
static bool skip_absent(const struct ectx *c, const struct k8s_field *fd)
{
	if (c->release)
		return fd->since > c->release || (fd->until && fd->until < c->release);
	return fd->flags & K8S_F_OLD;
}

static int enc_field(struct ectx *c, const struct k8s_field *fd, const struct jval *j,
		     const struct pbmsg *om, struct buf *out)
{
	const struct k8s_msg *sub = k8s_schema_sub(fd);
	bool null = !j || j->t == J_NULL;
	int r = 0;

	if (null && skip_absent(c, fd))
		return 0;

	if (fd->flags & K8S_F_MAP) {
		struct pbmsg entry;
		if (null)
			return 0;
		if (j->t != J_OBJ)
			return eerr(c, j, "expected object (map), got %s", jtype_name(j));
		/* Go marshals map entries sorted by key */
		struct mkey *idx = malloc((j->n ? j->n : 1) * sizeof(*idx));
		struct mkey *okeys = NULL;
		size_t nok = 0;
		if (!idx)
			return -ENOMEM;
		for (size_t i = 0; i < j->n; i++)
			idx[i] = (struct mkey){(const uint8_t *)j->k[i], j->klen[i], NULL, i};
		qsort(idx, j->n, sizeof(*idx), cmp_mkey);
		/* index of the original entries by key */
		if (om && fd->key_type == K8S_T_STRING) {
			okeys = malloc((om->n ? om->n : 1) * sizeof(*okeys));
			if (!okeys) {
				free(idx);
				return -ENOMEM;
			}
			for (size_t k = 0; k < om->n; k++) {
				const struct pbf *f = &om->f[k];
				const struct pbf *kf = NULL;
				if (!k8s_occ_matches(fd, f) || k8s_pb_split(f->p, f->len, &entry))
					continue;
				for (size_t e = 0; e < entry.n; e++)
					if (entry.f[e].num == 1)
						kf = &entry.f[e];
				if (kf && kf->wt == 2)
					okeys[nok++] = (struct mkey){kf->p, kf->len, f, k};
				k8s_pb_free(&entry);
			}
			qsort(okeys, nok, sizeof(*okeys), cmp_mkey);
		}
		for (size_t a = 0; a < j->n && !r; a++) {
			size_t i = idx[a].ord;
			const char *key = j->k[i];
			size_t klen = j->klen[i];
			const struct jval *val = j->v[i];
			const struct pbf *oe = NULL;
			struct jval *oview = NULL;
			size_t old = path_push(c, key, 0);

			/* the original entry with this key (the last one wins) */
			oe = find_mkey(okeys, nok, (const uint8_t *)key, klen);
			if (oe) {
				/* compare the original entry's value view */
				struct pbmsg one = {.f = (struct pbf *)oe, .n = 1, .cap = 1};
				struct jval *mv = NULL;
				r = k8s_pbjson_field(fd, &one, &mv, c->err);
				if (r) {
					path_pop(c, old);
					break;
				}
				oview = mv ? k8s_jv_get(mv, key) : NULL;
				if (oview && k8s_jv_equal(oview, val)) {
					k8s_buf_add(out, oe->raw, oe->raw_len);
					k8s_jv_free(mv);
					path_pop(c, old);
					continue;
				}
				k8s_jv_free(mv);
			}
			struct buf e;
			k8s_buf_init(&e);
			if (fd->key_type == K8S_T_STRING) {
				put_bytes(&e, 1, key, klen);
			} else {
				struct jval *kv = k8s_jv_num(key);
				r = kv ? enc_scalar(c, fd->key_type, 1, kv, &e) : -ENOMEM;
				k8s_jv_free(kv);
			}
			if (!r && sub) {
				struct buf vb;
				const struct pbf *ov = NULL;
				struct pbmsg em = {0};
				if (oe && !k8s_pb_split(oe->p, oe->len, &em))
					for (size_t k = 0; k < em.n; k++)
						if (em.f[k].num == 2 && em.f[k].wt == 2)
							ov = &em.f[k];
				k8s_buf_init(&vb);
				r = enc_msg(c, sub, val, ov ? ov->p : NULL, ov ? ov->len : 0, ov,
					    &vb);
				if (!r)
					put_bytes(&e, 2, vb.data ? vb.data : (const uint8_t *)"",
						  vb.len);
				k8s_buf_free(&vb);
				k8s_pb_free(&em);
			} else if (!r && !(fd->type == K8S_T_BYTES && (!val || val->t == J_NULL))) {
				r = enc_scalar(c, fd->type, 2, val, &e);
			}
			if (!r)
				put_bytes(out, fd->num, e.data ? e.data : (const uint8_t *)"",
					  e.len);
			if (e.oom)
				out->oom = true;
			k8s_buf_free(&e);
			path_pop(c, old);
		}
		free(idx);
		free(okeys);
		return r;
	}
	if (fd->flags & K8S_F_REPEATED) {
		if (null)
			return 0;
		if (j->t != J_ARR)
			return eerr(c, j, "expected array, got %s", jtype_name(j));
		/* the original elements, in order */
		const struct pbf **occ = NULL;
		size_t nocc = 0;
		if (sub && om) {
			occ = malloc((om->n ? om->n : 1) * sizeof(*occ));
			if (!occ)
				return -ENOMEM;
			for (size_t k = 0; k < om->n; k++)
				if (k8s_occ_matches(fd, &om->f[k]))
					occ[nocc++] = &om->f[k];
		}
		long *ref = NULL;
		bool *same = NULL;
		if (sub && nocc) {
			ref = malloc(j->n ? j->n * sizeof(*ref) : 1);
			same = malloc(j->n ? j->n * sizeof(*same) : 1);
			if (!ref || !same)
				r = -ENOMEM;
			else
				r = pair_elements(sub, occ, nocc, j, ref, same);
		}
		for (size_t i = 0; i < j->n && !r; i++) {
			size_t old = path_push(c, NULL, i);
			if (sub) {
				const struct pbf *oe = ref && ref[i] >= 0 ? occ[ref[i]] : NULL;
				struct buf sb;
				if (oe && same[i]) {
					k8s_buf_add(out, oe->raw, oe->raw_len);
					path_pop(c, old);
					continue;
				}
				k8s_buf_init(&sb);
				r = enc_msg(c, sub, j->v[i], oe ? oe->p : NULL, oe ? oe->len : 0,
					    oe, &sb);
				if (!r) {
					if (oe && sb.len == oe->len &&
					    (sb.len == 0 || !memcmp(sb.data, oe->p, sb.len)))
						k8s_buf_add(out, oe->raw, oe->raw_len);
					else
						put_bytes(out, fd->num,
							  sb.data ? sb.data : (const uint8_t *)"",
							  sb.len);
				}
				if (sb.oom)
					out->oom = true;
				k8s_buf_free(&sb);
			} else {
				r = enc_scalar(c, fd->type, fd->num, j->v[i], out);
			}
			path_pop(c, old);
		}
		free(ref);
		free(same);
		free(occ);
		return r;
	}
	if (sub) {
		const uint8_t *op = NULL;
		size_t olen = 0;
		bool have = false;
		struct buf sb;

		if (null && (fd->flags & K8S_F_PTR))
			return 0;
		if (!null && j->t != J_OBJ && !sub->special)
			return eerr(c, j, "expected object, got %s", jtype_name(j));
		/* original payload: the last occurrence (merging several is rare) */
		for (size_t i = 0; om && i < om->n; i++) {
			if (k8s_occ_matches(fd, &om->f[i])) {
				op = om->f[i].p;
				olen = om->f[i].len;
				have = true;
			}
		}
		k8s_buf_init(&sb);
		r = enc_msg(c, sub, null ? NULL : j, op, olen, have, &sb);
		if (!r)
			put_bytes(out, fd->num, sb.data ? sb.data : (const uint8_t *)"", sb.len);
		if (sb.oom)
			out->oom = true;
		k8s_buf_free(&sb);
		return r;
	}
	if (null && (fd->flags & K8S_F_PTR))
		return 0;
	return enc_scalar(c, fd->type, fd->num, null ? NULL : j, out);
}

/* Does object j have a member belonging to message m (or its inline parts)? */
static bool has_member_of(const struct k8s_msg *m, const struct jval *j)
{
	const struct k8s_field *f = k8s_schema_fields(m);

	if (!j || j->t != J_OBJ)
		return false;
	for (size_t i = 0; i < m->n_fields; i++) {
		if (f[i].flags & K8S_F_INLINE) {
			if (has_member_of(k8s_schema_sub(&f[i]), j))
				return true;
		} else if (!(f[i].flags & (K8S_F_TYPEMETA | K8S_F_NOJSON)) &&
			   k8s_jv_find(j, f[i].json, strlen(f[i].json)) >= 0) {
			return true;
		}
	}
	return false;
}

/* Is key a JSON member name of m (through inline fields, TypeMeta too)? */
static bool known_key(const struct k8s_msg *m, const char *key, size_t klen, int depth)
{
	const struct k8s_field *f = k8s_schema_fields(m);

	if (depth > 16)
		return false;
	for (size_t i = 0; i < m->n_fields; i++) {
		if (f[i].flags & K8S_F_INLINE) {
			if (known_key(k8s_schema_sub(&f[i]), key, klen, depth + 1))
				return true;
		} else if (f[i].flags & K8S_F_TYPEMETA) {
			if ((klen == 4 && !memcmp(key, "kind", 4)) ||
			    (klen == 10 && !memcmp(key, "apiVersion", 10)))
				return true;
		} else if (!(f[i].flags & K8S_F_NOJSON) && strlen(f[i].json) == klen &&
			   !memcmp(f[i].json, key, klen)) {
			return true;
		}
	}
	return false;
}

struct decision {
	int kind; /* 0 keep original occurrences, 1 replace with bytes */
	struct buf bytes;
	bool emitted;
	bool in_orig;
};

static int enc_msg(struct ectx *c, const struct k8s_msg *m, const struct jval *j,
		   const uint8_t *orig, size_t orig_len, bool have_orig, struct buf *out)
{
	return enc_msg2(c, m, j, orig, orig_len, have_orig, false, out);
}

/* inline_part: m is an embedded struct whose members are flattened into j,
 * which also holds the parent's members (the parent checks unknown keys) */
static int enc_msg2(struct ectx *c, const struct k8s_msg *m, const struct jval *j,
		    const uint8_t *orig, size_t orig_len, bool have_orig, bool inline_part,
		    struct buf *out)
{
	struct pbmsg om = {0};
	struct decision *dec = NULL;
	const struct k8s_field *fields = k8s_schema_fields(m);
	const uint16_t *order = &k8s_field_order[m->order_first];
	int r = 0;

	if (c->depth >= ENC_MAX_DEPTH)
		return eerr(c, j, "nesting too deep");
	c->depth++;
	if (have_orig && !orig)
		orig = (const uint8_t *)"";
	if (have_orig && k8s_pb_split(orig, orig_len, &om)) {
		/* an unparsable original cannot guide us: encode from scratch */
		have_orig = false;
	}
	if (m->special) {
		/* unchanged special value: keep the original bytes */
		if (have_orig) {
			struct jval *view = NULL;
			char *verr = NULL;
			bool jnull = !j || j->t == J_NULL;
			if (k8s_pbjson_message(m, orig, orig_len, NULL, &view, &verr) == 0 &&
			    view &&
			    ((j && k8s_jv_equal(view, j)) || (jnull && view->t == J_NULL))) {
				k8s_buf_add(out, orig, orig_len);
				k8s_jv_free(view);
				goto out;
			}
			k8s_jv_free(view);
			free(verr);
		}
		r = enc_special(c, m, j, orig, orig_len, have_orig, out);
		goto out;
	}
	if (j && j->t == J_NULL)
		j = NULL;
	if (j && j->t != J_OBJ) {
		r = eerr(c, j, "expected object, got %s", jtype_name(j));
		goto out;
	}
	for (size_t i = 0; j && !inline_part && i < j->n; i++) {
		if (!known_key(m, j->k[i], j->klen[i], 0)) {
			size_t old = path_push(c, j->k[i], 0);
			r = eerr(c, j->v[i], "unknown field");
			path_pop(c, old);
			goto out;
		}
	}
	dec = calloc(m->n_order ? m->n_order : 1, sizeof(*dec));
	if (!dec) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t oi = 0; oi < m->n_order; oi++) {
		const struct k8s_field *fd = &fields[order[oi]];
		struct decision *d = &dec[oi];
		const struct jval *jv = NULL;
		size_t old;

		k8s_buf_init(&d->bytes);
		for (size_t k = 0; have_orig && k < om.n; k++)
			if (k8s_occ_matches(fd, &om.f[k]))
				d->in_orig = true;
		if (fd->flags & K8S_F_NOJSON) {
			d->kind = 0; /* not editable through JSON: keep */
			continue;
		}
		if (fd->flags & K8S_F_INLINE) {
			const struct k8s_msg *sub = k8s_schema_sub(fd);
			const struct pbf *o = NULL;
			for (size_t k = 0; have_orig && k < om.n; k++)
				if (k8s_occ_matches(fd, &om.f[k]))
					o = &om.f[k];
			if (!o && have_orig && !has_member_of(sub, j)) {
				d->kind = 0; /* absent and still absent */
				continue;
			}
			struct buf sb;
			k8s_buf_init(&sb);
			r = enc_msg2(c, sub, j, o ? o->p : NULL, o ? o->len : 0, o != NULL, true,
				     &sb);
			if (r) {
				k8s_buf_free(&sb);
				goto out;
			}
			if (o && sb.len == o->len && (!sb.len || !memcmp(sb.data, o->p, sb.len))) {
				d->kind = 0;
			} else {
				d->kind = 1;
				put_bytes(&d->bytes, fd->num,
					  sb.data ? sb.data : (const uint8_t *)"", sb.len);
			}
			k8s_buf_free(&sb);
			continue;
		}
		jv = j ? k8s_jv_get(j, fd->json) : NULL;
		if (have_orig) {
			struct jval *view = NULL;
			r = k8s_pbjson_field(fd, &om, &view, c->err);
			if (r) {
				/* the original does not decode: treat the field as changed */
				if (c->err && *c->err) {
					free(*c->err);
					*c->err = NULL;
				}
				r = 0;
			} else if (field_unchanged(fd, view, jv)) {
				k8s_jv_free(view);
				d->kind = 0;
				continue;
			}
			k8s_jv_free(view);
		}
		d->kind = 1;
		old = path_push(c, fd->json, 0);
		r = enc_field(c, fd, jv, have_orig ? &om : NULL, &d->bytes);
		path_pop(c, old);
		if (r)
			goto out;
	}
	/* assemble: original order, replacements in place, new fields by number */
	size_t next_new = 0; /* fields (in number order) not yet placed */
	for (size_t k = 0; have_orig && k < om.n; k++) {
		const struct pbf *f = &om.f[k];
		/* flush new fields that sort before this one */
		for (; next_new < m->n_order; next_new++) {
			const struct k8s_field *fd = &fields[order[next_new]];
			struct decision *d = &dec[next_new];
			if (fd->num >= f->num)
				break;
			if (d->kind == 1 && !d->in_orig && !d->emitted) {
				k8s_buf_add(out, d->bytes.data, d->bytes.len);
				d->emitted = true;
			}
		}
		const struct k8s_field *fd = k8s_schema_field_by_num(m, f->num);
		if (!fd || !k8s_occ_matches(fd, f)) {
			k8s_buf_add(out, f->raw, f->raw_len); /* unknown: keep */
			continue;
		}
		/* the decision slot of fd */
		struct decision *d = NULL;
		for (size_t oi = 0; oi < m->n_order && !d; oi++)
			if (&fields[order[oi]] == fd)
				d = &dec[oi];
		if (!d) {
			k8s_buf_add(out, f->raw, f->raw_len);
			continue;
		}
		if (d->kind == 0) {
			k8s_buf_add(out, f->raw, f->raw_len);
		} else if (!d->emitted) {
			k8s_buf_add(out, d->bytes.data, d->bytes.len);
			d->emitted = true;
		}
	}
	for (size_t oi = 0; oi < m->n_order; oi++) {
		struct decision *d = &dec[oi];
		if (d->kind == 1 && !d->emitted) {
			k8s_buf_add(out, d->bytes.data, d->bytes.len);
			d->emitted = true;
		}
	}
out:
	if (dec)
		for (size_t oi = 0; oi < m->n_order; oi++) {
			if (dec[oi].bytes.oom)
				out->oom = true;
			k8s_buf_free(&dec[oi].bytes);
		}
	free(dec);
	k8s_pb_free(&om);
	c->depth--;
	if (!r && out->oom)
		r = -ENOMEM;
	return r;
}

int k8s_encode_message(const struct k8s_msg *m, const struct jval *j, const uint8_t *orig,
		       size_t orig_len, struct buf *out, char **err)
{
	return k8s_encode_message_as(m, j, orig, orig_len, 0, out, err);
}

int k8s_encode_message_as(const struct k8s_msg *m, const struct jval *j, const uint8_t *orig,
			  size_t orig_len, unsigned release, struct buf *out, char **err)
{
	struct ectx c = {.err = err, .release = release};

	return enc_msg(&c, m, j, orig, orig_len, orig != NULL, out);
}

/* ---- JSON-stored objects ---- */

static bool keys_sorted(const struct jval *o)
{
	for (size_t i = 1; i < o->n; i++) {
		size_t l = o->klen[i - 1] < o->klen[i] ? o->klen[i - 1] : o->klen[i];
		int c = memcmp(o->k[i - 1], o->k[i], l);
		if (c > 0 || (c == 0 && o->klen[i - 1] > o->klen[i]))
			return false;
	}
	return true;
}

static void write_key(struct buf *b, const char *k, size_t n)
{
	struct jval tmp = {.t = J_STR, .s = (char *)k, .len = n};
	k8s_json_write(b, &tmp, 0);
	k8s_buf_addc(b, ':');
}

/* new values for unstructured objects: Go marshals maps with sorted keys */
static void write_sorted(struct buf *b, const struct jval *v)
{
	if (v->t == J_ARR) {
		k8s_buf_addc(b, '[');
		for (size_t i = 0; i < v->n; i++) {
			if (i)
				k8s_buf_addc(b, ',');
			write_sorted(b, v->v[i]);
		}
		k8s_buf_addc(b, ']');
		return;
	}
	if (v->t != J_OBJ) {
		k8s_json_write(b, v, 0);
		return;
	}
	size_t *idx = k8s_jv_sorted_keys(v);
	if (!idx) {
		b->oom = true;
		return;
	}
	k8s_buf_addc(b, '{');
	for (size_t a = 0; a < v->n; a++) {
		if (a)
			k8s_buf_addc(b, ',');
		write_key(b, v->k[idx[a]], v->klen[idx[a]]);
		write_sorted(b, v->v[idx[a]]);
	}
	k8s_buf_addc(b, '}');
	free(idx);
}

static void merge(struct buf *b, const struct jval *o, const struct jval *e, bool sort_new)
{
	if (!o) {
		if (sort_new)
			write_sorted(b, e);
		else
			k8s_json_write(b, e, 0);
		return;
	}
	if (o->src && k8s_jv_equal(o, e)) {
		k8s_buf_add(b, o->src + o->src_off, o->src_len);
		return;
	}
	if (o->t == J_OBJ && e->t == J_OBJ) {
		bool sorted = keys_sorted(o);
		bool first = true;
		size_t *ei = k8s_jv_sorted_keys(e), *oi = k8s_jv_sorted_keys(o);
		size_t *fresh = malloc((e->n ? e->n : 1) * sizeof(*fresh));
		size_t nf = 0, fi = 0;

		if (!ei || !oi || !fresh) {
			free(ei);
			free(oi);
			free(fresh);
			b->oom = true;
			return;
		}
		/* members new to the object, in key order when the original is sorted
		 * (unstructured objects are), else in the edit's order */
		for (size_t k = 0; k < e->n; k++) {
			size_t m = sorted ? ei[k] : k;
			if (k8s_jv_find_sorted(o, oi, e->k[m], e->klen[m]) < 0)
				fresh[nf++] = m;
		}
		k8s_buf_addc(b, '{');
		for (size_t i = 0; i < o->n; i++) {
			long at = k8s_jv_find_sorted(e, ei, o->k[i], o->klen[i]);
			/* new members that sort before this one */
			while (sorted && fi < nf) {
				size_t m = fresh[fi];
				size_t l = e->klen[m] < o->klen[i] ? e->klen[m] : o->klen[i];
				int cmp = memcmp(e->k[m], o->k[i], l);
				if (cmp > 0 || (cmp == 0 && e->klen[m] > o->klen[i]))
					break;
				if (!first)
					k8s_buf_addc(b, ',');
				first = false;
				write_key(b, e->k[m], e->klen[m]);
				merge(b, NULL, e->v[m], sort_new);
				fi++;
			}
			if (at < 0)
				continue; /* removed */
			if (!first)
				k8s_buf_addc(b, ',');
			first = false;
			write_key(b, o->k[i], o->klen[i]);
			merge(b, o->v[i], e->v[at], sort_new);
		}
		for (; fi < nf; fi++) {
			size_t m = fresh[fi];
			if (!first)
				k8s_buf_addc(b, ',');
			first = false;
			write_key(b, e->k[m], e->klen[m]);
			merge(b, NULL, e->v[m], sort_new);
		}
		free(ei);
		free(oi);
		free(fresh);
		k8s_buf_addc(b, '}');
		return;
	}
	if (o->t == J_ARR && e->t == J_ARR) {
		k8s_buf_addc(b, '[');
		for (size_t i = 0; i < e->n; i++) {
			if (i)
				k8s_buf_addc(b, ',');
			merge(b, i < o->n ? o->v[i] : NULL, e->v[i], sort_new);
		}
		k8s_buf_addc(b, ']');
		return;
	}
	if (o->src && o->t == J_NUM && e->t == J_NUM && k8s_jv_equal(o, e)) {
		k8s_buf_add(b, o->src + o->src_off, o->src_len);
		return;
	}
	if (sort_new)
		write_sorted(b, e);
	else
		k8s_json_write(b, e, 0);
}

void k8s_json_merge(struct buf *b, const struct jval *orig, const struct jval *edit)
{
	merge(b, orig, edit, !orig || orig->t != J_OBJ || keys_sorted(orig));
}
