/* test_mvcc.c: the in-memory MVCC layer on its own (no Raft): revisions,
 * history, compaction, change log, snapshot round trip and the integrity
 * check, including a randomized model comparison. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mvcc.h"
#include "kvtest.h"
#include "test.h"

static int put(struct mvcc *m, const char *k, const char *v)
{
	struct kv_op op = {.type = KV_OP_PUT,
			   .key = k,
			   .key_len = strlen(k),
			   .value = v,
			   .value_len = strlen(v)};
	struct kv_txn t = {.success = &op, .n_success = 1};
	return mvcc_txn(m, &t, NULL);
}

static int del(struct mvcc *m, const char *k, const char *end)
{
	struct kv_op op = {.type = KV_OP_DELETE,
			   .key = k,
			   .key_len = strlen(k),
			   .range_end = end,
			   .range_end_len = end ? strlen(end) : 0};
	struct kv_txn t = {.success = &op, .n_success = 1};
	return mvcc_txn(m, &t, NULL);
}

/* Value of k at rev, or NULL; kv receives metadata. */
static int get_at(struct mvcc *m, const char *k, int64_t rev, struct kv_kv *out)
{
	struct kv_range_req req = {.key = k, .key_len = strlen(k), .revision = rev};
	struct kv_range_result res;
	int ret = mvcc_range(m, &req, &res);
	if (ret < 0)
		return ret;
	if (!res.n_kvs) {
		kv_range_result_free(&res);
		return -ENOENT;
	}
	*out = res.kvs[0];
	res.kvs[0].key = res.kvs[0].value = NULL;
	kv_range_result_free(&res);
	return 0;
}

static void test_basic(void)
{
	struct mvcc *m = mvcc_new();
	REQUIRE(m);
	REQUIRE_EQ(mvcc_revision(m), 1); /* etcd: an empty store is at revision 1 */
	REQUIRE_EQ(put(m, "a", "1"), 0);
	REQUIRE_EQ(put(m, "a", "2"), 0);
	REQUIRE_EQ(put(m, "b", "x"), 0);
	REQUIRE_EQ(mvcc_revision(m), 4);
	struct kv_kv kv;
	REQUIRE_EQ(get_at(m, "a", 0, &kv), 0);
	CHECK_KV(kv, "2", 2, 3, 2);
	kv_kv_free(&kv);
	REQUIRE_EQ(get_at(m, "a", 2, &kv), 0);
	CHECK_STRN(kv.value, kv.value_len, "1");
	kv_kv_free(&kv);
	REQUIRE_EQ(get_at(m, "a", 1, &kv), -ENOENT);
	/* delete resets version; a deleted key is absent at later revisions */
	REQUIRE_EQ(del(m, "a", NULL), 0);
	REQUIRE_EQ(mvcc_revision(m), 5);
	REQUIRE_EQ(get_at(m, "a", 0, &kv), -ENOENT);
	REQUIRE_EQ(del(m, "a", NULL), 0); /* deleting nothing: no new revision */
	REQUIRE_EQ(mvcc_revision(m), 5);
	REQUIRE_EQ(put(m, "a", "3"), 0);
	REQUIRE_EQ(get_at(m, "a", 0, &kv), 0);
	CHECK_EQ(kv.version, 1);
	CHECK_EQ(kv.create_revision, 6);
	kv_kv_free(&kv);
	REQUIRE_EQ(mvcc_check(m), 0);
	/* compaction */
	REQUIRE_EQ(mvcc_compact(m, 5), 0);
	REQUIRE_EQ(mvcc_compact(m, 5), -ERANGE);
	REQUIRE_EQ(mvcc_compact(m, 99), -ENOENT);
	REQUIRE_EQ(get_at(m, "a", 4, &kv), -ERANGE);
	REQUIRE_EQ(get_at(m, "b", 5, &kv), 0); /* b@4 survives as newest <= 5 */
	kv_kv_free(&kv);
	REQUIRE_EQ(get_at(m, "a", 5, &kv), -ENOENT); /* tombstone at 5 dropped */
	REQUIRE_EQ(get_at(m, "a", 7, &kv), -ENOENT); /* future */
	REQUIRE_EQ(mvcc_check(m), 0);
	struct kv_event *evs;
	size_t n;
	int64_t next;
	REQUIRE_EQ(mvcc_events(m, "\0", 1, "\0", 1, 4, 100, &evs, &n, &next), -ERANGE);
	REQUIRE_EQ(mvcc_events(m, "\0", 1, "\0", 1, 5, 100, &evs, &n, &next), 0);
	REQUIRE_EQ(n, 1); /* only a@6: the tombstone at 5 is gone */
	CHECK_EQ(evs[0].kv.mod_revision, 6);
	REQUIRE_EQ(next, 7);
	mvcc_events_free(evs, n);
	mvcc_free(m);
}

/* Random operations against a brute-force model of every revision; checks
 * ranges at all revisions, snapshot round trip and compaction. */
#define NKEYS 12
#define MAXREV 400
static char model[MAXREV + 1][NKEYS][8]; /* "" = absent */

static void key_name(int i, char *buf)
{
	snprintf(buf, 8, "k%02d", i);
}

static void check_model(struct mvcc *m, int64_t from)
{
	for (int64_t r = from; r <= mvcc_revision(m); r++) {
		struct kv_range_req req = {.key = "k",
					   .key_len = 1,
					   .range_end = "l",
					   .range_end_len = 1,
					   .revision = r};
		struct kv_range_result res;
		REQUIRE_EQ(mvcc_range(m, &req, &res), 0);
		size_t j = 0;
		for (int i = 0; i < NKEYS; i++) {
			if (!model[r][i][0])
				continue;
			char kn[8];
			key_name(i, kn);
			REQUIRE(j < res.n_kvs);
			CHECK_STRN(res.kvs[j].key, res.kvs[j].key_len, kn);
			CHECK_STRN(res.kvs[j].value, res.kvs[j].value_len, model[r][i]);
			REQUIRE(res.kvs[j].mod_revision <= r);
			j++;
		}
		REQUIRE_EQ(j, res.n_kvs);
		CHECK_EQ(res.count, (int64_t)j);
		kv_range_result_free(&res);
	}
}

static void test_random_model(void)
{
	srand(12345);
	struct mvcc *m = mvcc_new();
	memset(model, 0, sizeof(model));
	while (mvcc_revision(m) < MAXREV - 5) {
		int64_t r = mvcc_revision(m);
		int i = rand() % NKEYS;
		char kn[8], v[8];
		key_name(i, kn);
		if (rand() % 4 == 0) {
			int j = i + rand() % 3;
			char end[8];
			key_name(j, end);
			REQUIRE_EQ(del(m, kn, end), 0);
			if (mvcc_revision(m) != r) {
				memcpy(model[r + 1], model[r], sizeof(model[r]));
				for (int x = i; x < j && x < NKEYS; x++)
					model[r + 1][x][0] = 0;
			}
		} else {
			snprintf(v, sizeof(v), "v%d", rand() % 1000);
			REQUIRE_EQ(put(m, kn, v), 0);
			REQUIRE_EQ(mvcc_revision(m), r + 1);
			memcpy(model[r + 1], model[r], sizeof(model[r]));
			strcpy(model[r + 1][i], v);
		}
	}
	REQUIRE_EQ(mvcc_check(m), 0);
	check_model(m, 1);

	void *buf;
	size_t len;
	REQUIRE_EQ(mvcc_snapshot(m, &buf, &len), 0);
	struct mvcc *m2;
	REQUIRE_EQ(mvcc_restore(buf, len, &m2), 0);
	free(buf);
	REQUIRE_EQ(mvcc_revision(m2), mvcc_revision(m));
	check_model(m2, 1);

	int64_t c = mvcc_revision(m) / 2;
	REQUIRE_EQ(mvcc_compact(m2, c), 0);
	REQUIRE_EQ(mvcc_check(m2), 0);
	check_model(m2, c);
	struct kv_range_req req = {.key = "k", .key_len = 1, .revision = c - 1};
	struct kv_range_result res;
	REQUIRE_EQ(mvcc_range(m2, &req, &res), -ERANGE);
	CHECK_EQ(res.compact_revision, c);

	/* snapshot of a compacted state keeps compaction and history */
	REQUIRE_EQ(mvcc_snapshot(m2, &buf, &len), 0);
	struct mvcc *m3;
	REQUIRE_EQ(mvcc_restore(buf, len, &m3), 0);
	free(buf);
	REQUIRE_EQ(mvcc_compact_revision(m3), c);
	check_model(m3, c);

	/* a corrupted snapshot is rejected, not half-loaded */
	REQUIRE_EQ(mvcc_snapshot(m3, &buf, &len), 0);
	((unsigned char *)buf)[len / 2] ^= 0xff;
	struct mvcc *m4 = NULL;
	int r = mvcc_restore(buf, len, &m4);
	if (r == 0) {
		/* the flipped byte may land in a value; the state must still be sane */
		REQUIRE_EQ(mvcc_check(m4), 0);
		mvcc_free(m4);
	} else {
		REQUIRE_EQ(r, -EINVAL);
	}
	free(buf);
	mvcc_free(m);
	mvcc_free(m2);
	mvcc_free(m3);
}

static void test_validate(void)
{
	struct kv_op ops[2] = {
		{.type = KV_OP_PUT, .key = "a", .key_len = 1},
		{.type = KV_OP_PUT, .key = "a", .key_len = 1},
	};
	struct kv_txn t = {.success = ops, .n_success = 2};
	REQUIRE_EQ(mvcc_txn_validate(&t, 128), -EINVAL);
	ops[1] = (struct kv_op){.type = KV_OP_DELETE,
				.key = "0",
				.key_len = 1,
				.range_end = "b",
				.range_end_len = 1};
	REQUIRE_EQ(mvcc_txn_validate(&t, 128), -EINVAL);
	ops[1].range_end = "0\x01";
	ops[1].range_end_len = 2;
	REQUIRE_EQ(mvcc_txn_validate(&t, 128), 0);
	REQUIRE_EQ(mvcc_txn_validate(&t, 1), -E2BIG);
	REQUIRE(!mvcc_txn_readonly(&t));
	ops[0].key_len = 0;
	REQUIRE_EQ(mvcc_txn_validate(&t, 128), -EINVAL);
}

int main(void)
{
	TEST_RUN(test_basic);
	TEST_RUN(test_random_model);
	TEST_RUN(test_validate);
	return test_summary();
}
