/* history.c: NAME%history/, a key's retained versions as read-only files
 * (src/history does the fetching; docs/naming.md says what is shown). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs_int.h"
#include "core/log.h"
#include "naming.h"

struct hist_dir {
	uint64_t id;
	struct history_ver_info *ents;
	size_t n;
};

static void set_ts(struct timespec *ts, int64_t ns)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
}

static void fill_times(struct fs *fs, int64_t ns, struct stat *st)
{
	struct timespec t = fs->mount_time;
	if (ns)
		set_ts(&t, ns);
	st->st_atim = st->st_mtim = st->st_ctim = t;
}

static void dir_stat(struct fs *fs, uint64_t id, int64_t mtime_ns, bool secret, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = id * 4 + FS_INO_HISTORY;
	st->st_mode = S_IFDIR | (secret ? 0500 : 0555);
	st->st_nlink = 2;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = 4096;
	st->st_blocks = 8;
	st->st_blksize = 4096;
	fill_times(fs, mtime_ns, st);
}

static void ver_stat(struct fs *fs, const struct history_ver_info *v, bool secret, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = v->ino;
	st->st_mode = S_IFREG | (secret ? 0400 : 0444);
	st->st_nlink = 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = v->size;
	st->st_blocks = (v->size + 511) / 512;
	st->st_blksize = 4096;
	fill_times(fs, v->mtime_ns, st);
}

/* The node whose history id is, if it still shows a key. Cache lock held. */
static struct cache_node *key_node(struct fs *fs, uint64_t id)
{
	struct cache_node *n = cache_node_by_id(fs->cache, id);
	if (!n || !n->has_value || save_local(n)->hidden || save_local(n)->local_file)
		return NULL;
	return n;
}

int fs_history_attr(struct fs *fs, uint64_t ino, struct stat *st)
{
	if (!history_is_ino(ino)) {
		struct cache_node *n = key_node(fs, cache_ino_id(ino));
		if (!n || !history_known(fs->history, n->id))
			return -ENOENT;
		dir_stat(fs, n->id, n->mtime_ns, fs_is_secret(fs, n), st);
		return 0;
	}
	struct history_ver_info v;
	int ret = history_stat(fs->history, ino, &v);
	if (ret < 0)
		return ret;
	struct cache_node *n = cache_node_by_id(fs->cache, v.id);
	ver_stat(fs, &v, n && fs_is_secret(fs, n), st);
	return 0;
}

/* Fills head from n (cache lock held); head->key is malloc'd. */
static int head_of(struct fs *fs, struct cache_node *n, struct history_head *head, bool *secret)
{
	size_t len;
	char *key = cache_node_key(fs->cache, n, &len);
	if (!key)
		return -ENOMEM;
	*head = (struct history_head){.id = n->id,
				      .key = key,
				      .key_len = len,
				      .mod_revision = n->mod_revision,
				      .create_revision = n->create_revision,
				      .mtime_ns = n->mtime_ns};
	*secret = fs_is_secret(fs, n);
	return 0;
}

/* Brings id's history up to date from its node; with ref, takes a lookup
 * of the directory. Without the cache lock. */
static int refresh(struct fs *fs, uint64_t id, bool ref, int64_t *mtime_ns, bool *secret)
{
	cache_rdlock(fs->cache);
	struct cache_node *n = key_node(fs, id);
	struct history_head head;
	int ret = n ? head_of(fs, n, &head, secret) : -ENOENT;
	cache_unlock(fs->cache);
	if (ret < 0)
		return ret;
	ret = history_refresh(fs->history, &head, ref);
	*mtime_ns = head.mtime_ns;
	free((char *)head.key);
	return ret;
}

void fs_history_lookup_dir(fuse_req_t req, struct fs *fs, struct cache_node *n)
{
	uint64_t id = n ? n->id : 0;
	bool ok = n && key_node(fs, id);
	cache_unlock(fs->cache);
	if (!ok) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct fs_intr it;
	fs_intr_arm(req, &it);
	int64_t mtime_ns = 0;
	bool secret = false;
	int ret = refresh(fs, id, true, &mtime_ns, &secret);
	if (!fs_intr_claim(&it)) {
		if (ret == 0)
			history_dir_unref(fs->history, id, 1);
		return; /* interrupted: EINTR was the reply */
	}
	if (ret < 0) {
		fuse_reply_err(req, fs_errno_out(ret));
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = id * 4 + FS_INO_HISTORY;
	e.generation = 1;
	dir_stat(fs, id, mtime_ns, secret, &e.attr);
	/* short lifetimes: the notifier does not track histories */
	e.attr_timeout = e.entry_timeout = fs->cfg.timeout_stale;
	if (fuse_reply_entry(req, &e) < 0)
		history_dir_unref(fs->history, id, 1);
}

/* A version's name: its mod_revision in decimal, as printed (no sign, no
 * leading zero). 0 when name is not one. */
static int64_t name_rev(const char *name)
{
	int64_t v = 0;
	if (!*name || (name[0] == '0'))
		return 0;
	for (const char *p = name; *p; p++) {
		if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (*p - '0');
	}
	return v;
}

void fs_history_lookup_version(fuse_req_t req, struct fs *fs, fuse_ino_t parent, const char *name)
{
	uint64_t id = cache_ino_id(parent);
	int64_t rev = name_rev(name);
	cache_rdlock(fs->cache);
	struct cache_node *n = key_node(fs, id);
	bool secret = n && fs_is_secret(fs, n);
	cache_unlock(fs->cache);
	struct history_ver_info v;
	int ret = n && rev ? history_lookup(fs->history, id, rev, false, &v) : -ENOENT;
	if (ret == 0)
		ret = history_check(fs->history, v.ino);
	if (ret == 0)
		ret = history_lookup(fs->history, id, rev, true, &v);
	if (ret < 0) {
		fuse_reply_err(req, fs_errno_out(ret));
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = v.ino;
	e.generation = 1;
	ver_stat(fs, &v, secret, &e.attr);
	e.attr_timeout = e.entry_timeout = fs->cfg.timeout_stale;
	if (fuse_reply_entry(req, &e) < 0)
		history_ver_unref(fs->history, v.ino, 1);
}

void fs_history_forget(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
	if (history_is_ino(ino))
		history_ver_unref(fs->history, ino, nlookup);
	else
		history_dir_unref(fs->history, cache_ino_id(ino), nlookup);
}

void fs_history_opendir(fuse_req_t req, struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (history_is_ino(ino)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	struct hist_dir *hd = calloc(1, sizeof(*hd));
	if (!hd) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	hd->id = cache_ino_id(ino);
	int ret = history_hold(fs->history, hd->id);
	if (ret < 0) {
		free(hd);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)hd;
	fi->cache_readdir = 0;
	fi->keep_cache = 0;
	if (fuse_reply_open(req, fi) < 0) {
		history_release(fs->history, hd->id);
		free(hd);
	}
}

void fs_history_readdir(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi, bool plus)
{
	struct hist_dir *hd = (struct hist_dir *)(uintptr_t)fi->fh;
	bool secret = false;
	uint64_t up = FUSE_ROOT_ID; /* the directory NAME%history is in */
	cache_rdlock(fs->cache);
	struct cache_node *n = key_node(fs, hd->id);
	secret = n && fs_is_secret(fs, n);
	if (n && cache_is_dir(n))
		up = cache_dir_ino(n); /* DIR/%value%history */
	else if (n && n->parent)
		up = cache_dir_ino(n->parent);
	cache_unlock(fs->cache);
	int ret = 0;
	if (off == 0) {
		/* the listing is taken at offset 0, with the key's newer
		 * versions and a compaction check when one is due */
		int64_t mtime_ns;
		ret = refresh(fs, hd->id, false, &mtime_ns, &secret);
		free(hd->ents);
		hd->ents = NULL;
		hd->n = 0;
		if (ret == 0)
			ret = history_list(fs->history, hd->id, &hd->ents, &hd->n);
		if (ret == -ENOENT)
			ret = 0; /* the key is gone: an empty listing, as tmpfs */
	}
	if (ret < 0) {
		fuse_reply_err(req, fs_errno_out(ret));
		return;
	}
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t pos = 0;
	for (off_t i = off; (size_t)i < hd->n + 2; i++) {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		char name[24];
		if (i < 2) {
			snprintf(name, sizeof(name), "%s", i == 0 ? "." : "..");
			e.attr.st_ino = i == 0 ? ino : up;
			e.attr.st_mode = S_IFDIR;
		} else {
			const struct history_ver_info *v = &hd->ents[i - 2];
			snprintf(name, sizeof(name), "%" PRId64, v->mod_revision);
			struct history_ver_info cur;
			if (history_stat(fs->history, v->ino, &cur) < 0)
				continue; /* compacted since the listing was taken */
			ver_stat(fs, &cur, secret, &e.attr);
			e.ino = cur.ino;
			e.generation = 1;
			e.attr_timeout = e.entry_timeout = fs->cfg.timeout_stale;
		}
		size_t ent = fs_add_dirent(req, buf + pos, size - pos, name, &e, i, plus);
		if (ent > size - pos)
			break;
		if (plus && i >= 2)
			history_ver_ref(fs->history, e.ino);
		pos += ent;
	}
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

void fs_history_releasedir(struct fs *fs, struct fuse_file_info *fi)
{
	struct hist_dir *hd = (struct hist_dir *)(uintptr_t)fi->fh;
	history_release(fs->history, hd->id);
	free(hd->ents);
	free(hd);
}

void fs_history_open(fuse_req_t req, struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!history_is_ino(ino)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EACCES); /* as NAME%raw */
		return;
	}
	int ret = history_check(fs->history, ino);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	/* A version never changes: its pages may stay. */
	fi->fh = 0;
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

void fs_history_read(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size, off_t off)
{
	char *buf = malloc(size ? size : 1);
	ssize_t ret = buf ? history_read(fs->history, ino, buf, size, off) : -ENOMEM;
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, ret);
	free(buf);
}

static const char *const ver_xattrs[] = {
	"user.etcd.key",     "user.etcd.create_revision", "user.etcd.mod_revision",
	"user.etcd.version", "user.etcd.lease",
};

void fs_history_getxattr(fuse_req_t req, struct fs *fs, fuse_ino_t ino, const char *name,
			 size_t size)
{
	struct history_ver_info v;
	if (!history_is_ino(ino) || strncmp(name, "user.etcd.", 10) != 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (history_stat(fs->history, ino, &v) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	const char *k = name + 10;
	char num[32];
	char *val = num;
	size_t len = 0;
	int64_t x;
	if (strcmp(k, "key") == 0) {
		int ret = history_key(fs->history, ino, &val, &len);
		if (ret < 0) {
			fuse_reply_err(req, -ret);
			return;
		}
	} else {
		if (strcmp(k, "create_revision") == 0)
			x = v.create_revision;
		else if (strcmp(k, "mod_revision") == 0)
			x = v.mod_revision;
		else if (strcmp(k, "version") == 0)
			x = v.version;
		else if (strcmp(k, "lease") == 0)
			x = v.lease;
		else {
			fuse_reply_err(req, ENODATA);
			return;
		}
		len = snprintf(num, sizeof(num), "%" PRId64, x);
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, len);
	if (val != num)
		free(val);
}

void fs_history_listxattr(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size)
{
	char buf[256];
	size_t pos = 0;
	struct history_ver_info v;
	if (history_is_ino(ino) && history_stat(fs->history, ino, &v) == 0) {
		for (size_t i = 0; i < sizeof(ver_xattrs) / sizeof(ver_xattrs[0]); i++) {
			size_t l = strlen(ver_xattrs[i]) + 1;
			memcpy(buf + pos, ver_xattrs[i], l);
			pos += l;
		}
	}
	if (size == 0)
		fuse_reply_xattr(req, pos);
	else if (size < pos)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, pos);
}

int fs_history_new(struct fs *fs)
{
	struct history_config hc = {
		.kv = fs->cache->cfg.kv,
		.render = fs->cache->cfg.render,
		.render_arg = fs->cache->cfg.render_arg,
		.value_time = fs->cache->cfg.value_time,
		.value_time_arg = fs->cache->cfg.value_time_arg,
	};
	return history_new(&hc, &fs->history);
}
