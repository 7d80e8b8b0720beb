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

int kv_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
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

int kv_put(struct kv *kv, const void *key, size_t key_len, const void *val, size_t val_len,
	   int64_t *revision)
{
	struct kv_op op = {.type = KV_OP_PUT,
			   .key = key,
			   .key_len = key_len,
			   .value = val,
			   .value_len = val_len};
	struct kv_txn txn = {.success = &op, .n_success = 1};
	struct kv_txn_result res;
	int ret = kv_txn(kv, &txn, &res);
	if (ret == 0 && revision)
		*revision = res.revision;
	kv_txn_result_free(&res);
	return ret;
}

int kv_delete_range(struct kv *kv, const void *key, size_t key_len, const void *range_end,
		    size_t range_end_len, int64_t *deleted, int64_t *revision)
{
	struct kv_op op = {.type = KV_OP_DELETE,
			   .key = key,
			   .key_len = key_len,
			   .range_end = range_end,
			   .range_end_len = range_end_len};
	struct kv_txn txn = {.success = &op, .n_success = 1};
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
