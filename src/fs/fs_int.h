/* fs_int.h: state shared by the fs/ source files (not a public API). */
#ifndef ETCDFS_FS_INT_H
#define ETCDFS_FS_INT_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>

#include "fs.h"

struct notify_item;

struct fs {
	struct fs_config cfg;
	struct cache *cache;      /* borrowed */
	struct fuse_session *se;  /* set once mounted */
	uid_t uid;
	gid_t gid;
	struct timespec mount_time;

	/* notifier queue: protected by nq_lock */
	pthread_mutex_t nq_lock;
	pthread_cond_t nq_cv;
	struct notify_item *nq_head, *nq_tail;
	bool nq_stop;
	bool nq_running;
	pthread_t nq_thread;
	uint64_t nq_sent; /* protected by nq_lock */

	/* request counters (atomics) */
	uint64_t n_requests, n_lookup, n_getattr, n_open, n_read, n_readdir, n_errors;
};

int fs_notifier_start(struct fs *fs);
void fs_notifier_stop(struct fs *fs);

#endif
