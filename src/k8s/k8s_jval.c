/* k8s_jval.c: the ordered JSON value tree (jval): building, lookup (also through sorted
 * member indexes for large objects), copying, numbers, equality and hashing. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"

/* ---- the render arena ---- */

#define ARENA_CHUNK (32 << 10) /* under glibc's mmap threshold */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

static __thread struct arena_chunk *arena;
static __thread unsigned arena_depth;

void k8s_jv_arena_begin(void)
{
	arena_depth++;
}

void k8s_jv_arena_end(void)
{
	if (--arena_depth)
		return;
	while (arena) {
		struct arena_chunk *c = arena;
		arena = c->next;
		free(c);
	}
}

/* n zeroed bytes from the arena; NULL on ENOMEM. */
static void *arena_alloc(size_t n)
{
	size_t a = sizeof(max_align_t);
	if (n > SIZE_MAX - a)
		return NULL;
	n = (n + a - 1) / a * a;
	if (!arena || arena->cap - arena->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		struct arena_chunk *c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		*c = (struct arena_chunk){.next = arena, .cap = cap};
		arena = c;
	}
	void *p = (char *)arena->data + arena->used;
	arena->used += n;
	return memset(p, 0, n);
}

/* A new node of size bytes (the node and what follows it), zeroed: from
 * the arena while one is open. */
static struct jval *node_alloc(size_t size)
{
	if (!arena_depth)
		return calloc(1, size);
	struct jval *v = arena_alloc(size);
	if (v)
		v->arena = true;
	return v;
}

/* n bytes that belong to v: from the arena when v is. */
static void *owned_alloc(const struct jval *v, size_t n)
{
	return v->arena ? arena_alloc(n) : malloc(n);
}

static void owned_free(const struct jval *v, void *p)
{
	if (!v->arena)
		free(p);
}

struct jval *k8s_jv_new(enum jtype t)
{
	struct jval *v = node_alloc(sizeof(*v));

	if (v)
		v->t = t;
	return v;
}

void k8s_jv_free(struct jval *v)
{
	if (!v || v->arena)
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
	struct jval *v = len < SIZE_MAX - sizeof(*v) - 1 ? node_alloc(sizeof(*v) + len + 1) : NULL;

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
	blk = owned_alloc(v, cap * per);
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
	owned_free(v, v->v);
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
		k = owned_alloc(obj, klen + 1);
		if (!k) {
			k8s_jv_free(val);
			return -ENOMEM;
		}
		memcpy(k, key, klen);
		k[klen] = 0;
	}
	if (pos < obj->n) {
		/* not an append (a view's are), which would call memmove for nothing */
		memmove(&obj->v[pos + 1], &obj->v[pos], (obj->n - pos) * sizeof(obj->v[0]));
		memmove(&obj->k[pos + 1], &obj->k[pos], (obj->n - pos) * sizeof(obj->k[0]));
		memmove(&obj->klen[pos + 1], &obj->klen[pos],
			(obj->n - pos) * sizeof(obj->klen[0]));
		memmove(&obj->kown[pos + 1], &obj->kown[pos], obj->n - pos);
	} else {
		pos = obj->n;
	}
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
		owned_free(obj, obj->k[idx]);
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
		d->s = owned_alloc(d, v->len + 1);
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

static __thread const struct jval *sort_obj;

static int cmp_member(const void *x, const void *y)
{
	size_t a = *(const size_t *)x, b = *(const size_t *)y;
	int c = k8s_key_cmp(sort_obj->k[a], sort_obj->klen[a], sort_obj->k[b], sort_obj->klen[b]);

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
		if (k8s_key_cmp(o->k[m], o->klen[m], key, klen) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	size_t m = idx[lo - 1];
	return k8s_key_cmp(o->k[m], o->klen[m], key, klen) == 0 ? (long)m : -1;
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
				if (!k8s_key_cmp(o->k[i], o->klen[i], o->k[j], o->klen[j])) {
					*dup = i;
					return true;
				}
		return false;
	}
	idx = k8s_jv_sorted_keys(o);
	if (!idx)
		return false;
	for (size_t i = 1; i < o->n && !found; i++) {
		if (!k8s_key_cmp(o->k[idx[i]], o->klen[idx[i]], o->k[idx[i - 1]],
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

const char *k8s_jv_scalar_text(const struct jval *v, size_t *len)
{
	switch (v->t) {
	case J_NULL:
		*len = 4;
		return "null";
	case J_BOOL:
		*len = v->b ? 4 : 5;
		return v->b ? "true" : "false";
	default:
		*len = v->len;
		return v->s;
	}
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
