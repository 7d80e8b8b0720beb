/* fs.c: libfuse3 low-level operations over the cache (read side, xattrs,
 * statfs, session setup). Every handler replies exactly once. */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs_int.h"
#include "core/log.h"
#include "core/util.h"
#include "naming.h"

struct dir_entry {
	char *name;
	uint64_t id;
	bool value_entry; /* the %value file of the directory itself */
};

struct dir_handle {
	struct dir_entry *ents;
	size_t n;
	bool built; /* ents holds a listing (taken at offset 0) */
};

__thread int fs_asker;

void fs_reader_note(struct fs *fs, uint64_t ino, int pid)
{
	pthread_mutex_lock(&fs->rd_lock);
	struct fs_reader *r = &fs->readers[fs->rd_next++ % FS_READERS];
	r->ino = ino;
	r->pid = pid;
	r->ms = util_now_ms();
	pthread_mutex_unlock(&fs->rd_lock);
}

bool fs_reader_other(struct fs *fs, uint64_t ino, int pid)
{
	int64_t since = util_now_ms() - FS_READER_MS;
	bool found = false;
	pthread_mutex_lock(&fs->rd_lock);
	for (size_t i = 0; i < FS_READERS && !found; i++) {
		const struct fs_reader *r = &fs->readers[i];
		found = r->ino == ino && r->ms > since && (r->pid != pid || !pid);
	}
	pthread_mutex_unlock(&fs->rd_lock);
	return found;
}

double fs_timeout(struct fs *fs)
{
	return cache_fresh(fs->cache) ? fs->cfg.timeout_fresh : fs->cfg.timeout_stale;
}

double fs_attr_timeout(struct fs *fs, uint64_t ino, int ret)
{
	if (ret > 0)
		return 0;
	return cache_ino_kind(ino) == CACHE_INO_RAW || fs_history_ino(ino) ? fs->cfg.timeout_stale
									   : fs_timeout(fs);
}

/* While the watch is unhealthy the cache may be stale: ask the backend
 * before answering from it, so errors surface instead of old data. */
int fs_check_backend(struct fs *fs)
{
	return cache_probe(fs->cache);
}

static void on_interrupt(fuse_req_t req, void *data)
{
	struct fs_intr *it = data;
	if (!__atomic_exchange_n(&it->done, 1, __ATOMIC_SEQ_CST))
		fuse_reply_err(req, EINTR);
}

void fs_intr_arm(fuse_req_t req, struct fs_intr *it)
{
	it->done = 0;
	fuse_req_interrupt_func(req, on_interrupt, it);
}

bool fs_intr_claim(struct fs_intr *it)
{
	return !__atomic_exchange_n(&it->done, 1, __ATOMIC_SEQ_CST);
}

/* While the cache is stale, checks the backend first; true if that
 * already answered the request (with its error, or EINTR on Ctrl-C). */
static bool stale_and_answered(fuse_req_t req, struct fs *fs)
{
	if (cache_fresh(fs->cache))
		return false;
	struct fs_intr it;
	fs_intr_arm(req, &it);
	int ret = fs_check_backend(fs);
	if (!fs_intr_claim(&it))
		return true; /* interrupted: EINTR was the reply */
	if (ret < 0) {
		fuse_reply_err(req, fs_errno_out(ret));
		return true;
	}
	return false;
}

int fs_errno_out(int ret)
{
	/* Backend-specific causes become EIO (the daemon logged the detail);
	 * everything else is already a filesystem errno. */
	switch (ret) {
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -ECONNRESET:
	case -ERANGE:
	case -EUCLEAN:
	case -EPROTO:
		return EIO;
	default:
		return ret < 0 ? -ret : EIO;
	}
}

bool fs_is_secret(struct fs *fs, struct cache_node *n)
{
	if (!fs->cfg.secrets_match || !*fs->cfg.secrets_match)
		return false;
	size_t len;
	char *key = cache_node_key(fs->cache, n, &len);
	if (!key)
		return true;
	bool s = memmem(key, len, fs->cfg.secrets_match, strlen(fs->cfg.secrets_match)) != NULL;
	free(key);
	return s;
}

/* Fills st for ino. Cache lock held. */
static void set_ts(struct timespec *ts, int64_t ns)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
}

/* The cache's time of n (a change it saw, or the time a Kubernetes object
 * records; 0: none). Cache lock held. */
static int64_t seen_ns(const struct cache_node *n)
{
	return n->mtime_ns;
}

/* Owner, mode bits and times: the mount's defaults, then what was set
 * here (src/save/attr.c). */
static void fill_meta(struct fs *fs, struct cache_node *n, mode_t perm, struct stat *st)
{
	int64_t mt = (int64_t)fs->mount_time.tv_sec * 1000000000 + fs->mount_time.tv_nsec;
	struct save_meta m = {.perm = perm,
			      .uid = fs->uid,
			      .gid = fs->gid,
			      .atime_ns = mt,
			      .mtime_ns = mt,
			      .ctime_ns = mt};
	save_meta_of(n, seen_ns(n), &m);
	st->st_uid = m.uid;
	st->st_gid = m.gid;
	st->st_mode |= m.perm;
	set_ts(&st->st_atim, m.atime_ns);
	set_ts(&st->st_mtim, m.mtime_ns);
	set_ts(&st->st_ctim, m.ctime_ns);
}

/* The size a file shows: open writers' content (the one the page cache
 * holds, save_file_size), a local file's data, else the key's (as the
 * kernel was last told; on a no_open mount kept while another reader may
 * still copy pages of that version, fs_reader_other). */
static size_t file_size(struct fs *fs, struct cache_node *n, uint64_t ino)
{
	size_t size;
	if (save_file_size(n, &size))
		return size;
	if (save_local(n)->local_file)
		return save_local(n)->local_len;
	if (!fs->no_open || !cache_changed_ms(n) ||
	    util_now_ms() - cache_changed_ms(n) >= FS_HOT_MS)
		return cache_report_size(fs->cache, n);
	size = fs_reader_other(fs, ino, fs_asker) ? cache_held_size(fs->cache, n)
						  : cache_report_size(fs->cache, n);
	fs_reader_note(fs, ino, fs_asker);
	return size;
}

int fs_fill_attr(struct fs *fs, uint64_t ino, struct stat *st)
{
	if (fs_history_ino(ino))
		return fs_history_attr(fs, ino, st);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (!n)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_blksize = 4096;
	if (cache_ino_kind(ino) == CACHE_INO_RAW) {
		/* NAME%raw: the stored bytes, read-only */
		if (!n->has_value || save_local(n)->hidden)
			return -ENOENT;
		st->st_mode = S_IFREG;
		fill_meta(fs, n, 0444, st);
		st->st_mode &= S_IFMT | 0444;
		if (fs_is_secret(fs, n))
			st->st_mode &= S_IFMT | 0400;
		st->st_nlink = 1;
		st->st_size = n->raw_size;
		st->st_blocks = (n->raw_size + 511) / 512;
		return 0;
	}
	if (cache_ino_kind(ino) == CACHE_INO_DIR) {
		if (!cache_is_dir(n) || n->detached)
			return -ENOENT;
		st->st_mode = S_IFDIR;
		fill_meta(fs, n, fs->cfg.read_only ? 0555 : 0755, st);
		st->st_nlink = 2;
		st->st_size = 4096;
		st->st_blocks = 8;
		return 0;
	}
	/* An open file stays stat-able after unlink (nlink 0). */
	if (!fs_visible_file(n) && !cache_nopen(n))
		return -ENOENT;
	bool link = save_local(n)->is_link;
	st->st_mode = link ? S_IFLNK : S_IFREG;
	fill_meta(fs, n, fs->cfg.read_only ? 0444 : 0644, st);
	if (link)
		st->st_mode = S_IFLNK | 0777;
	/* Secrets stay private to the owner whatever chmod said. */
	if (fs_is_secret(fs, n))
		st->st_mode &= S_IFMT | 0700;
	size_t size = file_size(fs, n, ino);
	st->st_nlink = (n->detached || !fs_visible_file(n)) ? 0 : 1;
	st->st_size = size;
	st->st_blocks = (size + 511) / 512;
	return save_file_size(n, &size) ? 1 : 0;
}

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;
	/* We invalidate explicitly on every change the watch reports; the
	 * kernel's mtime-based auto invalidation would only add round trips. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA)
		conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Writes go through to our buffers so that each save is one commit. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* open(O_TRUNC) must arrive as one open, not open + truncate, or a
	 * save would first store an empty value. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	fs_want_dio_mmap(NULL, conn);
	/* A read-only mount keeps no state per open file, so the kernel may
	 * open files without asking: the first OPEN is answered ENOSYS, and
	 * then every open, and its close (FLUSH once, no RELEASE), is one
	 * round trip less. grep -r of 10,000 files pays 10,000 of them
	 * otherwise. Reads then carry fh 0 and go through the page cache
	 * (docs/consistency.md, "Read-only mounts"). --consistency=
	 * linearizable asked for a quorum read at every open: it keeps OPEN. */
	if (fs->cfg.read_only && !fs->cfg.linearizable &&
	    (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
		fs->no_open = true;
		cache_set_rep_grace(fs->cache, FS_HOT_MS);
	}
}

/* Fills e for ino: attributes and lifetimes. Returns fs_fill_attr's
 * result. Cache lock held. */
static int fill_entry(struct fs *fs, uint64_t ino, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	int ret = fs_fill_attr(fs, ino, &e->attr);
	if (ret < 0)
		return ret;
	e->ino = ino;
	e->generation = 1;
	e->attr_timeout = e->entry_timeout = fs_timeout(fs);
	if (ret > 0)
		e->attr_timeout = 0;
	return ret;
}

void fs_reply_entry(fuse_req_t req, struct fs *fs, struct cache_node *n, bool as_file)
{
	struct fuse_entry_param e;
	uint64_t ino = (!as_file && cache_is_dir(n)) ? cache_dir_ino(n) : cache_file_ino(n);
	int ret = fill_entry(fs, ino, &e);
	if (ret < 0) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, -ret);
		return;
	}
	cache_ref_lookup(fs->cache, n);
	cache_unlock(fs->cache);
	if (fuse_reply_entry(req, &e) < 0)
		fs_release_lookup(fs, n); /* the kernel never saw it */
}

/* A negative entry is cached as long as positive ones: a new key
 * invalidates it through the notifier. */
static void reply_negative(fuse_req_t req, struct fs *fs)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.entry_timeout = fs_timeout(fs);
	fuse_reply_entry(req, &e);
}

/* Whether name is NAME + suffix, a name the escaping never produces; then
 * *n is the node NAME names in dir (NULL if none), and *value whether NAME
 * is %value (dir's own value). Cache lock held. */
static bool suffixed(struct fs *fs, struct cache_node *dir, const char *name, const char *suffix,
		     struct cache_node **n, bool *value)
{
	size_t nlen = strlen(name), slen = strlen(suffix);
	if (nlen <= slen || strcmp(name + nlen - slen, suffix) != 0)
		return false;
	char base[NAMING_NAME_MAX + 1], seg[NAMING_NAME_MAX + 1];
	memcpy(base, name, nlen - slen);
	base[nlen - slen] = 0;
	*n = NULL;
	*value = strcmp(base, NAMING_VALUE_NAME) == 0;
	if (*value) {
		*n = dir->parent ? dir : NULL;
		return true;
	}
	int ns;
	ssize_t l = naming_decode(base, seg, sizeof(seg), &ns);
	if (l >= 0 && !(ns == 1 && (dir->parent || fs->cfg.prefix_len)))
		*n = cache_child(fs->cache, dir, ns, seg, l);
	return true;
}

/* NAME%raw: the stored bytes of NAME under every --format. Cache lock
 * held; released. */
static void lookup_raw(fuse_req_t req, struct fs *fs, struct cache_node *n)
{
	if (!n || !n->has_value || save_local(n)->hidden) {
		cache_unlock(fs->cache);
		reply_negative(req, fs);
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = cache_raw_ino(n);
	e.generation = 1;
	fs_fill_attr(fs, e.ino, &e.attr);
	/* short lifetimes: the notifier only tracks the decoded view */
	e.attr_timeout = e.entry_timeout = fs->cfg.timeout_stale;
	cache_ref_lookup(fs->cache, n);
	cache_unlock(fs->cache);
	if (fuse_reply_entry(req, &e) < 0)
		fs_release_lookup(fs, n);
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_lookup);
	fs_asker = fuse_req_ctx(req)->pid;
	if (stale_and_answered(req, fs))
		return;
	if (fs_history_ino(parent)) {
		fs_history_lookup_version(req, fs, parent, name);
		return;
	}
	char seg[NAMING_NAME_MAX + 1];
	int ns;
	cache_rdlock(fs->cache);
	struct cache_node *dir = cache_node_by_id(fs->cache, cache_ino_id(parent));
	if (!dir || cache_ino_kind(parent) != CACHE_INO_DIR || !cache_is_dir(dir)) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, dir ? ENOTDIR : ENOENT);
		return;
	}
	struct cache_node *n;
	bool value;
	if (suffixed(fs, dir, name, "%raw", &n, &value)) {
		lookup_raw(req, fs, n); /* releases the lock */
		return;
	}
	if (suffixed(fs, dir, name, FS_HISTORY_SUFFIX, &n, &value)) {
		/* a key that is also a directory: DIR/%value%history */
		fs_history_lookup_dir(req, fs, n && !value && cache_is_dir(n) ? NULL : n);
		return; /* the lock released */
	}
	if (strcmp(name, NAMING_VALUE_NAME) == 0) {
		if (!dir->has_value || save_local(dir)->hidden || !dir->parent) {
			cache_unlock(fs->cache);
			goto negative;
		}
		fs_reply_entry(req, fs, dir, true);
		return;
	}
	ssize_t len = naming_decode(name, seg, sizeof(seg), &ns);
	if (len == -ENAMETOOLONG) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	if (len < 0 || (ns == 1 && (dir->parent || fs->cfg.prefix_len))) {
		cache_unlock(fs->cache);
		goto negative;
	}
	n = cache_child(fs->cache, dir, ns, seg, len);
	if (!n || (!cache_is_dir(n) && !fs_visible_file(n))) {
		cache_unlock(fs->cache);
		goto negative;
	}
	fs_reply_entry(req, fs, n, false);
	return;
negative:
	reply_negative(req, fs);
}

static void fs_op_forget_one(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	if (fs_history_ino(ino)) {
		fs_history_forget(fs, ino, nlookup);
		return;
	}
	cache_wrlock(fs->cache);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (n)
		cache_unref_lookup(fs->cache, n, nlookup);
	cache_unlock(fs->cache);
}

static void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_op_forget_one(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req);
	for (size_t i = 0; i < count; i++)
		fs_op_forget_one(fs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_getattr);
	fs_asker = fuse_req_ctx(req)->pid;
	/* The root never needs the network (statfs/getattr on / must work
	 * while etcd is down so that the mount can be inspected). */
	if (ino != FUSE_ROOT_ID && stale_and_answered(req, fs))
		return;
	struct stat st;
	cache_rdlock(fs->cache);
	int ret = fs_fill_attr(fs, ino, &st);
	cache_unlock(fs->cache);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, fs_attr_timeout(fs, ino, ret));
}

static void free_listing(struct dir_handle *dh)
{
	for (size_t i = 0; i < dh->n; i++)
		free(dh->ents[i].name);
	free(dh->ents);
	dh->ents = NULL;
	dh->n = 0;
}

static struct cache_node *dir_node(struct fs *fs, fuse_ino_t ino)
{
	struct cache_node *dir = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (!dir || cache_ino_kind(ino) != CACHE_INO_DIR || !cache_is_dir(dir) || dir->detached)
		return NULL;
	return dir;
}

static int add_entry(struct dir_handle *dh, const char *name, uint64_t id, bool value_entry)
{
	dh->ents[dh->n].name = strdup(name);
	if (!dh->ents[dh->n].name)
		return -ENOMEM;
	dh->ents[dh->n].id = id;
	dh->ents[dh->n].value_entry = value_entry;
	dh->n++;
	return 0;
}

/* Snapshots dir's listing into dh so offsets stay valid while the tree
 * changes. Cache lock held. */
static int build_listing(struct cache *cache, struct dir_handle *dh, struct cache_node *dir)
{
	free_listing(dh);
	dh->ents = calloc(cache_n_children(dir) + 1, sizeof(*dh->ents));
	if (!dh->ents)
		return -ENOMEM;
	if (dir->has_value && !save_local(dir)->hidden && dir->parent &&
	    add_entry(dh, NAMING_VALUE_NAME, dir->id, true) < 0)
		return -ENOMEM;
	uint32_t it = 0;
	for (struct cache_node *c; (c = cache_next_child(cache, dir, &it));) {
		if (!cache_is_dir(c) && !fs_visible_file(c))
			continue;
		char name[NAMING_NAME_MAX + 1];
		ssize_t len =
			naming_encode(cache_node_seg(c), c->seg_len, c->ns, name, sizeof(name));
		if (len < 0) {
			log_warn("a key segment of %u bytes is too long for a file name; not "
				 "listed",
				 c->seg_len);
			continue;
		}
		if (add_entry(dh, name, c->id, false) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* The listing is taken by the READDIR at offset 0, not here: a change that
 * lands between OPENDIR and READDIR has its invalidation processed by the
 * kernel before that READDIR, and a listing taken at OPENDIR would then be
 * cached by the kernel (cache_readdir) with the change missing, for good.
 * A change during a READDIR is safe: the notifier's inval_entry (NEW,
 * DELETE) waits for the directory lock getdents holds while it fills the
 * cache, so the inval_inode after it drops those pages. */
static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (stale_and_answered(req, fs))
		return;
	if (fs_history_ino(ino)) {
		fs_history_opendir(req, fs, ino, fi);
		return;
	}
	/* A name the listing leaves out must be gone for stat too: the
	 * invalidations queued so far reach the kernel first. Here, not in
	 * READDIR: getdents holds the directory's lock, which the notifier's
	 * inval_entry of a name in it waits for. Before the ENOENT of a
	 * directory gone too: its names are still in the kernel's cache until
	 * then (test_names_gone_from_a_listing_are_gone_for_stat). */
	fs_notify_wait(fs, 2000);
	cache_rdlock(fs->cache);
	struct cache_node *dir = dir_node(fs, ino);
	cache_unlock(fs->cache);
	if (!dir) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct dir_handle *dh = calloc(1, sizeof(*dh));
	if (!dh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uintptr_t)dh;
	fi->cache_readdir = cache_fresh(fs->cache);
	fi->keep_cache = cache_fresh(fs->cache);
	if (fuse_reply_open(req, fi) < 0)
		free(dh);
}

size_t fs_add_dirent(fuse_req_t req, char *buf, size_t size, const char *name,
		     struct fuse_entry_param *e, off_t i, bool plus)
{
	if (!plus)
		return fuse_add_direntry(req, buf, size, name, &e->attr, i + 1);
	if (i < 2)
		e->ino = 0; /* no lookup count for . and .. */
	return fuse_add_direntry_plus(req, buf, size, name, e, i + 1);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_readdir);
	fs_asker = fuse_req_ctx(req)->pid;
	if (fs_history_ino(ino)) {
		fs_history_readdir(req, fs, ino, size, off, fi, plus);
		return;
	}
	struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t pos = 0;
	/* Offsets: 0 = ".", 1 = "..", 2+i = entry i. */
	cache_rdlock(fs->cache);
	if (off == 0 || !dh->built) {
		/* a directory removed since OPENDIR lists as empty, as on tmpfs */
		struct cache_node *dir = dir_node(fs, ino);
		int ret = dir ? build_listing(fs->cache, dh, dir) : 0;
		if (!dir)
			free_listing(dh);
		dh->built = ret == 0;
		if (ret < 0) {
			cache_unlock(fs->cache);
			free_listing(dh);
			free(buf);
			fuse_reply_err(req, -ret);
			return;
		}
	}
	for (off_t i = off; (size_t)i < dh->n + 2; i++) {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		const char *name;
		struct cache_node *n = NULL;
		if (i < 2) {
			name = i == 0 ? "." : "..";
			e.attr.st_ino = ino;
			e.attr.st_mode = S_IFDIR;
		} else {
			struct dir_entry *de = &dh->ents[i - 2];
			name = de->name;
			n = cache_node_by_id(fs->cache, de->id);
			if (!n)
				continue; /* vanished since opendir */
			uint64_t eino = (!de->value_entry && cache_is_dir(n)) ? cache_dir_ino(n)
									      : cache_file_ino(n);
			if (fill_entry(fs, eino, &e) < 0)
				continue;
		}
		size_t ent = fs_add_dirent(req, buf + pos, size - pos, name, &e, i, plus);
		if (ent > size - pos)
			break;
		if (plus && n)
			cache_ref_lookup(fs->cache, n);
		pos += ent;
	}
	cache_unlock(fs->cache);
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			      struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (fs_history_ino(ino)) {
		fs_history_releasedir(fs_of(req), fi);
		fuse_reply_err(req, 0);
		return;
	}
	struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
	free_listing(dh);
	free(dh);
	fuse_reply_err(req, 0);
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	struct cache_stats cs;
	cache_get_stats(fs->cache, &cs);
	struct statvfs sv;
	memset(&sv, 0, sizeof(sv));
	/* etcd's default backend quota is 2 GiB; report it as the size so
	 * tools that check free space see sane numbers. */
	const uint64_t quota = 2ULL << 30;
	uint64_t used = cs.value_bytes / 4096;
	sv.f_bsize = sv.f_frsize = 4096;
	sv.f_blocks = quota / 4096;
	sv.f_bfree = sv.f_bavail = sv.f_blocks > used ? sv.f_blocks - used : 0;
	sv.f_files = cs.keys + 1000000;
	sv.f_ffree = sv.f_favail = 1000000;
	sv.f_namemax = NAMING_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* ---- xattrs ---- */

static const char *const file_xattrs[] = {
	"user.etcd.key",     "user.etcd.create_revision", "user.etcd.mod_revision",
	"user.etcd.version", "user.etcd.lease",
};
static const char *const root_xattrs[] = {
	"user.etcdfs.revision",
	"user.etcdfs.watch",
	"user.etcdfs.keys",
	"user.etcdfs.cache_hits",
	"user.etcdfs.cache_misses",
	"user.etcdfs.requests",
	"user.etcdfs.reads",
	"user.etcdfs.opens",
	"user.etcdfs.errors",
	"user.etcdfs.events",
	"user.etcdfs.resyncs",
	"user.etcdfs.cache_hit_rate",
	"user.etcdfs.watch_age_ms",
	"user.etcdfs.sync",
	"user.etcdfs.backend_ranges",
	"user.etcdfs.history_checks",
	"user.etcdfs.cache_read_ahead",
};

static void reply_xattr_value(fuse_req_t req, const char *val, size_t len, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, len);
}

/* user.etcdfs.error on a file, user.etcdfs.last_error on the root: why a
 * save was refused (src/save/why.c), where the user looks after vim says
 * only "E667: Fsync failed". Returns whether name was one of them. */
static bool reply_refusal(fuse_req_t req, struct fs *fs, fuse_ino_t ino, const char *name,
			  size_t size)
{
	char *msg = NULL;
	int ret;
	if (ino == FUSE_ROOT_ID && strcmp(name, "user.etcdfs.last_error") == 0) {
		ret = save_why_last(fs->save, &msg);
	} else if (ino != FUSE_ROOT_ID && strcmp(name, "user.etcdfs.error") == 0) {
		cache_rdlock(fs->cache);
		struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
		size_t klen = 0;
		char *key = n ? cache_node_key(fs->cache, n, &klen) : NULL;
		cache_unlock(fs->cache);
		ret = !n ? -ENOENT : !key ? -ENOMEM : save_why_get(fs->save, key, klen, &msg);
		free(key);
	} else {
		return false;
	}
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		reply_xattr_value(req, msg, strlen(msg), size);
	free(msg);
	return true;
}

/* The key of a file inode, for its per-key xattrs: returned with the cache
 * lock held (read), or NULL once the error is the reply (no such node:
 * ENOENT; no key, e.g. a directory's node without a value: ENODATA). */
static struct cache_node *xattr_node(fuse_req_t req, struct fs *fs, fuse_ino_t ino)
{
	cache_rdlock(fs->cache);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (n && n->has_value)
		return n;
	cache_unlock(fs->cache);
	fuse_reply_err(req, n ? ENODATA : ENOENT);
	return NULL;
}

/* "user.etcdfs.k8s.*" of a file: computed by the mount's hook from the
 * stored bytes (fetched like NAME%raw's). */
static void value_xattr(fuse_req_t req, struct fs *fs, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct cache_node *n = xattr_node(req, fs, ino);
	if (!n)
		return;
	cache_ref_open(fs->cache, n);
	size_t klen;
	char *key = cache_node_key(fs->cache, n, &klen);
	cache_unlock(fs->cache);
	char *val = NULL, *out = NULL;
	size_t vlen = 0, olen = 0;
	int ret = key ? cache_get_raw(fs->cache, n, &val, &vlen) : -ENOMEM;
	fs_release_node(fs, n);
	if (ret == 0)
		ret = fs->cfg.value_xattr(fs->cfg.value_xattr_arg, key, klen, val, vlen, name, &out,
					  &olen);
	if (ret == 0)
		reply_xattr_value(req, out, olen, size);
	else
		fuse_reply_err(req, fs_errno_out(ret));
	free(key);
	free(val);
	free(out);
}

static void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	char num[64];
	/*
	 * Only the user namespace exists here. ENOTSUP (not ENODATA) for the
	 * others says "this filesystem has no ACLs or security labels", which
	 * GNU ls caches per device: `ls -l` of 10,000 files then sends two
	 * GETXATTR requests instead of 20,000 (security.selinux and
	 * system.posix_acl_access for every entry; FUSE caches neither).
	 */
	if (strncmp(name, "user.", 5) != 0) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	if (fs_history_ino(ino)) {
		fs_history_getxattr(req, fs, ino, name, size);
		return;
	}
	if (reply_refusal(req, fs, ino, name, size))
		return;
	if (ino == FUSE_ROOT_ID && strncmp(name, "user.etcdfs.", 12) == 0) {
		struct cache_stats cs;
		cache_get_stats(fs->cache, &cs);
		const char *k = name + 12;
		uint64_t v;
		if (strcmp(k, "cache_hit_rate") == 0) {
			char rate[32];
			uint64_t all = cs.hits + cs.misses;
			int len = snprintf(rate, sizeof(rate), "%.1f%%",
					   all ? 100.0 * cs.hits / all : 100.0);
			reply_xattr_value(req, rate, len, size);
			return;
		}
		if (strcmp(k, "sync") == 0) {
			char line[160];
			cache_progress_text(line, sizeof(line), cs.sync_done, cs.sync_total,
					    cs.sync_elapsed_ms, !cs.syncing);
			reply_xattr_value(req, line, strlen(line), size);
			return;
		}
		if (strcmp(k, "watch") == 0) {
			const char *s = cs.health == CACHE_HEALTHY    ? "healthy"
					: cs.health == CACHE_DEGRADED ? "degraded"
								      : "syncing";
			reply_xattr_value(req, s, strlen(s), size);
			return;
		} else if (strcmp(k, "revision") == 0) {
			v = cs.revision;
		} else if (strcmp(k, "keys") == 0) {
			v = cs.keys;
		} else if (strcmp(k, "cache_hits") == 0) {
			v = cs.hits;
		} else if (strcmp(k, "cache_misses") == 0) {
			v = cs.misses;
		} else if (strcmp(k, "cache_read_ahead") == 0) {
			v = cs.read_ahead;
		} else if (strcmp(k, "requests") == 0) {
			v = fs->n_requests;
		} else if (strcmp(k, "reads") == 0) {
			v = fs->n_read;
		} else if (strcmp(k, "opens") == 0) {
			v = fs->n_open;
		} else if (strcmp(k, "errors") == 0) {
			v = log_error_count();
		} else if (strcmp(k, "events") == 0) {
			v = cs.events;
		} else if (strcmp(k, "resyncs") == 0) {
			v = cs.resyncs;
		} else if (strcmp(k, "watch_age_ms") == 0) {
			v = cs.watch_age_ms;
		} else if (strcmp(k, "backend_ranges") == 0) {
			v = kv_range_count();
		} else if (strcmp(k, "history_checks") == 0) {
			struct history_stats hs;
			history_get_stats(fs->history, &hs);
			v = hs.checks;
		} else {
			fuse_reply_err(req, ENODATA);
			return;
		}
		int len = snprintf(num, sizeof(num), "%" PRIu64, v);
		reply_xattr_value(req, num, len, size);
		return;
	}
	if (strncmp(name, "user.etcdfs.k8s.", 16) == 0 && cache_ino_kind(ino) != CACHE_INO_DIR &&
	    fs->cfg.value_xattr) {
		value_xattr(req, fs, ino, name, size);
		return;
	}
	if (strncmp(name, "user.etcd.", 10) != 0 || (cache_ino_kind(ino) == CACHE_INO_DIR)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	struct cache_node *n = xattr_node(req, fs, ino);
	if (!n)
		return;
	const char *k = name + 10;
	int64_t v;
	if (strcmp(k, "key") == 0) {
		size_t len;
		char *key = cache_node_key(fs->cache, n, &len);
		cache_unlock(fs->cache);
		if (!key) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		reply_xattr_value(req, key, len, size);
		free(key);
		return;
	} else if (strcmp(k, "create_revision") == 0) {
		v = n->create_revision;
	} else if (strcmp(k, "mod_revision") == 0) {
		v = n->mod_revision;
	} else if (strcmp(k, "version") == 0) {
		v = n->version;
	} else if (strcmp(k, "lease") == 0) {
		v = n->lease;
	} else {
		cache_unlock(fs->cache);
		fuse_reply_err(req, ENODATA);
		return;
	}
	cache_unlock(fs->cache);
	int len = snprintf(num, sizeof(num), "%" PRId64, v);
	reply_xattr_value(req, num, len, size);
}

static void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (fs_history_ino(ino)) {
		fs_history_listxattr(req, fs, ino, size);
		return;
	}
	char buf[1024];
	size_t pos = 0;
	const char *const *names = NULL;
	size_t count = 0;
	if (ino == FUSE_ROOT_ID) {
		names = root_xattrs;
		count = sizeof(root_xattrs) / sizeof(root_xattrs[0]);
	} else if (cache_ino_kind(ino) != CACHE_INO_DIR) {
		cache_rdlock(fs->cache);
		struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
		bool has = n && n->has_value;
		cache_unlock(fs->cache);
		if (has) {
			names = file_xattrs;
			count = sizeof(file_xattrs) / sizeof(file_xattrs[0]);
		}
	}
	for (size_t i = 0; i < count; i++) {
		size_t l = strlen(names[i]) + 1;
		memcpy(buf + pos, names[i], l);
		pos += l;
	}
	reply_xattr_value(req, buf, pos, size);
}

static void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			   size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	fuse_reply_err(req, ENOTSUP);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_op_init,
	.lookup = fs_op_lookup,
	.forget = fs_op_forget,
	.forget_multi = fs_op_forget_multi,
	.getattr = fs_op_getattr,
	.setattr = fs_op_setattr,
	.symlink = fs_op_symlink,
	.readlink = fs_op_readlink,
	.write = fs_op_write,
	.flush = fs_op_flush,
	.fsync = fs_op_fsync,
	.fsyncdir = fs_op_fsyncdir,
	.mknod = fs_op_mknod,
	.mkdir = fs_op_mkdir,
	.unlink = fs_op_unlink,
	.rmdir = fs_op_rmdir,
	.rename = fs_op_rename,
	.create = fs_op_create,
	.open = fs_op_open,
	.read = fs_op_read,
	.release = fs_op_release,
	.opendir = fs_op_opendir,
	.readdir = fs_op_readdir,
	.readdirplus = fs_op_readdirplus,
	.releasedir = fs_op_releasedir,
	.statfs = fs_op_statfs,
	.getxattr = fs_op_getxattr,
	.listxattr = fs_op_listxattr,
	.setxattr = fs_op_setxattr,
};

/* libfuse's own messages go through our log. */
static void fuse_log_hook(enum fuse_log_level level, const char *fmt, va_list ap)
{
	log_vmsg((int)level, fmt, ap);
}

int fs_new(const struct fs_config *cfg, struct fs **out)
{
	struct fs *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->cfg = *cfg;
	fs->uid = getuid();
	fs->gid = getgid();
	clock_gettime(CLOCK_REALTIME, &fs->mount_time);
	pthread_mutex_init(&fs->nq_lock, NULL);
	pthread_mutex_init(&fs->rd_lock, NULL);
	pthread_mutex_init(&fs->rename_mu, NULL);
	pthread_cond_init(&fs->nq_cv, NULL);
	pthread_cond_init(&fs->nq_done_cv, NULL);
	fuse_set_log_func(fuse_log_hook);
	*out = fs;
	return 0;
}

int fs_set_cache(struct fs *fs, struct cache *cache)
{
	struct save_config scfg = {
		.kv = fs->cfg.kv,
		.cache = cache,
		.conflict_dir = fs->cfg.conflict_dir,
		.shadow_patterns = fs->cfg.shadow_patterns,
		.uid = fs->uid,
		.encode = fs->cfg.encode,
		.encode_arg = fs->cfg.encode_arg,
		.encode_applies = fs->cfg.encode_applies,
	};
	int ret = save_new(&scfg, &fs->save);
	if (ret < 0)
		return ret;
	fs->cache = cache;
	return fs_history_new(fs);
}

void fs_set_read_only(struct fs *fs, const char *reason)
{
	fs->cfg.read_only = true;
	fs->cfg.ro_reason = reason;
}

int fs_serve(struct fs *fs, struct fuse_args *args, const char *mountpoint, bool single_thread,
	     void (*ready)(void *arg), void *ready_arg)
{
	int ret = 0;
	if (fs->cfg.read_only) {
		/* The kernel refuses every write itself: a mount whose opens do
		 * not reach us (no_open) could not refuse an open for writing,
		 * and the kernel would truncate its own copy at O_TRUNC. Why is
		 * said at once, as no refusal reaches us to say it. */
		if (fuse_opt_add_arg(args, "-oro") < 0)
			return -ENOMEM;
		fs_explain_read_only(fs, "read-only mount");
	}
	struct fuse_session *se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), fs);
	if (!se)
		return -EINVAL;
	if (fuse_set_signal_handlers(se) != 0) {
		ret = -EIO;
		goto out_destroy;
	}
	if (fuse_session_mount(se, mountpoint) != 0) {
		log_err("cannot mount on %s", mountpoint);
		ret = -EIO;
		goto out_signals;
	}
	fs->se = se;
	fs_want_dio_mmap(se, NULL);
	ret = fs_notifier_start(fs);
	if (ret < 0)
		goto out_unmount;
	ret = save_start(fs->save);
	if (ret < 0) {
		fs_notifier_stop(fs);
		goto out_unmount;
	}
	if (ready)
		ready(ready_arg);
	if (single_thread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, 0);
		fuse_loop_cfg_set_max_threads(lc, 16);
		ret = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	if (ret > 0)
		ret = 0;     /* terminated by a signal */
	save_stop(fs->save); /* commits pending deletes */
	fs_notifier_stop(fs);
out_unmount:
	fuse_session_unmount(se);
	fs->se = NULL;
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	return ret;
}

void fs_destroy(struct fs *fs)
{
	if (!fs)
		return;
	fs_notifier_stop(fs);
	save_destroy(fs->save);
	history_destroy(fs->history);
	pthread_mutex_destroy(&fs->nq_lock);
	pthread_mutex_destroy(&fs->rd_lock);
	pthread_mutex_destroy(&fs->rename_mu);
	pthread_cond_destroy(&fs->nq_cv);
	free(fs);
}
