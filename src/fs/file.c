/* file.c: file handles: open, read, write, flush, fsync and release.
 *
 * Each open handle buffers its content; a save (flush, fsync, release)
 * commits it through src/save as ONE transaction that compares the key's
 * mod_revision with the one seen at open (create_revision == 0 for a new
 * key). Shadows (editor temp files) keep their content in this mount. See
 * docs/writes.md.
 *
 * Locking: the cache lock is never held across a backend call. A handle's
 * buffer is protected by its own mutex (fh->mu), taken before the cache
 * lock when both are needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "fs_int.h"

#define HOT_MS 1000

void fs_release_node(struct fs *fs, struct cache_node *n)
{
	cache_wrlock(fs->cache);
	cache_unref_open(fs->cache, n);
	cache_unlock(fs->cache);
}

int fs_commit(struct fs *fs, struct fhandle *fh)
{
	if (fh->failed)
		return fh->failed;
	if (!fh->dirty)
		return 0;
	struct cache *c = fs->cache;
	struct cache_node *n = fh->node;
	cache_wrlock(c);
	if (n->detached || save_local(n)->hidden) {
		/* Unlinked while open: its content has nowhere to go. */
		cache_unlock(c);
		fh->dirty = false;
		return 0;
	}
	if (save_local(n)->shadow) {
		char *copy = malloc(fh->len ? fh->len : 1);
		if (!copy) {
			cache_unlock(c);
			return -ENOMEM;
		}
		memcpy(copy, fh->buf, fh->len);
		struct cache_local *l = save_local_mut(n); /* a shadow has one */
		free(l->local_data);
		l->local_data = copy;
		l->local_len = fh->len;
		l->pending_size = -1;
		cache_unlock(c);
		fh->dirty = false;
		return 0;
	}
	size_t klen;
	char *key = cache_node_key(c, n, &klen);
	cache_unlock(c);
	if (!key)
		return -ENOMEM;
	int ret = 0;
	if (!fh->base_absent) {
		/* Content that did not change writes nothing. */
		char *cur;
		size_t curlen;
		int64_t currev;
		if (cache_get_content(c, n, &cur, &curlen, &currev) == 0) {
			bool same = currev == fh->base_rev && curlen == fh->len &&
				    memcmp(cur, fh->buf, curlen) == 0;
			free(cur);
			if (same) {
				fh->dirty = false;
				cache_wrlock(c);
				save_set_pending(n, -1);
				cache_unlock(c);
				goto out;
			}
		}
	}
	int64_t rev;
	char *raw;
	size_t rawlen;
	bool owned;
	ret = save_encode(fs->save, key, klen, fh->buf, fh->len, fh->base_rev, fh->base_absent,
			  &raw, &rawlen, &owned);
	if (ret < 0) {
		if (ret == -EINVAL || ret == -EPERM)
			fh->failed = ret;
		goto out;
	}
	ret = save_store(fs->save, key, klen, raw, rawlen, fh->base_rev, fh->base_absent, &rev);
	if (owned)
		free(raw);
	if (ret == 0) {
		fh->base_rev = rev;
		fh->base_absent = false;
		fh->dirty = false;
		cache_wrlock(c);
		save_mark_stored(n);
		n->kernel_rev = rev;
		cache_unlock(c);
	} else if (ret == -ESTALE || ret == -EFBIG) {
		fh->failed = ret;
		/* A rejected new file must not linger as local state: show
		 * what etcd has. */
		cache_wrlock(c);
		if (save_local(n)->local_file && !save_local(n)->shadow) {
			struct cache_local *l = save_local_mut(n); /* a local file has one */
			l->local_file = false;
			l->pending_size = -1;
			if (!n->has_value)
				cache_prune_locked(c, n);
		}
		cache_unlock(c);
	}
out:
	free(key);
	return ret;
}

int fs_load_handle(struct fs *fs, struct fhandle *fh, bool trunc)
{
	struct cache *c = fs->cache;
	struct cache_node *n = fh->node;
	cache_rdlock(c);
	bool local = save_local(n)->local_file;
	if (local) {
		fh->base_absent = save_local(n)->origin_rev == 0 && !n->has_value;
		fh->base_rev = n->has_value ? n->mod_revision : save_local(n)->origin_rev;
		if (!trunc && save_local(n)->local_len) {
			fh->buf = malloc(save_local(n)->local_len);
			if (!fh->buf) {
				cache_unlock(c);
				return -ENOMEM;
			}
			memcpy(fh->buf, save_local(n)->local_data, save_local(n)->local_len);
			fh->len = fh->cap = save_local(n)->local_len;
		}
		/* a pending new (or re-created) key is stored at close even
		 * when empty; unchanged content is still not written */
		fh->dirty = !save_local(n)->shadow;
		cache_unlock(c);
		return 0;
	}
	cache_unlock(c);
	char *cur = NULL;
	size_t curlen = 0;
	int64_t rev = 0;
	int ret = cache_get_content(c, n, &cur, &curlen, &rev);
	if (ret < 0)
		return ret;
	fh->base_rev = rev;
	fh->base_absent = false;
	if (trunc) {
		free(cur);
		fh->dirty = curlen != 0;
	} else {
		fh->buf = cur;
		fh->len = fh->cap = curlen;
	}
	return 0;
}

/* NAME%raw: a read-only snapshot of the stored bytes, read with direct I/O
 * (its pages are not tracked by the notifier). */
static void open_raw(fuse_req_t req, struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi,
		     bool writable)
{
	if (writable) {
		fuse_reply_err(req, EACCES);
		return;
	}
	cache_rdlock(fs->cache);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (!n || !n->has_value) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, ENOENT);
		return;
	}
	cache_ref_open(fs->cache, n);
	cache_unlock(fs->cache);
	struct fhandle *fh = calloc(1, sizeof(*fh));
	int ret = fh ? cache_get_raw(fs->cache, n, &fh->buf, &fh->len) : -ENOMEM;
	if (ret < 0) {
		free(fh);
		fs_release_node(fs, n);
		fuse_reply_err(req, fs_errno_out(ret));
		return;
	}
	pthread_mutex_init(&fh->mu, NULL);
	fh->node = n;
	fh->snapshot = true;
	fh->raw = true;
	fi->fh = (uintptr_t)fh;
	fi->direct_io = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) < 0) {
		free(fh->buf);
		free(fh);
		fs_release_node(fs, n);
	}
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_open);
	if (cache_ino_kind(ino) == CACHE_INO_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	bool trunc = writable && (fi->flags & O_TRUNC);
	if (cache_ino_kind(ino) == CACHE_INO_RAW) {
		open_raw(req, fs, ino, fi, writable);
		return;
	}
	if ((writable || (fi->flags & O_TRUNC)) && fs->cfg.read_only) {
		fs_reply_erofs(fs, req);
		return;
	}
	cache_rdlock(fs->cache);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (!n || (!fs_visible_file(n) && !n->detached)) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (writable && n->detached) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, ENOENT);
		return;
	}
	cache_ref_open(fs->cache, n);
	bool local = save_local(n)->local_file;
	cache_unlock(fs->cache);
	bool fresh = cache_fresh(fs->cache);
	int ret;
	if ((!fresh || fs->cfg.linearizable) && !local) {
		/* Stale cache: read the key itself, so the open fails now if
		 * etcd is away and the content is current if it is not. */
		struct fs_intr it;
		fs_intr_arm(req, &it);
		ret = cache_revalidate(fs->cache, n);
		if (!fs_intr_claim(&it)) {
			fs_release_node(fs, n);
			return; /* interrupted: EINTR was the reply */
		}
		if (ret < 0)
			goto out_unref;
	}
	struct fhandle *fh = calloc(1, sizeof(*fh));
	if (!fh) {
		ret = -ENOMEM;
		goto out_unref;
	}
	pthread_mutex_init(&fh->mu, NULL);
	fh->node = n;
	fh->writable = writable;
	if (writable) {
		ret = fs_load_handle(fs, fh, trunc);
		if (ret < 0) {
			free(fh);
			goto out_unref;
		}
		if (trunc && local) {
			cache_rdlock(fs->cache);
			save_set_pending(n, 0);
			cache_unlock(fs->cache);
		}
		/* The buffer is private to this handle until its save, so
		 * the handle bypasses the shared page cache (and the
		 * kernel's i_size, which another writer may move). */
		fi->keep_cache = 0;
		fi->direct_io = 1;
		fh->defer = trunc;
	} else {
		/* A file that changed within the last second is "hot": its
		 * readers get direct I/O from a private copy, so a reader
		 * racing a writer never mixes two versions. Other files are
		 * served from the page cache, kept only if it holds the
		 * current revision (after any change the next open rereads). */
		int64_t t = util_now_ms();
		cache_rdlock(fs->cache);
		int64_t cur = n->mod_revision;
		bool hot = !local && n->changed_ms && t - n->changed_ms < HOT_MS;
		bool same = __atomic_load_n(&n->kernel_rev, __ATOMIC_RELAXED) == cur;
		if (!hot)
			__atomic_store_n(&n->kernel_rev, cur, __ATOMIC_RELAXED);
		cache_unlock(fs->cache);
		if (hot) {
			int64_t rev;
			ret = cache_get_content(fs->cache, n, &fh->buf, &fh->len, &rev);
			if (ret < 0) {
				free(fh);
				goto out_unref;
			}
			fh->snapshot = true;
		}
		fi->direct_io = local || hot;
		fi->keep_cache = fresh && same && !local && !hot;
		/* A reader has nothing to save: spare the close its FLUSH. */
		fi->noflush = 1;
	}
	fi->fh = (uintptr_t)fh;
	if (fuse_reply_open(req, fi) < 0) {
		free(fh->buf);
		free(fh);
		fs_release_node(fs, n);
	}
	return;
out_unref:
	fs_release_node(fs, n);
	fuse_reply_err(req, fs_errno_out(ret));
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_read);
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	if (fh->snapshot) {
		pthread_mutex_lock(&fh->mu);
		if (off == 0 && fh->read_any && !fh->raw) {
			/* reading again from the start: take the current version */
			char *nb;
			size_t nl;
			int64_t rev;
			if (cache_get_content(fs->cache, fh->node, &nb, &nl, &rev) == 0) {
				free(fh->buf);
				fh->buf = nb;
				fh->len = nl;
			}
		}
		fh->read_any = true;
	} else if (fh->writable) {
		pthread_mutex_lock(&fh->mu);
	}
	if (fh->writable || fh->snapshot) {
		size_t cnt = (size_t)off < fh->len ? fh->len - off : 0;
		if (cnt > size)
			cnt = size;
		/* Copy, then unlock, then reply: once the reply is out the
		 * kernel may release (free) this handle at any moment. */
		char *tmp = malloc(cnt ? cnt : 1);
		if (tmp && cnt)
			memcpy(tmp, fh->buf + off, cnt);
		pthread_mutex_unlock(&fh->mu);
		if (tmp)
			fuse_reply_buf(req, tmp, cnt);
		else
			fuse_reply_err(req, ENOMEM);
		free(tmp);
		return;
	}
	struct cache_node *n = fh->node;
	cache_rdlock(fs->cache);
	if (save_local(n)->local_file) {
		size_t cnt =
			(size_t)off < save_local(n)->local_len ? save_local(n)->local_len - off : 0;
		if (cnt > size)
			cnt = size;
		fuse_reply_buf(req,
			       save_local(n)->local_data ? save_local(n)->local_data + off : NULL,
			       cnt);
		cache_unlock(fs->cache);
		return;
	}
	cache_unlock(fs->cache);
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n_read = cache_read(fs->cache, n, buf, size, off);
	if (n_read < 0)
		fuse_reply_err(req, fs_errno_out(n_read));
	else
		fuse_reply_buf(req, buf, n_read);
	free(buf);
}

static int grow(struct fhandle *fh, size_t need)
{
	if (need <= fh->cap)
		return 0;
	size_t ncap = fh->cap ? fh->cap : 4096;
	while (ncap < need)
		ncap *= 2;
	char *nb = realloc(fh->buf, ncap);
	if (!nb)
		return -ENOMEM;
	fh->buf = nb;
	fh->cap = ncap;
	return 0;
}

int fs_fh_set_len(struct fhandle *fh, size_t len)
{
	if (len > fh->len) {
		if (grow(fh, len) < 0)
			return -ENOMEM;
		memset(fh->buf + fh->len, 0, len - fh->len);
	}
	fh->len = len;
	return 0;
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	if (!fh->writable) {
		fuse_reply_err(req, EBADF);
		return;
	}
	pthread_mutex_lock(&fh->mu);
	if (fi->flags & O_APPEND)
		off = fh->len;
	size_t end = off + size;
	/* etcd never takes more than its request limit: fail early. */
	if (end > (64u << 20) || grow(fh, end) < 0) {
		pthread_mutex_unlock(&fh->mu);
		fuse_reply_err(req, end > (64u << 20) ? EFBIG : ENOMEM);
		return;
	}
	if ((size_t)off > fh->len)
		memset(fh->buf + fh->len, 0, off - fh->len);
	memcpy(fh->buf + off, buf, size);
	if (end > fh->len)
		fh->len = end;
	fh->dirty = true;
	fh->defer = false;
	if (save_local(fh->node)->local_file)
		save_set_pending(fh->node, (int64_t)fh->len);
	pthread_mutex_unlock(&fh->mu);
	fuse_reply_write(req, size);
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	int ret = 0;
	if (fh->writable) {
		pthread_mutex_lock(&fh->mu);
		bool was_dirty = fh->dirty;
		/* A shell's "cmd > file" opens with O_TRUNC, dup2()s and
		 * closes the original fd before cmd writes: committing at that
		 * close would store an empty value first. */
		if (!fh->defer)
			ret = fs_commit(fs, fh);
		pthread_mutex_unlock(&fh->mu);
		if (was_dirty && ret == 0)
			fs_notify_wait(fs, 2000);
	}
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : 0);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync;
	struct fs *fs = fs_of(req);
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	int ret = 0;
	if (fh->writable) {
		pthread_mutex_lock(&fh->mu);
		bool was_dirty = fh->dirty;
		ret = fs_commit(fs, fh);
		pthread_mutex_unlock(&fh->mu);
		if (was_dirty && ret == 0)
			fs_notify_wait(fs, 2000);
	}
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : 0);
}

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	save_flush_deferred(fs_of(req)->save, true);
	fuse_reply_err(req, 0);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	if (fh->writable) {
		pthread_mutex_lock(&fh->mu);
		if (fh->dirty && !fh->failed) {
			int ret = fs_commit(fs, fh);
			if (ret < 0)
				log_err("save at close failed: %s", strerror(-ret));
		}
		cache_rdlock(fs->cache);
		save_set_pending(fh->node, -1);
		cache_unlock(fs->cache);
		pthread_mutex_unlock(&fh->mu);
	}
	fs_release_node(fs, fh->node);
	pthread_mutex_destroy(&fh->mu);
	free(fh->buf);
	free(fh);
	fuse_reply_err(req, 0);
}
