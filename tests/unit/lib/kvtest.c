/* kvtest.c: the kv.h test helpers of kvtest.h. */
#include "kvtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct kv_kv kvtest_kv(const char *key, const char *value, int64_t create, int64_t mod,
		       int64_t version)
{
	return (struct kv_kv){.key = (char *)key,
			      .key_len = strlen(key),
			      .value = (char *)value,
			      .value_len = strlen(value),
			      .create_revision = create,
			      .mod_revision = mod,
			      .version = version};
}

struct kv_op kvtest_put(const void *key, size_t key_len, const void *value, size_t value_len)
{
	return (struct kv_op){.type = KV_OP_PUT,
			      .key = key,
			      .key_len = key_len,
			      .value = value,
			      .value_len = value_len};
}

int kvtest_put_all(struct kv *kv, const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i += 100) {
		struct kv_txn txn = {.success = ops + i, .n_success = n - i < 100 ? n - i : 100};
		struct kv_txn_result r;
		int ret = kv_txn(kv, &txn, &r);
		kv_txn_result_free(&r);
		if (ret < 0)
			return ret;
	}
	return 0;
}

void kvtest_save_init(struct kvtest_save *s, enum kv_cmp_target target, const char *key,
		      const void *value, size_t value_len)
{
	size_t key_len = strlen(key);
	s->cmp = (struct kv_compare){
		.target = target, .result = KV_CMP_EQUAL, .key = key, .key_len = key_len};
	s->put = kvtest_put(key, key_len, value, value_len);
	s->put.prev_kv = true;
	s->look = (struct kv_op){
		.type = KV_OP_RANGE, .key = key, .key_len = key_len, .keys_only = true};
	s->txn = (struct kv_txn){.compare = &s->cmp,
				 .n_compare = 1,
				 .success = &s->put,
				 .n_success = 1,
				 .failure = &s->look,
				 .n_failure = 1};
}

static void *writer_main(void *arg)
{
	struct kvtest_writer *w = arg;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE) && w->n < w->max) {
		char k[64];
		w->key(w->n, k, sizeof(k));
		if (kv_put(w->kv, k, strlen(k), "late", 4, NULL) == 0)
			__atomic_add_fetch(&w->n, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

void kvtest_writer_start(struct kvtest_writer *w)
{
	w->stop = 0;
	w->n = 0;
	if (pthread_create(&w->th, NULL, writer_main, w) != 0) {
		fprintf(stderr, "kvtest_writer_start: pthread_create failed\n");
		abort();
	}
	for (int i = 0; i < 500 && __atomic_load_n(&w->n, __ATOMIC_ACQUIRE) < 3; i++)
		usleep(10000);
}

int kvtest_writer_stop(struct kvtest_writer *w)
{
	__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
	pthread_join(w->th, NULL);
	return w->n;
}
