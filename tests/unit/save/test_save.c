/* Unit tests of src/save over the in-memory backend: the save txns, their
 * compares and limits, conflict copies, the encoder hook, deferred deletes
 * and the side table of write-path state. */
#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "save/save_int.h"
#include "kvtest.h"
#include "test.h"

/* The value under key (malloc'd), or NULL when absent. */
static char *get(const char *key, int64_t *mod)
{
	struct kv_kv out;
	if (kv_get(kv, key, strlen(key), &out) < 0)
		return NULL;
	if (mod)
		*mod = out.mod_revision;
	char *v = strdup(out.value ? out.value : "");
	kv_kv_free(&out);
	return v;
}

static bool exists(const char *key)
{
	char *v = get(key, NULL);
	free(v);
	return v != NULL;
}

static int count_conflicts(void)
{
	DIR *d = opendir(conflicts);
	if (!d)
		return 0;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		size_t l = strlen(e->d_name);
		n += e->d_name[0] != '.' && !(l > 4 && strcmp(e->d_name + l - 4, ".why") == 0);
	}
	closedir(d);
	return n;
}

/* The newest copy of a key (names start with prefix, the key's flat name
 * and a dot), or its .why, read whole (malloc'd), or NULL. */
static char *newest_kept(const char *prefix, bool why)
{
	DIR *d = opendir(conflicts);
	if (!d)
		return NULL;
	char best[512] = "";
	for (struct dirent *e; (e = readdir(d));) {
		size_t l = strlen(e->d_name);
		bool is_why = l > 4 && strcmp(e->d_name + l - 4, ".why") == 0;
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || is_why != why)
			continue;
		/* then seconds.nanoseconds: the greatest name is the newest */
		if (strcmp(e->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
	closedir(d);
	if (!*best)
		return NULL;
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", conflicts, best);
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *buf = calloc(1, 4096);
	if (buf)
		fread(buf, 1, 4095, f);
	fclose(f);
	return buf;
}

static struct cache_node *node(const char *seg)
{
	return cache_child(cache, cache->root, 0, seg, strlen(seg));
}

static int64_t store(const char *key, const char *v, int64_t base, bool absent, int *ret)
{
	int64_t rev = 0;
	*ret = save_store(save, key, strlen(key), v, strlen(v), base, absent, &rev);
	return rev;
}

/* Stores a key that must be new; aborts when that fails. Its revision. */
static int64_t store_new(const char *key, const char *v)
{
	int ret;
	int64_t rev = store(key, v, 0, true, &ret);
	REQUIRE(ret == 0, "%s: %d", key, ret);
	return rev;
}

static void test_put_and_compare(void)
{
	int ret;
	int64_t r1 = store("/a", "one", 0, true, &ret);
	CHECK_EQ(ret, 0);
	CHECK(r1 > 0);
	char *v = get("/a", NULL);
	CHECK(v && strcmp(v, "one") == 0);
	free(v);
	/* read-your-writes: the cache has it before the watch */
	cache_rdlock(cache);
	struct cache_node *n = node("a");
	CHECK(n && n->has_value && n->mod_revision == r1);
	cache_unlock(cache);

	int before = count_conflicts();
	store("/a", "again", 0, true, &ret);
	CHECK_EQ(ret, -ESTALE); /* created by someone else meanwhile */
	CHECK_EQ(count_conflicts(), before + 1);

	int64_t r2 = store("/a", "two", r1, false, &ret);
	CHECK_EQ(ret, 0);
	CHECK(r2 > r1);
	store("/a", "stale", r1, false, &ret);
	CHECK_EQ(ret, -ESTALE); /* changed since it was opened */
	CHECK_EQ(count_conflicts(), before + 2);
	v = get("/a", NULL);
	CHECK(v && strcmp(v, "two") == 0, "a rejected save writes nothing");
	free(v);
}

/* Why a save was refused: kept per key and for the mount, cleared by the
 * key's next successful save; the kept copy says why too. */
static void test_why(void)
{
	int ret;
	char *msg = NULL;
	CHECK_EQ(save_why_get(save, "/w", 2, &msg), -ENODATA);
	int64_t r1 = store_new("/w", "one");
	store("/w", "two", 0, true, &ret);
	CHECK_EQ(ret, -ESTALE);
	REQUIRE_EQ(save_why_get(save, "/w", 2, &msg), 0);
	CHECK(strstr(msg, "conflict: /w was created by someone else") &&
		      strstr(msg, "your version is in /"),
	      "%s", msg);
	free(msg);
	REQUIRE_EQ(save_why_last(save, &msg), 0);
	CHECK(strstr(msg, "conflict: /w") != NULL, "%s", msg);
	free(msg);
	/* a raw value is kept as it was, the reason beside it */
	char *copy = newest_kept("_w.", false);
	CHECK(copy && strcmp(copy, "two") == 0, "raw copy: %s", copy ? copy : "(none)");
	free(copy);
	char *why = newest_kept("_w.", true);
	CHECK(why && strstr(why, "created by someone else"), "%s", why ? why : "(none)");
	free(why);
	/* other keys keep their own */
	CHECK_EQ(save_why_get(save, "/other", 6, &msg), -ENODATA);
	store("/w", "three", r1, false, &ret);
	CHECK_EQ(ret, 0);
	CHECK_EQ(save_why_get(save, "/w", 2, &msg), -ENODATA);
}

/* The conflict dir is bounded: the oldest copies beyond SAVE_KEPT_MAX,
 * and those older than SAVE_KEPT_DAYS, go; other files stay. */
static void test_kept_bound(void)
{
	char p[1024];
	for (int i = 0; i < SAVE_KEPT_MAX + 20; i++) {
		snprintf(p, sizeof(p), "%s/_old.%d.%09d", conflicts, 1000 + i, i);
		FILE *f = fopen(p, "w");
		REQUIRE(f, "%s", p);
		fclose(f);
		/* i = 0 is a month old; the rest an hour old, oldest first */
		struct timespec ts[2] = {{.tv_sec = time(NULL) - (i ? 3600 - i : 30 * 86400)}};
		ts[1] = ts[0];
		utimensat(AT_FDCWD, p, ts, 0);
	}
	snprintf(p, sizeof(p), "%s/notes.txt", conflicts);
	FILE *f = fopen(p, "w");
	REQUIRE(f, "notes");
	fclose(f);
	int ret;
	int64_t r = store_new("/kb", "x");
	store("/kb", "y", r - 1, false, &ret); /* a conflict: one more copy */
	CHECK_EQ(ret, -ESTALE);
	CHECK(count_conflicts() <= SAVE_KEPT_MAX + 1, "%d copies", count_conflicts());
	CHECK(access(p, F_OK) == 0, "a file etcdfs did not write stays");
	snprintf(p, sizeof(p), "%s/_old.%d.%09d", conflicts, 1000, 0);
	CHECK(access(p, F_OK) != 0, "a month-old copy goes");
	snprintf(p, sizeof(p), "%s/_old.%d.%09d", conflicts, 1000 + SAVE_KEPT_MAX + 19,
		 SAVE_KEPT_MAX + 19);
	CHECK(access(p, F_OK) == 0, "the newest old copy stays");
	char *copy = newest_kept("_kb.", false);
	CHECK(copy != NULL, "the new copy is there");
	free(copy);
}

static void test_txn_limits(void)
{
	int ret;
	int64_t base = store_new("/lim", "x");
	struct kv_compare cmp[SAVE_MAX_COMPARES];
	for (size_t i = 0; i < SAVE_MAX_COMPARES; i++)
		cmp[i] = (struct kv_compare){.target = KV_CMP_MOD,
					     .result = KV_CMP_EQUAL,
					     .key = "/lim",
					     .key_len = 4,
					     .number = base};
	int64_t rev;
	/* one over: the key's own compare plus eight */
	ret = save_put_txn(save, "/lim", 4, "y", 1, base, false, NULL, 0, cmp, SAVE_MAX_COMPARES,
			   &rev);
	CHECK_EQ(ret, -E2BIG);
	char *v = get("/lim", NULL);
	CHECK(v && strcmp(v, "x") == 0, "nothing sent");
	free(v);
	/* exactly at the limit: every compare is sent and holds */
	ret = save_put_txn(save, "/lim", 4, "y", 1, base, false, NULL, 0, cmp,
			   SAVE_MAX_COMPARES - 1, &rev);
	CHECK_EQ(ret, 0);
	/* a dropped compare would let this one through: the last one fails */
	int64_t cur = rev;
	cmp[SAVE_MAX_COMPARES - 2].number = base; /* stale now */
	for (size_t i = 0; i + 2 < SAVE_MAX_COMPARES; i++)
		cmp[i].number = cur;
	ret = save_put_txn(save, "/lim", 4, "z", 1, cur, false, NULL, 0, cmp, SAVE_MAX_COMPARES - 1,
			   &rev);
	CHECK_EQ(ret, -ESTALE);
	struct kv_op ops[SAVE_MAX_EXTRA_OPS + 1];
	for (size_t i = 0; i <= SAVE_MAX_EXTRA_OPS; i++)
		ops[i] = (struct kv_op){.type = KV_OP_RANGE, .key = "/lim", .key_len = 4};
	ret = save_put_txn(save, "/lim", 4, "w", 1, cur, false, ops, SAVE_MAX_EXTRA_OPS + 1, NULL,
			   0, &rev);
	CHECK_EQ(ret, -E2BIG);
	ret = save_put_txn(save, "/lim", 4, "w", 1, cur, false, ops, SAVE_MAX_EXTRA_OPS, NULL, 0,
			   &rev);
	CHECK_EQ(ret, 0);
}

static void test_too_big(void)
{
	size_t len = 2u << 20;
	char *big = malloc(len);
	REQUIRE(big);
	memset(big, 'b', len);
	int64_t rev;
	int ret = save_store(save, "/big", 4, big, len, 0, true, &rev);
	CHECK_EQ(ret, -EFBIG);
	CHECK(!exists("/big"));
	free(big);
}

static void test_delete_and_move(void)
{
	int ret;
	int64_t r = store_new("/d", "gone soon");
	CHECK_EQ(save_delete(save, "/d", 2, r - 1), -ESTALE);
	char *v = get("/d", NULL);
	CHECK(v != NULL, "a stale delete deletes nothing");
	free(v);
	CHECK_EQ(save_delete(save, "/d", 2, r), 0);
	CHECK(!exists("/d"));

	store_new("/src", "moving");
	int64_t rev;
	ret = save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev);
	CHECK_EQ(ret, 0);
	CHECK(!exists("/src"));
	v = get("/dst", NULL);
	CHECK(v && strcmp(v, "moving") == 0);
	free(v);
	/* the source is gone: nothing to move */
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst2", 5, 0, true, &rev), -ENOENT);
	/* the destination exists: absent is a conflict, nothing deleted */
	store("/src", "again", 0, true, &ret);
	CHECK_EQ(save_move_key(save, "/src", 4, "/dst", 4, 0, true, &rev), -ESTALE);
	v = get("/src", NULL);
	CHECK(v && strcmp(v, "again") == 0);
	free(v);

	CHECK_EQ(save_reject_edit(save, "/x", 2, "kept", 4, 9), -ESTALE);
}

/* Upper-cases text; refuses "bad"; leaves "plain" to be stored as is. */
static int enc_calls;
static int encode(void *arg, const char *key, size_t key_len, const char *orig, size_t orig_len,
		  int64_t orig_rev, const char *text, size_t text_len, char **out, size_t *out_len,
		  char **err)
{
	(void)arg, (void)key, (void)key_len, (void)orig, (void)orig_len, (void)orig_rev;
	enc_calls++;
	if (text_len == 3 && memcmp(text, "bad", 3) == 0) {
		*err = strdup("refused by the test encoder");
		return -EINVAL;
	}
	if (text_len == 5 && memcmp(text, "plain", 5) == 0)
		return -ENOTSUP;
	*out = malloc(text_len + 1);
	for (size_t i = 0; i < text_len; i++)
		(*out)[i] = (char)(text[i] >= 'a' && text[i] <= 'z' ? text[i] - 32 : text[i]);
	*out_len = text_len;
	return 0;
}

static bool applies(void *arg, const char *key, size_t key_len)
{
	(void)arg;
	return !(key_len >= 4 && memcmp(key, "/raw", 4) == 0);
}

/* A second save module over the fixture's, with the test encoder. */
static struct save *encoding_save(void)
{
	struct save_config cfg = save->cfg;
	cfg.encode = encode;
	cfg.encode_applies = applies;
	struct save *s = NULL;
	REQUIRE_EQ(save_new(&cfg, &s), 0);
	return s;
}

static void test_encode(void)
{
	struct save *s = encoding_save();
	int64_t rev;
	CHECK_EQ(save_store_text(s, "/enc", 4, "hello", 5, 0, true, &rev), 0);
	char *v = get("/enc", NULL);
	CHECK(v && strcmp(v, "HELLO") == 0);
	free(v);
	int64_t mod = 0;
	free(get("/enc", &mod));
	CHECK_EQ(save_store_text(s, "/enc", 4, "bad", 3, mod, false, &rev), -EINVAL);
	CHECK_EQ(save_store_text(s, "/enc", 4, "plain", 5, mod, false, &rev), 0);
	v = get("/enc", NULL);
	CHECK(v && strcmp(v, "plain") == 0);
	free(v);
	/* changed meanwhile: the encoder is skipped, the compare refuses */
	int calls = enc_calls;
	CHECK_EQ(save_store_text(s, "/enc", 4, "late", 4, mod, false, &rev), -ESTALE);
	CHECK_EQ(enc_calls, calls);
	calls = enc_calls;
	CHECK_EQ(save_store_text(s, "/raw", 4, "as is", 5, 0, true, &rev), 0);
	CHECK_EQ(enc_calls, calls);
	v = get("/raw", NULL);
	CHECK(v && strcmp(v, "as is") == 0);
	free(v);
	save_destroy(s);
}

/* A refused edit of an encoded (YAML/JSON) value is kept with a comment
 * block first, saying why. */
static void test_why_text(void)
{
	struct save *s = encoding_save();
	int64_t rev;
	CHECK_EQ(save_store_text(s, "/txt", 4, "hello", 5, 0, true, &rev), 0);
	CHECK_EQ(save_store_text(s, "/txt", 4, "bad", 3, rev, false, &rev), -EINVAL);
	char *copy = newest_kept("_txt.", false);
	CHECK(copy && strncmp(copy, "# etcdfs did not save this to /txt:\n"
				   "# refused by the test encoder\n", 59) == 0,
	      "%s", copy ? copy : "(none)");
	CHECK(copy && strstr(copy, "#\nbad") != NULL, "the content follows the comments");
	/* an error's line number counts the user's lines, not the copy's */
	CHECK(copy && strstr(copy, "line numbers above count from the first line after them"),
	      "%s", copy ? copy : "(none)");
	free(copy);
	char *msg;
	REQUIRE_EQ(save_why_get(s, "/txt", 4, &msg), 0);
	CHECK(strstr(msg, "refused by the test encoder") && strstr(msg, "your version is in"),
	      "%s", msg);
	free(msg);
	save_destroy(s);
}

static void test_shadow_names(void)
{
	CHECK(save_is_shadow_name(save, ".x.swp"));
	CHECK(save_is_shadow_name(save, "x~"));
	CHECK(save_is_shadow_name(save, "4913"));
	CHECK(save_is_shadow_name(save, "sedAbC123"));
	CHECK(!save_is_shadow_name(save, "x"));
	CHECK(!save_is_shadow_name(save, "config.yaml"));
	struct save_config cfg = save->cfg;
	cfg.shadow_patterns = "*.tmp::x";
	struct save *s;
	REQUIRE_EQ(save_new(&cfg, &s), 0);
	CHECK(save_is_shadow_name(s, "a.tmp"));
	CHECK(save_is_shadow_name(s, "x"));
	CHECK(!save_is_shadow_name(s, "x~"));
	save_destroy(s);
}

static void test_side_table(void)
{
	cache_wrlock(cache);
	struct cache_node *n;
	REQUIRE_EQ(save_mkfile_locked(cache, cache->root, 0, "local", 5, &n), 0);
	CHECK(save_local(n)->local_file);
	CHECK_EQ(save_mkfile_locked(cache, cache->root, 0, "local", 5, &n), -EEXIST);
	uint64_t id = n->id;
	struct cache_local *l = save_local_mut(n);
	REQUIRE(l);
	l->local_data = strdup("data");
	l->local_len = 4;
	cache_prune_locked(cache, n);
	CHECK(cache_node_by_id(cache, id) == n, "a local file is kept");
	save_clear_local(n);
	CHECK(!save_local(n)->local_file && !save_local(n)->local_data);
	cache_prune_locked(cache, n);
	CHECK(cache_node_by_id(cache, id) == NULL, "pruned once nothing keeps it");
	cache_unlock(cache);

	/* a key never written has no slot and reads the defaults */
	int ret;
	store("/plain", "p", 0, true, &ret);
	cache_rdlock(cache);
	n = node("plain");
	REQUIRE(n);
	CHECK(cache_node_local(n) == NULL);
	CHECK(!save_local(n)->hidden && !save_local(n)->file && !save_local(n)->mode_set);
	cache_unlock(cache);
}

/* unlink(n) through save_unlink_locked; the lock is taken here. */
static int unlink_node(const char *seg)
{
	cache_wrlock(cache);
	struct cache_node *n = node(seg);
	int ret = n ? save_unlink_locked(save, n) : -ENOENT;
	cache_unlock(cache);
	return ret;
}

/* Which process's content the page cache may hold (docs/writes.md,
 * "Commit model"): a writer alone with the file; not a second process,
 * whose size never shows; and the kernel must forget it when its last
 * handle closes after a refused save. */
static void test_page_cache_owner(void)
{
	int ret;
	int64_t r = store_new("/pc", "abc");
	cache_wrlock(cache);
	struct cache_node *n = node("pc");
	REQUIRE(n);
	cache_ref_open(cache, n);
	cache_unlock(cache);
	struct save_fh *a, *b, *a2;
	REQUIRE_EQ(save_file_open(save, n, false, 100, &a), 0);
	cache_wrlock(cache);
	CHECK(save_file_cache_locked(n, a), "alone: through the page cache");
	CHECK_EQ(save_file_cached_pid_locked(n), 100);
	cache_ref_open(cache, n);
	cache_unlock(cache);
	REQUIRE_EQ(save_file_open(save, n, false, 200, &b), 0);
	size_t end, size = 0;
	REQUIRE_EQ(save_file_write(b, "0123456789", 10, 0, false, &end), 0);
	cache_wrlock(cache);
	CHECK(!save_file_cache_locked(n, b), "another process: direct I/O");
	CHECK(save_file_cached_by_locked(n, 100) && !save_file_cached_by_locked(n, 200));
	CHECK(save_file_writes_locked(n, 200) && !save_file_writes_locked(n, 300));
	CHECK(save_file_size(n, &size));
	CHECK(size == 3, "the size shown is the page cache's content's");
	cache_ref_open(cache, n);
	cache_unlock(cache);
	REQUIRE_EQ(save_file_open(save, n, false, 100, &a2), 0);
	cache_wrlock(cache);
	CHECK(save_file_cache_locked(n, a2), "the same process joins");
	cache_unlock(cache);

	REQUIRE_EQ(save_file_write(a, "X", 1, 0, false, &end), 0);
	bool stale = true;
	CHECK_EQ(save_file_close_view(save, n, a2, &stale), 0);
	CHECK(!stale, "not the last handle");
	/* someone else saves first: a's save is refused */
	store("/pc", "zzz", r, false, &ret);
	REQUIRE_EQ(ret, 0);
	bool wrote;
	CHECK_EQ(save_file_flush(save, n, a, false, &wrote), -ESTALE);
	CHECK_EQ(save_file_close_view(save, n, a, &stale), 0);
	CHECK(stale, "the page cache held content etcd does not");
	/* b's own save at its last close is refused too: no lost update */
	CHECK_EQ(save_file_close_view(save, n, b, &stale), -ESTALE);
	CHECK(!stale, "its content was never the page cache's");
	cache_wrlock(cache);
	CHECK_EQ(save_file_cached_pid_locked(n), -1);
	cache_unref_open(cache, n);
	cache_unref_open(cache, n);
	cache_unref_open(cache, n);
	cache_unlock(cache);
	char *v = get("/pc", NULL);
	CHECK(v && strcmp(v, "zzz") == 0);
	free(v);
}

static void test_deferred(void)
{
	int ret;
	store_new("/del", "x");
	int64_t r2 = store_new("/keep", "y");
	CHECK_EQ(unlink_node("del"), 0);
	CHECK_EQ(unlink_node("keep"), 0);
	cache_wrlock(cache);
	/* the names are gone at once; the keys are still in etcd */
	CHECK(node("del") == NULL && node("keep") == NULL);
	int64_t taken = 0;
	CHECK(save_take_deferred_locked(save, "/keep", 5, &taken), "re-created: taken");
	CHECK_EQ(taken, r2);
	CHECK(!save_take_deferred_locked(save, "/keep", 5, &taken), "taken once");
	cache_unlock(cache);
	CHECK(exists("/del"));
	/* the thread runs the rest after the grace period (started only now,
	 * so that the checks above do not race it) */
	REQUIRE_EQ(save_start(save), 0);
	for (int i = 0; i < 200 && exists("/del"); i++)
		usleep(10000);
	CHECK(!exists("/del"));
	char *v = get("/keep", NULL);
	CHECK(v != NULL, "a taken delete is not run");
	free(v);

	/* a stale deferred delete deletes nothing and the key shows again */
	int64_t r3 = store("/keep", "z", r2, false, &ret);
	REQUIRE_EQ(ret, 0);
	cache_wrlock(cache);
	CHECK_EQ(save_defer_delete_locked(save, "/keep", 5, r3 - 1), 0);
	cache_unlock(cache);
	save_stop(save); /* runs what is pending */
	v = get("/keep", NULL);
	CHECK(v && strcmp(v, "z") == 0);
	free(v);
	cache_rdlock(cache);
	CHECK(node("keep") && node("keep")->has_value);
	cache_unlock(cache);
}

/* Model test seed 13 over etcd (docs/reliability.md): a file created
 * again while its name's deferred delete was already being carried out
 * found no delete to take over, and its create-only save raced that delete
 * to etcd: refused, "created by someone else", where tmpfs just creates
 * the file. The create's save now waits for that delete. */
struct racing_save {
	int ret;
	bool done;
};

static void *save_again(void *arg)
{
	struct racing_save *r = arg;
	store("/again", "new", 0, true, &r->ret);
	__atomic_store_n(&r->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void *flush_all(void *arg)
{
	(void)arg;
	save_flush_deferred(save, true);
	return NULL;
}

static void test_create_while_its_delete_runs(void)
{
	store_new("/again", "old");
	CHECK_EQ(unlink_node("again"), 0);
	kvmem_stall(kv, KVMEM_TXN, 0); /* the delete's txn, once sent */
	pthread_t fl, sv;
	REQUIRE_EQ(pthread_create(&fl, NULL, flush_all, NULL), 0);
	kvmem_wait_stalled(kv);
	int64_t taken = 0;
	cache_wrlock(cache);
	CHECK(!save_take_deferred_locked(save, "/again", 6, &taken), "running: nothing to take");
	cache_unlock(cache);
	struct racing_save r = {0};
	REQUIRE_EQ(pthread_create(&sv, NULL, save_again, &r), 0);
	usleep(100 * 1000); /* long enough for a save that does not wait to be refused */
	CHECK(!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), "the save waits for the delete");
	kvmem_release_stall(kv);
	pthread_join(fl, NULL);
	pthread_join(sv, NULL);
	CHECK_EQ(r.ret, 0);
	char *v = get("/again", NULL);
	CHECK(v && strcmp(v, "new") == 0, "%s", v ? v : "(absent)");
	free(v);
}

/* Issue #14 bug 2: an unlinked key waiting for its delete kept its name,
 * so mkdir of the name gave EEXIST and its directory stayed non-empty for
 * rmdir and rename. Now it leaves the tree at once, and neither the watch
 * nor a resync brings it back before the delete lands. */
static void test_unlink_frees_the_name(void)
{
	int64_t r = store_new("/u/x", "1");
	cache_wrlock(cache);
	struct cache_node *u = node("u");
	REQUIRE(u);
	struct cache_node *x = cache_child(cache, u, 0, "x", 1);
	REQUIRE(x);
	cache_ref_open(cache, x); /* an open handle */
	CHECK_EQ(save_unlink_locked(save, x), 0);
	CHECK(x->detached && !x->has_value, "an open unlinked file is kept out of the tree");
	CHECK(node("u") == u && cache_is_dir(u), "the directory stays");
	CHECK(cache_n_children(u) == 0, "and is empty");
	CHECK(cache_child(cache, u, 0, "x", 1) == NULL);
	struct cache_node *d;
	CHECK(cache_mknode_locked(cache, u, 0, "x", 1, true, &d) == 0, "mkdir of the name");
	cache_unref_open(cache, x);
	cache_unlock(cache);
	CHECK(exists("/u/x"), "the delete waits for its grace period");
	/* an event of the key's revision arrives late: it stays gone */
	struct kv_kv late = kvtest_kv("/u/x", "1", r, r, 1);
	cache_apply_local(cache, "/u/x", 4, &late, r);
	cache_rdlock(cache);
	struct cache_node *now = cache_child(cache, node("u"), 0, "x", 1);
	CHECK(now && !now->has_value && now->local_dir, "still the new directory");
	cache_unlock(cache);
	save_flush_deferred(save, true);
	CHECK(!exists("/u/x"));
	cache_rdlock(cache);
	now = cache_child(cache, node("u"), 0, "x", 1);
	CHECK(now && !now->has_value, "the delete landing changes nothing seen");
	cache_unlock(cache);
}

/* rename(key -> shadow name) parks the key's delete: nothing deletes it
 * (not fsync of the directory, not unmount) until the shadow goes; a
 * create of the name takes it. */
static void test_parked(void)
{
	int64_t r = store_new("/pk", "v");
	cache_wrlock(cache);
	CHECK_EQ(save_park_key_locked(save, "/pk", 3, r, 42), 0);
	cache_unlock(cache);
	save_flush_deferred(save, true);
	CHECK(exists("/pk"), "parked: not deleted");
	cache_wrlock(cache);
	save_unpark_locked(save, 42);
	cache_unlock(cache);
	save_flush_deferred(save, true);
	CHECK(!exists("/pk"), "the shadow went: deleted");

	r = store_new("/pk", "w");
	int64_t taken = 0;
	cache_wrlock(cache);
	CHECK_EQ(save_park_key_locked(save, "/pk", 3, r, 43), 0);
	CHECK(save_take_deferred_locked(save, "/pk", 3, &taken));
	CHECK_EQ(taken, r);
	save_unpark_locked(save, 43); /* the shadow goes after the re-create */
	CHECK_EQ(save_park_key_locked(save, "/left", 5, r, 44), 0); /* freed at the end */
	cache_unlock(cache);
	save_flush_deferred(save, true);
	CHECK(exists("/pk"), "taken: not deleted");
}

int main(void)
{
	fixture_setup(true, "save-conflicts");

	TEST_RUN(test_put_and_compare);
	TEST_RUN(test_why);
	TEST_RUN(test_why_text);
	TEST_RUN(test_kept_bound);
	TEST_RUN(test_txn_limits);
	TEST_RUN(test_too_big);
	TEST_RUN(test_delete_and_move);
	TEST_RUN(test_encode);
	TEST_RUN(test_shadow_names);
	TEST_RUN(test_side_table);
	TEST_RUN(test_unlink_frees_the_name);
	TEST_RUN(test_parked);
	TEST_RUN(test_create_while_its_delete_runs);
	TEST_RUN(test_page_cache_owner);
	TEST_RUN(test_deferred);

	return fixture_teardown();
}
