/* test_history.c: src/history over kvmem: the walk back, its cost in
 * requests, the cap, a delete and re-create, compaction (with and without
 * the backend naming the compaction point), rendering, reference counts. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "history/history.h"
#include "kvmem.h"
#include "test.h"

#define KEY "/app/k"

static struct kv *mem;

/* A backend like etcd's gRPC: -ERANGE without the compaction point. */
struct quiet {
	struct kv kv;
	struct kv_ops ops;
};

static int quiet_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
	(void)kv;
	int ret = kv_range(mem, req, res);
	res->compact_revision = 0;
	return ret;
}

static int64_t put(const char *val)
{
	int64_t rev;
	REQUIRE(kvmem_external_put(mem, KEY, strlen(KEY), val, strlen(val), &rev) == 0);
	return rev;
}

static struct history_head head_now(uint64_t id)
{
	struct kv_kv kv;
	REQUIRE(kv_get(kvmem_other(mem), KEY, strlen(KEY), &kv) == 0);
	struct history_head h = {.id = id,
				 .key = KEY,
				 .key_len = strlen(KEY),
				 .mod_revision = kv.mod_revision,
				 .create_revision = kv.create_revision};
	kv_kv_free(&kv);
	return h;
}

static int render_upper(void *arg, const char *key, size_t key_len, const char *val, size_t val_len,
			int64_t rev, char **out, size_t *out_len)
{
	(void)arg, (void)key, (void)key_len, (void)rev;
	if (val_len && val[0] == '!')
		return -EIO; /* "cannot be shown" */
	*out = malloc(val_len + 1);
	for (size_t i = 0; i < val_len; i++)
		(*out)[i] = (char)(val[i] >= 'a' && val[i] <= 'z' ? val[i] - 32 : val[i]);
	*out_len = val_len;
	return 0;
}

static struct history *new_history(struct kv *kv, size_t max, long check_ms)
{
	struct history_config cfg = {
		.kv = kv, .render = render_upper, .max_versions = max, .check_ms = check_ms};
	struct history *h;
	REQUIRE(history_new(&cfg, &h) == 0);
	return h;
}

static void setup(void)
{
	if (mem)
		kv_destroy(mem);
	mem = kvmem_new();
	REQUIRE(mem);
}

static size_t count(struct history *h, uint64_t id, int64_t *newest)
{
	struct history_ver_info *v;
	size_t n;
	if (history_list(h, id, &v, &n) < 0)
		return 0;
	if (newest)
		*newest = n ? v[0].mod_revision : 0;
	free(v);
	return n;
}

static void test_walk_costs_one_request_per_version(void)
{
	setup();
	int64_t revs[5];
	char val[16];
	for (int i = 0; i < 5; i++) {
		snprintf(val, sizeof(val), "v%d", i);
		revs[i] = put(val);
	}
	struct history *h = new_history(mem, 0, 0);
	unsigned long before = kvmem_calls(mem, KVMEM_RANGE);
	struct history_head hd = head_now(7);
	CHECK(history_refresh(h, &hd, true) == 0);
	CHECK_EQ(kvmem_calls(mem, KVMEM_RANGE) - before, 5);
	struct history_ver_info *v;
	size_t n;
	REQUIRE(history_list(h, 7, &v, &n) == 0);
	REQUIRE_EQ(n, 5);
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(v[i].mod_revision, revs[4 - i]);
		CHECK_EQ(v[i].version, 5 - (int64_t)i);
		char buf[16];
		ssize_t l = history_read(h, v[i].ino, buf, sizeof(buf), 0);
		snprintf(val, sizeof(val), "V%d", (int)(4 - i));
		CHECK_MEM(buf, l > 0 ? (size_t)l : 0, val, strlen(val));
		CHECK(history_is_ino(v[i].ino));
	}
	free(v);
	/* nothing changed: no request */
	before = kvmem_calls(mem, KVMEM_RANGE);
	CHECK(history_refresh(h, &hd, false) == 0);
	CHECK_EQ(kvmem_calls(mem, KVMEM_RANGE) - before, 0);
	/* two newer versions: two requests */
	put("v5");
	int64_t r6 = put("v6");
	hd = head_now(7);
	before = kvmem_calls(mem, KVMEM_RANGE);
	CHECK(history_refresh(h, &hd, false) == 0);
	CHECK_EQ(kvmem_calls(mem, KVMEM_RANGE) - before, 2);
	int64_t newest = 0;
	CHECK_EQ(count(h, 7, &newest), 7);
	CHECK_EQ(newest, r6);
	history_dir_unref(h, 7, 1);
	struct history_stats st;
	history_get_stats(h, &st);
	CHECK_EQ(st.histories, 0);
	CHECK_EQ(st.versions, 0);
	history_destroy(h);
}

static void test_cap_keeps_the_newest(void)
{
	setup();
	for (int i = 0; i < 6; i++)
		put("x");
	struct history *h = new_history(mem, 4, 0);
	struct history_head hd = head_now(1);
	unsigned long before = kvmem_calls(mem, KVMEM_RANGE);
	CHECK(history_refresh(h, &hd, true) == 0);
	CHECK_EQ(kvmem_calls(mem, KVMEM_RANGE) - before, 4);
	CHECK_EQ(count(h, 1, NULL), 4);
	/* one more: still 4, the oldest leaves (and its held inode says ENOENT) */
	struct history_ver_info *v;
	size_t n;
	REQUIRE(history_list(h, 1, &v, &n) == 0 && n == 4);
	struct history_ver_info oldest = v[3];
	free(v);
	struct history_ver_info got;
	CHECK(history_lookup(h, 1, oldest.mod_revision, true, &got) == 0);
	put("y");
	hd = head_now(1);
	CHECK(history_refresh(h, &hd, false) == 0);
	CHECK_EQ(count(h, 1, NULL), 4);
	CHECK(history_stat(h, oldest.ino, &got) == -ENOENT);
	CHECK(history_lookup(h, 1, oldest.mod_revision, false, &got) == -ENOENT);
	history_ver_unref(h, oldest.ino, 1);
	history_destroy(h);
}

static void test_recreated_key_starts_a_new_history(void)
{
	setup();
	put("old1");
	put("old2");
	struct history *h = new_history(mem, 0, 0);
	struct history_head hd = head_now(3);
	CHECK(history_refresh(h, &hd, true) == 0);
	struct history_ver_info *v;
	size_t n;
	REQUIRE(history_list(h, 3, &v, &n) == 0 && n == 2);
	uint64_t old_ino = v[0].ino;
	history_ver_ref(h, old_ino);
	free(v);
	REQUIRE(kvmem_external_delete(mem, KEY, strlen(KEY), NULL) == 0);
	put("new1");
	int64_t r = put("new2");
	hd = head_now(3);
	CHECK(history_refresh(h, &hd, false) == 0);
	int64_t newest = 0;
	CHECK_EQ(count(h, 3, &newest), 2);
	CHECK_EQ(newest, r);
	CHECK(history_stat(h, old_ino, &(struct history_ver_info){0}) == -ENOENT);
	char buf[8];
	CHECK(history_read(h, old_ino, buf, sizeof(buf), 0) == -ENOENT);
	history_ver_unref(h, old_ino, 1);
	history_dir_unref(h, 3, 1);
	history_destroy(h);
}

static void compaction(bool quiet)
{
	setup();
	struct quiet q = {.ops = {.name = "quiet", .range = quiet_range}};
	q.kv.ops = &q.ops;
	struct kv *backend = quiet ? &q.kv : mem;
	int64_t revs[6];
	for (int i = 0; i < 6; i++)
		revs[i] = put("v");
	struct history *h = new_history(backend, 0, 1);
	struct history_head hd = head_now(9);
	CHECK(history_refresh(h, &hd, true) == 0);
	CHECK_EQ(count(h, 9, NULL), 6);
	struct history_ver_info v0, v3;
	REQUIRE(history_lookup(h, 9, revs[0], true, &v0) == 0);
	REQUIRE(history_lookup(h, 9, revs[3], true, &v3) == 0);
	/* revs[2] was current until revs[3]-1 >= the compaction point: kept */
	REQUIRE(kv_compact(kvmem_other(mem), revs[3] - 1, true) == 0);
	usleep(3000); /* past check_ms */
	CHECK(history_check(h, v0.ino) == -ENOENT);
	CHECK(history_check(h, v3.ino) == 0);
	struct history_ver_info *v;
	size_t n;
	REQUIRE(history_list(h, 9, &v, &n) == 0);
	CHECK_EQ(n, 4);
	CHECK_EQ(v[n - 1].mod_revision, revs[2]);
	free(v);
	struct history_stats st;
	history_get_stats(h, &st);
	CHECK_EQ(st.compacted, 2);
	history_ver_unref(h, v0.ino, 1);
	history_ver_unref(h, v3.ino, 1);
	history_dir_unref(h, 9, 1);
	history_get_stats(h, &st);
	CHECK_EQ(st.histories, 0);
	history_destroy(h);
}

static void test_compaction_with_its_revision(void)
{
	compaction(false);
}

static void test_compaction_without_its_revision(void)
{
	compaction(true);
}

/* The key changed and was compacted since its history was fetched: the
 * walk of the newer versions meets the compaction point before the
 * versions held, which are then older than it and leave too. */
static void test_compaction_between_walks(void)
{
	setup();
	for (int i = 0; i < 3; i++)
		put("old");
	struct history *h = new_history(mem, 0, 60000);
	struct history_head hd = head_now(5);
	CHECK(history_refresh(h, &hd, true) == 0);
	CHECK_EQ(count(h, 5, NULL), 3);
	put("new4");
	int64_t r5 = put("new5");
	int64_t r6 = put("new6");
	REQUIRE(kv_compact(kvmem_other(mem), r5, true) == 0);
	hd = head_now(5);
	CHECK(history_refresh(h, &hd, false) == 0);
	struct history_ver_info *v;
	size_t n;
	REQUIRE(history_list(h, 5, &v, &n) == 0);
	CHECK_EQ(n, 2);
	CHECK_EQ(n > 0 ? v[0].mod_revision : 0, r6);
	CHECK_EQ(n > 1 ? v[1].mod_revision : 0, r5);
	free(v);
	history_destroy(h);
}

static void test_unshowable_version_reads_eio(void)
{
	setup();
	put("!secret");
	put("fine");
	struct history *h = new_history(mem, 0, 0);
	struct history_head hd = head_now(2);
	CHECK(history_refresh(h, &hd, true) == 0);
	struct history_ver_info *v;
	size_t n;
	REQUIRE(history_list(h, 2, &v, &n) == 0 && n == 2);
	char buf[16];
	CHECK_EQ(history_read(h, v[0].ino, buf, sizeof(buf), 0), 4);
	CHECK_EQ(history_read(h, v[1].ino, buf, sizeof(buf), 0), -EIO);
	CHECK_EQ(history_read(h, v[0].ino, buf, sizeof(buf), 2), 2);
	CHECK_EQ(history_read(h, v[0].ino, buf, sizeof(buf), 9), 0);
	free(v);
	history_destroy(h); /* with references held: frees all */
}

static void test_backend_error_is_returned(void)
{
	setup();
	put("a");
	put("b");
	struct history *h = new_history(mem, 0, 0);
	struct history_head hd = head_now(4);
	kvmem_fail(mem, KVMEM_RANGE, 1, -ETIMEDOUT, false);
	CHECK_EQ(history_refresh(h, &hd, true), -ETIMEDOUT);
	struct history_stats st;
	history_get_stats(h, &st);
	CHECK_EQ(st.histories, 0);
	CHECK(history_refresh(h, &hd, true) == 0);
	CHECK_EQ(count(h, 4, NULL), 2);
	history_destroy(h);
}

int main(void)
{
	TEST_RUN(test_walk_costs_one_request_per_version);
	TEST_RUN(test_cap_keeps_the_newest);
	TEST_RUN(test_recreated_key_starts_a_new_history);
	TEST_RUN(test_compaction_with_its_revision);
	TEST_RUN(test_compaction_without_its_revision);
	TEST_RUN(test_compaction_between_walks);
	TEST_RUN(test_unshowable_version_reads_eio);
	TEST_RUN(test_backend_error_is_returned);
	if (mem)
		kv_destroy(mem);
	return test_summary();
}
