/* k8s_pbjson.c: protobuf + schema -> JSON (the walk behind decode and the encoder's
 * unchanged-field test).
 *
 * Builds the JSON value Go's encoding/json would print for the object that the
 * apiserver decodes from these bytes: fields in Go struct order, omitempty and
 * omitzero applied, nil vs zero as Go has them, and the custom JSON forms of
 * Time, Quantity, IntOrString, RawExtension and friends. The encoder uses the
 * same per-field views to tell which fields an edit left unchanged. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"

#define VIEW_MAX_DEPTH 500
#define SCRATCH_DEPTH 32

struct vctx {
	int depth;
	char **err;
	/* per nesting level, the field array of the message split there, kept for the
	 * next message at that level (one allocation per level instead of per message) */
	struct pbmsg scratch[SCRATCH_DEPTH];
};

/* split a message at the current depth (released by release() at the same depth) */
static int split(struct vctx *c, const uint8_t *p, size_t len, struct pbmsg *pm)
{
	if (c->depth >= SCRATCH_DEPTH)
		return k8s_pb_split(p, len, pm);
	*pm = c->scratch[c->depth];
	int r = k8s_pb_split_reuse(p, len, pm);
	if (r)
		memset(&c->scratch[c->depth], 0, sizeof(c->scratch[0])); /* pm was freed */
	return r;
}

static void release(struct vctx *c, struct pbmsg *pm)
{
	if (c->depth >= SCRATCH_DEPTH)
		k8s_pb_free(pm);
	else
		c->scratch[c->depth] = *pm;
}

static void vctx_free(struct vctx *c)
{
	for (int i = 0; i < SCRATCH_DEPTH; i++)
		k8s_pb_free(&c->scratch[i]);
}

static int verr(struct vctx *c, int code, const char *fmt, const char *arg)
{
	if (c->err && !*c->err)
		*c->err = k8s_strdup_printf(fmt, arg);
	return code;
}

static int view_msg(struct vctx *c, const struct k8s_msg *m, const uint8_t *p, size_t len,
		    const struct k8s_typemeta *tm, struct jval **out);
static int field_view(struct vctx *c, const struct k8s_field *fd, const struct pbmsg *m,
		      struct jval **out);

/* Does occurrence f belong to schema field fd (number and a usable wire type)? */
static bool occ_matches(const struct k8s_field *fd, const struct pbf *f)
{
	if (f->num != fd->num)
		return false;
	if (fd->flags & K8S_F_MAP)
		return f->wt == 2;
	int wt = k8s_pb_wire_type(fd->type);
	if (f->wt == wt)
		return true;
	/* packed repeated scalars */
	return (fd->flags & K8S_F_REPEATED) && wt != 2 && f->wt == 2;
}

static bool is_zero_scalar(uint8_t t, uint64_t v, size_t len)
{
	if (t == K8S_T_STRING || t == K8S_T_BYTES)
		return len == 0;
	return v == 0;
}

/* v in decimal with at least width digits (zero-padded) at out; returns the end.
 * Numbers and times are most of a view's scalars, and snprintf was a tenth of it. */
static char *put_dec(char *out, uint64_t v, int width)
{
	char tmp[24];
	int w = sizeof(tmp);

	do {
		tmp[--w] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while ((int)sizeof(tmp) - w < width)
		tmp[--w] = '0';
	memcpy(out, tmp + w, sizeof(tmp) - (size_t)w);
	return out + sizeof(tmp) - w;
}

/* "%" PRId64 and "%" PRIu64 (out: 21 bytes or more) */
static void fmt_int(char *out, int64_t v)
{
	if (v < 0)
		*out++ = '-';
	*put_dec(out, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, 1) = 0;
}

static void fmt_uint(char *out, uint64_t v)
{
	*put_dec(out, v, 1) = 0;
}

/* scalar from its wire value (v for numeric, p/len for string and bytes) */
static int scalar_view(struct vctx *c, uint8_t t, uint64_t v, const uint8_t *p, size_t len,
		       struct jval **out)
{
	char num[48];

	switch (t) {
	case K8S_T_STRING: {
		/* Go's JSON output replaces invalid UTF-8 with U+FFFD */
		if (k8s_utf8_valid((const char *)p, len)) {
			*out = k8s_jv_str((const char *)p, len);
			return *out ? 0 : -ENOMEM;
		}
		struct buf b;
		k8s_buf_init(&b);
		k8s_utf8_sanitize(&b, (const char *)p, len);
		*out = b.oom ? NULL : k8s_jv_str(b.data ? (char *)b.data : "", b.len);
		k8s_buf_free(&b);
		return *out ? 0 : -ENOMEM;
	}
	case K8S_T_BYTES: {
		struct buf b;
		k8s_buf_init(&b);
		k8s_base64_encode(&b, p, len);
		*out = b.oom ? NULL : k8s_jv_str(b.data ? (char *)b.data : "", b.len);
		k8s_buf_free(&b);
		return *out ? 0 : -ENOMEM;
	}
	case K8S_T_BOOL:
		*out = k8s_jv_bool(v != 0);
		return *out ? 0 : -ENOMEM;
	case K8S_T_INT32:
	case K8S_T_SFIXED32:
		fmt_int(num, (int32_t)(uint32_t)v);
		break;
	case K8S_T_INT64:
	case K8S_T_SFIXED64:
		fmt_int(num, (int64_t)v);
		break;
	case K8S_T_UINT32:
	case K8S_T_FIXED32:
		fmt_uint(num, (uint32_t)v);
		break;
	case K8S_T_UINT64:
	case K8S_T_FIXED64:
		fmt_uint(num, v);
		break;
	case K8S_T_SINT32:
		fmt_int(num, (int32_t)(((uint32_t)v >> 1) ^ (uint32_t) - (int32_t)(v & 1)));
		break;
	case K8S_T_SINT64:
		fmt_int(num, (int64_t)((v >> 1) ^ (uint64_t) - (v & 1)));
		break;
	case K8S_T_DOUBLE:
	case K8S_T_FLOAT: {
		double d;
		if (t == K8S_T_DOUBLE) {
			memcpy(&d, &v, sizeof(d));
		} else {
			uint32_t u = (uint32_t)v;
			float f;
			memcpy(&f, &u, sizeof(f));
			d = f;
		}
		if (d != d || d - d != 0)
			return verr(c, -EINVAL, "%s", "NaN or Inf float cannot be shown as JSON");
		k8s_fmt_json_float(num, sizeof(num), d);
		break;
	}
	default:
		return verr(c, -EINVAL, "%s", "unsupported scalar type");
	}
	*out = k8s_jv_num(num);
	return *out ? 0 : -ENOMEM;
}

/* zero value of a scalar type (absent non-pointer field) */
static int zero_view(struct vctx *c, uint8_t t, struct jval **out)
{
	return scalar_view(c, t, 0, (const uint8_t *)"", 0, out);
}

/* Expand (possibly packed) repeated scalar occurrences into an array. */
static int push_scalars(struct vctx *c, const struct k8s_field *fd, const struct pbf *f,
			struct jval *arr)
{
	struct jval *v;
	int r;

	if (f->wt == 2 && k8s_pb_wire_type(fd->type) != 2) {
		const uint8_t *q = f->p, *end = f->p + f->len;
		while (q < end) {
			uint64_t x = 0;
			int wt = k8s_pb_wire_type(fd->type);
			if (wt == 0) {
				if (!k8s_pb_read_varint(&q, end, &x))
					return verr(c, -EINVAL, "%s", "bad packed varint");
			} else {
				int n = wt == 1 ? 8 : 4;
				if (end - q < n)
					return verr(c, -EINVAL, "%s", "bad packed fixed");
				for (int i = n - 1; i >= 0; i--)
					x = x << 8 | q[i];
				q += n;
			}
			r = scalar_view(c, fd->type, x, NULL, 0, &v);
			if (r || (r = k8s_jv_push(arr, v)))
				return r;
		}
		return 0;
	}
	r = scalar_view(c, fd->type, f->v, f->p, f->len, &v);
	if (r)
		return r;
	return k8s_jv_push(arr, v);
}

/* Payload of a (possibly repeated-on-the-wire) singular message field: protobuf
 * merges repeated occurrences, which for our purposes is concatenation. */
static int merged_payload(const struct k8s_field *fd, const struct pbmsg *m, const uint8_t **p,
			  size_t *len, uint8_t **tofree, bool *present)
{
	size_t n = 0, total = 0;
	const struct pbf *last = NULL;

	*tofree = NULL;
	for (size_t i = 0; i < m->n; i++) {
		if (occ_matches(fd, &m->f[i])) {
			n++;
			total += m->f[i].len;
			last = &m->f[i];
		}
	}
	*present = n > 0;
	if (n <= 1) {
		*p = last ? last->p : (const uint8_t *)"";
		*len = last ? last->len : 0;
		return 0;
	}
	uint8_t *b = malloc(total ? total : 1);
	if (!b)
		return -ENOMEM;
	size_t o = 0;
	for (size_t i = 0; i < m->n; i++) {
		if (occ_matches(fd, &m->f[i])) {
			if (m->f[i].len)
				memcpy(b + o, m->f[i].p, m->f[i].len);
			o += m->f[i].len;
		}
	}
	*p = b;
	*len = total;
	*tofree = b;
	return 0;
}

/* ---- time, duration ---- */

static void civil_from_days(int64_t z, int64_t *y, unsigned *mo, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t yy = (int64_t)yoe + era * 400;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*mo = mp < 10 ? mp + 3 : mp - 9;
	*y = yy + (*mo <= 2);
}

/* RFC 3339 in UTC, as Go's time.Format: micro adds ".000000" */
/* out: at least 48 bytes */
static void fmt_time(char *out, int64_t sec, int32_t nsec, bool micro)
{
	int64_t days = sec / 86400, rem = sec % 86400;
	int64_t y;
	unsigned mo, d;
	char *o = out;

	if (rem < 0) {
		rem += 86400;
		days--;
	}
	civil_from_days(days, &y, &mo, &d);
	if (y < 0)
		*o++ = '-';
	o = put_dec(o, y < 0 ? 0 - (uint64_t)y : (uint64_t)y, 4);
	*o++ = '-';
	o = put_dec(o, mo, 2);
	*o++ = '-';
	o = put_dec(o, d, 2);
	*o++ = 'T';
	o = put_dec(o, (uint64_t)(rem / 3600), 2);
	*o++ = ':';
	o = put_dec(o, (uint64_t)(rem / 60 % 60), 2);
	*o++ = ':';
	o = put_dec(o, (uint64_t)(rem % 60), 2);
	if (micro) {
		*o++ = '.';
		o = put_dec(o, (uint64_t)(nsec / 1000), 6);
	}
	*o++ = 'Z';
	*o = 0;
}

/* writes v in decimal backwards, ending just before buf[*w] */
static void put_digits(char *buf, int *w, uint64_t v)
{
	do {
		buf[--*w] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
}

/* writes the low prec digits of *u as a fraction without trailing zeros
 * (and its dot only if any digit is left), then drops them from *u */
static void put_fraction(char *buf, int *w, uint64_t *u, int prec)
{
	bool print = false;

	for (int i = 0; i < prec; i++) {
		int digit = (int)(*u % 10);
		print = print || digit != 0;
		if (print)
			buf[--*w] = (char)('0' + digit);
		*u /= 10;
	}
	if (print)
		buf[--*w] = '.';
}

/* Go's time.Duration.String() */
static void fmt_duration(char *out, size_t n, int64_t dur)
{
	char buf[64];
	int w = sizeof(buf) - 1;
	uint64_t u = (uint64_t)dur;
	bool neg = dur < 0;

	buf[w] = 0;
	if (neg)
		u = -u;
	if (u < 1000000000ULL) {
		int prec = 0;
		if (u == 0) {
			snprintf(out, n, "0s");
			return;
		}
		buf[--w] = 's';
		if (u < 1000ULL) {
			buf[--w] = 'n';
		} else if (u < 1000000ULL) {
			prec = 3;
			buf[--w] = (char)0xb5; /* U+00B5 micro sign, UTF-8 c2 b5 */
			buf[--w] = (char)0xc2;
		} else {
			prec = 6;
			buf[--w] = 'm';
		}
		put_fraction(buf, &w, &u, prec);
		put_digits(buf, &w, u);
	} else {
		buf[--w] = 's';
		put_fraction(buf, &w, &u, 9);
		put_digits(buf, &w, u % 60);
		u /= 60;
		if (u > 0) {
			buf[--w] = 'm';
			put_digits(buf, &w, u % 60);
			u /= 60;
			if (u > 0) {
				buf[--w] = 'h';
				put_digits(buf, &w, u);
			}
		}
	}
	if (neg)
		buf[--w] = '-';
	snprintf(out, n, "%s", buf + w);
}

/* last varint / bytes value of field num in a split message */
static const struct pbf *last_field(const struct pbmsg *m, uint32_t num, int wt)
{
	const struct pbf *r = NULL;

	for (size_t i = 0; i < m->n; i++)
		if (m->f[i].num == num && m->f[i].wt == wt)
			r = &m->f[i];
	return r;
}

static void clear_src(struct jval *v)
{
	v->src = NULL;
	for (size_t i = 0; i < v->n; i++)
		clear_src(v->v[i]);
}

/* embedded JSON (RawExtension, FieldsV1, apiextensions JSON) */
static int raw_json_view(struct vctx *c, const uint8_t *p, size_t len, bool rawext,
			 struct jval **out)
{
	char *perr = NULL;
	int r;

	if (len >= 3 && p[0] == 0xd9 && p[1] == 0xd9 && p[2] == 0xf7)
		return verr(c, -ENOTSUP, "%s", "embedded CBOR is not supported");
	if (rawext) {
		/* Go's RawExtension.MarshalJSON passes JSON through; anything else it
		 * would have to convert, which we do not do */
		if (len == 0 || !strchr("\t\r\n {[ntf\"-0123456789", p[0]))
			return verr(c, -EINVAL, "%s", "RawExtension holds non-JSON data");
	}
	r = k8s_json_parse((const char *)p, len, out, &perr);
	if (!r && !k8s_jv_showable(*out, &perr)) {
		k8s_jv_free(*out);
		*out = NULL;
		r = -EINVAL;
	}
	if (r) {
		if (c->err && !*c->err)
			*c->err = k8s_strdup_printf("embedded JSON: %s", perr ? perr : "invalid");
		free(perr);
		return r;
	}
	clear_src(*out);
	return 0;
}

static int map_view(struct vctx *c, const struct k8s_field *fd, const struct pbmsg *m,
		    struct jval **out);

static int special_view(struct vctx *c, const struct k8s_msg *m, const uint8_t *p, size_t len,
			struct jval **out)
{
	struct pbmsg pm;
	const struct pbf *f;
	char tmp[96];
	int r;

	*out = NULL;
	if (split(c, p, len, &pm))
		return verr(c, -EINVAL, "malformed protobuf in %s", m->name);
	switch (m->special) {
	case K8S_S_TIME:
	case K8S_S_MICROTIME: {
		int64_t sec = 0;
		int32_t nsec = 0;
		if (len == 0) {
			*out = k8s_jv_new(J_NULL);
			break;
		}
		if ((f = last_field(&pm, 1, 0)))
			sec = (int64_t)f->v;
		if (m->special == K8S_S_MICROTIME && (f = last_field(&pm, 2, 0))) {
			nsec = (int32_t)(uint32_t)f->v;
			nsec -= nsec % 1000;
			/* time.Unix normalizes the nanoseconds into [0, 1e9) */
			sec += nsec / 1000000000;
			nsec %= 1000000000;
			if (nsec < 0) {
				nsec += 1000000000;
				sec--;
			}
		}
		if (sec == -62135596800LL && nsec == 0) { /* Go's zero time */
			*out = k8s_jv_new(J_NULL);
			break;
		}
		fmt_time(tmp, sec, nsec, m->special == K8S_S_MICROTIME);
		*out = k8s_jv_str(tmp, strlen(tmp));
		break;
	}
	case K8S_S_DURATION:
		f = last_field(&pm, 1, 0);
		fmt_duration(tmp, sizeof(tmp), f ? (int64_t)f->v : 0);
		*out = k8s_jv_str(tmp, strlen(tmp));
		break;
	case K8S_S_QUANTITY:
		f = last_field(&pm, 1, 2);
		/* stored quantities are canonical (Go writes Quantity.String()) */
		if (f) {
			r = scalar_view(c, K8S_T_STRING, 0, f->p, f->len, out);
			release(c, &pm);
			return r;
		}
		*out = k8s_jv_str("0", 1);
		break;
	case K8S_S_INTORSTRING: {
		const struct pbf *ft = last_field(&pm, 1, 0);
		uint64_t type = ft ? ft->v : 0;
		if (type == 1) {
			f = last_field(&pm, 3, 2);
			r = f ? scalar_view(c, K8S_T_STRING, 0, f->p, f->len, out)
			      : scalar_view(c, K8S_T_STRING, 0, (const uint8_t *)"", 0, out);
			release(c, &pm);
			return r;
		} else if (type == 0) {
			f = last_field(&pm, 2, 0);
			fmt_int(tmp, f ? (int32_t)(uint32_t)f->v : 0);
			*out = k8s_jv_num(tmp);
		} else {
			release(c, &pm);
			return verr(c, -EINVAL, "%s", "impossible IntOrString.Type");
		}
		break;
	}
	case K8S_S_RAWEXT:
	case K8S_S_RAWJSON:
		f = last_field(&pm, 1, 2);
		if (!f || (m->special == K8S_S_RAWJSON && f->len == 0)) {
			*out = k8s_jv_new(J_NULL);
			break;
		}
		r = raw_json_view(c, f->p, f->len, m->special == K8S_S_RAWEXT, out);
		release(c, &pm);
		return r;
	case K8S_S_SLICE: {
		const struct k8s_field *fd = k8s_schema_field_by_num(m, 1);
		size_t cnt = 0;
		*out = k8s_jv_new(J_ARR);
		for (size_t i = 0; *out && fd && i < pm.n; i++) {
			if (!occ_matches(fd, &pm.f[i]))
				continue;
			cnt++;
			r = push_scalars(c, fd, &pm.f[i], *out);
			if (r) {
				release(c, &pm);
				return r;
			}
		}
		if (*out && cnt == 0) { /* nil slice */
			k8s_jv_free(*out);
			*out = k8s_jv_new(J_NULL);
		}
		break;
	}
	case K8S_S_MAPWRAP: {
		const struct k8s_field *fd = k8s_schema_field_by_num(m, 1);
		r = fd ? map_view(c, fd, &pm, out) : 0;
		if (!r && !*out) /* nil map */
			*out = k8s_jv_new(J_NULL);
		/* back to the scratch of this depth: freeing it here left the
		 * scratch pointing at freed memory (ASan, on the release
		 * fixtures' MAPWRAP fields) */
		release(c, &pm);
		return r ? r : *out ? 0 : -ENOMEM;
	}
	case K8S_S_PROPS_OR_ARRAY:
	case K8S_S_PROPS_OR_BOOL:
	case K8S_S_PROPS_OR_STRARRAY: {
		/* schema: OrArray 1, OrBool 2, OrStringArray 1;
		 * list/bool: OrArray 2 (schemas), OrBool 1 (allows), OrStringArray 2 */
		uint32_t sn = m->special == K8S_S_PROPS_OR_BOOL ? 2 : 1;
		uint32_t ln = m->special == K8S_S_PROPS_OR_BOOL ? 1 : 2;
		const struct k8s_field *sf = k8s_schema_field_by_num(m, sn);
		const struct k8s_field *lf = k8s_schema_field_by_num(m, ln);
		bool has_schema = false;
		size_t nlist = 0;
		if (!sf || !lf) {
			release(c, &pm);
			return verr(c, -EINVAL, "%s",
				    "schema table lacks JSONSchemaPropsOr fields");
		}
		for (size_t i = 0; i < pm.n; i++) {
			if (occ_matches(sf, &pm.f[i]))
				has_schema = true;
			if (occ_matches(lf, &pm.f[i]))
				nlist++;
		}
		if (m->special == K8S_S_PROPS_OR_BOOL) {
			if (has_schema) {
				r = field_view(c, sf, &pm, out);
				release(c, &pm);
				return r;
			}
			f = last_field(&pm, 1, 0);
			*out = k8s_jv_bool(f && f->v);
			break;
		}
		if (nlist > 0) {
			r = field_view(c, lf, &pm, out);
			release(c, &pm);
			return r;
		}
		if (has_schema) {
			r = field_view(c, sf, &pm, out);
			release(c, &pm);
			return r;
		}
		*out = k8s_jv_new(J_NULL);
		break;
	}
	default:
		release(c, &pm);
		return verr(c, -EINVAL, "%s", "unknown special type");
	}
	release(c, &pm);
	return *out ? 0 : -ENOMEM;
}

/* Go's omitzero for the one struct that carries it (creationTimestamp) and the
 * general all-fields-zero case, approximated by "no bytes". */
static bool msg_view_is_zero(const struct k8s_msg *sub, const struct jval *v, size_t len)
{
	if (sub->special == K8S_S_TIME || sub->special == K8S_S_MICROTIME)
		return v->t == J_NULL;
	return len == 0;
}

/* map field: entries, last duplicate key wins, printed sorted by key */
struct mentry {
	const char *key;
	size_t klen;
	char *owned; /* key storage when not pointing into the message */
	struct jval *v;
	size_t ord;
};

static int cmp_mentry(const void *x, const void *y)
{
	const struct mentry *a = x, *b = y;
	int c = k8s_key_cmp(a->key, a->klen, b->key, b->klen);

	return c ? c : (a->ord < b->ord ? -1 : a->ord > b->ord);
}

static int map_view(struct vctx *c, const struct k8s_field *fd, const struct pbmsg *m,
		    struct jval **out)
{
	const struct k8s_msg *sub = k8s_schema_sub(fd);
	bool omitempty = fd->flags & K8S_F_OMITEMPTY;
	struct mentry *ents = NULL;
	size_t ne = 0;
	struct jval *obj = NULL;
	int r = 0;

	ents = calloc(m->n ? m->n : 1, sizeof(*ents));
	if (!ents)
		return -ENOMEM;
	for (size_t i = 0; i < m->n; i++) {
		struct pbmsg em;
		const struct pbf *kf, *vf;
		struct mentry *e = &ents[ne];

		if (!occ_matches(fd, &m->f[i]))
			continue;
		if (k8s_pb_split(m->f[i].p, m->f[i].len, &em)) {
			r = verr(c, -EINVAL, "malformed map entry in %s", fd->json);
			goto out;
		}
		e->ord = ne;
		if (fd->key_type == K8S_T_STRING) {
			kf = last_field(&em, 1, 2);
			e->key = kf ? (const char *)kf->p : "";
			e->klen = kf ? kf->len : 0;
			if (!k8s_utf8_valid(e->key, e->klen)) {
				struct buf kb;
				k8s_buf_init(&kb);
				k8s_utf8_sanitize(&kb, e->key, e->klen);
				if (k8s_buf_finish(&kb, &e->owned, &e->klen)) {
					k8s_pb_free(&em);
					r = -ENOMEM;
					goto out;
				}
				e->key = e->owned;
			}
		} else {
			struct jval *kv = NULL;
			kf = last_field(&em, 1, k8s_pb_wire_type(fd->key_type));
			r = kf ? scalar_view(c, fd->key_type, kf->v, kf->p, kf->len, &kv)
			       : zero_view(c, fd->key_type, &kv);
			if (r) {
				k8s_pb_free(&em);
				goto out;
			}
			e->owned = strdup(kv->t == J_BOOL ? (kv->b ? "true" : "false") : kv->s);
			k8s_jv_free(kv);
			if (!e->owned) {
				k8s_pb_free(&em);
				r = -ENOMEM;
				goto out;
			}
			e->key = e->owned;
			e->klen = strlen(e->owned);
		}
		vf = last_field(&em, 2, k8s_pb_wire_type(fd->type));
		if (sub) {
			r = view_msg(c, sub, vf ? vf->p : (const uint8_t *)"", vf ? vf->len : 0,
				     NULL, &e->v);
		} else if (fd->type == K8S_T_BYTES && !vf) {
			e->v = k8s_jv_new(J_NULL); /* nil []byte */
			r = e->v ? 0 : -ENOMEM;
		} else if (vf) {
			r = scalar_view(c, fd->type, vf->v, vf->p, vf->len, &e->v);
		} else {
			r = zero_view(c, fd->type, &e->v);
		}
		k8s_pb_free(&em);
		ne++;
		if (r)
			goto out;
	}
	if (ne == 0) { /* nil map; an old field absent from the bytes is not shown */
		if (!omitempty && !(fd->flags & K8S_F_OLD)) {
			*out = k8s_jv_new(J_NULL);
			r = *out ? 0 : -ENOMEM;
		}
		goto out;
	}
	/* Go sorts map keys bytewise; of duplicate keys the last one counts */
	qsort(ents, ne, sizeof(*ents), cmp_mentry);
	obj = k8s_jv_new(J_OBJ);
	if (!obj) {
		r = -ENOMEM;
		goto out;
	}
	if (!k8s_jv_reserve(obj, ne)) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < ne; i++) {
		if (i + 1 < ne && ents[i + 1].klen == ents[i].klen &&
		    !memcmp(ents[i + 1].key, ents[i].key, ents[i].klen))
			continue;
		r = k8s_jv_set(obj, ents[i].key, ents[i].klen, ents[i].v);
		ents[i].v = NULL;
		if (r)
			goto out;
	}
	*out = obj;
	obj = NULL;
out:
	for (size_t i = 0; i < ne; i++) {
		k8s_jv_free(ents[i].v);
		free(ents[i].owned);
	}
	free(ents);
	k8s_jv_free(obj);
	return r;
}

/* Whether an absent singular field is one the value's writer did not have:
 * every release writes its non-pointer fields, even zero, so a field added
 * after the first release read (since > 0) that is missing was unknown to
 * the release that wrote the value, and is not shown, as that release did
 * not show it (the release fixtures' JSON). Old fields absent are hidden
 * too (K8S_F_OLD). */
static bool writer_lacked(const struct k8s_field *fd)
{
	return (fd->flags & K8S_F_OLD) || (fd->since > 0 && !(fd->flags & K8S_F_PTR));
}

static int field_view(struct vctx *c, const struct k8s_field *fd, const struct pbmsg *m,
		      struct jval **out)
{
	static const struct pbmsg none;
	const struct k8s_msg *sub = k8s_schema_sub(fd);
	bool omitempty = fd->flags & K8S_F_OMITEMPTY;
	struct jval *v = NULL;
	int r;

	*out = NULL;
	/* most schema fields are absent: skip the searches through every occurrence
	 * (an empty message answers them the same way) */
	if (!k8s_pb_may_have(m, fd->num))
		m = &none;
	if (fd->flags & K8S_F_MAP)
		return map_view(c, fd, m, out);
	if (fd->flags & K8S_F_REPEATED) {
		struct jval *arr = k8s_jv_new(J_ARR);
		if (!arr)
			return -ENOMEM;
		for (size_t i = 0; i < m->n; i++) {
			if (!occ_matches(fd, &m->f[i]))
				continue;
			if (sub) {
				r = view_msg(c, sub, m->f[i].p, m->f[i].len, NULL, &v);
				if (!r)
					r = k8s_jv_push(arr, v);
			} else {
				r = push_scalars(c, fd, &m->f[i], arr);
			}
			if (r) {
				k8s_jv_free(arr);
				return r;
			}
		}
		if (arr->n == 0) { /* nil slice */
			k8s_jv_free(arr);
			if (omitempty || (fd->flags & K8S_F_OLD))
				return 0;
			*out = k8s_jv_new(J_NULL);
			return *out ? 0 : -ENOMEM;
		}
		*out = arr;
		return 0;
	}
	if (sub) {
		const uint8_t *p;
		size_t len;
		uint8_t *tofree;
		bool present;

		r = merged_payload(fd, m, &p, &len, &tofree, &present);
		if (r)
			return r;
		if (!present && ((fd->flags & K8S_F_PTR) || writer_lacked(fd))) {
			free(tofree);
			if (omitempty || writer_lacked(fd))
				return 0;
			*out = k8s_jv_new(J_NULL);
			return *out ? 0 : -ENOMEM;
		}
		r = view_msg(c, sub, p, len, NULL, &v);
		free(tofree);
		if (r)
			return r;
		if ((fd->flags & K8S_F_OMITZERO) && msg_view_is_zero(sub, v, present ? len : 0)) {
			k8s_jv_free(v);
			return 0;
		}
		if (omitempty && sub->special == K8S_S_SLICE && v->t == J_NULL) {
			k8s_jv_free(v);
			return 0;
		}
		*out = v;
		return 0;
	}
	/* singular scalar: the last occurrence wins */
	const struct pbf *f = NULL;
	for (size_t i = 0; i < m->n; i++)
		if (occ_matches(fd, &m->f[i]))
			f = &m->f[i];
	if (!f && writer_lacked(fd))
		return 0; /* not a field of the writer's release: not shown */
	if (fd->type == K8S_T_BYTES) {
		/* []byte: omitempty tests the length; without it nil prints null */
		if (omitempty && (!f || f->len == 0))
			return 0;
		if (!f) {
			*out = k8s_jv_new(J_NULL);
			return *out ? 0 : -ENOMEM;
		}
		return scalar_view(c, fd->type, f->v, f->p, f->len, out);
	}
	if (!f) {
		if (fd->flags & K8S_F_PTR) {
			if (omitempty)
				return 0;
			*out = k8s_jv_new(J_NULL);
			return *out ? 0 : -ENOMEM;
		}
		if (omitempty)
			return 0;
		return zero_view(c, fd->type, out);
	}
	if (omitempty && !(fd->flags & K8S_F_PTR) && is_zero_scalar(fd->type, f->v, f->len))
		return 0;
	return scalar_view(c, fd->type, f->v, f->p, f->len, out);
}

static int view_msg(struct vctx *c, const struct k8s_msg *m, const uint8_t *p, size_t len,
		    const struct k8s_typemeta *tm, struct jval **out)
{
	struct pbmsg pm;
	struct jval *obj = NULL, *v;
	int r = 0;

	*out = NULL;
	if (c->depth >= VIEW_MAX_DEPTH)
		return verr(c, -EINVAL, "%s", "protobuf nesting too deep");
	c->depth++;
	if (m->special) {
		r = special_view(c, m, p, len, out);
		c->depth--;
		return r;
	}
	if (split(c, p, len, &pm)) {
		c->depth--;
		return verr(c, -EINVAL, "malformed protobuf in %s", m->name);
	}
	obj = k8s_jv_new(J_OBJ);
	if (!obj || !k8s_jv_reserve(obj, m->n_fields + 1)) {
		r = -ENOMEM;
		goto out;
	}
	const struct k8s_field *fields = k8s_schema_fields(m);
	for (size_t i = 0; i < m->n_fields; i++) {
		const struct k8s_field *fd = &fields[i];

		if (fd->flags & K8S_F_TYPEMETA) {
			if (tm && tm->kind && *tm->kind &&
			    (r = k8s_jv_set(obj, "kind", 4,
					    k8s_jv_str(tm->kind, strlen(tm->kind)))))
				goto out;
			if (tm && tm->api_version && *tm->api_version &&
			    (r = k8s_jv_set_static(
				     obj, "apiVersion", 10,
				     k8s_jv_str(tm->api_version, strlen(tm->api_version)))))
				goto out;
			continue;
		}
		if (fd->flags & K8S_F_NOJSON)
			continue;
		if (fd->flags & K8S_F_INLINE) {
			const uint8_t *ip;
			size_t ilen;
			uint8_t *tofree;
			bool present;

			r = merged_payload(fd, &pm, &ip, &ilen, &tofree, &present);
			if (r)
				goto out;
			r = view_msg(c, k8s_schema_sub(fd), ip, ilen, NULL, &v);
			free(tofree);
			if (r)
				goto out;
			/* flatten: the embedded struct's members join ours */
			for (size_t j = 0; j < v->n; j++) {
				r = v->kown[j]
					    ? k8s_jv_set(obj, v->k[j], v->klen[j], v->v[j])
					    : k8s_jv_set_static(obj, v->k[j], v->klen[j], v->v[j]);
				v->v[j] = NULL;
				if (r) {
					k8s_jv_free(v);
					goto out;
				}
			}
			k8s_jv_free(v);
			continue;
		}
		r = field_view(c, fd, &pm, &v);
		if (r)
			goto out;
		if (v && (r = k8s_jv_set_static(obj, fd->json, strlen(fd->json), v)))
			goto out;
	}
	*out = obj;
	obj = NULL;
out:
	k8s_jv_free(obj);
	release(c, &pm);
	c->depth--;
	return r;
}

int k8s_pbjson_message(const struct k8s_msg *m, const uint8_t *p, size_t len,
		       const struct k8s_typemeta *tm, struct jval **out, char **err)
{
	struct vctx c = {.err = err};
	int r = view_msg(&c, m, p, len, tm, out);

	vctx_free(&c);
	return r;
}

int k8s_pbjson_field(const struct k8s_field *f, const struct pbmsg *m, struct jval **out,
		     char **err)
{
	struct vctx c = {.err = err};
	int r = field_view(&c, f, m, out);

	vctx_free(&c);
	return r;
}

bool k8s_occ_matches(const struct k8s_field *fd, const struct pbf *f)
{
	return occ_matches(fd, f);
}
