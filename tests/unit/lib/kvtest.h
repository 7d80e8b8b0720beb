/* kvtest.h: kv.h helpers the backend tests share (and bench/, which drives the same calls):
 * a check of one kv, put ops for a txn, loading many of them, the save txn etcdfs sends, and
 * a thread that keeps writing while a test reads.
 *
 *	ops[i] = kvtest_put(keys[i], strlen(keys[i]), "v", 1);
 *	REQUIRE_EQ(kvtest_put_all(kv, ops, n), 0);
 *
 *	struct kvtest_writer w = {.kv = kv, .max = 400, .key = my_key_name};
 *	kvtest_writer_start(&w);        // returns once it is under way
 *	... page through the keyspace ...
 *	int written = kvtest_writer_stop(&w);
 */
#ifndef ETCDFS_TEST_KVTEST_H
#define ETCDFS_TEST_KVTEST_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kv.h"
#include "test.h"

/* Four checks (test.h) of a struct kv_kv k: it holds the C string val, with these create and
 * mod revisions and version. */
#define CHECK_KV(k, val, create, mod, ver)                                                         \
	do {                                                                                       \
		CHECK_STRN((k).value, (k).value_len, val);                                         \
		CHECK_EQ((k).create_revision, create);                                             \
		CHECK_EQ((k).mod_revision, mod);                                                   \
		CHECK_EQ((k).version, ver);                                                        \
	} while (0)

/* kv_put of a C string value under a C string key; *rev (may be NULL) gets the new
 * revision. */
static inline int put_s(struct kv *kv, const char *k, const char *v, int64_t *rev)
{
	return kv_put(kv, k, strlen(k), v, strlen(v), rev);
}

/* A kv borrowing key and value (C strings), to hand to a module as if a backend had sent it
 * (a local write, a watch event); never kv_kv_free() it. */
struct kv_kv kvtest_kv(const char *key, const char *value, int64_t create, int64_t mod,
		       int64_t version);

/* A put of key = value for a txn list; both are borrowed. */
struct kv_op kvtest_put(const void *key, size_t key_len, const void *value, size_t value_len);

/* Applies n put (or other) ops in txns of at most 100 ops each, in order. Returns 0 or the
 * first txn's error (the ops before it are applied). */
int kvtest_put_all(struct kv *kv, const struct kv_op *ops, size_t n);

/* etcdfs's save of one key as a single txn (docs/writes.md): when the key's target
 * (KV_CMP_CREATE: 0 for "absent", KV_CMP_MOD: the mod_revision read) equals cmp.number,
 * put the value with prev_kv; otherwise a keys-only range of the key, to see the winner.
 * txn points into the struct: set cmp.number, then pass &s->txn; do not copy the struct. */
struct kvtest_save {
	struct kv_compare cmp;
	struct kv_op put, look;
	struct kv_txn txn;
};
void kvtest_save_init(struct kvtest_save *s, enum kv_cmp_target target, const char *key,
		      const void *value, size_t value_len);

/* A thread that puts keys through kv, one after another, until stopped or after max puts:
 * put n (from 0) writes "late" under the key key(n) names. A put that fails is not counted
 * and tried again under the same n. */
struct kvtest_writer {
	struct kv *kv;
	int max;
	void (*key)(int n, char *buf, size_t size);
	/* private */
	pthread_t th;
	int stop; /* atomics */
	int n;
};
/* Starts the thread; returns once it made 3 puts (or after 5 s: a loaded machine may be
 * slow to run it), so that what the test does next overlaps its writes. */
void kvtest_writer_start(struct kvtest_writer *w);
/* Stops and joins the thread; returns how many puts it made. */
int kvtest_writer_stop(struct kvtest_writer *w);

#endif
