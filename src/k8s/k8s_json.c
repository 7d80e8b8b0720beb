/* k8s_json.c: byte buffers, the ordered JSON value tree (jval), a JSON parser
 * that keeps number text, member order and source spans, and a serializer that
 * writes JSON exactly as Go's encoding/json does (escaping, float formatting,
 * MarshalIndent layout). Kubernetes output is Go output, so matching it byte for
 * byte is what makes decode output equal kubectl's. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"
#include "core/util.h"

/* ---- buffer ---- */

void k8s_buf_init(struct buf *b)
{
	memset(b, 0, sizeof(*b));
}

void k8s_buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static bool buf_reserve(struct buf *b, size_t n)
{
	if (b->oom)
		return false;
	if (b->len + n + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
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
	if (n == 0 || !buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void k8s_buf_addc(struct buf *b, char c)
{
	if (!buf_reserve(b, 1))
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
	if (!buf_reserve(b, (size_t)n))
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
	if (!buf_reserve(b, 0)) {
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

/* ---- jval ---- */

struct jval *k8s_jv_new(enum jtype t)
{
	struct jval *v = calloc(1, sizeof(*v));

	if (v)
		v->t = t;
	return v;
}

void k8s_jv_free(struct jval *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++) {
		k8s_jv_free(v->v[i]);
		if (v->k && v->kown[i])
			free(v->k[i]);
	}
	free(v->v); /* also holds k, klen, kown */
	if (!v->s_inline)
		free(v->s);
	free(v);
}

struct jval *k8s_jv_str(const char *s, size_t len)
{
	/* one allocation for the node and its bytes */
	struct jval *v = len < SIZE_MAX - sizeof(*v) - 1 ? calloc(1, sizeof(*v) + len + 1) : NULL;

	if (!v)
		return NULL;
	v->t = J_STR;
	v->s = (char *)(v + 1);
	v->s_inline = true;
	if (len)
		memcpy(v->s, s, len);
	v->s[len] = 0;
	v->len = len;
	return v;
}

struct jval *k8s_jv_num(const char *text)
{
	struct jval *v = k8s_jv_str(text, strlen(text));

	if (v)
		v->t = J_NUM;
	return v;
}

struct jval *k8s_jv_bool(bool b)
{
	struct jval *v = k8s_jv_new(J_BOOL);

	if (v)
		v->b = b;
	return v;
}

/* Arrays keep their elements in v; objects keep v, k, klen and kown in one
 * allocation (based at v), so a member costs no allocation of its own. */
static bool jv_resize(struct jval *v, size_t cap)
{
	bool obj = v->t == J_OBJ;
	size_t per = sizeof(struct jval *) + (obj ? sizeof(char *) + sizeof(size_t) + 1 : 0);
	uint8_t *blk;

	if (cap > SIZE_MAX / per)
		return false;
	blk = malloc(cap * per);
	if (!blk)
		return false;
	struct jval **nv = (struct jval **)blk;
	if (v->n)
		memcpy(nv, v->v, v->n * sizeof(*nv));
	if (obj) {
		char **nk = (char **)(blk + cap * sizeof(struct jval *));
		size_t *nl = (size_t *)(blk + cap * (sizeof(struct jval *) + sizeof(char *)));
		uint8_t *no = blk + cap * (sizeof(struct jval *) + sizeof(char *) + sizeof(size_t));
		if (v->n) {
			memcpy(nk, v->k, v->n * sizeof(*nk));
			memcpy(nl, v->klen, v->n * sizeof(*nl));
			memcpy(no, v->kown, v->n);
		}
		v->k = nk;
		v->klen = nl;
		v->kown = no;
	}
	free(v->v);
	v->v = nv;
	v->cap = cap;
	return true;
}

static bool jv_grow(struct jval *v)
{
	if (v->n < v->cap)
		return true;
	return jv_resize(v, v->cap ? v->cap * 2 : 4);
}

bool k8s_jv_reserve(struct jval *v, size_t cap)
{
	return cap <= v->cap || jv_resize(v, cap);
}

int k8s_jv_push(struct jval *arr, struct jval *val)
{
	if (!val || !jv_grow(arr)) {
		k8s_jv_free(val);
		return -ENOMEM;
	}
	arr->v[arr->n++] = val;
	return 0;
}

static int jv_insert(struct jval *obj, size_t pos, const char *key, size_t klen, struct jval *val,
		     bool borrow)
{
	char *k;

	if (!val || !jv_grow(obj)) {
		k8s_jv_free(val);
		return -ENOMEM;
	}
	if (borrow) {
		k = (char *)key;
	} else {
		k = malloc(klen + 1);
		if (!k) {
			k8s_jv_free(val);
			return -ENOMEM;
		}
		memcpy(k, key, klen);
		k[klen] = 0;
	}
	if (pos > obj->n)
		pos = obj->n;
	memmove(&obj->v[pos + 1], &obj->v[pos], (obj->n - pos) * sizeof(obj->v[0]));
	memmove(&obj->k[pos + 1], &obj->k[pos], (obj->n - pos) * sizeof(obj->k[0]));
	memmove(&obj->klen[pos + 1], &obj->klen[pos], (obj->n - pos) * sizeof(obj->klen[0]));
	memmove(&obj->kown[pos + 1], &obj->kown[pos], obj->n - pos);
	obj->v[pos] = val;
	obj->k[pos] = k;
	obj->klen[pos] = klen;
	obj->kown[pos] = !borrow;
	obj->n++;
	return 0;
}

int k8s_jv_insert(struct jval *obj, size_t pos, const char *key, size_t klen, struct jval *val)
{
	return jv_insert(obj, pos, key, klen, val, false);
}

int k8s_jv_set_static(struct jval *obj, const char *key, size_t klen, struct jval *val)
{
	return jv_insert(obj, obj->n, key, klen, val, true);
}

int k8s_jv_set(struct jval *obj, const char *key, size_t klen, struct jval *val)
{
	return k8s_jv_insert(obj, obj->n, key, klen, val);
}

void k8s_jv_remove(struct jval *obj, size_t idx)
{
	if (idx >= obj->n)
		return;
	k8s_jv_free(obj->v[idx]);
	if (obj->k && obj->kown[idx])
		free(obj->k[idx]);
	size_t rest = obj->n - idx - 1;
	memmove(&obj->v[idx], &obj->v[idx + 1], rest * sizeof(obj->v[0]));
	if (obj->k) {
		memmove(&obj->k[idx], &obj->k[idx + 1], rest * sizeof(obj->k[0]));
		memmove(&obj->klen[idx], &obj->klen[idx + 1], rest * sizeof(obj->klen[0]));
		memmove(&obj->kown[idx], &obj->kown[idx + 1], rest);
	}
	obj->n--;
}

long k8s_jv_find(const struct jval *obj, const char *key, size_t klen)
{
	if (!obj || obj->t != J_OBJ)
		return -1;
	for (size_t i = 0; i < obj->n; i++)
		if (obj->klen[i] == klen && memcmp(obj->k[i], key, klen) == 0)
			return (long)i;
	return -1;
}

struct jval *k8s_jv_get(const struct jval *obj, const char *key)
{
	long i = k8s_jv_find(obj, key, strlen(key));

	return i < 0 ? NULL : obj->v[i];
}

struct jval *k8s_jv_dup(const struct jval *v)
{
	struct jval *d;

	if (!v)
		return NULL;
	d = k8s_jv_new(v->t);
	if (!d)
		return NULL;
	d->b = v->b;
	d->line = v->line;
	if (v->s) {
		d->s = malloc(v->len + 1);
		if (!d->s)
			goto fail;
		memcpy(d->s, v->s, v->len + 1);
		d->len = v->len;
	}
	for (size_t i = 0; i < v->n; i++) {
		struct jval *c = k8s_jv_dup(v->v[i]);
		int r = v->t == J_OBJ ? k8s_jv_set(d, v->k[i], v->klen[i], c) : k8s_jv_push(d, c);
		if (r)
			goto fail;
	}
	return d;
fail:
	k8s_jv_free(d);
	return NULL;
}

bool k8s_jv_int(const struct jval *v, int64_t *out)
{
	const char *s;
	char *end;
	long long x;

	if (!v || v->t != J_NUM)
		return false;
	s = v->s;
	for (size_t i = 0; i < v->len; i++)
		if (s[i] == '.' || s[i] == 'e' || s[i] == 'E')
			return false;
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno || *end || end == s)
		return false;
	*out = x;
	return true;
}

bool k8s_jv_double(const struct jval *v, double *out)
{
	char *end;

	if (!v || v->t != J_NUM)
		return false;
	*out = strtod(v->s, &end);
	return *end == 0 && end != v->s;
}

/* ---- sorted member indexes (large objects) ---- */

static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	size_t l = al < bl ? al : bl;
	int c = l ? memcmp(a, b, l) : 0;

	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static __thread const struct jval *sort_obj;

static int cmp_member(const void *x, const void *y)
{
	size_t a = *(const size_t *)x, b = *(const size_t *)y;
	int c = key_cmp(sort_obj->k[a], sort_obj->klen[a], sort_obj->k[b], sort_obj->klen[b]);

	return c ? c : (a < b ? -1 : a > b);
}

size_t *k8s_jv_sorted_keys(const struct jval *o)
{
	size_t *idx = malloc((o->n ? o->n : 1) * sizeof(*idx));

	if (!idx)
		return NULL;
	for (size_t i = 0; i < o->n; i++)
		idx[i] = i;
	sort_obj = o;
	qsort(idx, o->n, sizeof(*idx), cmp_member);
	sort_obj = NULL;
	return idx;
}

long k8s_jv_find_sorted(const struct jval *o, const size_t *idx, const char *key, size_t klen)
{
	size_t lo = 0, hi = o->n;

	/* first index past every member with this key */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		size_t m = idx[mid];
		if (key_cmp(o->k[m], o->klen[m], key, klen) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	size_t m = idx[lo - 1];
	return key_cmp(o->k[m], o->klen[m], key, klen) == 0 ? (long)m : -1;
}

bool k8s_jv_dup_key(const struct jval *o, size_t *dup)
{
	size_t *idx;
	bool found = false;

	if (o->n < 2)
		return false;
	if (o->n <= 8) {
		for (size_t i = 1; i < o->n; i++)
			for (size_t j = 0; j < i; j++)
				if (!key_cmp(o->k[i], o->klen[i], o->k[j], o->klen[j])) {
					*dup = i;
					return true;
				}
		return false;
	}
	idx = k8s_jv_sorted_keys(o);
	if (!idx)
		return false;
	for (size_t i = 1; i < o->n && !found; i++) {
		if (!key_cmp(o->k[idx[i]], o->klen[idx[i]], o->k[idx[i - 1]],
			     o->klen[idx[i - 1]])) {
			*dup = idx[i];
			found = true;
		}
	}
	free(idx);
	return found;
}

bool k8s_jv_showable(const struct jval *v, char **err)
{
	double d;

	switch (v->t) {
	case J_NUM:
		if (!k8s_jv_double(v, &d) || d - d != 0) {
			if (err && !*err)
				*err = k8s_strdup_printf("number %s is out of range", v->s);
			return false;
		}
		return true;
	case J_OBJ: {
		size_t dup;
		if (k8s_jv_dup_key(v, &dup)) {
			if (err && !*err)
				*err = k8s_strdup_printf("duplicate JSON key \"%s\"", v->k[dup]);
			return false;
		}
	}
		/* fallthrough */
	case J_ARR:
		for (size_t i = 0; i < v->n; i++)
			if (!k8s_jv_showable(v->v[i], err))
				return false;
		return true;
	default:
		return true;
	}
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *u = p;

	for (size_t i = 0; i < n; i++) {
		h ^= u[i];
		h *= 1099511628211ULL;
	}
	return h;
}

uint64_t k8s_jv_hash(const struct jval *v)
{
	uint64_t h = 14695981039346656037ULL ^ (uint64_t)v->t;
	double d;

	switch (v->t) {
	case J_NULL:
		return h;
	case J_BOOL:
		return fnv(h, &v->b, 1);
	case J_NUM:
		/* numbers compare by value: hash the value (-0 as 0) */
		if (!k8s_jv_double(v, &d))
			return fnv(h, v->s, v->len);
		if (d == 0)
			d = 0;
		return fnv(h, &d, sizeof(d));
	case J_STR:
		return fnv(h, v->s, v->len);
	case J_ARR:
		for (size_t i = 0; i < v->n; i++) {
			uint64_t e = k8s_jv_hash(v->v[i]);
			h = fnv(h, &e, sizeof(e));
		}
		return h;
	case J_OBJ: {
		/* member order does not matter for equality: combine commutatively */
		uint64_t sum = 0;
		for (size_t i = 0; i < v->n; i++) {
			uint64_t kh = fnv(14695981039346656037ULL, v->k[i], v->klen[i]);
			uint64_t vh = k8s_jv_hash(v->v[i]);
			sum += fnv(kh, &vh, sizeof(vh));
		}
		return fnv(h, &sum, sizeof(sum));
	}
	}
	return h;
}

bool k8s_jv_equal(const struct jval *a, const struct jval *b)
{
	if (!a || !b)
		return a == b;
	if (a->t != b->t)
		return false;
	switch (a->t) {
	case J_NULL:
		return true;
	case J_BOOL:
		return a->b == b->b;
	case J_NUM: {
		int64_t x, y;
		double dx, dy;
		if (a->len == b->len && memcmp(a->s, b->s, a->len) == 0)
			return true;
		if (k8s_jv_int(a, &x) && k8s_jv_int(b, &y))
			return x == y;
		if (k8s_jv_double(a, &dx) && k8s_jv_double(b, &dy))
			return dx == dy;
		return false;
	}
	case J_STR:
		return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
	case J_ARR:
		if (a->n != b->n)
			return false;
		for (size_t i = 0; i < a->n; i++)
			if (!k8s_jv_equal(a->v[i], b->v[i]))
				return false;
		return true;
	case J_OBJ:
		if (a->n != b->n)
			return false;
		if (a->n > 16) {
			/* large objects: look members up through a sorted index */
			size_t *bi = k8s_jv_sorted_keys(b);
			bool eq = bi != NULL;
			for (size_t i = 0; eq && i < a->n; i++) {
				long j = (b->klen[i] == a->klen[i] &&
					  !memcmp(a->k[i], b->k[i], a->klen[i]))
						 ? (long)i
						 : k8s_jv_find_sorted(b, bi, a->k[i], a->klen[i]);
				eq = j >= 0 && k8s_jv_equal(a->v[i], b->v[j]);
			}
			free(bi);
			return eq;
		}
		for (size_t i = 0; i < a->n; i++) {
			long j;
			/* fast path: same position */
			if (b->klen[i] == a->klen[i] && memcmp(a->k[i], b->k[i], a->klen[i]) == 0)
				j = (long)i;
			else
				j = k8s_jv_find(b, a->k[i], a->klen[i]);
			if (j < 0 || !k8s_jv_equal(a->v[i], b->v[j]))
				return false;
		}
		return true;
	}
	return false;
}

/* Decode one UTF-8 sequence as Go's utf8.DecodeRune: returns the length
 * consumed and sets *cp; invalid input yields (U+FFFD, 1). */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
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

	for (size_t i = 0; i < n;) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t l = utf8_decode(u + i, n - i, &cp);
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
		size_t l = utf8_decode(u + i, n - i, &cp);
		if (cp == 0xfffd && l == 1) {
			k8s_buf_add(b, s + start, i - start);
			k8s_buf_adds(b, "\xef\xbf\xbd");
			start = i + 1;
		}
		i += l;
	}
	k8s_buf_add(b, s + start, n - start);
}

/* ---- JSON parser ---- */

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
		case '"':
		case '\\':
		case '/':
			k8s_buf_addc(b, (char)c);
			break;
		case 'b':
			k8s_buf_addc(b, '\b');
			break;
		case 'f':
			k8s_buf_addc(b, '\f');
			break;
		case 'n':
			k8s_buf_addc(b, '\n');
			break;
		case 'r':
			k8s_buf_addc(b, '\r');
			break;
		case 't':
			k8s_buf_addc(b, '\t');
			break;
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
		default:
			return jerr(p, "bad escape");
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

/* ---- JSON writer (Go encoding/json compatible) ---- */

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
			switch (c) {
			case '"':
			case '\\':
				k8s_buf_addc(b, '\\');
				k8s_buf_addc(b, (char)c);
				break;
			case '\b':
				k8s_buf_adds(b, "\\b");
				break;
			case '\f':
				k8s_buf_adds(b, "\\f");
				break;
			case '\n':
				k8s_buf_adds(b, "\\n");
				break;
			case '\r':
				k8s_buf_adds(b, "\\r");
				break;
			case '\t':
				k8s_buf_adds(b, "\\t");
				break;
			default:
				k8s_buf_adds(b, "\\u00");
				k8s_buf_addc(b, hex[c >> 4]);
				k8s_buf_addc(b, hex[c & 15]);
			}
			i++;
			start = i;
			continue;
		}
		uint32_t cp;
		size_t l = utf8_decode(u + i, n - i, &cp);
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
		k8s_buf_adds(b, "null");
		break;
	case J_BOOL:
		k8s_buf_adds(b, v->b ? "true" : "false");
		break;
	case J_NUM:
		k8s_buf_add(b, v->s, v->len);
		break;
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

/* ---- float formatting as Go's strconv (shortest round-trip digits) ---- */

/* digits: shortest decimal digits of |d| (no dot), exp10: value = 0.digits*10^exp10
 * ("dp" in Go's decimal type). */
static void shortest_digits(double d, char *digits, int *nd, int *dp)
{
	char tmp[40];

	d = fabs(d);
	if (d == 0) {
		strcpy(digits, "0");
		*nd = 1;
		*dp = 1;
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d || prec == 17)
			break;
	}
	/* tmp = "d.ddde[+-]xx" */
	char *e = strchr(tmp, 'e');
	int x = atoi(e + 1);
	int n = 0;
	for (char *q = tmp; q < e; q++)
		if (*q >= '0' && *q <= '9')
			digits[n++] = *q;
	while (n > 1 && digits[n - 1] == '0')
		n--;
	digits[n] = 0;
	*nd = n;
	*dp = x + 1;
}

static void fmt_e(char *out, size_t sz, bool neg, const char *dg, int nd, int dp)
{
	int x = dp - 1;
	int o = 0;

	if (neg)
		o += snprintf(out + o, sz - (size_t)o, "-");
	o += snprintf(out + o, sz - (size_t)o, "%c", dg[0]);
	if (nd > 1)
		o += snprintf(out + o, sz - (size_t)o, ".%s", dg + 1);
	snprintf(out + o, sz - (size_t)o, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
}

static void fmt_f(char *out, size_t sz, bool neg, const char *dg, int nd, int dp)
{
	struct buf b;
	char *s;

	k8s_buf_init(&b);
	if (neg)
		k8s_buf_addc(&b, '-');
	if (dp > 0) {
		for (int i = 0; i < dp; i++)
			k8s_buf_addc(&b, i < nd ? dg[i] : '0');
		if (nd > dp) {
			k8s_buf_addc(&b, '.');
			k8s_buf_adds(&b, dg + dp);
		}
	} else {
		k8s_buf_adds(&b, "0.");
		for (int i = 0; i < -dp; i++)
			k8s_buf_addc(&b, '0');
		k8s_buf_adds(&b, dg);
	}
	if (k8s_buf_finish(&b, &s, NULL) == 0) {
		snprintf(out, sz, "%s", s);
		free(s);
	} else {
		snprintf(out, sz, "0");
	}
}

void k8s_fmt_json_float(char *out, size_t n, double d)
{
	char dg[32];
	int nd, dp;
	double a = fabs(d);

	shortest_digits(d, dg, &nd, &dp);
	if (a != 0 && (a < 1e-6 || a >= 1e21)) {
		fmt_e(out, n, d < 0, dg, nd, dp);
		/* Go cleans up e-09 to e-9 */
		size_t l = strlen(out);
		if (l >= 4 && out[l - 4] == 'e' && out[l - 3] == '-' && out[l - 2] == '0') {
			out[l - 2] = out[l - 1];
			out[l - 1] = 0;
		}
	} else {
		fmt_f(out, n, signbit(d) && d != 0, dg, nd, dp);
	}
}

void k8s_fmt_go_g(char *out, size_t n, double d)
{
	char dg[32];
	int nd, dp;

	if (isnan(d)) {
		snprintf(out, n, "NaN");
		return;
	}
	if (isinf(d)) {
		snprintf(out, n, d > 0 ? "+Inf" : "-Inf");
		return;
	}
	shortest_digits(d, dg, &nd, &dp);
	/* strconv 'g' with shortest precision: %e when exp < -4 || exp >= 6 */
	int x = dp - 1;
	if (x < -4 || x >= 6)
		fmt_e(out, n, signbit(d), dg, nd, dp);
	else
		fmt_f(out, n, signbit(d), dg, nd, dp);
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void k8s_base64_encode(struct buf *b, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		char t[4] = {b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63], b64[v & 63]};
		k8s_buf_add(b, t, 4);
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		char t[4] = {b64[v >> 18], b64[(v >> 12) & 63], '=', '='};
		k8s_buf_add(b, t, 4);
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		char t[4] = {b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63], '='};
		k8s_buf_add(b, t, 4);
	}
}

static int b64val(char c)
{
	const char *q = c ? strchr(b64, c) : NULL;

	return q ? (int)(q - b64) : -1;
}

int k8s_base64_decode(const char *s, size_t n, struct buf *out)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t i, pad = 0;

	/* Go's encoding/json uses StdEncoding (padded); it ignores \r and \n */
	for (i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad)
			return -EINVAL;
		int v = b64val(c);
		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			k8s_buf_addc(out, (char)((acc >> bits) & 0xff));
		}
	}
	if (pad > 2 || (bits == 6))
		return -EINVAL;
	return out->oom ? -ENOMEM : 0;
}
