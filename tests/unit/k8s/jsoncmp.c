/* jsoncmp.c: what the k8s conformance tests share (jsoncmp.h). */
#include <stdio.h>
#include <string.h>

#include "jsoncmp.h"

bool k8s_test_same_bytes(const void *a, size_t an, const void *b, size_t bn, char *why, size_t wn)
{
	const unsigned char *x = a, *y = b;
	size_t i = 0;

	if (an == bn && (an == 0 || memcmp(a, b, an) == 0))
		return true;
	while (i < an && i < bn && x[i] == y[i])
		i++;
	snprintf(why, wn, "bytes differ at %zu (len %zu vs %zu)", i, an, bn);
	return false;
}

bool k8s_test_same_json(const struct jval *a, const struct jval *b, char *where, size_t wn)
{
	if (a->t != b->t) {
		snprintf(where, wn, "type differs");
		return false;
	}
	switch (a->t) {
	case J_NULL:
		return true;
	case J_BOOL:
		return a->b == b->b;
	case J_NUM:
	case J_STR:
		if (a->len != b->len || memcmp(a->s, b->s, a->len)) {
			snprintf(where, wn, "'%.40s' vs '%.40s'", a->s, b->s);
			return false;
		}
		return true;
	case J_ARR:
	case J_OBJ:
		for (size_t i = 0; i < a->n && i < b->n; i++) {
			if (a->t == J_OBJ &&
			    (a->klen[i] != b->klen[i] || memcmp(a->k[i], b->k[i], a->klen[i]))) {
				snprintf(where, wn, "member #%zu '%s' vs '%s'", i, a->k[i],
					 b->k[i]);
				return false;
			}
			if (!k8s_test_same_json(a->v[i], b->v[i], where, wn)) {
				if (a->t == J_OBJ) {
					size_t l = strlen(where);
					snprintf(where + l, wn - l, " <- %s", a->k[i]);
				}
				return false;
			}
		}
		if (a->n != b->n) {
			snprintf(where, wn, "%zu vs %zu members", a->n, b->n);
			return false;
		}
		return true;
	}
	return false;
}

void k8s_test_type_of(const char *base, char *av, size_t avn, char *kind, size_t kn)
{
	const char *k = strrchr(base, '.');
	const char *v = k;

	while (v > base && v[-1] != '.')
		v--;
	snprintf(kind, kn, "%s", k + 1);
	int glen = v > base ? (int)(v - base - 1) : 0;
	if (glen == 4 && !strncmp(base, "core", 4))
		glen = 0;
	if (glen)
		snprintf(av, avn, "%.*s/%.*s", glen, base, (int)(k - v), v);
	else
		snprintf(av, avn, "%.*s", (int)(k - v), v);
}
