/* defer.c: deferred unlinks. An unlinked key is hidden at once and deleted
 * after a short grace period, so that unlink + create of the same name
 * (install(1)) is one put on the key (docs/writes.md). */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "core/util.h"
#include "save_int.h"

#define DEFER_MS 50

struct deferred_del {
	uint64_t id; /* hidden node */
	char *key;
	size_t key_len;
	int64_t rev;
	int64_t due_ms;
	struct deferred_del *next;
};

int save_defer_delete(struct save *s, uint64_t id, char *key, size_t klen, int64_t rev)
{
	struct deferred_del *d = calloc(1, sizeof(*d));
	if (!d) {
		free(key);
		return -ENOMEM;
	}
	d->key = key;
	d->key_len = klen;
	d->rev = rev;
	d->id = id;
	d->due_ms = util_now_ms() + DEFER_MS;
	pthread_mutex_lock(&s->dd_lock);
	d->next = s->dd_head;
	s->dd_head = d;
	pthread_cond_signal(&s->dd_cv);
	pthread_mutex_unlock(&s->dd_lock);
	return 0;
}

void save_cancel_deferred(struct save *s, uint64_t id)
{
	pthread_mutex_lock(&s->dd_lock);
	for (struct deferred_del **pp = &s->dd_head; *pp;) {
		struct deferred_del *d = *pp;
		if (d->id == id) {
			*pp = d->next;
			free(d->key);
			free(d);
		} else {
			pp = &d->next;
		}
	}
	pthread_mutex_unlock(&s->dd_lock);
}

static void run_deferred(struct save *s, struct deferred_del *d)
{
	struct cache *c = s->cfg.cache;
	int ret = save_delete(s, d->key, d->key_len, d->rev);
	cache_wrlock(c);
	struct cache_node *n = cache_node_by_id(c, d->id);
	if (n)
		save_unhide_locked(c, n, ret == 0);
	cache_unlock(c);
}

void save_flush_deferred(struct save *s, bool all)
{
	for (;;) {
		pthread_mutex_lock(&s->dd_lock);
		struct deferred_del **pp = &s->dd_head, *d = NULL;
		int64_t now = util_now_ms();
		while (*pp) {
			if (all || (*pp)->due_ms <= now) {
				d = *pp;
				*pp = d->next;
				break;
			}
			pp = &(*pp)->next;
		}
		pthread_mutex_unlock(&s->dd_lock);
		if (!d)
			return;
		run_deferred(s, d);
		free(d->key);
		free(d);
	}
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
	s->dd_running = true;
	return 0;
}

void save_stop(struct save *s)
{
	if (!s->dd_running)
		return;
	pthread_mutex_lock(&s->dd_lock);
	s->dd_stop = true;
	pthread_cond_signal(&s->dd_cv);
	pthread_mutex_unlock(&s->dd_lock);
	pthread_join(s->dd_thread, NULL);
	s->dd_running = false;
	save_flush_deferred(s, true);
}
