/* write.c: file handles and the write path.
 *
 * Each open handle buffers its content; a save (flush, fsync, release)
 * commits it as ONE etcd transaction that compares the key's mod_revision
 * with the one seen at open (create_revision == 0 for a new key). Editor and
 * tool temp files ("shadows", matched by --shadow patterns) live only in
 * this mount, so that rename(temp -> key) is one compare-and-swap put and
 * rename(key -> backup) followed by re-creating key is one put on the key.
 * unlink is deferred by a short grace period so that unlink + create of the
 * same name (install(1)) is one put too. See docs/writes.md.
 *
 * Locking: the cache lock is never held across a backend call. A handle's
 * buffer is protected by its own mutex (fh->mu), taken before the cache
 * lock when both are needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_int.h"
#include "core/log.h"
#include "naming.h"
#include "core/util.h"

#define DEFER_MS 50
#define HOT_MS 1000
#define DEFAULT_SHADOW ".*.sw?:.*.sw??:4913:*~:*.bak:.#*:#*#:sed??????:XX??????:.*.??????"

struct fhandle {
	struct cache_node *node; /* referenced through nopen */
	bool writable;
	pthread_mutex_t mu;
	/* protected by mu */
	char *buf;
	size_t len, cap;
	bool dirty;
	bool snapshot; /* read-only handle of a hot file: reads come from
			  buf, one version per pass (re-read from 0 refreshes) */
	bool read_any;
	bool raw;	  /* NAME%raw: never refreshed */
	bool defer;	  /* truncated or created, nothing written yet: a
			     flush (close of a dup) does not commit; release does */
	int failed;	  /* sticky error of a rejected save */
	int64_t base_rev; /* mod_revision the content was read at */
	bool base_absent; /* the key did not exist: compare create_revision 0 */
};

struct deferred_del {
	uint64_t id; /* hidden node */
	char *key;
	size_t key_len;
	int64_t rev;
	int64_t due_ms;
	struct deferred_del *next;
};

static bool is_shadow_name(struct fs *fs, const char *name)
{
	const char *pats = fs->cfg.shadow_patterns ? fs->cfg.shadow_patterns : DEFAULT_SHADOW;
	char pat[256];
	while (*pats) {
		const char *end = strchr(pats, ':');
		size_t len = end ? (size_t)(end - pats) : strlen(pats);
		if (len && len < sizeof(pat)) {
			memcpy(pat, pats, len);
			pat[len] = 0;
			if (fnmatch(pat, name, 0) == 0)
				return true;
		}
		pats += len;
		if (*pats == ':')
			pats++;
	}
	return false;
}

/* Key of a (possibly not yet existing) child. Lock held. malloc'd. */
static char *child_key(struct cache *c, struct cache_node *dir, int ns, const char *seg,
		       size_t seg_len, size_t *klen)
{
	size_t dlen;
	char *dk = cache_node_key(c, dir, &dlen);
	if (!dk)
		return NULL;
	const char *sep = "/";
	if (!dir->parent)
		sep = (c->cfg.prefix_len == 0 && ns == 0) ? "/" : "";
	size_t sl = strlen(sep);
	char *k = malloc(dlen + sl + seg_len + 1);
	if (k) {
		memcpy(k, dk, dlen);
		memcpy(k + dlen, sep, sl);
		memcpy(k + dlen + sl, seg, seg_len);
		k[dlen + sl + seg_len] = 0;
		*klen = dlen + sl + seg_len;
	}
	free(dk);
	return k;
}

/* Resolves (parent ino, name) with the cache lock held. *n is NULL when the
 * name does not exist. Returns -errno for malformed names. */
struct target {
	struct cache_node *dir;
	struct cache_node *n;
	bool value_entry; /* the name is %value: n is dir itself */
	char seg[NAMING_NAME_MAX + 1];
	size_t seg_len;
	int ns;
};

static int resolve(struct fs *fs, fuse_ino_t parent, const char *name, struct target *t)
{
	memset(t, 0, sizeof(*t));
	t->dir = cache_node_by_id(fs->cache, cache_ino_id(parent));
	if (!t->dir || cache_ino_kind(parent) != CACHE_INO_DIR || !cache_is_dir(t->dir) ||
	    t->dir->detached)
		return -ENOENT;
	if (strcmp(name, NAMING_VALUE_NAME) == 0) {
		if (!t->dir->parent)
			return -EINVAL;
		t->value_entry = true;
		t->n = t->dir;
		return 0;
	}
	ssize_t len = naming_decode(name, t->seg, sizeof(t->seg), &t->ns);
	if (len < 0)
		return len == -ENAMETOOLONG ? len : -EINVAL;
	if (t->ns == 1 && (t->dir->parent || fs->cfg.prefix_len))
		return -EINVAL;
	t->seg_len = len;
	t->n = cache_child(fs->cache, t->dir, t->ns, t->seg, t->seg_len);
	return 0;
}

static void release_node(struct fs *fs, struct cache_node *n)
{
	cache_wrlock(fs->cache);
	cache_unref_open(fs->cache, n);
	cache_unlock(fs->cache);
}

/* ---- conflict files ---- */

static void save_rejected(struct fs *fs, const char *key, size_t klen, const char *buf, size_t len,
			  char *path, size_t pathsz)
{
	char dir[256];
	if (fs->cfg.conflict_dir)
		snprintf(dir, sizeof(dir), "%s", fs->cfg.conflict_dir);
	else
		snprintf(dir, sizeof(dir), "/tmp/etcdfs-conflicts-%u", (unsigned)fs->uid);
	mkdir(dir, 0700);
	char flat[120];
	size_t o = 0;
	for (size_t i = 0; i < klen && o + 1 < sizeof(flat); i++) {
		unsigned char b = key[i];
		flat[o++] = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
					    (b >= '0' && b <= '9') || b == '-' || b == '.'
				    ? (char)b
				    : '_';
	}
	flat[o] = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(path, pathsz, "%s/%s.%lld.%09ld", dir, flat, (long long)ts.tv_sec, ts.tv_nsec);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		snprintf(path, pathsz, "(could not save: %s)", strerror(errno));
		return;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);
		if (w <= 0)
			break;
		off += w;
	}
	close(fd);
}

/* ---- commit ---- */

/* Stores content under key as one txn: compare (absent ? create_revision
 * == 0 : mod_revision == base), put keeping the lease. On success applies it
 * to the cache and returns the new revision in *rev. -ESTALE on conflict
 * (logged, content saved aside). */
static int store_key(struct fs *fs, const char *key, size_t klen, const char *buf, size_t len,
		     int64_t base, bool absent, const struct kv_op *extra, size_t n_extra,
		     const struct kv_compare *xcmp, size_t n_xcmp, int64_t *rev)
{
	struct kv *kv = fs->cfg.kv;
	size_t limit = kv->ops->max_request_bytes ? kv->ops->max_request_bytes(kv) : (3u << 19);
	if (len + klen + 256 > limit) {
		log_err("save of %.*s refused: the value is %zu bytes, over etcd's request limit "
			"of "
			"%zu bytes; nothing written",
			(int)klen, key, len, limit);
		return -EFBIG;
	}
	struct kv_compare cmp[8];
	size_t nc = 0;
	cmp[nc++] = (struct kv_compare){
		.target = absent ? KV_CMP_CREATE : KV_CMP_MOD,
		.result = KV_CMP_EQUAL,
		.key = key,
		.key_len = klen,
		.number = absent ? 0 : base,
	};
	for (size_t i = 0; i < n_xcmp && nc < 8; i++)
		cmp[nc++] = xcmp[i];
	struct kv_op ops[4];
	size_t no = 0;
	for (size_t i = 0; i < n_extra && no < 3; i++)
		ops[no++] = extra[i];
	size_t put_idx = no;
	ops[no++] = (struct kv_op){.type = KV_OP_PUT,
				   .key = key,
				   .key_len = klen,
				   .value = buf,
				   .value_len = len,
				   .ignore_lease = !absent,
				   .prev_kv = true};
	struct kv_op fail = {.type = KV_OP_RANGE, .key = key, .key_len = klen, .keys_only = true};
	struct kv_txn txn = {.compare = cmp,
			     .n_compare = nc,
			     .success = ops,
			     .n_success = no,
			     .failure = &fail,
			     .n_failure = 1};
	struct kv_txn_result res;
	int ret = kv_txn(kv, &txn, &res);
	if (ret < 0) {
		log_err("save of %.*s failed: %s; nothing written", (int)klen, key, strerror(-ret));
		return ret;
	}
	if (!res.succeeded) {
		int64_t now = 0;
		if (res.n_results && res.results[0].range.n_kvs)
			now = res.results[0].range.kvs[0].mod_revision;
		char path[512];
		save_rejected(fs, key, klen, buf, len, path, sizeof(path));
		if (absent)
			log_err("conflict: %.*s was created by someone else (revision %lld) while "
				"this file was being written; nothing written, your version is in "
				"%s",
				(int)klen, key, (long long)now, path);
		else
			log_err("conflict: %.*s changed since it was opened (opened at revision "
				"%lld, "
				"now %s %lld); nothing written, your version is in %s",
				(int)klen, key, (long long)base,
				now ? "revision" : "deleted at or after",
				(long long)(now ? now : base), path);
		kv_txn_result_free(&res);
		return -ESTALE;
	}
	struct kv_kv nkv = {.key = (char *)key,
			    .key_len = klen,
			    .value = (char *)buf,
			    .value_len = len,
			    .mod_revision = res.revision,
			    .create_revision = res.revision,
			    .version = 1};
	if (put_idx < res.n_results && res.results[put_idx].range.n_kvs) {
		struct kv_kv *prev = &res.results[put_idx].range.kvs[0];
		nkv.create_revision = prev->create_revision;
		nkv.version = prev->version + 1;
		nkv.lease = prev->lease;
	}
	*rev = res.revision;
	kv_txn_result_free(&res);
	cache_apply_local(fs->cache, key, klen, &nkv, *rev);
	return 0;
}

/* Converts saved content into the bytes stored under key (Kubernetes
 * objects are encoded back to their original encoding). *raw is buf itself
 * unless *owned. -EINVAL/-EPERM when the content is refused (logged). */
static int to_stored(struct fs *fs, const char *key, size_t klen, const char *buf, size_t len,
		     int64_t base_rev, bool absent, char **raw, size_t *rawlen, bool *owned)
{
	*raw = (char *)buf;
	*rawlen = len;
	*owned = false;
	if (!fs->cfg.encode ||
	    (fs->cfg.encode_applies && !fs->cfg.encode_applies(fs->cfg.encode_arg, key, klen)))
		return 0;
	struct kv_kv orig;
	memset(&orig, 0, sizeof(orig));
	bool have = false;
	if (!absent) {
		int r = kv_get(fs->cfg.kv, key, klen, &orig);
		if (r == 0)
			have = true;
		else if (r != -ENOENT)
			return r;
		/* Changed meanwhile: the compare will refuse the save and
		 * report the conflict; what is "stored" does not matter. */
		if (!have || orig.mod_revision != base_rev) {
			kv_kv_free(&orig);
			return 0;
		}
	}
	char *out = NULL, *err = NULL;
	size_t ol = 0;
	int ret = fs->cfg.encode(fs->cfg.encode_arg, key, klen, have ? orig.value : NULL,
				 have ? orig.value_len : 0, have ? orig.mod_revision : 0,
				 buf ? buf : "", len, &out, &ol, &err);
	if (ret == -ENOTSUP) {
		ret = 0;
	} else if (ret == 0) {
		*raw = out;
		*rawlen = ol;
		*owned = true;
	} else {
		log_err("save of %.*s refused: %s; nothing written", (int)klen, key,
			err ? err : strerror(-ret));
	}
	free(err);
	kv_kv_free(&orig);
	return ret;
}

/* Commits a handle's buffer. fh->mu held. */
static int commit(struct fs *fs, struct fhandle *fh)
{
	if (fh->failed)
		return fh->failed;
	if (!fh->dirty)
		return 0;
	struct cache *c = fs->cache;
	struct cache_node *n = fh->node;
	cache_wrlock(c);
	if (n->detached || n->hidden) {
		/* Unlinked while open: its content has nowhere to go. */
		cache_unlock(c);
		fh->dirty = false;
		return 0;
	}
	if (n->shadow) {
		char *copy = malloc(fh->len ? fh->len : 1);
		if (!copy) {
			cache_unlock(c);
			return -ENOMEM;
		}
		memcpy(copy, fh->buf, fh->len);
		free(n->local_data);
		n->local_data = copy;
		n->local_len = fh->len;
		n->pending_size = -1;
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
				n->pending_size = -1;
				cache_unlock(c);
				goto out;
			}
		}
	}
	int64_t rev;
	char *raw;
	size_t rawlen;
	bool owned;
	ret = to_stored(fs, key, klen, fh->buf, fh->len, fh->base_rev, fh->base_absent, &raw,
			&rawlen, &owned);
	if (ret < 0) {
		if (ret == -EINVAL || ret == -EPERM)
			fh->failed = ret;
		goto out;
	}
	ret = store_key(fs, key, klen, raw, rawlen, fh->base_rev, fh->base_absent, NULL, 0, NULL, 0,
			&rev);
	if (owned)
		free(raw);
	if (ret == 0) {
		fh->base_rev = rev;
		fh->base_absent = false;
		fh->dirty = false;
		cache_wrlock(c);
		n->local_file = false;
		n->hidden = false;
		free(n->local_data);
		n->local_data = NULL;
		n->local_len = 0;
		n->pending_size = -1;
		n->kernel_rev = rev;
		cache_unlock(c);
	} else if (ret == -ESTALE || ret == -EFBIG) {
		fh->failed = ret;
		/* A rejected new file must not linger as local state: show
		 * what etcd has. */
		cache_wrlock(c);
		if (n->local_file && !n->shadow) {
			n->local_file = false;
			n->pending_size = -1;
			if (!n->has_value)
				cache_prune_locked(c, n);
		}
		cache_unlock(c);
	}
out:
	free(key);
	return ret;
}

/* ---- open / read / write ---- */

static int load_handle(struct fs *fs, struct fhandle *fh, bool trunc)
{
	struct cache *c = fs->cache;
	struct cache_node *n = fh->node;
	cache_rdlock(c);
	bool local = n->local_file;
	if (local) {
		fh->base_absent = n->origin_rev == 0 && !n->has_value;
		fh->base_rev = n->has_value ? n->mod_revision : n->origin_rev;
		if (!trunc && n->local_len) {
			fh->buf = malloc(n->local_len);
			if (!fh->buf) {
				cache_unlock(c);
				return -ENOMEM;
			}
			memcpy(fh->buf, n->local_data, n->local_len);
			fh->len = fh->cap = n->local_len;
		}
		/* a pending new (or re-created) key is stored at close even
		 * when empty; unchanged content is still not written */
		fh->dirty = !n->shadow;
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
		release_node(fs, n);
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
		release_node(fs, n);
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
	bool local = n->local_file;
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
			release_node(fs, n);
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
		ret = load_handle(fs, fh, trunc);
		if (ret < 0) {
			free(fh);
			goto out_unref;
		}
		if (trunc && local) {
			cache_rdlock(fs->cache);
			__atomic_store_n(&n->pending_size, 0, __ATOMIC_RELAXED);
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
		release_node(fs, n);
	}
	return;
out_unref:
	release_node(fs, n);
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
	if (n->local_file) {
		size_t cnt = (size_t)off < n->local_len ? n->local_len - off : 0;
		if (cnt > size)
			cnt = size;
		fuse_reply_buf(req, n->local_data ? n->local_data + off : NULL, cnt);
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

static int set_len(struct fhandle *fh, size_t len)
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
	if (fh->node->local_file)
		__atomic_store_n(&fh->node->pending_size, (int64_t)fh->len, __ATOMIC_RELAXED);
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
			ret = commit(fs, fh);
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
		ret = commit(fs, fh);
		pthread_mutex_unlock(&fh->mu);
		if (was_dirty && ret == 0)
			fs_notify_wait(fs, 2000);
	}
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : 0);
}

static void flush_deferred(struct fs *fs, bool all);

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	flush_deferred(fs_of(req), true);
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
			int ret = commit(fs, fh);
			if (ret < 0)
				log_err("save at close failed: %s", strerror(-ret));
		}
		cache_rdlock(fs->cache);
		__atomic_store_n(&fh->node->pending_size, -1, __ATOMIC_RELAXED);
		cache_unlock(fs->cache);
		pthread_mutex_unlock(&fh->mu);
	}
	release_node(fs, fh->node);
	pthread_mutex_destroy(&fh->mu);
	free(fh->buf);
	free(fh);
	fuse_reply_err(req, 0);
}

/* ---- deferred deletes ---- */

static void cancel_deferred(struct fs *fs, uint64_t id)
{
	pthread_mutex_lock(&fs->dd_lock);
	for (struct deferred_del **pp = &fs->dd_head; *pp;) {
		struct deferred_del *d = *pp;
		if (d->id == id) {
			*pp = d->next;
			free(d->key);
			free(d);
		} else {
			pp = &d->next;
		}
	}
	pthread_mutex_unlock(&fs->dd_lock);
}

/* Deletes key if it still is at rev. Returns 0, -ESTALE or -errno. */
static int delete_key(struct fs *fs, const char *key, size_t klen, int64_t rev)
{
	struct kv_compare cmp = {.target = KV_CMP_MOD,
				 .result = KV_CMP_EQUAL,
				 .key = key,
				 .key_len = klen,
				 .number = rev};
	struct kv_op op = {.type = KV_OP_DELETE, .key = key, .key_len = klen};
	struct kv_txn txn = {.compare = &cmp, .n_compare = 1, .success = &op, .n_success = 1};
	struct kv_txn_result res;
	int ret = kv_txn(fs->cfg.kv, &txn, &res);
	if (ret < 0) {
		log_err("delete of %.*s failed: %s; the key is unchanged", (int)klen, key,
			strerror(-ret));
		return ret;
	}
	bool ok = res.succeeded;
	int64_t drev = res.revision;
	kv_txn_result_free(&res);
	if (!ok) {
		log_err("conflict: %.*s changed since revision %lld; not deleted", (int)klen, key,
			(long long)rev);
		return -ESTALE;
	}
	cache_apply_local(fs->cache, key, klen, NULL, drev);
	return 0;
}

static void run_deferred(struct fs *fs, struct deferred_del *d)
{
	struct cache *c = fs->cache;
	int ret = delete_key(fs, d->key, d->key_len, d->rev);
	cache_wrlock(c);
	struct cache_node *n = cache_node_by_id(c, d->id);
	if (n && n->hidden) {
		n->hidden = false;
		if (ret == 0 && !n->has_value)
			cache_prune_locked(c, n);
	}
	cache_unlock(c);
}

static void flush_deferred(struct fs *fs, bool all)
{
	for (;;) {
		pthread_mutex_lock(&fs->dd_lock);
		struct deferred_del **pp = &fs->dd_head, *d = NULL;
		int64_t now = util_now_ms();
		while (*pp) {
			if (all || (*pp)->due_ms <= now) {
				d = *pp;
				*pp = d->next;
				break;
			}
			pp = &(*pp)->next;
		}
		pthread_mutex_unlock(&fs->dd_lock);
		if (!d)
			return;
		run_deferred(fs, d);
		free(d->key);
		free(d);
	}
}

static void *writer_main(void *arg)
{
	struct fs *fs = arg;
	pthread_mutex_lock(&fs->dd_lock);
	while (!fs->dd_stop) {
		struct timespec ts;
		util_deadline_ts(CLOCK_REALTIME, 20, &ts);
		pthread_cond_timedwait(&fs->dd_cv, &fs->dd_lock, &ts);
		if (!fs->dd_head)
			continue;
		pthread_mutex_unlock(&fs->dd_lock);
		flush_deferred(fs, false);
		pthread_mutex_lock(&fs->dd_lock);
	}
	pthread_mutex_unlock(&fs->dd_lock);
	return NULL;
}

int fs_writer_start(struct fs *fs)
{
	int ret = pthread_create(&fs->dd_thread, NULL, writer_main, fs);
	if (ret)
		return -ret;
	fs->dd_running = true;
	return 0;
}

void fs_writer_stop(struct fs *fs)
{
	if (!fs->dd_running)
		return;
	pthread_mutex_lock(&fs->dd_lock);
	fs->dd_stop = true;
	pthread_cond_signal(&fs->dd_cv);
	pthread_mutex_unlock(&fs->dd_lock);
	pthread_join(fs->dd_thread, NULL);
	fs->dd_running = false;
	flush_deferred(fs, true);
}

/* ---- namespace operations ---- */

/* Replies EROFS (explaining why, once) if the mount is read-only. */
static bool refused_read_only(struct fs *fs, fuse_req_t req)
{
	if (!fs->cfg.read_only)
		return false;
	fs_reply_erofs(fs, req);
	return true;
}

void fs_reply_erofs(struct fs *fs, fuse_req_t req)
{
	if (fs->cfg.ro_reason && !__atomic_exchange_n(&fs->ro_explained, true, __ATOMIC_SEQ_CST))
		log_warn("write refused: %s", fs->cfg.ro_reason);
	fuse_reply_err(req, EROFS);
}

static void reply_err(fuse_req_t req, int ret)
{
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : ret);
}

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	if (!S_ISREG(mode) && (mode & S_IFMT)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	struct cache *c = fs->cache;
	struct target t;
	struct fhandle *fh = calloc(1, sizeof(*fh));
	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&fh->mu, NULL);
	fh->writable = true;
	bool existing = false;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	if (ret < 0)
		goto out_unlock;
	struct cache_node *n = t.n;
	if (n && n != t.dir && cache_is_dir(n)) {
		ret = -EISDIR;
		goto out_unlock;
	}
	if (n && fs_visible_file(n)) {
		if (fi->flags & O_EXCL) {
			ret = -EEXIST;
			goto out_unlock;
		}
		existing = true;
	} else if (n && (n->hidden || (t.value_entry && !n->has_value))) {
		/* Re-created after rename-away or unlink: one put on the key,
		 * compared against the revision it had. */
		cancel_deferred(fs, n->id);
		n->hidden = false;
		n->local_file = true;
		n->origin_rev = n->has_value ? n->mod_revision : 0;
		free(n->local_data);
		n->local_data = NULL;
		n->local_len = 0;
	} else {
		ret = cache_mknode_locked(c, t.dir, t.ns, t.seg, t.seg_len, false, &n);
		if (ret < 0)
			goto out_unlock;
		n->shadow = is_shadow_name(fs, name);
		n->origin_rev = 0;
		n->born_rev = __atomic_load_n(&c->seen_rev, __ATOMIC_SEQ_CST);
	}
	if (mode & 07777)
		n->mode = mode & 07777;
	cache_ref_open(c, n);
	fh->node = n;
	cache_unlock(c);
	ret = load_handle(fs, fh, existing ? (fi->flags & O_TRUNC) != 0 : true);
	if (ret < 0) {
		release_node(fs, n);
		goto out_free;
	}
	if (n->local_file)
		__atomic_store_n(&n->pending_size, (int64_t)fh->len, __ATOMIC_RELAXED);
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	cache_rdlock(c);
	e.ino = cache_file_ino(n);
	e.generation = 1;
	fs_fill_attr(fs, e.ino, &e.attr);
	e.attr_timeout = e.entry_timeout = fs_timeout(fs);
	cache_ref_lookup(c, n);
	cache_unlock(c);
	fi->fh = (uintptr_t)fh;
	fi->keep_cache = 0;
	fi->direct_io = 1;
	fh->defer = true;
	if (fuse_reply_create(req, &e, fi) < 0) {
		cache_wrlock(c);
		cache_unref_lookup(c, n, 1);
		cache_unlock(c);
		release_node(fs, n);
		free(fh->buf);
		free(fh);
	}
	return;
out_unlock:
	cache_unlock(c);
out_free:
	free(fh);
	reply_err(req, ret);
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	struct fs *fs = fs_of(req);
	if (!S_ISREG(mode)) {
		if (fs->cfg.read_only)
			fs_reply_erofs(fs, req);
		else
			fuse_reply_err(req, EPERM);
		return;
	}
	/* A regular mknod is a create that is closed at once. */
	struct fuse_file_info fi;
	memset(&fi, 0, sizeof(fi));
	fi.flags = O_WRONLY | O_EXCL;
	if (refused_read_only(fs, req))
		return;
	struct cache *c = fs->cache;
	struct target t;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	if (ret == 0 && t.n && (fs_visible_file(t.n) || cache_is_dir(t.n)))
		ret = -EEXIST;
	struct cache_node *n = NULL;
	size_t klen = 0;
	char *key = NULL;
	if (ret == 0 && !t.n) {
		ret = cache_mknode_locked(c, t.dir, t.ns, t.seg, t.seg_len, false, &n);
		if (ret == 0) {
			n->shadow = is_shadow_name(fs, name);
			key = n->shadow ? NULL : cache_node_key(c, n, &klen);
			cache_ref_lookup(c, n);
		}
	} else if (ret == 0) {
		ret = -EEXIST;
	}
	cache_unlock(c);
	if (ret < 0) {
		reply_err(req, ret);
		return;
	}
	if (key) {
		int64_t rev;
		ret = store_key(fs, key, klen, "", 0, 0, true, NULL, 0, NULL, 0, &rev);
		free(key);
		cache_wrlock(c);
		if (ret == 0)
			n->local_file = false;
		cache_unlock(c);
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	cache_rdlock(c);
	e.ino = cache_file_ino(n);
	e.generation = 1;
	fs_fill_attr(fs, e.ino, &e.attr);
	e.attr_timeout = e.entry_timeout = fs_timeout(fs);
	cache_unlock(c);
	if (ret < 0) {
		cache_wrlock(c);
		cache_unref_lookup(c, n, 1);
		n->local_file = false;
		cache_prune_locked(c, n);
		cache_unlock(c);
		reply_err(req, ret);
		return;
	}
	fuse_reply_entry(req, &e);
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)mode;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	struct cache *c = fs->cache;
	struct target t;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	if (ret == 0 && (t.value_entry || t.n))
		ret = -EEXIST;
	struct cache_node *n = NULL;
	if (ret == 0)
		ret = cache_mknode_locked(c, t.dir, t.ns, t.seg, t.seg_len, true, &n);
	if (ret < 0) {
		cache_unlock(c);
		reply_err(req, ret);
		return;
	}
	fs_reply_entry(req, fs, n, false); /* releases the lock */
}

void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	/* Pending deletes below it must land first, or it is not empty. */
	flush_deferred(fs, true);
	struct cache *c = fs->cache;
	struct target t;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	if (ret == 0 && (!t.n || t.value_entry))
		ret = t.value_entry ? -ENOTDIR : -ENOENT;
	if (ret == 0 && !cache_is_dir(t.n))
		ret = -ENOTDIR;
	if (ret == 0 && (t.n->n_children || (t.n->has_value && !t.n->hidden)))
		ret = -ENOTEMPTY;
	if (ret == 0) {
		t.n->local_dir = false;
		cache_prune_locked(c, t.n);
	}
	cache_unlock(c);
	reply_err(req, ret);
}

/* Removes a local-only node (shadow or never-committed file). Lock held. */
static void drop_local(struct cache *c, struct cache_node *n)
{
	n->local_file = false;
	n->shadow = false;
	n->is_link = false;
	free(n->local_data);
	n->local_data = NULL;
	n->local_len = 0;
	cache_prune_locked(c, n);
}

void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	struct cache *c = fs->cache;
	struct target t;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	struct cache_node *n = t.n;
	if (ret == 0 && (!n || !fs_visible_file(n)))
		ret = (n && cache_is_dir(n) && !t.value_entry) ? -EISDIR : -ENOENT;
	if (ret == 0 && !t.value_entry && cache_is_dir(n))
		ret = -EISDIR;
	if (ret < 0) {
		cache_unlock(c);
		reply_err(req, ret);
		return;
	}
	if (n->local_file && !n->has_value) {
		/* A shadow that came from a key that was not re-created: the
		 * pair rename(key -> shadow) + unlink(shadow) deletes the key. */
		struct cache_node *o = n->origin_id ? cache_node_by_id(c, n->origin_id) : NULL;
		char *okey = NULL;
		size_t oklen = 0;
		int64_t orev = n->origin_rev;
		uint64_t oid = n->origin_id;
		if (o && o->hidden && !o->local_file)
			okey = cache_node_key(c, o, &oklen);
		if (n->parent && n->parent->parent)
			n->parent->local_dir = true;
		drop_local(c, n);
		cache_unlock(c);
		if (okey) {
			ret = delete_key(fs, okey, oklen, orev);
			free(okey);
			cache_wrlock(c);
			o = cache_node_by_id(c, oid);
			if (o && o->hidden) {
				o->hidden = false;
				if (!o->has_value)
					cache_prune_locked(c, o);
			}
			cache_unlock(c);
		}
		reply_err(req, ret);
		return;
	}
	/* A key: hide it now, delete it after a short grace period unless
	 * the same name is created again (then that create is one put). */
	struct deferred_del *d = calloc(1, sizeof(*d));
	if (!d) {
		cache_unlock(c);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	d->key = cache_node_key(c, n, &d->key_len);
	d->rev = n->mod_revision;
	d->id = n->id;
	d->due_ms = util_now_ms() + DEFER_MS;
	n->hidden = true;
	n->local_file = false;
	/* Unlinking the last key of a directory through the mount leaves the
	 * directory, as on any filesystem (rm -r then rmdirs it). */
	if (n->parent && n->parent->parent)
		n->parent->local_dir = true;
	cache_unlock(c);
	if (!d->key) {
		free(d);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->dd_lock);
	d->next = fs->dd_head;
	fs->dd_head = d;
	pthread_cond_signal(&fs->dd_cv);
	pthread_mutex_unlock(&fs->dd_lock);
	fuse_reply_err(req, 0);
}

/* Raw bytes of a key as stored, with its revision. */
static int fetch_raw(struct fs *fs, const char *key, size_t klen, struct kv_kv *out)
{
	return kv_get(fs->cfg.kv, key, klen, out);
}

/* Makes n show a key with this metadata (counted in n_keys). Lock held for
 * write. */
static void set_key_meta(struct cache *c, struct cache_node *n, int64_t create_rev, int64_t mod_rev,
			 int64_t version, int64_t lease, size_t raw_size, size_t view_size)
{
	n->has_value = true;
	c->n_keys++;
	n->create_revision = create_rev;
	n->mod_revision = mod_rev;
	n->version = version;
	n->lease = lease;
	n->raw_size = raw_size;
	n->view_size = view_size;
	n->view_known = true;
}

/* Moves sn (the kernel's inode) onto the destination name, where a save
 * just put a key: sn takes over that key's metadata, so the inode the
 * kernel moved stays valid. Lock held for write. */
static void take_over_key(struct cache *c, struct cache_node *sn, const struct target *d,
			  int64_t rev, size_t size)
{
	struct cache_node *cur = cache_child(c, d->dir, d->ns, d->seg, d->seg_len);
	int64_t cr = 0, mr = rev, ver = 1, ls = 0;
	size_t vs = size, rs = size;
	if (cur == sn)
		return;
	if (cur) {
		cr = cur->create_revision;
		mr = cur->mod_revision;
		ver = cur->version;
		ls = cur->lease;
		vs = cur->view_size;
		rs = cur->raw_size;
	}
	cache_forget_key_locked(c, sn);
	if (cache_move_locked(c, sn, d->dir, d->ns, d->seg, d->seg_len) < 0)
		return;
	sn->local_file = false;
	sn->shadow = false;
	sn->hidden = false;
	free(sn->local_data);
	sn->local_data = NULL;
	sn->local_len = 0;
	set_key_meta(c, sn, cr, mr, ver, ls, rs, vs);
	sn->kernel_rev = 0;
}

void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	if (flags & ~RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL); /* mv falls back to copying */
		return;
	}
	struct cache *c = fs->cache;
	struct target s, d;
	char *skey = NULL, *dkey = NULL;
	size_t sklen = 0, dklen = 0;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &s);
	if (ret == 0)
		ret = resolve(fs, newparent, newname, &d);
	if (ret < 0)
		goto out_unlock;
	struct cache_node *sn = s.n, *dn = d.n;
	if (!sn || (!fs_visible_file(sn) && !cache_is_dir(sn)) ||
	    (s.value_entry && !fs_visible_file(sn))) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (s.value_entry || d.value_entry) {
		ret = -EINVAL;
		goto out_unlock;
	}
	bool src_dir = cache_is_dir(sn);
	bool dst_visible = dn && (fs_visible_file(dn) || cache_is_dir(dn));
	if (dn == sn) {
		ret = 0;
		goto out_unlock;
	}
	if (dst_visible && (flags & RENAME_NOREPLACE)) {
		ret = -EEXIST;
		goto out_unlock;
	}
	if (src_dir) {
		if (dst_visible && !cache_is_dir(dn)) {
			ret = -ENOTDIR;
			goto out_unlock;
		}
		if (dst_visible && (dn->n_children || dn->has_value)) {
			ret = -ENOTEMPTY;
			goto out_unlock;
		}
		if (sn->n_children == 0 && !sn->has_value) {
			/* an empty local directory: a local rename */
			ret = cache_move_locked(c, sn, d.dir, d.ns, d.seg, d.seg_len);
			goto out_unlock;
		}
		/* Renaming a prefix would be one txn over every key below it;
		 * let mv copy and delete instead. */
		ret = -EXDEV;
		goto out_unlock;
	}
	if (dn && cache_is_dir(dn)) {
		ret = -EISDIR;
		goto out_unlock;
	}
	bool src_local = sn->local_file && !sn->has_value;
	bool dst_shadow = is_shadow_name(fs, newname);

	if (src_local && dst_shadow) {
		/* shadow -> shadow: purely local */
		ret = cache_move_locked(c, sn, d.dir, d.ns, d.seg, d.seg_len);
		if (ret == 0)
			sn->shadow = true;
		goto out_unlock;
	}
	if (!src_local && dst_shadow) {
		/* key -> shadow (vim's x -> x~, sed's x -> x.bak): the key
		 * stays in etcd, hidden; the shadow takes its content. */
		cache_unlock(c);
		char *content = NULL;
		size_t clen = 0;
		int64_t crev = 0;
		ret = cache_get_content(c, sn, &content, &clen, &crev);
		if (ret < 0)
			goto out_reply;
		cache_wrlock(c);
		if (sn->detached || !fs_visible_file(sn)) {
			free(content);
			ret = -ENOENT;
			goto out_unlock;
		}
		/* A fresh hidden node keeps the key's place in the tree; the
		 * moved node (the kernel's inode) becomes the shadow. */
		struct cache_node *keep = sn;
		char sseg[NAMING_NAME_MAX + 1];
		memcpy(sseg, sn->seg, sn->seg_len);
		size_t sseg_len = sn->seg_len;
		int sns = sn->ns;
		struct cache_node *sdir = sn->parent;
		int64_t cr = sn->create_revision, mr = sn->mod_revision, ver = sn->version,
			ls = sn->lease;
		size_t raw = sn->raw_size;
		ret = cache_move_locked(c, keep, d.dir, d.ns, d.seg, d.seg_len);
		if (ret < 0) {
			free(content);
			goto out_unlock;
		}
		cache_forget_key_locked(c, keep);
		cache_drop_view_locked(c, keep);
		keep->local_file = true;
		keep->shadow = true;
		free(keep->local_data);
		keep->local_data = content;
		keep->local_len = clen;
		keep->origin_rev = crev;
		struct cache_node *h;
		ret = cache_mknode_locked(c, sdir, sns, sseg, sseg_len, false, &h);
		if (ret == 0) {
			h->local_file = false;
			h->hidden = true;
			set_key_meta(c, h, cr, mr, ver, ls, raw, clen);
			keep->origin_id = h->id;
		}
		goto out_unlock;
	}
	/* The destination is a key: one txn. */
	dkey = child_key(c, d.dir, d.ns, d.seg, d.seg_len, &dklen);
	if (!dkey) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	bool d_absent = !dn || (!dn->has_value);
	int64_t d_rev = d_absent ? 0 : dn->mod_revision;
	uint64_t dn_id = dn ? dn->id : 0;
	uint64_t sn_id = sn->id;
	if (src_local) {
		/* shadow -> key (sed -i, perl -pi, rsync, emacs): a
		 * compare-and-swap put of the shadow's content. The key must
		 * not have changed since the shadow was made. */
		char *content = sn->local_data ? malloc(sn->local_len + 1) : NULL;
		size_t clen = sn->local_len;
		if (content)
			memcpy(content, sn->local_data, clen);
		bool changed = !d_absent && sn->born_rev && dn->mod_revision > sn->born_rev;
		cache_unlock(c);
		if (changed) {
			char path[512];
			save_rejected(fs, dkey, dklen, content ? content : "", clen, path,
				      sizeof(path));
			log_err("conflict: %.*s changed (revision %lld) while it was being edited; "
				"nothing written, your version is in %s",
				(int)dklen, dkey, (long long)d_rev, path);
			free(content);
			ret = -ESTALE;
			goto out_reply;
		}
		int64_t rev;
		char *raw;
		size_t rawlen;
		bool owned;
		ret = to_stored(fs, dkey, dklen, content ? content : "", clen, d_rev, d_absent,
				&raw, &rawlen, &owned);
		if (ret == 0) {
			ret = store_key(fs, dkey, dklen, raw, rawlen, d_rev, d_absent, NULL, 0,
					NULL, 0, &rev);
			if (owned)
				free(raw);
		}
		free(content);
		if (ret < 0)
			goto out_reply;
		if (dn_id)
			cancel_deferred(fs, dn_id);
		cache_wrlock(c);
		sn = cache_node_by_id(c, sn_id);
		dn = cache_node_by_id(c, dn_id);
		if (sn && !sn->detached) {
			/* The moved node takes over the key. */
			take_over_key(c, sn, &d, rev, clen);
		}
		goto out_unlock;
	}
	/* key -> key: delete the old, put the new, compares on both. The
	 * source node is pinned so that the watch's delete event cannot prune
	 * it before it moves onto the new name (the kernel's inode). */
	skey = cache_node_key(c, sn, &sklen);
	sn->pinned = true;
	cache_unlock(c);
	if (!skey) {
		ret = -ENOMEM;
		goto out_reply;
	}
	struct kv_kv src;
	ret = fetch_raw(fs, skey, sklen, &src);
	if (ret < 0)
		goto out_unpin;
	struct kv_compare scmp = {.target = KV_CMP_MOD,
				  .result = KV_CMP_EQUAL,
				  .key = skey,
				  .key_len = sklen,
				  .number = src.mod_revision};
	struct kv_op del = {.type = KV_OP_DELETE, .key = skey, .key_len = sklen};
	int64_t rev;
	ret = store_key(fs, dkey, dklen, src.value ? src.value : "", src.value_len, d_rev, d_absent,
			&del, 1, &scmp, 1, &rev);
	kv_kv_free(&src);
	if (ret < 0)
		goto out_unpin;
	if (dn_id)
		cancel_deferred(fs, dn_id);
	cache_wrlock(c);
	sn = cache_node_by_id(c, sn_id);
	if (sn)
		sn->pinned = false;
	if (sn && !sn->detached && sn->n_children == 0 &&
	    cache_child(c, d.dir, d.ns, d.seg, d.seg_len)) {
		/* Keep the kernel's inode: the moved node takes over the new
		 * key (store_key put its metadata on the node at the new
		 * name). */
		take_over_key(c, sn, &d, rev, 0);
	}
	cache_unlock(c);
	/* Deletes the old name if still there, and remembers the deletion so a
	 * late watch event cannot bring it back. */
	cache_apply_local(c, skey, sklen, NULL, rev);
	goto out_reply;
out_unpin:
	cache_wrlock(c);
	sn = cache_node_by_id(c, sn_id);
	if (sn) {
		sn->pinned = false;
		if (!sn->has_value && !sn->detached)
			cache_prune_locked(c, sn);
	}
	cache_unlock(c);
	goto out_reply;
out_unlock:
	cache_unlock(c);
out_reply:
	free(skey);
	free(dkey);
	reply_err(req, ret);
}

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	struct cache *c = fs->cache;
	int ret = 0;
	if (refused_read_only(fs, req))
		return;
	if ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != fs->uid) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != fs->gid && fs->uid != 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (cache_ino_kind(ino) == CACHE_INO_RAW) {
		fuse_reply_err(req, EACCES);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (cache_ino_kind(ino) == CACHE_INO_DIR) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		struct fhandle *fh = fi ? (struct fhandle *)(uintptr_t)fi->fh : NULL;
		if (fh && fh->writable) {
			pthread_mutex_lock(&fh->mu);
			ret = set_len(fh, attr->st_size);
			if (ret == 0) {
				fh->dirty = true;
				fh->defer = false;
				if (fh->node->local_file)
					__atomic_store_n(&fh->node->pending_size, (int64_t)fh->len,
							 __ATOMIC_RELAXED);
			}
			pthread_mutex_unlock(&fh->mu);
		} else {
			/* truncate(path): one immediate save through a
			 * temporary handle. */
			struct fhandle tmp;
			memset(&tmp, 0, sizeof(tmp));
			pthread_mutex_init(&tmp.mu, NULL);
			tmp.writable = true;
			cache_rdlock(c);
			struct cache_node *n = cache_node_by_id(c, cache_ino_id(ino));
			if (!n || !fs_visible_file(n)) {
				cache_unlock(c);
				fuse_reply_err(req, ENOENT);
				return;
			}
			cache_ref_open(c, n);
			cache_unlock(c);
			tmp.node = n;
			ret = load_handle(fs, &tmp, false);
			if (ret == 0 && (size_t)attr->st_size != tmp.len) {
				ret = set_len(&tmp, attr->st_size);
				tmp.dirty = true;
			}
			if (ret == 0) {
				pthread_mutex_lock(&tmp.mu);
				ret = commit(fs, &tmp);
				pthread_mutex_unlock(&tmp.mu);
			}
			free(tmp.buf);
			pthread_mutex_destroy(&tmp.mu);
			release_node(fs, n);
		}
		if (ret < 0) {
			reply_err(req, ret);
			return;
		}
	}
	cache_wrlock(c);
	struct cache_node *n = cache_node_by_id(c, cache_ino_id(ino));
	if (!n) {
		cache_unlock(c);
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* Modes and times are kept in memory for this mount only: etcd has
	 * no place for them (docs/writes.md). */
	if (to_set & FUSE_SET_ATTR_MODE)
		n->mode = attr->st_mode & 07777;
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		struct timespec ts = attr->st_mtim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			clock_gettime(CLOCK_REALTIME, &ts);
		n->mtime_ns = (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
	}
	struct stat st;
	ret = fs_fill_attr(fs, ino, &st);
	cache_unlock(c);
	if (ret < 0)
		reply_err(req, ret);
	else
		fuse_reply_attr(req, &st, fs_timeout(fs));
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	/* etcd has no symlinks; only local shadow names (emacs' .#x lock)
	 * may be links. */
	if (!is_shadow_name(fs, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	struct cache *c = fs->cache;
	struct target t;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	if (ret == 0 && t.n)
		ret = -EEXIST;
	struct cache_node *n = NULL;
	if (ret == 0)
		ret = cache_mknode_locked(c, t.dir, t.ns, t.seg, t.seg_len, false, &n);
	if (ret == 0) {
		n->shadow = true;
		n->is_link = true;
		n->local_data = strdup(link);
		n->local_len = n->local_data ? strlen(link) : 0;
		fs_reply_entry(req, fs, n, true);
		return;
	}
	cache_unlock(c);
	reply_err(req, ret);
}

void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	cache_rdlock(fs->cache);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	if (!n || !n->is_link || !n->local_data) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, EINVAL);
		return;
	}
	char *copy = strdup(n->local_data);
	cache_unlock(fs->cache);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_readlink(req, copy);
	free(copy);
}
