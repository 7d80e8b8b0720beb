/* file.c: the content being written to one inode (struct save_file), shared
 * by every writable handle of it, and its commit (save.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "save_int.h"

/* One writable handle's view: what it compares against. A handle's base
 * moves with the saves of handles of the same process (one program's
 * several fds see their own writes, as on any filesystem), never with
 * another process's: two programs doing read-modify-write on one file
 * still get a conflict (ESTALE), not a lost update. */
struct save_fh {
	struct save_file *f;
	/* protected by f->mu */
	int64_t base_rev;
	bool base_absent;
	int failed; /* sticky error of a rejected save */
	int pid;
	struct save_fh *next;
};

struct save_file {
	pthread_mutex_t mu;
	/* protected by mu */
	char *buf;
	size_t len, cap;
	bool dirty;
	/* differs from what other processes read (the key's, a local file's
	 * data) */
	bool diverged;
	bool defer;		/* created or truncated, nothing written yet: a flush
				   (close of a dup) does not commit; the last close does */
	int64_t base_rev;	/* mod_revision of the content last loaded or stored */
	bool base_absent;	/* the key did not exist: compare create_revision 0 */
	struct save_fh *fhs;	/* the handles sharing it */
	int pid;		/* the process whose handles share it (immutable) */
	struct save_file *next; /* the other processes' (cache lock) */
	/* atomic copy of len, for stat without mu (lock order: mu first) */
	size_t shown_len;
	/* protected by the cache lock (write to change) */
	unsigned users; /* writable handles: the last one commits */
	unsigned refs;	/* users and readers in flight: the last one frees */
	/* The kernel's page cache (and i_size) of the inode hold this
	 * content: its process's handles use the page cache (mmap works),
	 * every other process's use direct I/O. At most one per inode. */
	bool cached;
};

static void set_len(struct save_file *f, size_t len)
{
	f->len = len;
	__atomic_store_n(&f->shown_len, len, __ATOMIC_RELAXED);
}

static int grow(struct save_file *f, size_t need)
{
	if (need <= f->cap)
		return 0;
	size_t ncap = f->cap ? f->cap : 4096;
	while (ncap < need)
		ncap *= 2;
	char *nb = realloc(f->buf, ncap);
	if (!nb)
		return -ENOMEM;
	f->buf = nb;
	f->cap = ncap;
	return 0;
}

/* Fills f from n: a local file's data or the key's content. Without the
 * cache lock. */
static int load(struct save *s, struct cache_node *n, struct save_file *f)
{
	struct cache *c = s->cfg.cache;
	cache_rdlock(c);
	const struct cache_local *l = save_local(n);
	if (l->local_file) {
		f->base_absent = l->origin_rev == 0 && !n->has_value;
		f->base_rev = n->has_value ? n->mod_revision : l->origin_rev;
		int ret = 0;
		if (l->local_len) {
			f->buf = malloc(l->local_len);
			if (f->buf) {
				memcpy(f->buf, l->local_data, l->local_len);
				f->cap = l->local_len;
				set_len(f, l->local_len);
			} else {
				ret = -ENOMEM;
			}
		}
		/* A pending new (or re-created) key is stored at close even
		 * when empty; a shadow never is. */
		f->dirty = !l->shadow;
		cache_unlock(c);
		return ret;
	}
	cache_unlock(c);
	char *cur = NULL;
	size_t curlen = 0;
	int ret = cache_get_content(c, n, &cur, &curlen, &f->base_rev);
	if (ret < 0)
		return ret;
	f->buf = cur;
	f->cap = curlen;
	set_len(f, curlen);
	return 0;
}

static void file_free(struct save_file *f)
{
	if (!f)
		return;
	pthread_mutex_destroy(&f->mu);
	free(f->buf);
	free(f);
}

/* Joins n's shared content, or attaches f (loaded) as it. Lock held for
 * write. Returns the one in use. */
static struct save_file *find(const struct cache_node *n, int pid)
{
	struct save_file *f = save_local(n)->file;
	while (f && pid >= 0 && f->pid != pid)
		f = f->next;
	return f;
}

static struct save_file *attach(struct cache_node *n, int pid, struct save_file *f)
{
	struct save_file *cur = find(n, pid);
	if (cur) {
		cur->users++;
		cur->refs++;
		return cur;
	}
	if (!f)
		return NULL;
	f->users = f->refs = 1;
	f->pid = pid;
	f->next = cache_node_local(n)->file;
	cache_node_local(n)->file = f;
	return f;
}

/* Joins or makes n's shared content. */
static int join(struct save *s, struct cache_node *n, int pid, struct save_file **out)
{
	struct cache *c = s->cfg.cache;
	cache_wrlock(c);
	struct cache_local *l = save_local_mut(n);
	struct save_file *f = l ? attach(n, pid, NULL) : NULL;
	cache_unlock(c);
	if (!l)
		return -ENOMEM;
	if (!f) {
		struct save_file *nf = calloc(1, sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		pthread_mutex_init(&nf->mu, NULL);
		int ret = load(s, n, nf);
		if (ret < 0) {
			file_free(nf);
			return ret;
		}
		cache_wrlock(c);
		f = attach(n, pid, nf);
		cache_unlock(c);
		if (f != nf)
			file_free(nf); /* another open attached first */
	}
	*out = f;
	return 0;
}

/* Leaves n's shared content (the last one frees it). */
static void leave(struct save *s, struct cache_node *n, struct save_file *f)
{
	cache_wrlock(s->cfg.cache);
	f->users--;
	save_file_unref_locked(n, f);
	cache_unlock(s->cfg.cache);
}

/* Another process left n created or truncated with nothing written, to be
 * saved by its RELEASE, which the kernel sends after close() returned: a
 * second user's "touch f" then our "echo x >> f" raced it into a false
 * conflict (ESTALE; the model test's second user found it). Wait a little
 * (at most 200 ms) for that save, so this open builds on it. A process
 * still holding the file open ("cmd > f" running) costs this open only
 * the bound. defer is written under the file's mu and read here without
 * it (the lock order puts mu first), hence atomics. */
static void wait_other_release(struct save *s, struct cache_node *n, int pid)
{
	struct cache *c = s->cfg.cache;
	for (int i = 0; i < 100; i++) {
		bool busy = false;
		cache_rdlock(c);
		for (const struct save_file *f = save_local(n)->file; f; f = f->next)
			busy |= f->pid != pid && __atomic_load_n(&f->defer, __ATOMIC_RELAXED);
		cache_unlock(c);
		if (!busy)
			return;
		usleep(2000);
	}
}

int save_file_open(struct save *s, struct cache_node *n, bool trunc, int pid, struct save_fh **out)
{
	wait_other_release(s, n, pid);
	struct save_fh *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	struct save_file *f;
	int ret = join(s, n, pid, &f);
	if (ret < 0) {
		free(h);
		return ret;
	}
	h->f = f;
	h->pid = pid;
	pthread_mutex_lock(&f->mu);
	h->base_rev = f->base_rev;
	h->base_absent = f->base_absent;
	h->next = f->fhs;
	f->fhs = h;
	if (trunc) {
		if (f->len || f->base_absent)
			f->dirty = f->diverged = true;
		set_len(f, 0);
		__atomic_store_n(&f->defer, true, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&f->mu);
	*out = h;
	return 0;
}

size_t save_file_read(struct save_file *f, char *buf, size_t size, off_t off)
{
	pthread_mutex_lock(&f->mu);
	size_t cnt = (size_t)off < f->len ? f->len - off : 0;
	if (cnt > size)
		cnt = size;
	if (cnt)
		memcpy(buf, f->buf + off, cnt);
	pthread_mutex_unlock(&f->mu);
	return cnt;
}

/* Sets the length, zero-filling a gap. mu held. */
static int resize(struct save_file *f, size_t len)
{
	if (len > SAVE_MAX_FILE)
		return -EFBIG;
	if (len > f->len) {
		if (grow(f, len) < 0)
			return -ENOMEM;
		memset(f->buf + f->len, 0, len - f->len);
	}
	set_len(f, len);
	f->dirty = f->diverged = true;
	__atomic_store_n(&f->defer, false, __ATOMIC_RELAXED);
	return 0;
}

int save_file_write(struct save_fh *h, const char *data, size_t size, off_t off, bool append,
		    size_t *end_out)
{
	struct save_file *f = h->f;
	pthread_mutex_lock(&f->mu);
	if (append)
		off = f->len;
	size_t end = off + size;
	int ret = end > SAVE_MAX_FILE ? -EFBIG : grow(f, end);
	if (ret == 0 && (size_t)off > f->len)
		memset(f->buf + f->len, 0, off - f->len);
	if (ret == 0) {
		memcpy(f->buf + off, data, size);
		if (end > f->len)
			set_len(f, end);
		f->dirty = f->diverged = true;
		__atomic_store_n(&f->defer, false, __ATOMIC_RELAXED);
		*end_out = end;
	}
	pthread_mutex_unlock(&f->mu);
	return ret;
}

int save_file_truncate(struct save_fh *h, size_t len)
{
	struct save_file *f = h->f;
	pthread_mutex_lock(&f->mu);
	int ret = resize(f, len);
	pthread_mutex_unlock(&f->mu);
	return ret;
}

bool save_file_size(const struct cache_node *n, size_t *size)
{
	const struct save_file *f = save_local(n)->file;
	if (!f)
		return false;
	/* The kernel's i_size must stay the one of the content its page
	 * cache holds, whoever asks. */
	for (const struct save_file *o = f; o; o = o->next)
		if (o->cached)
			f = o;
	*size = __atomic_load_n(&f->shown_len, __ATOMIC_RELAXED);
	return true;
}

bool save_file_cache_locked(struct cache_node *n, struct save_fh *h)
{
	struct save_file *f = h->f;
	if (f->cached)
		return true;
	/* Alone: no other handle of any process, no other process's
	 * content (readers in flight keep one alive). */
	if (cache_nopen(n) != 1 || f->users != 1 || save_local(n)->file != f || f->next)
		return false;
	f->cached = true;
	return true;
}

int save_file_cached_pid_locked(const struct cache_node *n)
{
	for (const struct save_file *f = save_local(n)->file; f; f = f->next)
		if (f->cached)
			return f->pid;
	return -1;
}

bool save_file_writes_locked(const struct cache_node *n, int pid)
{
	return pid >= 0 && find(n, pid) != NULL;
}

bool save_file_cached_by_locked(const struct cache_node *n, int pid)
{
	return pid >= 0 && save_file_cached_pid_locked(n) == pid;
}

/* A shadow's content stays in this mount. Lock held for write. */
static int keep_local(struct cache_node *n, struct save_file *f)
{
	char *copy = malloc(f->len ? f->len : 1);
	if (!copy)
		return -ENOMEM;
	if (f->len)
		memcpy(copy, f->buf, f->len);
	struct cache_local *l = cache_node_local(n);
	free(l->local_data);
	l->local_data = copy;
	l->local_len = f->len;
	f->dirty = f->diverged = false;
	return 0;
}

/* Content equal to what was read writes nothing. */
static bool unchanged(struct cache *c, struct cache_node *n, struct save_fh *h)
{
	struct save_file *f = h->f;
	if (h->base_absent)
		return false;
	char *cur;
	size_t curlen;
	int64_t currev;
	if (cache_get_content(c, n, &cur, &curlen, &currev) < 0)
		return false;
	bool same = currev == h->base_rev && curlen == f->len &&
		    (curlen == 0 || memcmp(cur, f->buf, curlen) == 0);
	free(cur);
	return same;
}

/* After a rejected save of a new file: it must not linger as local state;
 * show what etcd has. Lock held for write. */
static void drop_rejected_new(struct cache *c, struct cache_node *n)
{
	struct cache_local *l = cache_node_local(n);
	if (!l->local_file || l->shadow)
		return;
	l->local_file = false;
	if (!n->has_value)
		cache_prune_locked(c, n);
}

/* Encodes and stores f's content under key. mu held. */
/* A save by h stored rev: h and its process's other handles now build on
 * it, and so do handles that open from now on. mu held. */
static void advance(struct save_fh *h, int64_t rev)
{
	struct save_file *f = h->f;
	f->base_rev = rev;
	f->base_absent = false;
	for (struct save_fh *o = f->fhs; o; o = o->next)
		if (o == h || o->pid == h->pid) {
			o->base_rev = rev;
			o->base_absent = false;
		}
}

/* n's content is stored at rev by this mount: its times stay those of the
 * change (the write, the create or truncate), not the save's. A save can
 * land after close() returned (a created file's, at RELEASE), and tmpfs
 * moves no time then; nor when the watch delivers the put before the
 * store returns. Lock held for write. */
static void own_times(struct cache_node *n, int64_t rev)
{
	struct cache_local *l = save_local_mut(n);
	if (!l)
		return; /* times are best effort under memory pressure */
	if (!l->ctime_ns)
		(void)save_touch_locked(n, SAVE_MTIME | SAVE_CTIME);
	l->own_rev = rev;
}

static int store(struct save *s, struct cache_node *n, struct save_fh *h, const char *key,
		 size_t klen)
{
	struct cache *c = s->cfg.cache;
	struct save_file *f = h->f;
	char *raw;
	size_t rawlen;
	bool owned;
	int ret = save_encode(s, key, klen, f->buf, f->len, h->base_rev, h->base_absent, &raw,
			      &rawlen, &owned);
	if (ret < 0) {
		if (ret == -EINVAL || ret == -EPERM)
			h->failed = ret;
		return ret;
	}
	int64_t rev;
	ret = save_store(s, key, klen, raw, rawlen, h->base_rev, h->base_absent, &rev);
	if (owned)
		free(raw);
	cache_wrlock(c);
	if (ret == 0) {
		advance(h, rev);
		f->dirty = f->diverged = false;
		save_mark_stored(n);
		cache_told_locked(c, n);
		own_times(n, rev);
	} else if (ret == -ESTALE || ret == -EFBIG) {
		/* The rejected content is kept in the conflict dir; another
		 * handle's close must not store it. */
		h->failed = ret;
		f->dirty = false;
		drop_rejected_new(c, n);
	}
	cache_unlock(c);
	return ret;
}

/* Commits f. mu held. */
static int commit(struct save *s, struct cache_node *n, struct save_fh *h)
{
	struct save_file *f = h->f;
	if (h->failed)
		return h->failed;
	if (!f->dirty)
		return 0;
	struct cache *c = s->cfg.cache;
	cache_wrlock(c);
	const struct cache_local *l = save_local(n);
	if (n->detached || l->hidden || l->unlinked) {
		/* Unlinked while open: its content has nowhere to go. */
		cache_unlock(c);
		f->dirty = false;
		return 0;
	}
	if (l->shadow) {
		int ret = keep_local(n, f);
		cache_unlock(c);
		return ret;
	}
	size_t klen;
	char *key = cache_node_key(c, n, &klen);
	cache_unlock(c);
	if (!key)
		return -ENOMEM;
	int ret = 0;
	if (unchanged(c, n, h))
		f->dirty = f->diverged = false;
	else
		ret = store(s, n, h, key, klen);
	free(key);
	return ret;
}

int save_file_flush(struct save *s, struct cache_node *n, struct save_fh *h, bool force,
		    bool *wrote)
{
	struct save_file *f = h->f;
	pthread_mutex_lock(&f->mu);
	bool was_dirty = f->dirty;
	int ret = (f->defer && !force) ? 0 : commit(s, n, h);
	*wrote = was_dirty && !f->dirty && ret == 0;
	pthread_mutex_unlock(&f->mu);
	return ret;
}

int save_file_close(struct save *s, struct cache_node *n, struct save_fh *h)
{
	return save_file_close_view(s, n, h, NULL);
}

int save_file_close_view(struct save *s, struct cache_node *n, struct save_fh *h, bool *stale_view)
{
	struct save_file *f = h->f;
	pthread_mutex_lock(&f->mu);
	cache_rdlock(s->cfg.cache);
	bool last = f->users == 1;
	bool cached = f->cached;
	cache_unlock(s->cfg.cache);
	int ret = 0;
	if (last && f->dirty && !h->failed)
		ret = commit(s, n, h);
	if (stale_view)
		*stale_view = last && cached && f->diverged;
	for (struct save_fh **pp = &f->fhs; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	pthread_mutex_unlock(&f->mu);
	free(h);
	leave(s, n, f);
	if (ret < 0)
		log_err("save at close failed: %s", strerror(-ret));
	return ret;
}

int save_truncate(struct save *s, struct cache_node *n, size_t len, int pid)
{
	struct save_fh *h;
	int ret = save_file_open(s, n, false, pid, &h);
	if (ret < 0)
		return ret;
	struct save_file *f = h->f;
	pthread_mutex_lock(&f->mu);
	if (len != f->len)
		ret = resize(f, len);
	if (ret == 0)
		ret = commit(s, n, h);
	pthread_mutex_unlock(&f->mu);
	int cret = save_file_close(s, n, h);
	return ret < 0 ? ret : cret;
}

struct save_file *save_file_ref_locked(struct cache_node *n, int pid)
{
	struct save_file *f = find(n, pid);
	if (f)
		f->refs++;
	return f;
}

void save_file_unref_locked(struct cache_node *n, struct save_file *f)
{
	if (--f->refs)
		return;
	struct save_file **pp = &cache_node_local(n)->file;
	while (*pp != f)
		pp = &(*pp)->next;
	*pp = f->next;
	file_free(f);
}

/* Moves one file's base (and its handles'): mu held. */
static void rebase(struct save_file *f, int64_t from_rev, bool from_absent, int64_t rev)
{
	if (f->base_absent ? from_absent : f->base_rev == from_rev) {
		f->base_rev = rev;
		f->base_absent = false;
	}
	for (struct save_fh *h = f->fhs; h; h = h->next)
		if (h->base_absent ? from_absent : h->base_rev == from_rev) {
			h->base_rev = rev;
			h->base_absent = false;
		}
}

struct save_hold {
	struct cache_node *n;
	size_t nf;
	struct save_file **f; /* each referenced, its mu held */
};

/* Every writer's file of n, each referenced (lock held for write): an
 * array of *nf (malloc'd), NULL when none (*nf 0) or out of memory (*nf
 * the count, nothing referenced). */
static struct save_file **ref_all_locked(struct cache_node *n, size_t *nf)
{
	*nf = 0;
	for (struct save_file *f = save_local(n)->file; f; f = f->next)
		(*nf)++;
	struct save_file **fs = *nf ? malloc(*nf * sizeof(*fs)) : NULL;
	if (!fs)
		return NULL;
	size_t i = 0;
	for (struct save_file *f = save_local(n)->file; f; f = f->next) {
		f->refs++;
		fs[i++] = f;
	}
	return fs;
}

static int by_address(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (struct save_file *const *)a;
	uintptr_t y = (uintptr_t) * (struct save_file *const *)b;
	return x < y ? -1 : x > y;
}

struct save_hold *save_hold_locked(struct save *s, struct cache_node *n)
{
	struct cache *c = s->cfg.cache;
	size_t nf;
	struct save_file **fs = ref_all_locked(n, &nf);
	struct save_hold *h = fs ? malloc(sizeof(*h)) : NULL;
	if (!h) {
		for (size_t i = 0; fs && i < nf; i++)
			save_file_unref_locked(n, fs[i]);
		free(fs);
		/* out of memory: at least no commit in flight */
		struct save_file *f = nf ? save_file_hold_locked(s, n) : NULL;
		if (f)
			save_file_unhold_locked(n, f);
		return NULL;
	}
	*h = (struct save_hold){.n = n, .nf = nf, .f = fs};
	/* one order for every holder (renames are serialized anyway) */
	qsort(h->f, h->nf, sizeof(h->f[0]), by_address);
	cache_ref_open(c, n);
	cache_unlock(c);
	for (size_t i = 0; i < h->nf; i++)
		pthread_mutex_lock(&h->f[i]->mu);
	cache_wrlock(c);
	return h;
}

struct cache_node *save_hold_node(const struct save_hold *h)
{
	return h->n;
}

void save_unhold_locked(struct save *s, struct save_hold *h)
{
	for (size_t i = 0; i < h->nf; i++) {
		pthread_mutex_unlock(&h->f[i]->mu);
		save_file_unref_locked(h->n, h->f[i]);
	}
	cache_unref_open(s->cfg.cache, h->n);
	free(h->f);
	free(h);
}

static bool held_by(const struct save_hold *h, const struct save_file *f)
{
	for (size_t i = 0; h && i < h->nf; i++)
		if (h->f[i] == f)
			return true;
	return false;
}

void save_file_moved(struct save *s, struct cache_node *n, int64_t from_rev, bool from_absent,
		     int64_t rev, const struct save_hold *held)
{
	struct cache *c = s->cfg.cache;
	cache_wrlock(c);
	size_t nf;
	struct save_file **fs = ref_all_locked(n, &nf);
	cache_unlock(c);
	if (!fs) {
		if (nf)
			log_err("rename: out of memory; open writers of the file will get ESTALE");
		return;
	}
	if (held && held->n != n)
		held = NULL;
	for (size_t i = 0; i < nf; i++) {
		bool mine = held_by(held, fs[i]);
		if (!mine)
			pthread_mutex_lock(&fs[i]->mu);
		rebase(fs[i], from_rev, from_absent, rev);
		if (!mine)
			pthread_mutex_unlock(&fs[i]->mu);
	}
	cache_wrlock(c);
	for (size_t i = 0; i < nf; i++)
		save_file_unref_locked(n, fs[i]);
	cache_unlock(c);
	free(fs);
}

struct save_file *save_file_hold_locked(struct save *s, struct cache_node *n)
{
	struct cache *c = s->cfg.cache;
	struct save_file *f = save_file_ref_locked(n, -1);
	if (!f)
		return NULL;
	cache_unlock(c);
	pthread_mutex_lock(&f->mu);
	cache_wrlock(c);
	return f;
}

void save_file_unhold_locked(struct cache_node *n, struct save_file *f)
{
	pthread_mutex_unlock(&f->mu);
	save_file_unref_locked(n, f);
}
