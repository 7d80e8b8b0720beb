/* test_cache.c: the key tree, value LRU and watch consumer, over the real
 * embedded store (src/store/) as backend: no FUSE, no mocks. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "core/log.h"
#include "store/store.h"
#include "test.h"

/* notifications seen, protected by mu */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int n_new, n_delete, n_content, n_retype;

static void notify(void *arg, const struct cache_change *chg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	switch (chg->kind) {
	case CACHE_CHG_NEW:
		n_new++;
		break;
	case CACHE_CHG_DELETE:
		n_delete++;
		break;
	case CACHE_CHG_CONTENT:
		n_content++;
		break;
	case CACHE_CHG_RETYPE:
		n_retype++;
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&mu);
}

static int counter(int *c)
{
	pthread_mutex_lock(&mu);
	int v = *c;
	pthread_mutex_unlock(&mu);
	return v;
}

static void put(struct kv *kv, const char *k, const char *v)
{
	int ret = kv_put(kv, k, strlen(k), v, strlen(v), NULL);
	CHECK(ret == 0, "put %s: %d", k, ret);
}

/* Node for an absolute key made of '/'-separated names under root ns 0. */
static struct cache_node *find(struct cache *c, const char *path)
{
	struct cache_node *n = c->root;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	char *save = NULL;
	for (char *s = strtok_r(buf, "/", &save); s && n; s = strtok_r(NULL, "/", &save))
		n = cache_child(c, n, 0, s, strlen(s));
	return n;
}

static bool wait_until(struct cache *c, const char *path, bool present)
{
	for (int i = 0; i < 500; i++) {
		cache_rdlock(c);
		struct cache_node *n = find(c, path);
		bool ok = present ? (n && n->has_value) : (!n || !n->has_value);
		cache_unlock(c);
		if (ok)
			return true;
		usleep(10000);
	}
	return false;
}

static char *content(struct cache *c, const char *path)
{
	cache_rdlock(c);
	struct cache_node *n = find(c, path);
	if (n)
		cache_ref_open(c, n);
	cache_unlock(c);
	if (!n)
		return NULL;
	char *out = NULL;
	size_t len;
	int64_t rev;
	int ret = cache_get_content(c, n, &out, &len, &rev);
	cache_wrlock(c);
	cache_unref_open(c, n);
	cache_unlock(c);
	return ret == 0 ? out : NULL;
}

/* A render function that is slow, deterministic, and notes which threads
 * ran it (at most 16 distinct). */
static pthread_t render_tids[16];
static int n_render_tids, n_rendered;

static int slow_render(void *arg, const char *key, size_t key_len, const char *val, size_t val_len,
		       int64_t mod_revision, char **out, size_t *out_len)
{
	(void)arg, (void)mod_revision;
	usleep(200);
	pthread_mutex_lock(&mu);
	n_rendered++;
	bool known = false;
	for (int i = 0; i < n_render_tids; i++)
		known = known || pthread_equal(render_tids[i], pthread_self());
	if (!known && n_render_tids < 16)
		render_tids[n_render_tids++] = pthread_self();
	pthread_mutex_unlock(&mu);
	if (asprintf(out, "R:%.*s:%.*s", (int)val_len, val, (int)key_len, key) < 0)
		return -ENOMEM;
	*out_len = strlen(*out);
	return 0;
}

/* The initial sync renders each page on several threads; every key still
 * gets its own rendering. */
static void test_parallel_render(struct kv *kv)
{
	const int n = 600;
	for (int i = 0; i < n; i++) {
		char k[64], v[64];
		snprintf(k, sizeof(k), "/rend/k%04d", i);
		snprintf(v, sizeof(v), "v%d", i * 7);
		put(kv, k, v);
	}
	struct cache_config cfg = {.kv = kv,
				   .prefix = "/rend/",
				   .prefix_len = 6,
				   .max_bytes = 1 << 20,
				   .page_size = 250,
				   .render = slow_render,
				   .no_watch = true};
	struct cache *c;
	int ret = cache_new(&cfg, &c);
	CHECK(ret == 0, "cache_new with a render function: %d", ret);
	if (ret)
		return;
	CHECK(c->n_keys == (uint64_t)n, "rendered keys: %llu", (unsigned long long)c->n_keys);
	CHECK(counter(&n_rendered) == n, "each key rendered once at sync: %d", n_rendered);
	for (int i = 0; i < n; i++) {
		char path[64], want[96];
		snprintf(path, sizeof(path), "k%04d", i);
		snprintf(want, sizeof(want), "R:v%d:/rend/k%04d", i * 7, i);
		char *got = content(c, path);
		CHECK(got && strcmp(got, want) == 0, "%s: %s", path, got ? got : "(none)");
		free(got);
	}
	if (c->render_threads > 1) {
		CHECK(c->render_helpers_used > 0, "no helper thread rendered (%zu usable CPUs)",
		      c->render_threads);
		CHECK(counter(&n_render_tids) > 1, "one thread did all the rendering");
	}
	cache_destroy(c);
}

int main(void)
{
	log_set_level(LOG_WARNING);
	char *dir = test_tmpdir("cache");
	struct store_config scfg;
	store_config_init(&scfg);
	scfg.data_dir = dir;
	struct kv *kv;
	int ret = store_open(&scfg, &kv);
	REQUIRE(ret == 0, "store_open: %s", strerror(-ret));
	put(kv, "/registry/pods/default/www", "pod-www");
	put(kv, "/a", "value of a");
	put(kv, "/a/b", "value of b");
	put(kv, "compact_rev_key", "7");
	for (int i = 0; i < 20; i++) {
		char k[64], v[64];
		snprintf(k, sizeof(k), "/many/k%02d", i);
		snprintf(v, sizeof(v), "%050d", i);
		put(kv, k, v);
	}

	struct cache_config cfg = {.kv = kv,
				   .prefix = "",
				   .prefix_len = 0,
				   .max_bytes = 200,
				   .page_size = 7,
				   .notify = notify};
	struct cache *c;
	ret = cache_new(&cfg, &c);
	REQUIRE(ret == 0, "cache_new: %d", ret);

	/* the initial sync (paged by 7) built the whole tree, quietly */
	cache_rdlock(c);
	CHECK(c->n_keys == 24, "keys after sync: %llu", (unsigned long long)c->n_keys);
	struct cache_node *a = find(c, "a");
	CHECK(a && a->has_value && cache_is_dir(a), "/a is both a key and a directory");
	struct cache_node *www = find(c, "registry/pods/default/www");
	CHECK(www && www->has_value && !cache_is_dir(www) && www->rendered_size == 7, "www");
	struct cache_node *nonslash = cache_child(c, c->root, 1, "compact_rev_key", 15);
	CHECK(nonslash && nonslash->has_value, "a key without a leading slash is in namespace 1");
	CHECK(cache_child(c, c->root, 0, "compact_rev_key", 15) == NULL, "and not in namespace 0");
	size_t klen;
	char *key = www ? cache_node_key(c, www, &klen) : NULL;
	CHECK(key && strcmp(key, "/registry/pods/default/www") == 0, "node key");
	free(key);
	key = nonslash ? cache_node_key(c, nonslash, &klen) : NULL;
	CHECK(key && strcmp(key, "compact_rev_key") == 0, "namespace-1 key");
	free(key);
	cache_unlock(c);
	CHECK(counter(&n_new) == 0, "no notifications during the initial sync");

	/* the LRU stays under its bound, and evicted values come back */
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 20; i++) {
			char k[64], want[64];
			snprintf(k, sizeof(k), "many/k%02d", i);
			snprintf(want, sizeof(want), "%050d", i);
			char *got = content(c, k);
			CHECK(got && strcmp(got, want) == 0, "content of %s", k);
			free(got);
			CHECK(c->lru_bytes <= 200, "lru bytes %zu over the bound", c->lru_bytes);
		}
	struct cache_stats st;
	cache_get_stats(c, &st);
	CHECK(st.misses >= 20, "evicted values were fetched again (%llu misses)",
	      (unsigned long long)st.misses);

	/* watch: new keys, changes and deletes reach the tree and the kernel */
	put(kv, "/new/dir/key", "fresh");
	CHECK(wait_until(c, "new/dir/key", true), "new key appears");
	CHECK(counter(&n_new) >= 3, "NEW for new, dir and key (%d)", counter(&n_new));
	char *got = content(c, "new/dir/key");
	CHECK(got && strcmp(got, "fresh") == 0, "new content");
	free(got);
	put(kv, "/new/dir/key", "changed!");
	for (int i = 0; i < 500 && counter(&n_content) == 0; i++)
		usleep(10000);
	CHECK(counter(&n_content) >= 1, "CONTENT on change");
	got = content(c, "new/dir/key");
	CHECK(got && strcmp(got, "changed!") == 0, "changed content: %s", got ? got : "(null)");
	free(got);
	/* a file growing a child becomes a directory (new inode) */
	put(kv, "/registry/pods/default/www/sub", "x");
	CHECK(wait_until(c, "registry/pods/default/www/sub", true), "child of a key");
	CHECK(counter(&n_retype) >= 1, "RETYPE when a file becomes a directory");
	int64_t deleted;
	ret = kv_delete_range(kv, "/new/dir/key", 12, NULL, 0, &deleted, NULL);
	CHECK(ret == 0 && deleted == 1, "delete");
	CHECK(wait_until(c, "new/dir/key", false), "deleted key goes");
	cache_rdlock(c);
	CHECK(find(c, "new") == NULL, "empty parents are pruned");
	cache_unlock(c);
	CHECK(counter(&n_delete) >= 1, "DELETE on delete");

	/* a local write is visible at once, and its late watch event is
	 * recognised by revision */
	struct kv_kv local = {.key = "/local",
			      .key_len = 6,
			      .value = "mine",
			      .value_len = 4,
			      .create_revision = 1000,
			      .mod_revision = 1000,
			      .version = 1};
	cache_apply_local(c, "/local", 6, &local, 1000);
	got = content(c, "local");
	CHECK(got && strcmp(got, "mine") == 0, "read-your-writes");
	free(got);
	cache_apply_local(c, "/local", 6, NULL, 1001);
	cache_rdlock(c);
	CHECK(find(c, "local") == NULL, "local delete");
	cache_unlock(c);

	cache_get_stats(c, &st);
	CHECK(st.health == CACHE_HEALTHY, "watch healthy");
	cache_destroy(c);
	test_parallel_render(kv);
	kv_destroy(kv);
	CHECK(test_rm_rf(dir) == 0, "could not remove %s", dir);
	free(dir);
	return test_summary();
}
