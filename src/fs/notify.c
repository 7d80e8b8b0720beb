/* notify.c: the notifier thread.
 *
 * The cache reports changes while holding its write lock; we only queue
 * them there. This thread, which holds no lock any request handler can wait
 * on, calls fuse_lowlevel_notify_*. That ordering is what prevents the
 * read-vs-invalidate deadlock: an invalidation may block in the kernel on a
 * page lock held by an in-flight read, and that read can always complete
 * because nothing it needs is held here (docs/design.md).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs_int.h"
#include "core/log.h"
#include "core/util.h"
#include "naming.h"

struct notify_item {
	enum cache_change_kind kind;
	uint64_t parent_ino;
	uint64_t ino;
	int64_t rev;
	char name[NAMING_NAME_MAX + 1];
	size_t name_len;
	struct notify_item *next;
};

void fs_cache_notify(void *arg, const struct cache_change *chg)
{
	struct fs *fs = arg;
	struct notify_item *it = calloc(1, sizeof(*it));
	if (!it) {
		log_err("notify: out of memory; kernel cache may be stale");
		return;
	}
	it->kind = chg->kind;
	it->parent_ino = chg->parent_ino;
	it->ino = chg->ino;
	it->rev = chg->rev;
	if (chg->ns == -1) {
		strcpy(it->name, NAMING_VALUE_NAME);
		it->name_len = strlen(NAMING_VALUE_NAME);
	} else if (chg->seg) {
		ssize_t n =
			naming_encode(chg->seg, chg->seg_len, chg->ns, it->name, sizeof(it->name));
		if (n < 0) {
			free(it);
			return; /* names too long are never shown */
		}
		it->name_len = n;
	}
	pthread_mutex_lock(&fs->nq_lock);
	if (fs->nq_tail)
		fs->nq_tail->next = it;
	else
		fs->nq_head = it;
	fs->nq_tail = it;
	fs->nq_enqueued++;
	pthread_cond_signal(&fs->nq_cv);
	pthread_mutex_unlock(&fs->nq_lock);
}

/* Health changed: every attribute the kernel holds goes. On a no_open
 * mount the pages go too, as no OPEN would drop them: the next read of any
 * file reaches us, and while the watch is down we ask the backend before
 * answering it (read_unopened). */
static void inval_all_attrs(struct fs *fs)
{
	/* Gather under the cache lock, notify after releasing it. */
	size_t n = 0, cap = 0;
	uint64_t *inos = NULL;
	struct cache *c = fs->cache;
	cache_rdlock(c);
	uint32_t it = 0;
	for (struct cache_node *nd; (nd = cache_next_node(c, &it));) {
		if (!cache_nlookup(nd))
			continue;
		if (n + 3 > cap) {
			cap = cap ? cap * 2 : 256;
			uint64_t *ni = realloc(inos, cap * sizeof(*ni));
			if (!ni)
				goto done;
			inos = ni;
		}
		inos[n++] = cache_file_ino(nd);
		inos[n++] = cache_dir_ino(nd);
		if (fs->no_open)
			inos[n++] = cache_raw_ino(nd);
	}
done:
	cache_unlock(c);
	for (size_t i = 0; i < n; i++)
		fuse_lowlevel_notify_inval_inode(fs->se, inos[i], fs->no_open ? 0 : -1, 0);
	free(inos);
}

static void deliver(struct fs *fs, struct notify_item *it)
{
	struct fuse_session *se = fs->se;
	switch (it->kind) {
	case CACHE_CHG_CONTENT: {
		struct cache *c = fs->cache;
		cache_rdlock(c);
		struct cache_node *n = cache_node_by_id(c, cache_ino_id(it->ino));
		uint32_t told = n ? cache_inval_begin(c, n) : 0;
		cache_unlock(c);
		fuse_lowlevel_notify_inval_inode(se, it->ino, 0, 0);
		/* From now on the kernel holds no page or size of older
		 * versions (unless told one meanwhile, cache_inval_done):
		 * reads and getattr may serve the current one. */
		cache_rdlock(c);
		n = cache_node_by_id(c, cache_ino_id(it->ino));
		if (n)
			cache_inval_done(c, n, it->rev, told);
		uint64_t raw = n && fs->no_open ? cache_raw_ino(n) : 0;
		cache_unlock(c);
		/* NAME%raw's pages: no OPEN drops them on a no_open mount */
		if (raw)
			fuse_lowlevel_notify_inval_inode(se, raw, 0, 0);
		break;
	}
	case CACHE_CHG_NEW:
	case CACHE_CHG_RETYPE:
		fuse_lowlevel_notify_inval_entry(se, it->parent_ino, it->name, it->name_len);
		fuse_lowlevel_notify_inval_inode(se, it->parent_ino, 0, 0);
		break;
	case CACHE_CHG_DELETE:
		if (fuse_lowlevel_notify_delete(se, it->parent_ino, it->ino, it->name,
						it->name_len) < 0)
			fuse_lowlevel_notify_inval_entry(se, it->parent_ino, it->name,
							 it->name_len);
		fuse_lowlevel_notify_inval_inode(se, it->parent_ino, 0, 0);
		break;
	case CACHE_CHG_DIR:
		fuse_lowlevel_notify_inval_inode(se, it->parent_ino, 0, 0);
		break;
	case CACHE_CHG_ALL_ATTRS:
		inval_all_attrs(fs);
		break;
	}
}

static void *notifier_main(void *arg)
{
	struct fs *fs = arg;
	pthread_mutex_lock(&fs->nq_lock);
	for (;;) {
		while (!fs->nq_head && !fs->nq_stop)
			pthread_cond_wait(&fs->nq_cv, &fs->nq_lock);
		if (fs->nq_stop)
			break;
		struct notify_item *it = fs->nq_head;
		fs->nq_head = it->next;
		if (!fs->nq_head)
			fs->nq_tail = NULL;
		pthread_mutex_unlock(&fs->nq_lock);
		deliver(fs, it);
		free(it);
		pthread_mutex_lock(&fs->nq_lock);
		fs->nq_sent++;
		pthread_cond_broadcast(&fs->nq_done_cv);
	}
	pthread_mutex_unlock(&fs->nq_lock);
	return NULL;
}

void fs_notify_wait(struct fs *fs, long timeout_ms)
{
	pthread_mutex_lock(&fs->nq_lock);
	uint64_t target = fs->nq_enqueued;
	struct timespec ts;
	util_deadline_ts(CLOCK_REALTIME, timeout_ms, &ts);
	while (fs->nq_running && !fs->nq_stop && fs->nq_sent < target) {
		if (pthread_cond_timedwait(&fs->nq_done_cv, &fs->nq_lock, &ts) != 0) {
			log_warn("kernel cache invalidation is slow; continuing without it");
			break;
		}
	}
	pthread_mutex_unlock(&fs->nq_lock);
}

int fs_notifier_start(struct fs *fs)
{
	int ret = pthread_create(&fs->nq_thread, NULL, notifier_main, fs);
	if (ret)
		return -ret;
	fs->nq_running = true;
	return 0;
}

void fs_notifier_stop(struct fs *fs)
{
	pthread_mutex_lock(&fs->nq_lock);
	fs->nq_stop = true;
	pthread_cond_signal(&fs->nq_cv);
	pthread_mutex_unlock(&fs->nq_lock);
	if (fs->nq_running)
		pthread_join(fs->nq_thread, NULL);
	fs->nq_running = false;
	while (fs->nq_head) {
		struct notify_item *it = fs->nq_head;
		fs->nq_head = it->next;
		free(it);
	}
	fs->nq_tail = NULL;
}
