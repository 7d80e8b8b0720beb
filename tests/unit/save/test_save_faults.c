/* Unit tests of src/save over the in-memory backend with fault injection
 * (tests/unit/lib/kvmem.h): every error branch of the commit model. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "save/save_int.h"
#include "test.h"

static bool value_is(const char *key, const char *want)
{
	struct kv_kv out;
	if (kv_get(kv, key, strlen(key), &out) < 0)
		return want == NULL;
	bool same = want && out.value_len == strlen(want) &&
		    memcmp(out.value, want, out.value_len) == 0;
	kv_kv_free(&out);
	return same;
}

static int64_t mod_of(const char *key)
{
	struct kv_kv out;
	if (kv_get(kv, key, strlen(key), &out) < 0)
		return 0;
	int64_t m = out.mod_revision;
	kv_kv_free(&out);
	return m;
}

static int put(const char *key, const char *v, int64_t base, bool absent)
{
	int64_t rev;
	return save_store(save, key, strlen(key), v, strlen(v), base, absent, &rev);
}

/* The next txn fails with err, nothing applied: the save says so and
 * writes nothing. */
static void test_txn_errors(void)
{
	static const int errs[] = {-ETIMEDOUT, -EIO, -ENOMEM};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		kvmem_fail(kv, KVMEM_TXN, 0, errs[i], false);
		CHECK_EQ(put("/e", "x", 0, true), errs[i]);
		CHECK(value_is("/e", NULL), "nothing written after %s", strerror(-errs[i]));
	}
	CHECK_EQ(put("/e", "x", 0, true), 0);
}

/* A lost reply: the txn was applied, the save reports the error; sending
 * it again is refused by its compare and kept as a conflict copy. */
static void test_lost_reply(void)
{
	kvmem_fail(kv, KVMEM_TXN, 0, -ETIMEDOUT, true);
	CHECK_EQ(put("/lost", "v1", 0, true), -ETIMEDOUT);
	CHECK(value_is("/lost", "v1"), "applied before the reply was lost");
	CHECK_EQ(put("/lost", "v1", 0, true), -ESTALE);
	int64_t m = mod_of("/lost");
	kvmem_fail(kv, KVMEM_TXN, 0, -EIO, true);
	CHECK_EQ(put("/lost", "v2", m, false), -EIO);
	CHECK(value_is("/lost", "v2"));
	CHECK_EQ(put("/lost", "v2", m, false), -ESTALE);
}

static void test_failed_compare(void)
{
	CHECK_EQ(put("/cmp", "a", 0, true), 0);
	int64_t m = mod_of("/cmp");
	kvmem_fail_compare(kv, 0);
	CHECK_EQ(put("/cmp", "b", m, false), -ESTALE);
	CHECK(value_is("/cmp", "a"));
	CHECK_EQ(put("/cmp", "b", m, false), 0);
	CHECK(value_is("/cmp", "b"));
}

static void test_delete_errors(void)
{
	CHECK_EQ(put("/del", "a", 0, true), 0);
	int64_t m = mod_of("/del");
	static const int errs[] = {-ETIMEDOUT, -EIO, -ENOMEM};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		kvmem_fail(kv, KVMEM_TXN, 0, errs[i], false);
		CHECK_EQ(save_delete(save, "/del", 4, m), errs[i]);
		CHECK(value_is("/del", "a"), "the key is unchanged");
	}
	kvmem_fail_compare(kv, 0);
	CHECK_EQ(save_delete(save, "/del", 4, m), -ESTALE);
	CHECK(value_is("/del", "a"));
	/* applied, reply lost: the key is gone, and deleting it again is stale */
	kvmem_fail(kv, KVMEM_TXN, 0, -ETIMEDOUT, true);
	CHECK_EQ(save_delete(save, "/del", 4, m), -ETIMEDOUT);
	CHECK(value_is("/del", NULL));
	CHECK_EQ(save_delete(save, "/del", 4, m), -ESTALE);
}

static void test_move_errors(void)
{
	CHECK_EQ(put("/src", "s", 0, true), 0);
	int64_t rev;
	/* reading the source fails */
	kvmem_fail(kv, KVMEM_RANGE, 0, -EIO, false);
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev), -EIO);
	kvmem_fail(kv, KVMEM_RANGE, 0, -ETIMEDOUT, false);
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev), -ETIMEDOUT);
	/* the txn fails */
	kvmem_fail(kv, KVMEM_TXN, 0, -ENOMEM, false);
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev), -ENOMEM);
	/* a compare fails */
	kvmem_fail_compare(kv, 0);
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev), -ESTALE);
	CHECK(value_is("/src", "s") && value_is("/dst", NULL), "nothing moved");
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev), 0);
	CHECK(value_is("/src", NULL) && value_is("/dst", "s"));
}

static int encode(void *arg, const char *key, size_t key_len, const char *orig, size_t orig_len,
		  int64_t orig_rev, const char *text, size_t text_len, char **out, size_t *out_len,
		  char **err)
{
	(void)arg, (void)key, (void)key_len, (void)orig, (void)orig_len, (void)orig_rev;
	(void)err;
	*out = malloc(text_len ? text_len : 1);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, text, text_len);
	*out_len = text_len;
	return 0;
}

/* Encoding an existing key reads the original first; that read failing
 * fails the save before anything is sent. */
static void test_encode_errors(void)
{
	struct save_config cfg = save->cfg;
	cfg.encode = encode;
	struct save *s;
	REQUIRE_EQ(save_new(&cfg, &s), 0);
	CHECK_EQ(put("/enc", "a", 0, true), 0);
	int64_t m = mod_of("/enc"), rev;
	unsigned long txns = kvmem_calls(kv, KVMEM_TXN);
	kvmem_fail(kv, KVMEM_RANGE, 0, -EIO, false);
	CHECK_EQ(save_store_text(s, "/enc", 4, "b", 1, m, false, &rev), -EIO);
	kvmem_fail(kv, KVMEM_RANGE, 0, -ETIMEDOUT, false);
	CHECK_EQ(save_store_text(s, "/enc", 4, "b", 1, m, false, &rev), -ETIMEDOUT);
	CHECK_EQ(kvmem_calls(kv, KVMEM_TXN), txns);
	CHECK(value_is("/enc", "a"));
	CHECK_EQ(save_store_text(s, "/enc", 4, "b", 1, m, false, &rev), 0);
	CHECK(value_is("/enc", "b"));
	save_destroy(s);
}

/* A deferred delete that fails leaves the key and shows it again; one
 * applied whose reply was lost leaves it gone. */
static void test_deferred_error(void)
{
	CHECK_EQ(put("/dd", "a", 0, true), 0);
	cache_wrlock(cache);
	struct cache_node *n = cache_child(cache, cache->root, 0, "dd", 2);
	REQUIRE(n);
	CHECK_EQ(save_unlink_locked(save, n), 0);
	CHECK(cache_child(cache, cache->root, 0, "dd", 2) == NULL);
	cache_unlock(cache);
	kvmem_fail(kv, KVMEM_TXN, 0, -EIO, false);
	save_flush_deferred(save, true);
	CHECK(value_is("/dd", "a"));
	cache_rdlock(cache);
	n = cache_child(cache, cache->root, 0, "dd", 2);
	CHECK(n && n->has_value, "shown again");
	cache_unlock(cache);

	cache_wrlock(cache);
	n = cache_child(cache, cache->root, 0, "dd", 2);
	REQUIRE(n);
	CHECK_EQ(save_unlink_locked(save, n), 0);
	cache_unlock(cache);
	kvmem_fail(kv, KVMEM_TXN, 0, -ETIMEDOUT, true);
	save_flush_deferred(save, true);
	CHECK(value_is("/dd", NULL));
	cache_rdlock(cache);
	CHECK(cache_child(cache, cache->root, 0, "dd", 2) == NULL, "applied: stays gone");
	cache_unlock(cache);
}

int main(void)
{
	fixture_setup(false, "save-faults");

	TEST_RUN(test_txn_errors);
	TEST_RUN(test_lost_reply);
	TEST_RUN(test_failed_compare);
	TEST_RUN(test_delete_errors);
	TEST_RUN(test_move_errors);
	TEST_RUN(test_encode_errors);
	TEST_RUN(test_deferred_error);

	return fixture_teardown();
}
