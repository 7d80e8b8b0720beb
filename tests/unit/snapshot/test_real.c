/* test_real.c: the snapshot backend on a real Kubernetes etcd backend file.
 *
 * argv: DB KEYS_TXT VALUES_DIR, from ../shared/k8s-real/. DB is a bbolt file
 * from a Kubernetes 1.6/1.7-era etcd; KEYS_TXT lists its keys one per line
 * (independent of this parser); VALUES_DIR holds exact values of two of them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "snapshot/snapshot.h"
#include "snaptest.h"

static const char *db_path, *keys_path, *values_dir;
static struct kv *kv;
static struct snapshot_info info;

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_open(void)
{
	REQUIRE_EQ(snapshot_open(db_path, &kv), 0);
	REQUIRE_EQ(snapshot_get_info(kv, &info), 0);
	fprintf(stderr,
		"  %zu keys (%zu ever in the file), %zu records (%zu tombstones), revision %" PRId64
		" (max record %" PRId64 "), compacted at %" PRId64 ", consistent_index %" PRIu64
		", page size %" PRIu32 "\n",
		info.n_keys, info.n_keys_all, info.n_records, info.n_tombstones, info.revision,
		info.max_revision, info.compact_revision, info.consistent_index, info.page_size);
	CHECK(info.n_keys > 0);
	CHECK(info.revision >= info.max_revision);
	CHECK(info.revision >= info.compact_revision);
	int64_t rev = 0;
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(rev, info.revision);
	CHECK_EQ(kv->ops->max_txn_ops(kv), 128);
	CHECK_EQ(kv->ops->max_request_bytes(kv), 1536 * 1024);
	struct kv dummy = {0};
	struct snapshot_info other;
	CHECK_EQ(snapshot_get_info(&dummy, &other), -EINVAL);
}

/* The set of keys equals keys.txt exactly; values are present. */
static void test_keys_match(void)
{
	size_t len;
	char *txt = slurp(keys_path, &len);
	char *want[4096];
	size_t n_want = 0;
	for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
		REQUIRE(n_want < 4096);
		want[n_want++] = line;
	}
	qsort(want, n_want, sizeof(*want), str_cmp);

	struct kv_range_req req = {
		.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, n_want);
	CHECK_EQ(res.count, (int64_t)n_want);
	CHECK_EQ(res.n_kvs, info.n_keys);
	CHECK(!res.more);
	CHECK_EQ(res.revision, info.revision);
	size_t nonempty = 0, k8s_proto = 0;
	for (size_t i = 0; i < res.n_kvs; i++) {
		const struct kv_kv *k = &res.kvs[i];
		CHECK_EQ(strlen(k->key), k->key_len); /* text keys, NUL-terminated */
		CHECK_EQ(strcmp(k->key, want[i]), 0);
		if (i)
			CHECK(strcmp(res.kvs[i - 1].key, k->key) < 0);
		REQUIRE(k->value != NULL);
		CHECK(k->value_len > 0);
		nonempty += k->value_len > 0;
		CHECK(k->create_revision > 0);
		CHECK(k->mod_revision >= k->create_revision);
		CHECK(k->mod_revision <= info.max_revision);
		CHECK(k->version > 0);
		if (strncmp(k->key, "/registry/", 10) == 0) {
			/* Kubernetes stores protobuf behind the magic "k8s\0". */
			CHECK(k->value_len > 4 && memcmp(k->value, "k8s\0", 4) == 0);
			k8s_proto++;
		}
	}
	fprintf(stderr, "  %zu keys match keys.txt, %zu non-empty values, %zu k8s protobuf\n",
		res.n_kvs, nonempty, k8s_proto);
	kv_range_result_free(&res);
	free(txt);
}

/* Two values are byte-identical to the exact copies in values/. */
static void test_values_exact(void)
{
	static const struct {
		const char *key, *file;
	} cases[] = {
		{"/registry/pods/default/pi-dqtsw", "registry-pods-default-pi-dqtsw.bin"},
		{"/registry/jobs/default/pi", "registry-jobs-default-pi.bin"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[4096];
		size_t len;
		snprintf(path, sizeof(path), "%s/%s", values_dir, cases[i].file);
		char *want = slurp(path, &len);
		struct kv_kv got;
		REQUIRE_EQ(kv_get(kv, cases[i].key, strlen(cases[i].key), &got), 0);
		/* The .bin copies end with the newline `etcdctl get --print-value-only`
		 * prints: the protobuf ends with fields 3 and 4 ("\x1a\0\x22\0"), and a
		 * lone 0x0a after them would be an invalid tag, so it is not data. */
		REQUIRE(len > 5 && want[len - 1] == '\n');
		CHECK(memcmp(want + len - 5, "\x1a\0\x22\0", 4) == 0);
		CHECK_MEM(got.value, got.value_len, want, len - 1);
		fprintf(stderr, "  %s: %zu bytes, identical to %s (minus its final newline)\n",
			cases[i].key, got.value_len, cases[i].file);
		kv_kv_free(&got);
		free(want);
	}
	struct kv_kv got;
	CHECK_EQ(kv_get(kv, "/registry/pods/default/nope", 27, &got), -ENOENT);
	CHECK_EQ(kv_get(kv, "/registry/pods/default/pi-dqts", 30, &got), -ENOENT);
}

static void test_range_options(void)
{
	char end[64];
	const char *prefix = "/registry/";
	size_t end_len = kv_prefix_end(prefix, strlen(prefix), end);
	struct kv_range_req req = {.key = prefix,
				   .key_len = strlen(prefix),
				   .range_end = end,
				   .range_end_len = end_len};
	struct kv_range_result res;

	req.count_only = true;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_EQ(res.n_kvs, 0);
	CHECK_EQ(res.count, (int64_t)info.n_keys - 1); /* all but compact_rev_key */
	kv_range_result_free(&res);

	req.count_only = false;
	req.keys_only = true;
	req.limit = 2;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 2);
	CHECK(res.more);
	CHECK_EQ(res.count, (int64_t)info.n_keys - 1);
	CHECK(res.kvs[0].value == NULL);
	CHECK_EQ(strcmp(res.kvs[0].key, "/registry/jobs/default/pi"), 0);
	CHECK_EQ(strcmp(res.kvs[1].key, "/registry/namespaces/default"), 0);
	kv_range_result_free(&res);

	/* Sort by mod revision, descending: the newest object first. */
	req.keys_only = false;
	req.limit = 0;
	req.sort_order = KV_SORT_DESCEND;
	req.sort_target = KV_SORT_MOD;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_EQ(res.n_kvs, info.n_keys - 1);
	for (size_t i = 1; i < res.n_kvs; i++)
		CHECK(res.kvs[i - 1].mod_revision >= res.kvs[i].mod_revision);
	kv_range_result_free(&res);

	/* Key descending. */
	req.sort_target = KV_SORT_KEY;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	for (size_t i = 1; i < res.n_kvs; i++)
		CHECK(strcmp(res.kvs[i - 1].key, res.kvs[i].key) > 0);
	kv_range_result_free(&res);

	struct kv_range_req bad = {.key = "", .key_len = 0};
	CHECK_EQ(kv_range(kv, &bad, &res), -EINVAL);
}

/* Revisions: below the compaction -ERANGE, above the store revision -ENOENT. */
static void test_revisions(void)
{
	struct kv_range_req req = {
		.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1};
	struct kv_range_result res;
	req.revision = info.revision;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_EQ(res.n_kvs, info.n_keys);
	kv_range_result_free(&res);
	req.revision = info.revision + 1;
	CHECK_EQ(kv_range(kv, &req, &res), -ENOENT);
	kv_range_result_free(&res);
	if (info.compact_revision > 1) {
		req.revision = info.compact_revision - 1;
		CHECK_EQ(kv_range(kv, &req, &res), -ERANGE);
		CHECK_EQ(res.compact_revision, info.compact_revision);
		kv_range_result_free(&res);
		req.revision = info.compact_revision;
		REQUIRE_EQ(kv_range(kv, &req, &res), 0);
		CHECK_EQ(res.n_kvs, info.n_keys);
		kv_range_result_free(&res);
	}
}

/* Writes are refused; reads-only txns work with compares. */
static void test_txn(void)
{
	struct kv_kv pod;
	const char *key = "/registry/pods/default/pi-dqtsw";
	REQUIRE_EQ(kv_get(kv, key, strlen(key), &pod), 0);
	int64_t rev;
	CHECK_EQ(kv_put(kv, "a", 1, "b", 1, &rev), -EROFS);
	int64_t deleted;
	CHECK_EQ(kv_delete_range(kv, key, strlen(key), NULL, 0, &deleted, &rev), -EROFS);
	CHECK_EQ(kv_compact(kv, 5, true), -EROFS);
	struct kv_watch *w = (struct kv_watch *)1;
	struct kv_watch_req wr = {.key = "a", .key_len = 1};
	CHECK_EQ(kv_watch(kv, &wr, NULL, NULL, &w), -ENOTSUP);
	CHECK(w == NULL);

	struct kv_compare cmp = {.target = KV_CMP_MOD,
				 .result = KV_CMP_EQUAL,
				 .key = key,
				 .key_len = strlen(key),
				 .number = pod.mod_revision};
	struct kv_op get = {.type = KV_OP_RANGE, .key = key, .key_len = strlen(key)};
	struct kv_op put = {.type = KV_OP_PUT,
			    .key = key,
			    .key_len = strlen(key),
			    .value = "x",
			    .value_len = 1};
	struct kv_txn txn = {.compare = &cmp, .n_compare = 1, .success = &get, .n_success = 1};
	struct kv_txn_result res;
	REQUIRE_EQ(kv_txn(kv, &txn, &res), 0);
	CHECK(res.succeeded);
	CHECK_EQ(res.revision, info.revision);
	REQUIRE_EQ(res.n_results, 1);
	REQUIRE_EQ(res.results[0].range.n_kvs, 1);
	CHECK_MEM(res.results[0].range.kvs[0].value, res.results[0].range.kvs[0].value_len,
		  pod.value, pod.value_len);
	kv_txn_result_free(&res);

	cmp.number = pod.mod_revision + 1; /* fails: the failure branch runs */
	txn.failure = &get;
	txn.n_failure = 1;
	txn.n_success = 0;
	REQUIRE_EQ(kv_txn(kv, &txn, &res), 0);
	CHECK(!res.succeeded);
	CHECK_EQ(res.n_results, 1);
	kv_txn_result_free(&res);

	cmp.target = KV_CMP_VALUE;
	cmp.value = pod.value;
	cmp.value_len = pod.value_len;
	REQUIRE_EQ(kv_txn(kv, &txn, &res), 0);
	CHECK(res.succeeded);
	kv_txn_result_free(&res);

	/* A write in the branch that would not run is refused all the same. */
	txn.success = &put;
	txn.n_success = 1;
	CHECK_EQ(kv_txn(kv, &txn, &res), -EROFS);
	kv_txn_result_free(&res);
	kv_kv_free(&pod);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s DB KEYS_TXT VALUES_DIR\n", argv[0]);
		return 2;
	}
	db_path = argv[1];
	keys_path = argv[2];
	values_dir = argv[3];
	for (int i = 1; i < argc; i++)
		if (skip_without(argv[i]))
			return 77;
	TEST_RUN(test_open);
	TEST_RUN(test_keys_match);
	TEST_RUN(test_values_exact);
	TEST_RUN(test_range_options);
	TEST_RUN(test_revisions);
	TEST_RUN(test_txn);
	kv_destroy(kv);
	return test_summary();
}
