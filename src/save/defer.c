/* defer.c: deferred unlinks. An unlinked key leaves the tree at once and is
 * deleted after a short grace period, so that unlink + create of the same
 * name (install(1)) is one put on the key (docs/writes.md, "unlink, create
 * and rename"). While the delete is pending the key is held in the cache
 * (cache_hold_key_locked): nothing but a create of the same name can tell
 * it is still in etcd. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "save_int.h"

#define DEFER_MS 50

struct deferred_del {
	char *key;
	size_t key_len;
	int64_t rev;
	int64_t due_ms;
	/* Parked by this shadow node (a key renamed onto a shadow name): not
	 * due until the shadow is unlinked (save_unpark_locked); 0: due. */
	uint64_t owner;
	struct deferred_del *next;
};

static int add(struct save *s, const char *key, size_t klen, int64_t rev, uint64_t owner)
{
	struct deferred_del *d = calloc(1, sizeof(*d));
	char *k = malloc(klen ? klen : 1);
	if (!d || !k || cache_hold_key_locked(s->cfg.cache, key, klen, rev) < 0) {
		free(d);
		free(k);
		return -ENOMEM;
	}
	memcpy(k, key, klen);
	d->key = k;
	d->key_len = klen;
	d->rev = rev;
	d->due_ms = util_now_ms() + DEFER_MS;
	d->owner = owner;
	pthread_mutex_lock(&s->dd_lock);
	d->next = s->dd_head;
	s->dd_head = d;
	pthread_cond_signal(&s->dd_cv);
	pthread_mutex_unlock(&s->dd_lock);
	return 0;
}

int save_unlink_locked(struct save *s, struct cache_node *n)
{
	struct cache *c = s->cfg.cache;
	struct cache_local *l = cache_node_local(n);
	size_t klen;
	char *key = cache_node_key(c, n, &klen);
	if (!key)
		return -ENOMEM;
	int64_t rev = n->has_value ? n->mod_revision : (l && !l->shadow ? l->origin_rev : 0);
	int ret = rev ? save_defer_delete_locked(s, key, klen, rev) : 0;
	if (ret == 0) {
		/* The directory stays, even if this was its last entry (rm -r
		 * then rmdirs it). */
		if (n->parent && n->parent->parent)
			n->parent->local_dir = true;
		save_clear_local(n);
		if (l)
			l->origin_rev = 0;
		if (n->has_value)
			cache_unlink_locked(c, n, key, klen);
		else
			cache_prune_locked(c, n);
	}
	free(key);
	return ret;
}

int save_defer_delete_locked(struct save *s, const char *key, size_t klen, int64_t rev)
{
	return add(s, key, klen, rev, 0);
}

int save_park_key_locked(struct save *s, const char *key, size_t klen, int64_t rev, uint64_t owner)
{
	return add(s, key, klen, rev, owner);
}

void save_unpark_locked(struct save *s, uint64_t owner)
{
	pthread_mutex_lock(&s->dd_lock);
	for (struct deferred_del *d = s->dd_head; d; d = d->next)
		if (d->owner == owner) {
			d->owner = 0;
			d->due_ms = util_now_ms() + DEFER_MS;
		}
	pthread_cond_signal(&s->dd_cv);
	pthread_mutex_unlock(&s->dd_lock);
}

bool save_take_deferred_locked(struct save *s, const char *key, size_t klen, int64_t *rev)
{
	struct deferred_del *d = NULL;
	pthread_mutex_lock(&s->dd_lock);
	for (struct deferred_del **pp = &s->dd_head; *pp; pp = &(*pp)->next)
		if ((*pp)->key_len == klen && memcmp((*pp)->key, key, klen) == 0) {
			d = *pp;
			*pp = d->next;
			break;
		}
	pthread_mutex_unlock(&s->dd_lock);
	if (!d)
		return false;
	/* The taker's save replaces the key at d->rev; until the watch is
	 * past it, old events still must not show it. */
	cache_release_key_locked(s->cfg.cache, key, klen, d->rev, false);
	*rev = d->rev;
	free(d->key);
	free(d);
	return true;
}

/* A delete that failed for another reason than a change made meanwhile
 * (which the watch shows) may have left the key as it was: show it again
 * if so. */
static void show_again(struct save *s, const struct deferred_del *d)
{
	struct kv_kv kv;
	if (kv_get(s->cfg.kv, d->key, d->key_len, &kv) < 0)
		return;
	if (kv.mod_revision == d->rev)
		cache_apply_local(s->cfg.cache, d->key, d->key_len, &kv, kv.mod_revision);
	kv_kv_free(&kv);
}

static void run_deferred(struct save *s, struct deferred_del *d)
{
	struct cache *c = s->cfg.cache;
	int ret = save_delete(s, d->key, d->key_len, d->rev);
	cache_wrlock(c);
	/* done: a delete applied left its own tomb (save_delete), a failed
	 * one leaves the key to what etcd says */
	cache_release_key_locked(c, d->key, d->key_len, d->rev, true);
	cache_unlock(c);
	if (ret < 0 && ret != -ESTALE)
		show_again(s, d);
}

/* Takes d off dd_run once carried out. dd_lock held. */
static void run_done(struct save *s, struct deferred_del *d)
{
	for (struct deferred_del **pp = &s->dd_run; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	pthread_cond_broadcast(&s->dd_done);
}

void save_flush_deferred(struct save *s, bool all)
{
	for (;;) {
		pthread_mutex_lock(&s->dd_lock);
		struct deferred_del **pp = &s->dd_head, *d = NULL;
		int64_t now = util_now_ms();
		while (*pp) {
			if (!(*pp)->owner && (all || (*pp)->due_ms <= now)) {
				d = *pp;
				*pp = d->next;
				break;
			}
			pp = &(*pp)->next;
		}
		if (d) {
			d->next = s->dd_run;
			s->dd_run = d;
		}
		/* fsync on a directory and rmdir promise that every delete
		 * is in etcd when they return: wait for those in flight */
		while (!d && all && s->dd_run)
			pthread_cond_wait(&s->dd_done, &s->dd_lock);
		pthread_mutex_unlock(&s->dd_lock);
		if (!d)
			return;
		run_deferred(s, d);
		pthread_mutex_lock(&s->dd_lock);
		run_done(s, d);
		pthread_mutex_unlock(&s->dd_lock);
		free(d->key);
		free(d);
	}
}

/* A create of a name whose delete is already running found nothing to
 * take over (save_take_deferred_locked) and saves as a new key: sent
 * beside that delete, it could reach etcd first and be refused, "created
 * by someone else" (model test seed 13), so it waits for the delete. */
void save_wait_delete(struct save *s, const char *key, size_t klen)
{
	pthread_mutex_lock(&s->dd_lock);
	for (;;) {
		const struct deferred_del *d = s->dd_run;
		while (d && (d->key_len != klen || memcmp(d->key, key, klen) != 0))
			d = d->next;
		if (!d)
			break;
		pthread_cond_wait(&s->dd_done, &s->dd_lock);
	}
	pthread_mutex_unlock(&s->dd_lock);
}

static void *writer_main(void *arg)
{
	struct save *s = arg;
	pthread_mutex_lock(&s->dd_lock);
	while (!s->dd_stop) {
		struct timespec ts;
		util_deadline_ts(CLOCK_REALTIME, 20, &ts);
		pthread_cond_timedwait(&s->dd_cv, &s->dd_lock, &ts);
		if (!s->dd_head)
			continue;
		pthread_mutex_unlock(&s->dd_lock);
		save_flush_deferred(s, false);
		pthread_mutex_lock(&s->dd_lock);
	}
	pthread_mutex_unlock(&s->dd_lock);
	return NULL;
}

int save_start(struct save *s)
{
	int ret = pthread_create(&s->dd_thread, NULL, writer_main, s);
	if (ret)
		return -ret;
	s->dd_running_thread = true;
	return 0;
}

void save_drop_parked(struct save *s)
{
	pthread_mutex_lock(&s->dd_lock);
	while (s->dd_head) {
		struct deferred_del *d = s->dd_head;
		s->dd_head = d->next;
		free(d->key);
		free(d);
	}
	pthread_mutex_unlock(&s->dd_lock);
}

void save_stop(struct save *s)
{
	if (!s->dd_running_thread)
		return;
	pthread_mutex_lock(&s->dd_lock);
	s->dd_stop = true;
	pthread_cond_signal(&s->dd_cv);
	pthread_mutex_unlock(&s->dd_lock);
	pthread_join(s->dd_thread, NULL);
	s->dd_running_thread = false;
	save_flush_deferred(s, true);
}
