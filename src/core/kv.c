/* kv.c: backend-independent helpers over the kv.h vtable. */
#include "kv.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void kv_kv_free(struct kv_kv *kv)
{
	if (!kv)
		return;
	free(kv->key);
	free(kv->value);
	kv->key = kv->value = NULL;
	kv->key_len = kv->value_len = 0;
}

int kv_kv_copy(struct kv_kv *dst, const struct kv_kv *src)
{
	*dst = *src;
	dst->key = util_memdup(src->key, src->key_len);
	dst->value = src->value ? util_memdup(src->value, src->value_len) : NULL;
	if (!dst->key || (src->value && !dst->value)) {
		kv_kv_free(dst);
		return -ENOMEM;
	}
	return 0;
}

void kv_range_result_free(struct kv_range_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_kvs; i++)
		kv_kv_free(&r->kvs[i]);
	free(r->kvs);
	r->kvs = NULL;
	r->n_kvs = 0;
}

void kv_txn_result_free(struct kv_txn_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_results; i++)
		kv_range_result_free(&r->results[i].range);
	free(r->results);
	r->results = NULL;
	r->n_results = 0;
}

/* Ranges asked of any backend by this process (kv_range_count). */
static uint64_t n_ranges;

uint64_t kv_range_count(void)
{
	return __atomic_load_n(&n_ranges, __ATOMIC_RELAXED);
}

int kv_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
	__atomic_add_fetch(&n_ranges, 1, __ATOMIC_RELAXED);
	memset(res, 0, sizeof(*res));
	return kv->ops->range(kv, req, res);
}

int kv_get(struct kv *kv, const void *key, size_t key_len, struct kv_kv *out)
{
	struct kv_range_req req = {.key = key, .key_len = key_len};
	struct kv_range_result res;
	int ret = kv_range(kv, &req, &res);
	if (ret < 0)
		return ret;
	if (res.n_kvs == 0) {
		ret = -ENOENT;
	} else {
		*out = res.kvs[0];
		memset(&res.kvs[0], 0, sizeof(res.kvs[0]));
	}
	kv_range_result_free(&res);
	return ret;
}

int kv_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res)
{
	memset(res, 0, sizeof(*res));
	return kv->ops->txn(kv, txn, res);
}

/* Runs op as a txn of its own; revision and deleted (each may be NULL) get its results. */
static int txn_one(struct kv *kv, const struct kv_op *op, int64_t *revision, int64_t *deleted)
{
	struct kv_txn txn = {.success = op, .n_success = 1};
	struct kv_txn_result res;
	int ret = kv_txn(kv, &txn, &res);
	if (ret == 0) {
		if (revision)
			*revision = res.revision;
		if (deleted)
			*deleted = res.n_results ? res.results[0].deleted : 0;
	}
	kv_txn_result_free(&res);
	return ret;
}

int kv_put(struct kv *kv, const void *key, size_t key_len, const void *val, size_t val_len,
	   int64_t *revision)
{
	struct kv_op op = {.type = KV_OP_PUT,
			   .key = key,
			   .key_len = key_len,
			   .value = val,
			   .value_len = val_len};
	return txn_one(kv, &op, revision, NULL);
}

int kv_delete_range(struct kv *kv, const void *key, size_t key_len, const void *range_end,
		    size_t range_end_len, int64_t *deleted, int64_t *revision)
{
	struct kv_op op = {.type = KV_OP_DELETE,
			   .key = key,
			   .key_len = key_len,
			   .range_end = range_end,
			   .range_end_len = range_end_len};
	return txn_one(kv, &op, revision, deleted);
}

int kv_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
	     struct kv_watch **out)
{
	return kv->ops->watch(kv, req, cb, arg, out);
}

void kv_watch_cancel(struct kv *kv, struct kv_watch *w)
{
	if (w)
		kv->ops->watch_cancel(w);
}

int kv_compact(struct kv *kv, int64_t revision, bool physical)
{
	return kv->ops->compact(kv, revision, physical);
}

int kv_status(struct kv *kv, int64_t *revision)
{
	return kv->ops->status(kv, revision);
}

void kv_destroy(struct kv *kv)
{
	if (kv)
		kv->ops->destroy(kv);
}

/* Leases are optional in a backend: a NULL op answers -ENOSYS. */
int kv_lease_grant(struct kv *kv, int64_t id, int64_t ttl, struct kv_lease *out)
{
	return kv->ops->lease_grant ? kv->ops->lease_grant(kv, id, ttl, out) : -ENOSYS;
}

int kv_lease_revoke(struct kv *kv, int64_t id, int64_t *revision)
{
	return kv->ops->lease_revoke ? kv->ops->lease_revoke(kv, id, revision) : -ENOSYS;
}

int kv_lease_keepalive(struct kv *kv, int64_t id, struct kv_lease *out)
{
	return kv->ops->lease_keepalive ? kv->ops->lease_keepalive(kv, id, out) : -ENOSYS;
}

int kv_lease_ttl(struct kv *kv, int64_t id, struct kv_lease *out, struct kv_range_result *keys)
{
	return kv->ops->lease_ttl ? kv->ops->lease_ttl(kv, id, out, keys) : -ENOSYS;
}

int kv_lease_list(struct kv *kv, int64_t **ids, size_t *n)
{
	return kv->ops->lease_list ? kv->ops->lease_list(kv, ids, n) : -ENOSYS;
}

size_t kv_prefix_end(const void *prefix, size_t prefix_len, char *buf)
{
	const unsigned char *p = prefix;
	size_t n = prefix_len;
	while (n > 0 && p[n - 1] == 0xff)
		n--;
	if (n == 0) {
		buf[0] = 0;
		return 1;
	}
	memcpy(buf, p, n);
	buf[n - 1] = (char)(p[n - 1] + 1);
	return n;
}

int kv_key_cmp(const void *a, size_t a_len, const void *b, size_t b_len)
{
	size_t n = a_len < b_len ? a_len : b_len;
	int c = n ? memcmp(a, b, n) : 0; /* a or b may be NULL when empty */
	if (c)
		return c;
	return a_len < b_len ? -1 : a_len > b_len;
}

bool kv_key_in_range(const void *k, size_t k_len, const void *key, size_t key_len, const void *end,
		     size_t end_len)
{
	int c = kv_key_cmp(k, k_len, key, key_len);
	if (!end_len)
		return c == 0;
	if (c < 0)
		return false;
	if (end_len == 1 && !((const char *)end)[0])
		return true;
	return kv_key_cmp(k, k_len, end, end_len) < 0;
}

int kv_sort_cmp(const struct kv_kv *a, const struct kv_kv *b, enum kv_sort_target target)
{
	int64_t x = 0, y = 0;
	switch (target) {
	case KV_SORT_VERSION:
		x = a->version, y = b->version;
		break;
	case KV_SORT_CREATE:
		x = a->create_revision, y = b->create_revision;
		break;
	case KV_SORT_MOD:
		x = a->mod_revision, y = b->mod_revision;
		break;
	case KV_SORT_VALUE: {
		int c = kv_key_cmp(a->value, a->value ? a->value_len : 0, b->value,
				   b->value ? b->value_len : 0);
		if (c)
			return c;
		break;
	}
	default:
		break;
	}
	if (x != y)
		return x < y ? -1 : 1;
	/* Ties keep key order so results are deterministic. */
	return kv_key_cmp(a->key, a->key_len, b->key, b->key_len);
}

static int64_t cmp_number(const struct kv_kv *kv, enum kv_cmp_target t)
{
	if (!kv)
		return 0;
	switch (t) {
	case KV_CMP_VERSION:
		return kv->version;
	case KV_CMP_CREATE:
		return kv->create_revision;
	case KV_CMP_MOD:
		return kv->mod_revision;
	case KV_CMP_LEASE:
		return kv->lease;
	default:
		return 0;
	}
}

bool kv_compare_kv(const struct kv_compare *c, const struct kv_kv *kv)
{
	int res;
	if (c->target == KV_CMP_VALUE) {
		res = kv_key_cmp(kv ? kv->value : NULL, kv ? kv->value_len : 0, c->value,
				 c->value_len);
	} else {
		int64_t v = cmp_number(kv, c->target);
		res = v < c->number ? -1 : v > c->number;
	}
	switch (c->result) {
	case KV_CMP_EQUAL:
		return res == 0;
	case KV_CMP_NOT_EQUAL:
		return res != 0;
	case KV_CMP_GREATER:
		return res > 0;
	case KV_CMP_LESS:
		return res < 0;
	}
	return false;
}

bool kv_compare_empty(const struct kv_compare *c)
{
	return c->target != KV_CMP_VALUE && kv_compare_kv(c, NULL);
}
