/* test_kvmem.c: the in-memory kv.h backend (kvmem.h) keeps etcd's semantics and injects
 * exactly the faults it is asked for. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmem.h"
#include "kvtest.h"
#include "test.h"

static struct kv *fresh(void)
{
	struct kv *kv = kvmem_new();
	REQUIRE(kv != NULL);
	return kv;
}

static void check_value(struct kv *kv, const char *k, const char *want)
{
	struct kv_kv got;
	int ret = kv_get(kv, k, strlen(k), &got);
	if (!want) {
		CHECK_EQ(ret, -ENOENT);
		return;
	}
	if (!CHECK_EQ(ret, 0))
		return;
	CHECK_STRN(got.value, got.value_len, want);
	kv_kv_free(&got);
}

/* A txn "put k=v if k's version is version", failing over to a read of k. */
static int put_if_version(struct kv *kv, const char *k, const char *v, int64_t version,
			  struct kv_txn_result *res)
{
	struct kv_compare cmp = {.target = KV_CMP_VERSION,
				 .result = KV_CMP_EQUAL,
				 .key = k,
				 .key_len = strlen(k),
				 .number = version};
	struct kv_op ok = {.type = KV_OP_PUT,
			   .key = k,
			   .key_len = strlen(k),
			   .value = v,
			   .value_len = strlen(v)};
	struct kv_op fail = {.type = KV_OP_RANGE, .key = k, .key_len = strlen(k)};
	struct kv_txn txn = {.compare = &cmp,
			     .n_compare = 1,
			     .success = &ok,
			     .n_success = 1,
			     .failure = &fail,
			     .n_failure = 1};
	return kv_txn(kv, &txn, res);
}

static void test_put_get(void)
{
	struct kv *kv = fresh();
	int64_t rev = 0;
	CHECK(strcmp(kv->ops->name, "kvmem") == 0);
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(rev, 1);
	CHECK_EQ(put_s(kv, "a", "1", &rev), 0);
	CHECK_EQ(rev, 2);
	CHECK_EQ(put_s(kv, "a", "22", &rev), 0);
	CHECK_EQ(rev, 3);
	struct kv_kv got;
	REQUIRE_EQ(kv_get(kv, "a", 1, &got), 0);
	CHECK_KV(got, "22", 2, 3, 2);
	kv_kv_free(&got);
	int64_t deleted = 0;
	CHECK_EQ(kv_delete_range(kv, "a", 1, NULL, 0, &deleted, &rev), 0);
	CHECK_EQ(deleted, 1);
	CHECK_EQ(rev, 4);
	check_value(kv, "a", NULL);
	CHECK_EQ(kvmem_revision(kv), 4);
	kv_destroy(kv);
}

static void test_txn_compare(void)
{
	struct kv *kv = fresh();
	struct kv_txn_result res;
	REQUIRE_EQ(put_if_version(kv, "k", "first", 0, &res), 0);
	CHECK(res.succeeded);
	CHECK_EQ(res.revision, 2);
	kv_txn_result_free(&res);
	/* k now has version 1: the compare fails and the read of the failure branch runs. */
	REQUIRE_EQ(put_if_version(kv, "k", "second", 0, &res), 0);
	CHECK(!res.succeeded);
	CHECK_EQ(res.revision, 2);
	REQUIRE_EQ(res.n_results, 1);
	CHECK_EQ(res.results[0].type, KV_OP_RANGE);
	REQUIRE_EQ(res.results[0].range.n_kvs, 1);
	CHECK_STRN(res.results[0].range.kvs[0].value, res.results[0].range.kvs[0].value_len,
		   "first");
	kv_txn_result_free(&res);
	check_value(kv, "k", "first");
	kv_destroy(kv);
}

static void fill(struct kv *kv, int n)
{
	for (int i = 0; i < n; i++) {
		char k[16], v[16];
		snprintf(k, sizeof(k), "p/%02d", i);
		snprintf(v, sizeof(v), "v%d", i);
		REQUIRE_EQ(put_s(kv, k, v, NULL), 0);
	}
}

static void test_paging(void)
{
	struct kv *kv = fresh();
	fill(kv, 10);
	REQUIRE_EQ(put_s(kv, "q", "outside", NULL), 0);
	char end[2];
	size_t end_len = kv_prefix_end("p/", 2, end);
	char from[16] = "p/";
	size_t from_len = 2, seen = 0;
	for (int page = 0;; page++) {
		struct kv_range_req req = {.key = from,
					   .key_len = from_len,
					   .range_end = end,
					   .range_end_len = end_len,
					   .limit = 3};
		struct kv_range_result res;
		REQUIRE_EQ(kv_range(kv, &req, &res), 0);
		CHECK_EQ(res.count, 10 - (int64_t)seen);
		CHECK_EQ(res.n_kvs, page < 3 ? 3 : 1);
		CHECK_EQ(res.more, page < 3);
		for (size_t i = 0; i < res.n_kvs; i++) {
			char want[16];
			snprintf(want, sizeof(want), "p/%02zu", seen++);
			CHECK_STRN(res.kvs[i].key, res.kvs[i].key_len, want);
		}
		bool more = res.more;
		/* The next page starts just after the last key: key + "\0". */
		memcpy(from, res.kvs[res.n_kvs - 1].key, res.kvs[res.n_kvs - 1].key_len);
		from_len = res.kvs[res.n_kvs - 1].key_len + 1;
		from[from_len - 1] = 0;
		kv_range_result_free(&res);
		if (!more)
			break;
		REQUIRE(page < 10);
	}
	CHECK_EQ(seen, 10);

	struct kv_range_req req = {
		.key = "p/", .key_len = 2, .range_end = end, .range_end_len = end_len};
	struct kv_range_result res;
	req.keys_only = true;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 10);
	CHECK(res.kvs[0].value == NULL);
	kv_range_result_free(&res);
	req.keys_only = false;
	req.count_only = true;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_EQ(res.n_kvs, 0);
	CHECK_EQ(res.count, 10);
	kv_range_result_free(&res);
	req.count_only = false;
	req.sort_order = KV_SORT_DESCEND;
	req.limit = 2;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 2);
	CHECK_STRN(res.kvs[0].key, res.kvs[0].key_len, "p/09");
	CHECK_STRN(res.kvs[1].key, res.kvs[1].key_len, "p/08");
	CHECK(res.more);
	kv_range_result_free(&res);
	kv_destroy(kv);
}

static void test_revisions(void)
{
	struct kv *kv = fresh();
	REQUIRE_EQ(put_s(kv, "a", "v1", NULL), 0); /* rev 2 */
	REQUIRE_EQ(put_s(kv, "a", "v2", NULL), 0); /* rev 3 */
	REQUIRE_EQ(put_s(kv, "a", "v3", NULL), 0); /* rev 4 */
	struct kv_range_req req = {.key = "a", .key_len = 1, .revision = 2};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	CHECK_STRN(res.kvs[0].value, res.kvs[0].value_len, "v1");
	CHECK_EQ(res.revision, 4);
	kv_range_result_free(&res);
	req.revision = 5;
	CHECK_EQ(kv_range(kv, &req, &res), -ENOENT);
	kv_range_result_free(&res);

	CHECK_EQ(kv_compact(kv, 3, true), 0);
	req.revision = 2;
	CHECK_EQ(kv_range(kv, &req, &res), -ERANGE);
	CHECK_EQ(res.compact_revision, 3);
	kv_range_result_free(&res);
	req.revision = 3;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	CHECK_STRN(res.kvs[0].value, res.kvs[0].value_len, "v2");
	kv_range_result_free(&res);
	CHECK_EQ(kv_compact(kv, 3, false), -ERANGE);
	CHECK_EQ(kv_compact(kv, 2, false), -ERANGE);
	CHECK_EQ(kv_compact(kv, 9, false), -ENOENT);
	kv_destroy(kv);
}

static void test_limits(void)
{
	struct kv *kv = fresh();
	CHECK_EQ(kv->ops->max_request_bytes(kv), 3 * 1024 * 1024 / 2);
	CHECK_EQ(kv->ops->max_txn_ops(kv), 128);
	struct kv_op *ops = calloc(129, sizeof(*ops));
	char(*keys)[8] = calloc(129, sizeof(*keys));
	REQUIRE(ops && keys);
	for (int i = 0; i < 129; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%03d", i);
		ops[i] = (struct kv_op){.type = KV_OP_PUT, .key = keys[i], .key_len = 4};
	}
	struct kv_txn txn = {.success = ops, .n_success = 129};
	struct kv_txn_result res;
	CHECK_EQ(kv_txn(kv, &txn, &res), -E2BIG);
	kv_txn_result_free(&res);
	txn.n_success = 128;
	CHECK_EQ(kv_txn(kv, &txn, &res), 0);
	kv_txn_result_free(&res);
	ops[1].key = keys[0]; /* the same key put twice */
	CHECK_EQ(kv_txn(kv, &txn, &res), -EINVAL);
	kv_txn_result_free(&res);
	free(ops);
	free(keys);

	size_t big = 2 * 1024 * 1024;
	char *v = calloc(1, big);
	REQUIRE(v != NULL);
	CHECK_EQ(kv_put(kv, "big", 3, v, big, NULL), -EFBIG);
	CHECK_EQ(kv_put(kv, "big", 3, v, 1024 * 1024, NULL), 0);
	free(v);
	CHECK_EQ(kv_put(kv, "", 0, "v", 1, NULL), -EINVAL);
	struct kv_range_req req = {.key = "", .key_len = 0};
	struct kv_range_result rr;
	CHECK_EQ(kv_range(kv, &req, &rr), -EINVAL);
	kv_range_result_free(&rr);
	kv_destroy(kv);
}

/* ---- watches ---- */

struct seen_event {
	enum kv_event_type type;
	char key[16];
	int64_t mod_rev;
};

/* What one watch delivered; filled on the watch thread, read by the test. */
struct collector {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	enum kv_watch_state states[64]; /* protected by mu */
	size_t n_states;		/* protected by mu */
	struct seen_event *events;	/* protected by mu */
	size_t n_events, cap;		/* protected by mu */
	int64_t last_rev;		/* protected by mu: revision of the last batch */
	int64_t compact_rev;		/* protected by mu */
	int err;			/* protected by mu */
	bool concurrent, out_of_order;	/* protected by mu */
	bool in_cb;			/* protected by mu */
};

static void collector_init(struct collector *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cond, NULL);
}

static void collector_fini(struct collector *c)
{
	free(c->events);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cond);
}

static void record_events(struct collector *c, const struct kv_watch_batch *b)
{
	for (size_t i = 0; i < b->n_events; i++) {
		if (c->n_events == c->cap) {
			c->cap = c->cap ? 2 * c->cap : 64;
			c->events = realloc(c->events, c->cap * sizeof(*c->events));
			REQUIRE(c->events != NULL);
		}
		const struct kv_event *e = &b->events[i];
		struct seen_event *s = &c->events[c->n_events];
		if (c->n_events && e->kv.mod_revision < c->events[c->n_events - 1].mod_rev)
			c->out_of_order = true;
		s->type = e->type;
		snprintf(s->key, sizeof(s->key), "%.*s", (int)e->kv.key_len, e->kv.key);
		s->mod_rev = e->kv.mod_revision;
		c->n_events++;
	}
}

static void on_batch(void *arg, const struct kv_watch_batch *b)
{
	struct collector *c = arg;
	pthread_mutex_lock(&c->mu);
	if (c->in_cb)
		c->concurrent = true;
	c->in_cb = true;
	if (c->n_states < 64)
		c->states[c->n_states++] = b->state;
	record_events(c, b);
	if (b->state == KV_WATCH_EVENTS || b->state == KV_WATCH_PROGRESS) {
		if (b->revision < c->last_rev)
			c->out_of_order = true;
		c->last_rev = b->revision;
	}
	if (b->state == KV_WATCH_COMPACTED)
		c->compact_rev = b->compact_revision;
	if (b->err)
		c->err = b->err;
	c->in_cb = false;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

/* Waits up to 5 s for n events, or for state st when n is 0, after at least min_states
 * batches. */
static bool wait_states(struct collector *c, size_t n, enum kv_watch_state st, size_t min_states)
{
	struct timespec ts;
	util_deadline_ts(CLOCK_REALTIME, 5000, &ts);
	bool ok = false;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		ok = n ? c->n_events >= n : c->n_states && c->states[c->n_states - 1] == st;
		ok = ok && c->n_states >= min_states;
		if (ok || pthread_cond_timedwait(&c->cond, &c->mu, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&c->mu);
	return ok;
}

static bool wait_for(struct collector *c, size_t n, enum kv_watch_state st)
{
	return wait_states(c, n, st, 0);
}

static struct kv_watch *watch_prefix(struct kv *kv, const char *prefix, int64_t start,
				     struct collector *c)
{
	static char end[16];
	struct kv_watch_req req = {.key = prefix,
				   .key_len = strlen(prefix),
				   .range_end = end,
				   .range_end_len = kv_prefix_end(prefix, strlen(prefix), end),
				   .start_revision = start};
	struct kv_watch *w = NULL;
	REQUIRE_EQ(kv_watch(kv, &req, on_batch, c, &w), 0);
	return w;
}

static void test_watch(void)
{
	struct kv *kv = fresh();
	struct collector c;
	collector_init(&c);
	struct kv_watch *w = watch_prefix(kv, "w/", 0, &c);
	REQUIRE(wait_for(&c, 0, KV_WATCH_CONNECTED));
	REQUIRE_EQ(put_s(kv, "w/a", "1", NULL), 0); /* rev 2 */
	REQUIRE_EQ(put_s(kv, "x", "1", NULL), 0);   /* rev 3, outside the prefix */
	REQUIRE_EQ(put_s(kv, "w/b", "2", NULL), 0); /* rev 4 */
	REQUIRE_EQ(kv_delete_range(kv, "w/a", 3, NULL, 0, NULL, NULL), 0); /* rev 5 */
	REQUIRE(wait_for(&c, 3, 0));
	pthread_mutex_lock(&c.mu);
	CHECK_EQ(c.states[0], KV_WATCH_CONNECTED);
	CHECK_EQ(c.n_events, 3);
	CHECK(strcmp(c.events[0].key, "w/a") == 0 && c.events[0].type == KV_EVENT_PUT);
	CHECK_EQ(c.events[0].mod_rev, 2);
	CHECK(strcmp(c.events[1].key, "w/b") == 0);
	CHECK_EQ(c.events[1].mod_rev, 4);
	CHECK(strcmp(c.events[2].key, "w/a") == 0 && c.events[2].type == KV_EVENT_DELETE);
	CHECK_EQ(c.events[2].mod_rev, 5);
	pthread_mutex_unlock(&c.mu);
	kv_watch_cancel(kv, w);
	/* After cancel returns the callback never runs again. */
	pthread_mutex_lock(&c.mu);
	size_t states = c.n_states;
	pthread_mutex_unlock(&c.mu);
	REQUIRE_EQ(put_s(kv, "w/c", "3", NULL), 0);
	usleep(50000);
	CHECK_EQ(c.n_states, states);
	CHECK(!c.concurrent && !c.out_of_order);
	collector_fini(&c);
	kv_destroy(kv);
}

static void test_watch_history(void)
{
	struct kv *kv = fresh();
	fill(kv, 5); /* revs 2..6 */
	struct collector c;
	collector_init(&c);
	struct kv_watch *w = watch_prefix(kv, "p/", 4, &c);
	REQUIRE(wait_for(&c, 3, 0));
	CHECK_EQ(c.states[0], KV_WATCH_CONNECTED);
	CHECK_EQ(c.events[0].mod_rev, 4);
	CHECK(strcmp(c.events[0].key, "p/02") == 0);
	CHECK_EQ(c.events[2].mod_rev, 6);
	kv_watch_cancel(kv, w);
	CHECK_EQ(c.n_events, 3);
	collector_fini(&c);

	/* A start revision below the compaction point: COMPACTED, and the watch stops. */
	REQUIRE_EQ(kv_compact(kv, 5, true), 0);
	collector_init(&c);
	w = watch_prefix(kv, "p/", 3, &c);
	REQUIRE(wait_for(&c, 0, KV_WATCH_COMPACTED));
	CHECK_EQ(c.compact_rev, 5);
	CHECK_EQ(c.n_events, 0);
	CHECK_EQ(kvmem_watch_cancel_all(kv, -EIO), 0); /* it has ended already */
	kv_watch_cancel(kv, w);
	collector_fini(&c);
	kv_destroy(kv);
}

static void test_watch_streams(void)
{
	struct kv *kv = fresh();
	struct collector c;
	collector_init(&c);
	struct kv_watch *w = watch_prefix(kv, "s/", 0, &c);
	REQUIRE(wait_for(&c, 0, KV_WATCH_CONNECTED));
	CHECK_EQ(kvmem_watch_disconnect_all(kv, -ECONNREFUSED), 1);
	REQUIRE(wait_states(&c, 0, KV_WATCH_CONNECTED, 3));
	pthread_mutex_lock(&c.mu);
	CHECK_EQ(c.n_states, 3);
	CHECK_EQ(c.states[1], KV_WATCH_DISCONNECTED);
	CHECK_EQ(c.err, -ECONNREFUSED);
	pthread_mutex_unlock(&c.mu);
	REQUIRE_EQ(put_s(kv, "s/1", "x", NULL), 0);
	REQUIRE(wait_for(&c, 1, 0));
	CHECK_EQ(kvmem_watch_cancel_all(kv, -EACCES), 1);
	REQUIRE(wait_for(&c, 0, KV_WATCH_CANCELED));
	CHECK_EQ(c.err, -EACCES);
	kv_watch_cancel(kv, w);
	collector_fini(&c);

	/* A watch left open is stopped by kv_destroy (valgrind sees no leak). */
	collector_init(&c);
	watch_prefix(kv, "s/", 0, &c);
	REQUIRE(wait_for(&c, 0, KV_WATCH_CONNECTED));
	kv_destroy(kv);
	collector_fini(&c);
}

struct writer {
	struct kv *kv;
	int id;
};

static void *write_many(void *arg)
{
	struct writer *wr = arg;
	for (int i = 0; i < 100; i++) {
		char k[16];
		snprintf(k, sizeof(k), "c/%d/%d", wr->id, i);
		CHECK_EQ(put_s(wr->kv, k, "v", NULL), 0);
	}
	return NULL;
}

static void test_watch_concurrent_writers(void)
{
	struct kv *kv = fresh();
	struct collector c;
	collector_init(&c);
	struct kv_watch *w = watch_prefix(kv, "c/", 0, &c);
	pthread_t t[4];
	struct writer wr[4];
	for (int i = 0; i < 4; i++) {
		wr[i] = (struct writer){kv, i};
		REQUIRE_EQ(pthread_create(&t[i], NULL, write_many, &wr[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	CHECK(wait_for(&c, 400, 0));
	kv_watch_cancel(kv, w);
	CHECK_EQ(c.n_events, 400);
	CHECK(!c.concurrent && !c.out_of_order);
	CHECK_EQ(kvmem_revision(kv), 401);
	collector_fini(&c);
	kv_destroy(kv);
}

/* ---- faults ---- */

static int get_err(struct kv *kv, const char *k)
{
	struct kv_kv got;
	int ret = kv_get(kv, k, strlen(k), &got);
	if (ret == 0)
		kv_kv_free(&got);
	return ret;
}

static void test_fail_after_n(void)
{
	struct kv *kv = fresh();
	kvmem_fail(kv, KVMEM_TXN, 2, -ETIMEDOUT, false);
	CHECK_EQ(put_s(kv, "a", "1", NULL), 0);
	CHECK_EQ(put_s(kv, "a", "2", NULL), 0);
	CHECK_EQ(put_s(kv, "a", "3", NULL), -ETIMEDOUT);
	CHECK_EQ(kvmem_revision(kv), 3); /* not applied */
	check_value(kv, "a", "2");
	CHECK_EQ(put_s(kv, "a", "4", NULL), 0); /* once only */

	kvmem_fail(kv, KVMEM_RANGE, 1, -EIO, false);
	CHECK_EQ(get_err(kv, "a"), 0);
	CHECK_EQ(get_err(kv, "a"), -EIO);
	CHECK_EQ(get_err(kv, "a"), 0);

	int64_t rev = 0;
	kvmem_fail(kv, KVMEM_STATUS, 0, -ENOMEM, false);
	CHECK_EQ(kv_status(kv, &rev), -ENOMEM);
	CHECK_EQ(rev, 0); /* untouched */
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(rev, 4);

	kvmem_fail(kv, KVMEM_COMPACT, 0, -ETIMEDOUT, false);
	CHECK_EQ(kv_compact(kv, 3, true), -ETIMEDOUT);
	struct kv_range_req req = {.key = "a", .key_len = 1, .revision = 2};
	struct kv_range_result res;
	CHECK_EQ(kv_range(kv, &req, &res), 0); /* nothing was compacted */
	kv_range_result_free(&res);

	struct collector c;
	collector_init(&c);
	struct kv_watch_req wreq = {.key = "a", .key_len = 1};
	struct kv_watch *w = NULL;
	kvmem_fail(kv, KVMEM_WATCH, 0, -EIO, false);
	CHECK_EQ(kv_watch(kv, &wreq, on_batch, &c, &w), -EIO);
	CHECK(w == NULL);
	CHECK_EQ(kv_watch(kv, &wreq, on_batch, &c, &w), 0);
	kv_watch_cancel(kv, w);
	collector_fini(&c);

	/* KVMEM_ANY counts every kind. */
	kvmem_fail(kv, KVMEM_ANY, 1, -EIO, false);
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(get_err(kv, "a"), -EIO);
	CHECK_EQ(put_s(kv, "a", "5", NULL), 0);
	kv_destroy(kv);
}

static void test_fail_applied(void)
{
	struct kv *kv = fresh();
	kvmem_fail(kv, KVMEM_TXN, 1, -ETIMEDOUT, true);
	CHECK_EQ(put_s(kv, "a", "1", NULL), 0);
	struct kv_txn_result res;
	CHECK_EQ(put_if_version(kv, "a", "2", 1, &res), -ETIMEDOUT);
	CHECK_EQ(res.n_results, 0); /* the reply is lost: nothing to free */
	kv_txn_result_free(&res);
	/* ... yet the write happened. */
	check_value(kv, "a", "2");
	CHECK_EQ(kvmem_revision(kv), 3);

	/* A lost reply on a txn that fails on its own gives that txn's own error. */
	kvmem_fail(kv, KVMEM_TXN, 0, -ETIMEDOUT, true);
	CHECK_EQ(put_s(kv, "", "x", NULL), -EINVAL);
	CHECK_EQ(put_s(kv, "a", "3", NULL), 0);

	kvmem_fail(kv, KVMEM_COMPACT, 0, -EIO, true);
	CHECK_EQ(kv_compact(kv, 3, true), -EIO);
	struct kv_range_req req = {.key = "a", .key_len = 1, .revision = 2};
	struct kv_range_result rr;
	CHECK_EQ(kv_range(kv, &req, &rr), -ERANGE); /* the compaction happened */
	CHECK_EQ(rr.compact_revision, 3);
	kv_range_result_free(&rr);

	/* applied means nothing to a read: it simply fails. */
	kvmem_fail(kv, KVMEM_RANGE, 0, -EIO, true);
	CHECK_EQ(get_err(kv, "a"), -EIO);
	kv_destroy(kv);
}

static void test_fail_compare(void)
{
	struct kv *kv = fresh();
	struct kv_txn_result res;
	kvmem_fail_compare(kv, 1);
	REQUIRE_EQ(put_if_version(kv, "k", "1", 0, &res), 0);
	CHECK(res.succeeded);
	kv_txn_result_free(&res);
	/* This compare holds, but the fault makes it lose: the failure branch (a read) runs. */
	REQUIRE_EQ(put_if_version(kv, "k", "2", 1, &res), 0);
	CHECK(!res.succeeded);
	REQUIRE_EQ(res.n_results, 1);
	CHECK_EQ(res.results[0].type, KV_OP_RANGE);
	REQUIRE_EQ(res.results[0].range.n_kvs, 1);
	CHECK_STRN(res.results[0].range.kvs[0].value, res.results[0].range.kvs[0].value_len, "1");
	kv_txn_result_free(&res);
	check_value(kv, "k", "1");
	REQUIRE_EQ(put_if_version(kv, "k", "2", 1, &res), 0); /* once only */
	CHECK(res.succeeded);
	kv_txn_result_free(&res);

	/* A failure branch that writes is applied. */
	struct kv_op conflict = {
		.type = KV_OP_PUT, .key = "conflict", .key_len = 8, .value = "c", .value_len = 1};
	struct kv_op ok = {
		.type = KV_OP_PUT, .key = "k", .key_len = 1, .value = "3", .value_len = 1};
	struct kv_txn txn = {.success = &ok, .n_success = 1, .failure = &conflict, .n_failure = 1};
	kvmem_fail_compare(kv, 0);
	REQUIRE_EQ(kv_txn(kv, &txn, &res), 0);
	CHECK(!res.succeeded);
	CHECK_EQ(res.revision, 4);
	kv_txn_result_free(&res);
	check_value(kv, "conflict", "c");
	check_value(kv, "k", "2");
	kv_destroy(kv);
}

static void test_counters_and_external(void)
{
	struct kv *kv = fresh();
	CHECK_EQ(kvmem_calls(kv, KVMEM_ANY), 0);
	int64_t rev;
	CHECK_EQ(put_s(kv, "a", "1", NULL), 0);
	CHECK_EQ(get_err(kv, "a"), 0);
	CHECK_EQ(get_err(kv, "b"), -ENOENT);
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(kv_compact(kv, 2, true), 0);
	CHECK_EQ(kv_compact(kv, 2, true), -ERANGE); /* a failed call counts too */
	CHECK_EQ(kvmem_calls(kv, KVMEM_TXN), 1);
	CHECK_EQ(kvmem_calls(kv, KVMEM_RANGE), 2);
	CHECK_EQ(kvmem_calls(kv, KVMEM_STATUS), 1);
	CHECK_EQ(kvmem_calls(kv, KVMEM_COMPACT), 2);
	CHECK_EQ(kvmem_calls(kv, KVMEM_WATCH), 0);
	CHECK_EQ(kvmem_calls(kv, KVMEM_ANY), 6);
	(void)kv->ops->max_txn_ops(kv);
	(void)kvmem_revision(kv);
	CHECK_EQ(kvmem_calls(kv, KVMEM_ANY), 6);

	/* Another writer is neither counted nor hit by the faults armed for us. */
	kvmem_fail(kv, KVMEM_TXN, 0, -EIO, false);
	CHECK_EQ(kvmem_external_put(kv, "a", 1, "ext", 3, &rev), 0);
	CHECK_EQ(rev, 3);
	CHECK_EQ(kvmem_calls(kv, KVMEM_TXN), 1);
	CHECK_EQ(put_s(kv, "a", "mine", NULL), -EIO);
	check_value(kv, "a", "ext");
	struct kv_txn_result res;
	CHECK_EQ(put_if_version(kv, "a", "mine", 1, &res), 0);
	CHECK(!res.succeeded); /* the external put moved a to version 2 */
	kv_txn_result_free(&res);
	CHECK_EQ(kvmem_external_delete(kv, "a", 1, &rev), 0);
	CHECK_EQ(rev, 4);
	check_value(kv, "a", NULL);
	CHECK_EQ(kvmem_calls(kv, KVMEM_TXN), 3);
	/* Reads and status through the other handle are not counted either, nor faulted. */
	struct kv *other = kvmem_other(kv);
	CHECK(other != kv);
	kvmem_fail_always(kv, KVMEM_ANY, -EIO);
	CHECK_EQ(get_err(other, "a"), -ENOENT);
	CHECK_EQ(kv_status(other, &rev), 0);
	CHECK_EQ(rev, 4);
	CHECK_EQ(kvmem_calls(kv, KVMEM_ANY), 10);
	CHECK_EQ(kv_status(kv, &rev), -EIO);
	kv_destroy(kv);
}

static void test_fail_always_and_clear(void)
{
	struct kv *kv = fresh();
	int64_t rev;
	kvmem_fail_always(kv, KVMEM_ANY, -ECONNREFUSED);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(kv_status(kv, &rev), -ECONNREFUSED);
		CHECK_EQ(put_s(kv, "a", "1", NULL), -ECONNREFUSED);
	}
	kvmem_fail(kv, KVMEM_TXN, 0, -EIO, false);
	kvmem_fail_compare(kv, 0);
	kvmem_fail_clear(kv);
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(put_s(kv, "a", "1", NULL), 0);
	struct kv_txn_result res;
	CHECK_EQ(put_if_version(kv, "a", "2", 1, &res), 0);
	CHECK(res.succeeded);
	kv_txn_result_free(&res);

	/* Two faults on one call: the one armed first fires, the other on the next call. */
	kvmem_fail(kv, KVMEM_TXN, 0, -EIO, false);
	kvmem_fail(kv, KVMEM_TXN, 0, -ETIMEDOUT, false);
	CHECK_EQ(put_s(kv, "a", "3", NULL), -EIO);
	CHECK_EQ(put_s(kv, "a", "3", NULL), -ETIMEDOUT);
	CHECK_EQ(put_s(kv, "a", "3", NULL), 0);
	/* A status call does not move a txn fault's count. */
	kvmem_fail(kv, KVMEM_TXN, 1, -ENOMEM, false);
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(put_s(kv, "a", "4", NULL), 0);
	CHECK_EQ(put_s(kv, "a", "5", NULL), -ENOMEM);
	check_value(kv, "a", "4");
	kv_destroy(kv);
}

int main(void)
{
	TEST_RUN(test_put_get);
	TEST_RUN(test_txn_compare);
	TEST_RUN(test_paging);
	TEST_RUN(test_revisions);
	TEST_RUN(test_limits);
	TEST_RUN(test_watch);
	TEST_RUN(test_watch_history);
	TEST_RUN(test_watch_streams);
	TEST_RUN(test_watch_concurrent_writers);
	TEST_RUN(test_fail_after_n);
	TEST_RUN(test_fail_applied);
	TEST_RUN(test_fail_compare);
	TEST_RUN(test_counters_and_external);
	TEST_RUN(test_fail_always_and_clear);
	return test_summary();
}
