/* test_semantics.c: the store through kv.h, against etcd's documented v3
 * semantics: revisions, versions, ranges (limit/count/sort/keys_only/old
 * revisions), txn compares exactly as etcd evaluates them, delete_range,
 * compaction errors, request limits, and watch ordering (historic replay,
 * live events, one batch per revision, compaction). Every write goes through
 * a real single-node Raft log in a temp dir. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvtest.h"
#include "storetest.h"

static struct kv *kv;

#define S(x) x, strlen(x)

static void test_revisions(void)
{
	int64_t rev0, rev;
	REQUIRE_EQ(kv_status(kv, &rev0), 0);
	REQUIRE_EQ(rev0, 1); /* etcd: a fresh store is at revision 1 */
	REQUIRE_EQ(put_s(kv, "/rev/a", "1", &rev), 0);
	REQUIRE_EQ(rev, 2);
	REQUIRE_EQ(put_s(kv, "/rev/a", "2", &rev), 0);
	REQUIRE_EQ(rev, 3);
	struct kv_kv k;
	REQUIRE_EQ(get_s(kv, "/rev/a", &k), 0);
	CHECK_KV(k, "2", 2, 3, 2);
	CHECK_EQ(k.lease, 0);
	kv_kv_free(&k);
	int64_t deleted;
	REQUIRE_EQ(kv_delete_range(kv, S("/rev/a"), NULL, 0, &deleted, &rev), 0);
	REQUIRE_EQ(deleted, 1);
	REQUIRE_EQ(rev, 4);
	REQUIRE_EQ(get_s(kv, "/rev/a", &k), -ENOENT);
	/* deleting nothing changes nothing, not even the revision */
	REQUIRE_EQ(kv_delete_range(kv, S("/rev/a"), NULL, 0, &deleted, &rev), 0);
	REQUIRE_EQ(deleted, 0);
	REQUIRE_EQ(rev, 4);
	/* recreated key: version restarts at 1, new create_revision */
	REQUIRE_EQ(put_s(kv, "/rev/a", "3", &rev), 0);
	REQUIRE_EQ(rev, 5);
	REQUIRE_EQ(get_s(kv, "/rev/a", &k), 0);
	CHECK_EQ(k.version, 1);
	CHECK_EQ(k.create_revision, 5);
	CHECK_EQ(k.mod_revision, 5);
	kv_kv_free(&k);
	/* reads at old revisions see history */
	struct kv_range_req req = {.key = "/rev/a", .key_len = 6, .revision = 2};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	CHECK_STRN(res.kvs[0].value, res.kvs[0].value_len, "1");
	CHECK_EQ(res.revision, 5); /* header revision is the current one */
	kv_range_result_free(&res);
	req.revision = 4;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 0);
	kv_range_result_free(&res);
	req.revision = 6;
	REQUIRE_EQ(kv_range(kv, &req, &res), -ENOENT); /* future revision */
	kv_range_result_free(&res);
	/* empty and binary values and keys round-trip exactly */
	const char bin[] = {'k', 0, (char)0xff, '\n'};
	const char bval[] = {0, 1, 2, 0};
	REQUIRE_EQ(kv_put(kv, bin, sizeof(bin), bval, sizeof(bval), NULL), 0);
	REQUIRE_EQ(kv_get(kv, bin, sizeof(bin), &k), 0);
	REQUIRE_EQ(k.key_len, sizeof(bin));
	REQUIRE(memcmp(k.key, bin, sizeof(bin)) == 0);
	REQUIRE_EQ(k.value_len, sizeof(bval));
	REQUIRE(memcmp(k.value, bval, sizeof(bval)) == 0);
	kv_kv_free(&k);
	REQUIRE_EQ(put_s(kv, "/rev/empty", "", NULL), 0);
	REQUIRE_EQ(get_s(kv, "/rev/empty", &k), 0);
	REQUIRE_EQ(k.value_len, 0);
	REQUIRE(k.value != NULL);
	kv_kv_free(&k);
	/* an empty key is invalid, as in etcd */
	REQUIRE_EQ(kv_put(kv, "", 0, "x", 1, NULL), -EINVAL);
	REQUIRE_EQ(store_check(kv), 0);
}

static void test_ranges(void)
{
	/* keys r/0..r/9 with values in reverse order, r/3 put twice */
	for (int i = 0; i < 10; i++) {
		char k[16], v[16];
		snprintf(k, sizeof(k), "/rng/%d", i);
		snprintf(v, sizeof(v), "v%d", 9 - i);
		REQUIRE_EQ(put_s(kv, k, v, NULL), 0);
	}
	REQUIRE_EQ(put_s(kv, "/rng/3", "v6", NULL), 0);
	REQUIRE_EQ(put_s(kv, "/rnh", "outside", NULL), 0);
	char end[16];
	size_t end_len = kv_prefix_end("/rng/", 5, end);
	struct kv_range_req req = {
		.key = "/rng/", .key_len = 5, .range_end = end, .range_end_len = end_len};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 10);
	CHECK_EQ(res.count, 10);
	REQUIRE(!res.more);
	for (size_t i = 1; i < res.n_kvs; i++)
		REQUIRE(strcmp(res.kvs[i - 1].key, res.kvs[i].key) < 0);
	kv_range_result_free(&res);
	/* limit: count is still the total, more says there is more */
	req.limit = 3;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 3);
	CHECK_EQ(res.count, 10);
	REQUIRE(res.more);
	CHECK_STRN(res.kvs[2].key, res.kvs[2].key_len, "/rng/2");
	kv_range_result_free(&res);
	req.limit = 10;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE(!res.more);
	kv_range_result_free(&res);
	/* count_only and keys_only */
	req.limit = 0;
	req.count_only = true;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 0);
	CHECK_EQ(res.count, 10);
	kv_range_result_free(&res);
	req.count_only = false;
	req.keys_only = true;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 10);
	REQUIRE(res.kvs[0].value == NULL);
	CHECK_EQ(res.kvs[3].version, 2);
	kv_range_result_free(&res);
	req.keys_only = false;
	/* sort: descending key, with limit applied after sorting */
	req.sort_order = KV_SORT_DESCEND;
	req.sort_target = KV_SORT_KEY;
	req.limit = 2;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 2);
	CHECK_STRN(res.kvs[0].key, res.kvs[0].key_len, "/rng/9");
	CHECK_STRN(res.kvs[1].key, res.kvs[1].key_len, "/rng/8");
	REQUIRE(res.more);
	kv_range_result_free(&res);
	/* sort by value ascending: v0 is /rng/9 */
	req.sort_order = KV_SORT_ASCEND;
	req.sort_target = KV_SORT_VALUE;
	req.limit = 1;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_STRN(res.kvs[0].key, res.kvs[0].key_len, "/rng/9");
	kv_range_result_free(&res);
	/* sort by mod revision descending: /rng/3 was written last */
	req.sort_order = KV_SORT_DESCEND;
	req.sort_target = KV_SORT_MOD;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_STRN(res.kvs[0].key, res.kvs[0].key_len, "/rng/3");
	kv_range_result_free(&res);
	/* sort by version descending: /rng/3 has version 2 */
	req.sort_target = KV_SORT_VERSION;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_STRN(res.kvs[0].key, res.kvs[0].key_len, "/rng/3");
	kv_range_result_free(&res);
	/* sort by create revision ascending: /rng/0 first */
	req.sort_order = KV_SORT_ASCEND;
	req.sort_target = KV_SORT_CREATE;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_STRN(res.kvs[0].key, res.kvs[0].key_len, "/rng/0");
	kv_range_result_free(&res);
	/* range_end "\0": every key >= key */
	struct kv_range_req all = {
		.key = "/rng/8", .key_len = 6, .range_end = "\0", .range_end_len = 1};
	REQUIRE_EQ(kv_range(kv, &all, &res), 0);
	REQUIRE(res.n_kvs >= 3); /* /rng/8, /rng/9, /rnh, maybe more */
	CHECK_STRN(res.kvs[2].key, res.kvs[2].key_len, "/rnh");
	kv_range_result_free(&res);
	/* range_end below key: empty */
	struct kv_range_req inv = {
		.key = "/rng/5", .key_len = 6, .range_end = "/rng/1", .range_end_len = 6};
	REQUIRE_EQ(kv_range(kv, &inv, &res), 0);
	REQUIRE_EQ(res.n_kvs, 0);
	CHECK_EQ(res.count, 0);
	kv_range_result_free(&res);
	/* paging the etcd way: continue after the last key */
	char cur[32] = "/rng/";
	size_t cur_len = 5, seen = 0;
	for (;;) {
		struct kv_range_req pg = {.key = cur,
					  .key_len = cur_len,
					  .range_end = end,
					  .range_end_len = end_len,
					  .limit = 4};
		REQUIRE_EQ(kv_range(kv, &pg, &res), 0);
		seen += res.n_kvs;
		bool more = res.more;
		if (res.n_kvs) {
			memcpy(cur, res.kvs[res.n_kvs - 1].key, res.kvs[res.n_kvs - 1].key_len);
			cur_len = res.kvs[res.n_kvs - 1].key_len;
			cur[cur_len++] = 0; /* next key after the last one */
		}
		kv_range_result_free(&res);
		if (!more)
			break;
	}
	REQUIRE_EQ(seen, 10);
}

static struct kv_compare cmp_num(const char *key, enum kv_cmp_target t, enum kv_cmp_result r,
				 int64_t n)
{
	struct kv_compare c = {
		.target = t, .result = r, .key = key, .key_len = strlen(key), .number = n};
	return c;
}

static struct kv_compare cmp_val(const char *key, enum kv_cmp_result r, const char *v)
{
	struct kv_compare c = {.target = KV_CMP_VALUE,
			       .result = r,
			       .key = key,
			       .key_len = strlen(key),
			       .value = v,
			       .value_len = strlen(v)};
	return c;
}

/* Runs a txn with the given compares whose success branch reads nothing;
 * returns succeeded. */
static bool holds(struct kv_compare c)
{
	struct kv_txn t = {.compare = &c, .n_compare = 1};
	struct kv_txn_result r;
	REQUIRE_EQ(kv_txn(kv, &t, &r), 0);
	bool ok = r.succeeded;
	kv_txn_result_free(&r);
	return ok;
}

static void test_txn_compares(void)
{
	int64_t rev;
	REQUIRE_EQ(put_s(kv, "/cmp/a", "bbb", &rev), 0);
	REQUIRE_EQ(put_s(kv, "/cmp/a", "bbb", &rev), 0); /* version 2 */
	int64_t mod = rev;
	struct kv_kv k;
	REQUIRE_EQ(get_s(kv, "/cmp/a", &k), 0);
	int64_t create = k.create_revision;
	kv_kv_free(&k);
	int64_t before;
	REQUIRE_EQ(kv_status(kv, &before), 0);

	REQUIRE(holds(cmp_val("/cmp/a", KV_CMP_EQUAL, "bbb")));
	REQUIRE(!holds(cmp_val("/cmp/a", KV_CMP_EQUAL, "bb")));
	REQUIRE(holds(cmp_val("/cmp/a", KV_CMP_GREATER, "bba")));
	REQUIRE(holds(cmp_val("/cmp/a", KV_CMP_GREATER, "bb"))); /* longer is greater */
	REQUIRE(holds(cmp_val("/cmp/a", KV_CMP_LESS, "c")));
	REQUIRE(holds(cmp_val("/cmp/a", KV_CMP_NOT_EQUAL, "x")));
	REQUIRE(holds(cmp_num("/cmp/a", KV_CMP_VERSION, KV_CMP_EQUAL, 2)));
	REQUIRE(holds(cmp_num("/cmp/a", KV_CMP_VERSION, KV_CMP_GREATER, 1)));
	REQUIRE(!holds(cmp_num("/cmp/a", KV_CMP_VERSION, KV_CMP_LESS, 2)));
	REQUIRE(holds(cmp_num("/cmp/a", KV_CMP_CREATE, KV_CMP_EQUAL, create)));
	REQUIRE(holds(cmp_num("/cmp/a", KV_CMP_MOD, KV_CMP_EQUAL, mod)));
	REQUIRE(holds(cmp_num("/cmp/a", KV_CMP_MOD, KV_CMP_NOT_EQUAL, mod - 1)));
	REQUIRE(holds(cmp_num("/cmp/a", KV_CMP_LEASE, KV_CMP_EQUAL, 0)));
	/* a missing key compares as the zero key-value, but VALUE fails */
	REQUIRE(holds(cmp_num("/cmp/missing", KV_CMP_VERSION, KV_CMP_EQUAL, 0)));
	REQUIRE(holds(cmp_num("/cmp/missing", KV_CMP_CREATE, KV_CMP_EQUAL, 0)));
	REQUIRE(holds(cmp_num("/cmp/missing", KV_CMP_MOD, KV_CMP_LESS, 1)));
	REQUIRE(!holds(cmp_val("/cmp/missing", KV_CMP_EQUAL, "")));
	REQUIRE(!holds(cmp_val("/cmp/missing", KV_CMP_NOT_EQUAL, "x")));
	/* compares over a range: every key must satisfy it */
	REQUIRE_EQ(put_s(kv, "/cmp/b", "bbb", NULL), 0);
	struct kv_compare rc = cmp_val("/cmp/", KV_CMP_EQUAL, "bbb");
	rc.range_end = "/cmp0";
	rc.range_end_len = 5;
	REQUIRE(holds(rc));
	REQUIRE_EQ(put_s(kv, "/cmp/c", "zzz", NULL), 0);
	REQUIRE(!holds(rc));
	rc = cmp_num("/cmp/", KV_CMP_VERSION, KV_CMP_GREATER, 0);
	rc.range_end = "/cmp0";
	rc.range_end_len = 5;
	REQUIRE(holds(rc));
	/* empty range with VERSION == 0: compares the zero kv -> true */
	rc = cmp_num("/nothing/", KV_CMP_VERSION, KV_CMP_EQUAL, 0);
	rc.range_end = "/nothing0";
	rc.range_end_len = 9;
	REQUIRE(holds(rc));
	/* read-only txns never bump the revision */
	int64_t after;
	REQUIRE_EQ(kv_status(kv, &after), 0);
	REQUIRE_EQ(after, before + 2);
}

static void test_txn_ops(void)
{
	int64_t r0;
	REQUIRE_EQ(kv_status(kv, &r0), 0);
	/* create-if-absent, the etcd idiom */
	struct kv_compare c = cmp_num("/txn/x", KV_CMP_CREATE, KV_CMP_EQUAL, 0);
	struct kv_op ops[3] = {
		{.type = KV_OP_PUT, .key = "/txn/x", .key_len = 6, .value = "1", .value_len = 1},
		{.type = KV_OP_PUT, .key = "/txn/y", .key_len = 6, .value = "2", .value_len = 1},
		{.type = KV_OP_RANGE,
		 .key = "/txn/",
		 .key_len = 5,
		 .range_end = "/txn0",
		 .range_end_len = 5},
	};
	struct kv_op fail = {.type = KV_OP_RANGE, .key = "/txn/x", .key_len = 6};
	struct kv_txn t = {.compare = &c,
			   .n_compare = 1,
			   .success = ops,
			   .n_success = 3,
			   .failure = &fail,
			   .n_failure = 1};
	struct kv_txn_result r;
	REQUIRE_EQ(kv_txn(kv, &t, &r), 0);
	REQUIRE(r.succeeded);
	CHECK_EQ(r.revision, r0 + 1); /* one revision for the whole txn */
	REQUIRE_EQ(r.n_results, 3);
	REQUIRE_EQ(r.results[0].type, KV_OP_PUT);
	REQUIRE_EQ(r.results[2].type, KV_OP_RANGE);
	/* the range inside the txn sees the txn's own writes */
	REQUIRE_EQ(r.results[2].range.n_kvs, 2);
	CHECK_EQ(r.results[2].range.kvs[0].mod_revision, r0 + 1);
	CHECK_EQ(r.results[2].range.kvs[1].mod_revision, r0 + 1);
	kv_txn_result_free(&r);
	/* second time the compare fails: failure branch, no revision bump */
	REQUIRE_EQ(kv_txn(kv, &t, &r), 0);
	REQUIRE(!r.succeeded);
	CHECK_EQ(r.revision, r0 + 1);
	REQUIRE_EQ(r.n_results, 1);
	REQUIRE_EQ(r.results[0].range.n_kvs, 1);
	CHECK_STRN(r.results[0].range.kvs[0].value, r.results[0].range.kvs[0].value_len, "1");
	kv_txn_result_free(&r);
	/* failed compare with empty failure branch: nothing written */
	t.n_failure = 0;
	REQUIRE_EQ(kv_txn(kv, &t, &r), 0);
	REQUIRE(!r.succeeded);
	REQUIRE_EQ(r.n_results, 0);
	CHECK_EQ(r.revision, r0 + 1);
	kv_txn_result_free(&r);

	/* prev_kv on put and delete; delete counts */
	struct kv_op p = {.type = KV_OP_PUT,
			  .key = "/txn/x",
			  .key_len = 6,
			  .value = "9",
			  .value_len = 1,
			  .prev_kv = true};
	struct kv_txn tp = {.success = &p, .n_success = 1};
	REQUIRE_EQ(kv_txn(kv, &tp, &r), 0);
	REQUIRE_EQ(r.results[0].range.n_kvs, 1);
	CHECK_STRN(r.results[0].range.kvs[0].value, r.results[0].range.kvs[0].value_len, "1");
	kv_txn_result_free(&r);
	struct kv_op d = {.type = KV_OP_DELETE,
			  .key = "/txn/",
			  .key_len = 5,
			  .range_end = "/txn0",
			  .range_end_len = 5,
			  .prev_kv = true};
	struct kv_txn td = {.success = &d, .n_success = 1};
	REQUIRE_EQ(kv_txn(kv, &td, &r), 0);
	CHECK_EQ(r.results[0].deleted, 2);
	REQUIRE_EQ(r.results[0].range.n_kvs, 2);
	CHECK_EQ(r.revision, r0 + 3);
	kv_txn_result_free(&r);

	/* etcd rejects a branch that writes one key twice */
	struct kv_op dup[2] = {
		{.type = KV_OP_PUT, .key = "/txn/d", .key_len = 6},
		{.type = KV_OP_PUT, .key = "/txn/d", .key_len = 6},
	};
	struct kv_txn tdup = {.success = dup, .n_success = 2};
	REQUIRE_EQ(kv_txn(kv, &tdup, &r), -EINVAL);
	/* ... or puts a key a delete of the same branch covers */
	dup[1] = (struct kv_op){.type = KV_OP_DELETE,
				.key = "/txn/",
				.key_len = 5,
				.range_end = "/txn0",
				.range_end_len = 5};
	REQUIRE_EQ(kv_txn(kv, &tdup, &r), -EINVAL);
	/* but the same key may appear in both branches */
	struct kv_txn tboth = {.success = dup, .n_success = 1, .failure = dup, .n_failure = 1};
	REQUIRE_EQ(kv_txn(kv, &tboth, &r), 0);
	kv_txn_result_free(&r);

	/* leases are stored and compared; ignore_lease keeps the old one; a put
	 * naming a lease nobody granted fails (test_lease.c has the rest) */
	struct kv_op pl = {.type = KV_OP_PUT,
			   .key = "/txn/l",
			   .key_len = 6,
			   .value = "a",
			   .value_len = 1,
			   .lease = 0x1234};
	struct kv_txn tl = {.success = &pl, .n_success = 1};
	REQUIRE_EQ(kv_txn(kv, &tl, &r), -ENOENT);
	struct kv_lease gl;
	REQUIRE_EQ(kv_lease_grant(kv, 0x1234, 60, &gl), 0);
	REQUIRE_EQ(kv_txn(kv, &tl, &r), 0);
	kv_txn_result_free(&r);
	REQUIRE(holds(cmp_num("/txn/l", KV_CMP_LEASE, KV_CMP_EQUAL, 0x1234)));
	pl.lease = 0;
	pl.ignore_lease = true;
	pl.value = "b";
	REQUIRE_EQ(kv_txn(kv, &tl, &r), 0);
	kv_txn_result_free(&r);
	struct kv_kv k;
	REQUIRE_EQ(get_s(kv, "/txn/l", &k), 0);
	CHECK_EQ(k.lease, 0x1234);
	CHECK_STRN(k.value, k.value_len, "b");
	kv_kv_free(&k);
	/* ignore_lease with a lease is invalid; on a missing key it fails */
	pl.lease = 5;
	REQUIRE_EQ(kv_txn(kv, &tl, &r), -EINVAL);
	pl.lease = 0;
	pl.key = "/txn/nolease";
	pl.key_len = 12;
	int64_t rb, ra;
	REQUIRE_EQ(kv_status(kv, &rb), 0);
	REQUIRE_EQ(kv_txn(kv, &tl, &r), -ENOENT);
	REQUIRE_EQ(kv_status(kv, &ra), 0);
	REQUIRE_EQ(ra, rb);
	REQUIRE_EQ(store_check(kv), 0);
}

static void test_limits(void)
{
	REQUIRE_EQ(kv->ops->max_txn_ops(kv), 128);
	REQUIRE_EQ(kv->ops->max_request_bytes(kv), 1536 * 1024);
	struct kv_op *ops = calloc(129, sizeof(*ops));
	char(*keys)[16] = calloc(129, 16);
	for (int i = 0; i < 129; i++) {
		snprintf(keys[i], 16, "/lim/%03d", i);
		ops[i] = kvtest_put(keys[i], 8, "v", 1);
	}
	struct kv_txn t = {.success = ops, .n_success = 129};
	struct kv_txn_result r;
	REQUIRE_EQ(kv_txn(kv, &t, &r), -E2BIG);
	t.n_success = 128;
	REQUIRE_EQ(kv_txn(kv, &t, &r), 0);
	kv_txn_result_free(&r);
	size_t big = 1536 * 1024 + 1;
	char *v = malloc(big);
	memset(v, 'x', big);
	REQUIRE_EQ(kv_put(kv, "/lim/big", 8, v, big, NULL), -EFBIG);
	/* just under the limit is fine (a 1 MiB value) */
	REQUIRE_EQ(kv_put(kv, "/lim/big", 8, v, 1024 * 1024, NULL), 0);
	struct kv_kv k;
	REQUIRE_EQ(get_s(kv, "/lim/big", &k), 0);
	REQUIRE_EQ(k.value_len, 1024 * 1024);
	kv_kv_free(&k);
	free(v);
	free(ops);
	free(keys);
}

/* ---- watches ---- */

struct collector {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int n_batches;
	int states[256];
	int64_t batch_revs[256];
	int64_t covered; /* highest batch revision so far: all seen up to it */
	bool bad_order;	 /* an event at or below an earlier batch's revision */
	bool split_rev;	 /* one revision's events spread over two batches */
	int64_t last_event_rev;
	int64_t compact_rev;
	int n_events;
	char keys[512][32];
	int types[512];
	int64_t revs[512];
	int batch_of[512];
	bool concurrent; /* set if two callbacks ever overlapped */
	int total_events;
	bool in_cb;
};

static void collect_cb(void *arg, const struct kv_watch_batch *b)
{
	struct collector *c = arg;
	pthread_mutex_lock(&c->mu);
	if (c->in_cb)
		c->concurrent = true;
	c->in_cb = true;
	if (c->n_batches < 256) {
		c->states[c->n_batches] = b->state;
		c->batch_revs[c->n_batches] = b->revision;
	}
	if (b->state == KV_WATCH_COMPACTED)
		c->compact_rev = b->compact_revision;
	for (size_t i = 0; i < b->n_events; i++) {
		int64_t r = b->events[i].kv.mod_revision;
		if (r <= c->covered || r > b->revision)
			c->bad_order = true;
		if (i == 0 && r == c->last_event_rev)
			c->split_rev = true;
		c->last_event_rev = r;
	}
	if (b->state != KV_WATCH_COMPACTED && b->revision > c->covered)
		c->covered = b->revision;
	c->total_events += (int)b->n_events;
	for (size_t i = 0; i < b->n_events && c->n_events < 512; i++) {
		int j = c->n_events++;
		snprintf(c->keys[j], 32, "%.*s", (int)b->events[i].kv.key_len, b->events[i].kv.key);
		c->types[j] = b->events[i].type;
		c->revs[j] = b->events[i].kv.mod_revision;
		c->batch_of[j] = c->n_batches;
	}
	c->n_batches++;
	c->in_cb = false;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

static void collector_init(struct collector *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cond, NULL);
}

/* Waits up to 5 s for at least n events (or batches when batches is set). */
static bool wait_for(struct collector *c, int n, bool batches)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	pthread_mutex_lock(&c->mu);
	while ((batches ? c->n_batches : c->n_events) < n)
		if (pthread_cond_timedwait(&c->cond, &c->mu, &ts) != 0)
			break;
	bool ok = (batches ? c->n_batches : c->n_events) >= n;
	pthread_mutex_unlock(&c->mu);
	return ok;
}

static void test_watch(void)
{
	int64_t start;
	REQUIRE_EQ(put_s(kv, "/w/a", "1", &start), 0);
	REQUIRE_EQ(put_s(kv, "/w/b", "1", NULL), 0);
	REQUIRE_EQ(put_s(kv, "/other", "1", NULL), 0); /* outside the watched prefix */
	REQUIRE_EQ(kv_delete_range(kv, S("/w/a"), NULL, 0, NULL, NULL), 0);
	/* a txn writing two keys: one revision, two events, one batch */
	struct kv_op ops[2] = {
		{.type = KV_OP_PUT, .key = "/w/y", .key_len = 4, .value = "2", .value_len = 1},
		{.type = KV_OP_PUT, .key = "/w/x", .key_len = 4, .value = "2", .value_len = 1},
	};
	struct kv_txn t = {.success = ops, .n_success = 2};
	struct kv_txn_result r;
	REQUIRE_EQ(kv_txn(kv, &t, &r), 0);
	int64_t txn_rev = r.revision;
	kv_txn_result_free(&r);

	struct collector c;
	collector_init(&c);
	char end[8];
	size_t end_len = kv_prefix_end("/w/", 3, end);
	struct kv_watch_req wr = {.key = "/w/",
				  .key_len = 3,
				  .range_end = end,
				  .range_end_len = end_len,
				  .start_revision = start};
	struct kv_watch *w;
	REQUIRE_EQ(kv_watch(kv, &wr, collect_cb, &c, &w), 0);
	/* historic replay: 5 events in revision order */
	REQUIRE(wait_for(&c, 5, false));
	/* then live events */
	REQUIRE_EQ(put_s(kv, "/w/live", "1", NULL), 0);
	REQUIRE_EQ(put_s(kv, "/other", "2", NULL), 0);
	REQUIRE_EQ(kv_delete_range(kv, S("/w/b"), NULL, 0, NULL, NULL), 0);
	REQUIRE(wait_for(&c, 7, false));
	kv_watch_cancel(kv, w);
	pthread_mutex_lock(&c.mu);
	REQUIRE_EQ(c.states[0], KV_WATCH_CONNECTED);
	REQUIRE_EQ(c.batch_revs[0], start - 1); /* events resume after this revision */
	REQUIRE(!c.bad_order);
	REQUIRE(!c.split_rev);
	REQUIRE_EQ(c.n_events, 7);
	const char *want[] = {"/w/a", "/w/b", "/w/a", "/w/y", "/w/x", "/w/live", "/w/b"};
	const int wtype[] = {KV_EVENT_PUT, KV_EVENT_PUT, KV_EVENT_DELETE, KV_EVENT_PUT,
			     KV_EVENT_PUT, KV_EVENT_PUT, KV_EVENT_DELETE};
	for (int i = 0; i < 7; i++) {
		REQUIRE(strcmp(c.keys[i], want[i]) == 0);
		REQUIRE_EQ(c.types[i], wtype[i]);
		if (i)
			REQUIRE(c.revs[i] >= c.revs[i - 1]);
	}
	REQUIRE_EQ(c.revs[0], start);
	/* both events of the txn: same revision, txn order, same batch */
	REQUIRE_EQ(c.revs[3], txn_rev);
	REQUIRE_EQ(c.revs[4], txn_rev);
	REQUIRE_EQ(c.batch_of[3], c.batch_of[4]);
	REQUIRE(!c.concurrent);
	int batches = c.n_batches;
	pthread_mutex_unlock(&c.mu);
	/* after cancel returns, no more callbacks */
	REQUIRE_EQ(put_s(kv, "/w/after", "1", NULL), 0);
	usleep(100000);
	REQUIRE_EQ(c.n_batches, batches);

	/* start_revision 0: only events after now */
	struct collector c2;
	collector_init(&c2);
	wr.start_revision = 0;
	REQUIRE_EQ(kv_watch(kv, &wr, collect_cb, &c2, &w), 0);
	REQUIRE(wait_for(&c2, 1, true)); /* CONNECTED */
	int64_t now_rev;
	REQUIRE_EQ(kv_status(kv, &now_rev), 0);
	REQUIRE_EQ(c2.batch_revs[0], now_rev);
	REQUIRE_EQ(put_s(kv, "/w/new", "1", NULL), 0);
	REQUIRE(wait_for(&c2, 1, false));
	kv_watch_cancel(kv, w);
	REQUIRE_EQ(c2.n_events, 1);
	REQUIRE(strcmp(c2.keys[0], "/w/new") == 0);

	/* single-key watch (empty range_end) */
	struct collector c3;
	collector_init(&c3);
	struct kv_watch_req one = {.key = "/w/x", .key_len = 4, .start_revision = start};
	REQUIRE_EQ(kv_watch(kv, &one, collect_cb, &c3, &w), 0);
	REQUIRE(wait_for(&c3, 1, false));
	usleep(50000);
	kv_watch_cancel(kv, w);
	REQUIRE_EQ(c3.n_events, 1);
	REQUIRE_EQ(c3.revs[0], txn_rev);
}

/* Writes outside the watched range are reported as PROGRESS, so a consumer
 * knows how far it is up to date. */
static void test_watch_progress(void)
{
	struct collector c;
	collector_init(&c);
	struct kv_watch_req wr = {
		.key = "/quiet/", .key_len = 7, .range_end = "/quiet0", .range_end_len = 7};
	struct kv_watch *w;
	REQUIRE_EQ(kv_watch(kv, &wr, collect_cb, &c, &w), 0);
	REQUIRE(wait_for(&c, 1, true));
	int64_t rev;
	REQUIRE_EQ(put_s(kv, "/elsewhere/1", "x", NULL), 0);
	REQUIRE_EQ(put_s(kv, "/elsewhere/2", "x", &rev), 0);
	/* within the progress interval (500 ms) plus slack */
	bool seen = false;
	for (int i = 0; i < 40 && !seen; i++) {
		usleep(50000);
		pthread_mutex_lock(&c.mu);
		for (int b = 1; b < c.n_batches && b < 256; b++)
			if (c.states[b] == KV_WATCH_PROGRESS && c.batch_revs[b] == rev)
				seen = true;
		pthread_mutex_unlock(&c.mu);
	}
	kv_watch_cancel(kv, w);
	REQUIRE(seen);
	REQUIRE_EQ(c.n_events, 0);
}

/* More events than one batch holds: replay comes in several batches, each
 * revision whole, batch revisions never claiming events not yet sent. */
static void test_watch_big_replay(void)
{
	int64_t start = 0, rev = 0;
	for (int t = 0; t < 130; t++) {
		struct kv_op ops[10];
		char keys[10][32];
		for (int i = 0; i < 10; i++) {
			snprintf(keys[i], sizeof(keys[i]), "/big/%03d/%d", t, i);
			ops[i] = kvtest_put(keys[i], strlen(keys[i]), "v", 1);
		}
		struct kv_txn txn = {.success = ops, .n_success = 10};
		struct kv_txn_result r;
		REQUIRE_EQ(kv_txn(kv, &txn, &r), 0);
		rev = r.revision;
		if (!start)
			start = r.revision;
		kv_txn_result_free(&r);
	}
	struct collector c;
	collector_init(&c);
	struct kv_watch_req wr = {.key = "/big/",
				  .key_len = 5,
				  .range_end = "/big0",
				  .range_end_len = 5,
				  .start_revision = start};
	struct kv_watch *w;
	REQUIRE_EQ(kv_watch(kv, &wr, collect_cb, &c, &w), 0);
	for (int i = 0; i < 100; i++) {
		pthread_mutex_lock(&c.mu);
		int n = c.total_events;
		pthread_mutex_unlock(&c.mu);
		if (n >= 1300)
			break;
		usleep(50000);
	}
	kv_watch_cancel(kv, w);
	REQUIRE_EQ(c.total_events, 1300);
	REQUIRE(c.n_batches >= 3);	/* CONNECTED + at least two event batches */
	REQUIRE(c.batch_revs[1] < rev); /* the first batch was cut short... */
	REQUIRE_EQ(c.covered, rev);	/* ...and the last one covers everything */
	REQUIRE(!c.bad_order);
	REQUIRE(!c.split_rev);
	REQUIRE(!c.concurrent);
}

static void test_compaction(void)
{
	int64_t r1, r2, r3;
	REQUIRE_EQ(put_s(kv, "/c/a", "1", &r1), 0);
	REQUIRE_EQ(put_s(kv, "/c/a", "2", &r2), 0);
	REQUIRE_EQ(put_s(kv, "/c/a", "3", &r3), 0);
	REQUIRE_EQ(kv_compact(kv, r2, true), 0);
	struct kv_range_req req = {.key = "/c/a", .key_len = 4, .revision = r1};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), -ERANGE);
	CHECK_EQ(res.compact_revision, r2);
	kv_range_result_free(&res);
	req.revision = r2; /* the compaction revision itself stays readable */
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	CHECK_STRN(res.kvs[0].value, res.kvs[0].value_len, "2");
	kv_range_result_free(&res);
	REQUIRE_EQ(kv_compact(kv, r2, true), -ERANGE); /* already compacted */
	REQUIRE_EQ(kv_compact(kv, r1, true), -ERANGE);
	REQUIRE_EQ(kv_compact(kv, r3 + 100, true), -ENOENT); /* future */
	/* a watch from a compacted revision: CONNECTED, then COMPACTED, stops */
	struct collector c;
	collector_init(&c);
	struct kv_watch_req wr = {.key = "/c/",
				  .key_len = 3,
				  .range_end = "/c0",
				  .range_end_len = 3,
				  .start_revision = r1};
	struct kv_watch *w;
	REQUIRE_EQ(kv_watch(kv, &wr, collect_cb, &c, &w), 0);
	REQUIRE(wait_for(&c, 2, true));
	REQUIRE_EQ(c.states[0], KV_WATCH_CONNECTED);
	REQUIRE_EQ(c.states[1], KV_WATCH_COMPACTED);
	REQUIRE_EQ(c.compact_rev, r2);
	kv_watch_cancel(kv, w);
	REQUIRE_EQ(c.n_events, 0);
	/* from the compaction revision on, history is still there */
	collector_init(&c);
	wr.start_revision = r2;
	REQUIRE_EQ(kv_watch(kv, &wr, collect_cb, &c, &w), 0);
	REQUIRE(wait_for(&c, 2, false));
	kv_watch_cancel(kv, w);
	REQUIRE_EQ(c.revs[0], r2);
	REQUIRE_EQ(c.revs[1], r3);
	REQUIRE_EQ(store_check(kv), 0);
}

/* Concurrent writers from several threads: every put gets its own
 * revision and nothing is lost. */
#define CW_THREADS 4
#define CW_PUTS 50
static void *cw_main(void *arg)
{
	long id = (long)arg;
	for (int i = 0; i < CW_PUTS; i++) {
		char k[32];
		snprintf(k, sizeof(k), "/cw/%ld/%03d", id, i);
		if (put_s(kv, k, "v", NULL) != 0)
			return (void *)1;
	}
	return NULL;
}

static void test_concurrent_writers(void)
{
	int64_t before, after;
	REQUIRE_EQ(kv_status(kv, &before), 0);
	pthread_t th[CW_THREADS];
	for (long i = 0; i < CW_THREADS; i++)
		REQUIRE_EQ(pthread_create(&th[i], NULL, cw_main, (void *)i), 0);
	for (int i = 0; i < CW_THREADS; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		REQUIRE(ret == NULL);
	}
	REQUIRE_EQ(kv_status(kv, &after), 0);
	REQUIRE_EQ(after - before, CW_THREADS * CW_PUTS);
	struct kv_range_req req = {.key = "/cw/",
				   .key_len = 4,
				   .range_end = "/cw0",
				   .range_end_len = 4,
				   .count_only = true};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_EQ(res.count, CW_THREADS * CW_PUTS);
	kv_range_result_free(&res);
	REQUIRE_EQ(store_check(kv), 0);
}

int main(void)
{
	char *dir = test_tmpdir("sem");
	kv = open_at(dir, NULL);
	REQUIRE(strcmp(kv->ops->name, "store") == 0);
	TEST_RUN(test_revisions);
	TEST_RUN(test_ranges);
	TEST_RUN(test_txn_compares);
	TEST_RUN(test_txn_ops);
	TEST_RUN(test_limits);
	TEST_RUN(test_watch);
	TEST_RUN(test_watch_progress);
	TEST_RUN(test_watch_big_replay);
	TEST_RUN(test_compaction);
	TEST_RUN(test_concurrent_writers);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
	return test_summary();
}
