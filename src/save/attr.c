/* attr.c: the metadata of nodes that etcd has no place for (modes, owners,
 * times), kept for the life of the mount (save.h). */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "save_int.h"

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void stamp(struct cache_local *l, unsigned what, int64_t t)
{
	if (what & SAVE_ATIME)
		l->atime_ns = t;
	if (what & SAVE_MTIME)
		l->mtime_ns = t;
	if (what & SAVE_CTIME)
		l->ctime_ns = t;
}

/* A node's times start from the defaults the first time one is set here:
 * setting only ctime must not make mtime read "never". */
static void seed_times(struct cache_local *l, int64_t t)
{
	if (l->ctime_ns)
		return;
	l->atime_ns = l->mtime_ns = l->ctime_ns = t;
}

int save_touch_locked(struct cache_node *n, unsigned what)
{
	struct cache_local *l = save_local_mut(n);
	if (!l)
		return -ENOMEM;
	int64_t t = now_ns();
	seed_times(l, t);
	stamp(l, what, t);
	return 0;
}

int save_kill_priv_locked(struct cache_node *n)
{
	const struct cache_local *cur = save_local(n);
	if (!cur->mode_set || !(cur->mode & (S_ISUID | S_ISGID)))
		return 0; /* defaults carry neither bit */
	struct cache_local *l = save_local_mut(n);
	if (!l)
		return -ENOMEM;
	l->mode &= ~(uint32_t)S_ISUID;
	if (l->mode & S_IXGRP)
		l->mode &= ~(uint32_t)S_ISGID;
	return 0;
}

int save_setattr_locked(struct cache_node *n, const struct save_attr *a)
{
	struct cache_local *l = save_local_mut(n);
	if (!l)
		return -ENOMEM;
	int64_t t = now_ns();
	seed_times(l, t);
	if (a->what & SAVE_ATTR_MODE) {
		l->mode = a->mode & 07777;
		l->mode_set = true;
	}
	if (a->what & (SAVE_ATTR_UID | SAVE_ATTR_GID)) {
		if (!l->owner_set) {
			l->uid = a->uid;
			l->gid = a->gid;
		}
		if (a->what & SAVE_ATTR_UID)
			l->uid = a->uid;
		if (a->what & SAVE_ATTR_GID)
			l->gid = a->gid;
		l->owner_set = true;
	}
	if (a->what & SAVE_ATTR_ATIME)
		l->atime_ns = a->atime_ns;
	if (a->what & SAVE_ATTR_MTIME)
		l->mtime_ns = a->mtime_ns;
	l->ctime_ns = t;
	return 0;
}

int save_init_new_locked(struct cache_node *n, struct cache_node *parent, uint32_t mode,
			 uint32_t uid, uint32_t gid)
{
	struct cache_local *l = save_local_mut(n);
	struct cache_local *pl = parent ? save_local_mut(parent) : NULL;
	if (!l || (parent && !pl))
		return -ENOMEM;
	l->mode = mode & 07777;
	if (pl && pl->mode_set && (pl->mode & S_ISGID)) {
		/* BSD group semantics of a setgid directory, as on ext4 and
		 * tmpfs */
		if (pl->owner_set)
			gid = pl->gid;
		if (cache_is_dir(n))
			l->mode |= S_ISGID;
	}
	l->mode_set = true;
	l->uid = uid;
	l->gid = gid;
	l->owner_set = true;
	int64_t t = now_ns();
	stamp(l, SAVE_ATIME | SAVE_MTIME | SAVE_CTIME, t);
	if (pl) {
		seed_times(pl, t);
		stamp(pl, SAVE_MTIME | SAVE_CTIME, t);
	}
	return 0;
}

void save_meta_of(const struct cache_node *n, int64_t seen_ns, struct save_meta *m)
{
	const struct cache_local *l = save_local(n);
	if (l->mode_set)
		m->perm = l->mode & 07777;
	if (l->owner_set) {
		m->uid = l->uid;
		m->gid = l->gid;
	}
	/* A change seen later than the last local one (the watch, another
	 * writer) moves mtime and ctime past what was set here; this mount's
	 * own save does not (own_times in file.c). */
	bool own = l->own_rev && l->own_rev == n->mod_revision;
	if (l->ctime_ns && (l->ctime_ns >= seen_ns || own)) {
		m->atime_ns = l->atime_ns;
		m->mtime_ns = l->mtime_ns;
		m->ctime_ns = l->ctime_ns;
	} else if (seen_ns) {
		m->mtime_ns = m->ctime_ns = seen_ns;
		if (l->atime_ns > seen_ns)
			m->atime_ns = l->atime_ns;
		else
			m->atime_ns = seen_ns;
	}
}
