/* ns.c: the namespace side of the write path: create, mknod, mkdir,
 * unlink, rmdir, rename, setattr, symlink and readlink.
 *
 * Editor and tool temp files ("shadows", matched by --shadow patterns) live
 * only in this mount, so that rename(temp -> key) is one compare-and-swap
 * put and rename(key -> backup) followed by re-creating key is one put on
 * the key. unlink is deferred by a short grace period (src/save) so that
 * unlink + create of the same name (install(1)) is one put too. See
 * docs/writes.md.
 *
 * Locking: the cache lock is never held across a backend call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/log.h"
#include "fs_int.h"
#include "naming.h"

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
	if (fs_history_ino(parent))
		return -EACCES; /* NAME%history/ is read-only, as a 0555 directory */
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

/* Replies EROFS (explaining why, once) if the mount is read-only. */
static bool refused_read_only(struct fs *fs, fuse_req_t req)
{
	if (!fs->cfg.read_only)
		return false;
	fs_reply_erofs(fs, req);
	return true;
}

void fs_explain_read_only(struct fs *fs, const char *lead)
{
	const char *why = fs->cfg.ro_reason ? fs->cfg.ro_reason : "the mount is read-only (-o ro)";
	if (fs->cfg.ro_reason && !__atomic_exchange_n(&fs->ro_explained, true, __ATOMIC_SEQ_CST))
		log_warn("%s: %s", lead, why);
	/* the root's user.etcdfs.last_error says it too */
	char msg[512];
	snprintf(msg, sizeof(msg), "write refused: %s", why);
	save_why_note(fs->save, msg);
}

void fs_reply_erofs(struct fs *fs, fuse_req_t req)
{
	fs_explain_read_only(fs, "write refused");
	fuse_reply_err(req, EROFS);
}

static void reply_err(fuse_req_t req, int ret)
{
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : ret);
}

/* Removes a local-only node (shadow or never-committed file). Lock held. */
static void drop_local(struct cache *c, struct cache_node *n)
{
	save_clear_local(n);
	cache_prune_locked(c, n);
}

/* An entry of dir appeared, vanished or moved here: its mtime and ctime
 * move (best effort under memory pressure, as every local time). Lock
 * held for write. */
static void dir_touched(struct cache_node *dir)
{
	if (dir)
		(void)save_touch_locked(dir, SAVE_MTIME | SAVE_CTIME);
}

/* A new file's name may be a key whose unlink is still pending: the
 * create then replaces that key with one put (install(1)). Lock held for
 * write. */
static void take_pending_delete(struct fs *fs, struct cache_node *n)
{
	struct cache_local *l = save_local_mut(n); /* a local file has one */
	size_t klen;
	char *key = l && !l->shadow ? cache_node_key(fs->cache, n, &klen) : NULL;
	int64_t rev;
	if (key && save_take_deferred_locked(fs->save, key, klen, &rev))
		l->origin_rev = rev;
	free(key);
}

/* Makes (parent, name) a file to create: a new local file, or a directory's
 * value-less %value; either replaces a key whose delete is pending or
 * parked (its save is then one put, compared against the revision the key
 * had). *existing when the name is a visible file. Lock held for write. */
static int create_node(struct fs *fs, fuse_ino_t parent, const char *name, bool excl,
		       struct cache_node **out, bool *existing)
{
	struct target t;
	int ret = resolve(fs, parent, name, &t);
	if (ret < 0)
		return ret;
	struct cache_node *n = t.n;
	*existing = false;
	if (n && n != t.dir && cache_is_dir(n))
		return -EISDIR;
	if (n && fs_visible_file(n)) {
		if (excl)
			return -EEXIST;
		*existing = true;
	} else if (n && t.value_entry && !n->has_value) {
		/* a directory's %value */
		struct cache_local *l = save_local_mut(n);
		if (!l)
			return -ENOMEM;
		l->local_file = true;
		l->origin_rev = 0;
		free(l->local_data);
		l->local_data = NULL;
		l->local_len = 0;
		take_pending_delete(fs, n);
	} else {
		ret = save_mkfile_locked(fs->cache, t.dir, t.ns, t.seg, t.seg_len, &n);
		if (ret < 0)
			return ret;
		struct cache_local *l = save_local_mut(n); /* a local file has one */
		l->shadow = save_is_shadow_name(fs->save, name);
		l->origin_rev = 0;
		l->born_rev = cache_seen_rev(fs->cache);
		take_pending_delete(fs, n);
	}
	*out = n;
	return 0;
}

/* The new node's owner is the caller, its mode the create mode. Lock held
 * for write. */
static int init_new(fuse_req_t req, struct cache_node *n, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	return save_init_new_locked(n, n->parent, mode & 07777, ctx->uid, ctx->gid);
}

/* Fills e for n, and counts the lookup the reply gives the kernel. Lock
 * held. */
static void entry_of(struct fs *fs, struct cache_node *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = cache_file_ino(n);
	e->generation = 1;
	int ret = fs_fill_attr(fs, e->ino, &e->attr);
	e->attr_timeout = e->entry_timeout = fs_timeout(fs);
	if (ret > 0)
		e->attr_timeout = 0;
	cache_ref_lookup(fs->cache, n);
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
	struct fhandle *fh = calloc(1, sizeof(*fh));
	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&fh->mu, NULL);
	fh->pid = fuse_req_ctx(req)->pid;
	struct cache_node *n;
	bool existing;
	cache_wrlock(c);
	int ret = create_node(fs, parent, name, fi->flags & O_EXCL, &n, &existing);
	if (ret == 0 && !existing)
		ret = init_new(req, n, mode);
	if (ret < 0) {
		cache_unlock(c);
		free(fh);
		reply_err(req, ret);
		return;
	}
	cache_ref_open(c, n);
	fh->node = n;
	cache_unlock(c);
	ret = save_file_open(fs->save, n, existing ? (fi->flags & O_TRUNC) != 0 : true,
			     fuse_req_ctx(req)->pid, &fh->file);
	if (ret < 0) {
		fs_release_node(fs, n);
		free(fh);
		reply_err(req, ret);
		return;
	}
	struct fuse_entry_param e;
	cache_rdlock(c);
	entry_of(fs, n, &e);
	cache_unlock(c);
	fi->fh = (uintptr_t)fh;
	fs_writer_io(fs, fh, fi, true); /* as a writable open (file.c) */
	if (fuse_reply_create(req, &e, fi) < 0) {
		fs_release_lookup(fs, n);
		fs_handle_free(fs, fh);
	}
}

/* A new file's first save (mknod): one put of empty content. */
static int store_empty(struct fs *fs, struct cache_node *n, int pid)
{
	struct save_fh *f;
	int ret = save_file_open(fs->save, n, true, pid, &f);
	if (ret < 0)
		return ret;
	bool wrote;
	ret = save_file_flush(fs->save, n, f, true, &wrote);
	int cret = save_file_close(fs->save, n, f);
	return ret < 0 ? ret : cret;
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	/* etcd keys are regular files; no devices, FIFOs or sockets. */
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	struct cache *c = fs->cache;
	struct cache_node *n;
	bool existing;
	cache_wrlock(c);
	int ret = create_node(fs, parent, name, true, &n, &existing);
	if (ret == 0)
		ret = init_new(req, n, mode);
	if (ret < 0) {
		cache_unlock(c);
		reply_err(req, ret);
		return;
	}
	cache_ref_open(c, n);
	cache_unlock(c);
	/* A regular mknod is a create that is closed at once. */
	ret = store_empty(fs, n, fuse_req_ctx(req)->pid);
	struct fuse_entry_param e;
	cache_wrlock(c);
	if (ret == 0)
		entry_of(fs, n, &e);
	else if (save_local(n)->local_file && !n->has_value)
		drop_local(c, n);
	cache_unref_open(c, n);
	cache_unlock(c);
	if (ret < 0)
		reply_err(req, ret);
	else if (fuse_reply_entry(req, &e) < 0)
		fs_release_lookup(fs, n);
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
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
	if (ret == 0 && (ret = init_new(req, n, mode)) < 0)
		cache_prune_locked(c, n);
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
	save_flush_deferred(fs->save, true);
	struct cache *c = fs->cache;
	struct target t;
	cache_wrlock(c);
	int ret = resolve(fs, parent, name, &t);
	if (ret == 0 && (!t.n || t.value_entry))
		ret = t.value_entry ? -ENOTDIR : -ENOENT;
	if (ret == 0 && !cache_is_dir(t.n))
		ret = -ENOTDIR;
	if (ret == 0 && (cache_n_children(t.n) || (t.n->has_value && !save_local(t.n)->hidden)))
		ret = -ENOTEMPTY;
	if (ret == 0) {
		t.n->local_dir = false;
		cache_prune_locked(c, t.n);
		dir_touched(t.dir);
	}
	cache_unlock(c);
	reply_err(req, ret);
}

/* Lets a close's save of n that is in flight end first (the kernel sends
 * RELEASE after close() returns, so "touch f; rm f" can race it): the
 * unlink then sees the key that save made, and deletes it; a save that
 * starts later finds the node unlinked and stores nothing. Lock held for
 * write; dropped and taken again. */
static void wait_for_save(struct fs *fs, struct cache_node *n)
{
	cache_ref_open(fs->cache, n);
	struct save_file *f = save_file_hold_locked(fs->save, n);
	if (f)
		save_file_unhold_locked(n, f);
	cache_unref_open(fs->cache, n);
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
	if (ret == 0 && t.n && save_local(t.n)->file) {
		wait_for_save(fs, t.n);
		ret = resolve(fs, parent, name, &t); /* the lock was dropped */
	}
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
	if (save_local(n)->shadow && !n->has_value) {
		/* A shadow that came from a key that was not re-created: the
		 * pair rename(key -> shadow) + unlink(shadow) deletes the key
		 * (after the grace period, as any unlink). */
		save_unpark_locked(fs->save, n->id);
		if (n->parent && n->parent->parent)
			n->parent->local_dir = true;
		dir_touched(n->parent);
		drop_local(c, n);
		cache_unlock(c);
		reply_err(req, 0);
		return;
	}
	/* A key, or a file replacing one: it leaves the directory now, and
	 * the key is deleted after a short grace period unless the same name
	 * is created again (then that create is one put). */
	dir_touched(n->parent);
	ret = save_unlink_locked(fs->save, n);
	cache_unlock(c);
	reply_err(req, ret);
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
		vs = cur->rendered_size;
		rs = cur->raw_size;
	}
	cache_forget_key_locked(c, sn);
	if (cache_move_locked(c, sn, d->dir, d->ns, d->seg, d->seg_len) < 0)
		return;
	save_clear_local(sn);
	save_unhide_locked(c, sn, false);
	struct cache_key_meta m = {.create_revision = cr,
				   .mod_revision = mr,
				   .version = ver,
				   .lease = ls,
				   .raw_size = rs,
				   .rendered_size = vs};
	cache_set_key_locked(c, sn, &m);
	cache_set_kernel_rev(sn, 0);
}

/* A new file that replaces a key (created within its unlink's grace
 * period) is renamed away: the key goes, as by unlink. Lock held for
 * write. -ENOMEM. */
static int leave_replaced_key(struct fs *fs, struct cache_node *n)
{
	struct cache_local *l = cache_node_local(n);
	if (!l || l->shadow || !l->origin_rev)
		return 0;
	size_t klen;
	char *key = cache_node_key(fs->cache, n, &klen);
	int ret = key ? save_defer_delete_locked(fs->save, key, klen, l->origin_rev) : -ENOMEM;
	if (ret == 0)
		l->origin_rev = 0;
	free(key);
	return ret;
}

/* A rename moves both directories' mtime and ctime. */
static void rename_touched(struct fs *fs, fuse_ino_t parent, fuse_ino_t newparent)
{
	cache_wrlock(fs->cache);
	dir_touched(cache_node_by_id(fs->cache, cache_ino_id(parent)));
	if (newparent != parent)
		dir_touched(cache_node_by_id(fs->cache, cache_ino_id(newparent)));
	cache_unlock(fs->cache);
}

/* Resolves both names of a rename once no close's save of either is in
 * flight: "create a; close; mv a b; mv b a" raced the RELEASE that saves a,
 * which then created a behind the rename (ESTALE and a false conflict, the
 * issue's bug 5). Lock held for write. */
/* Resolves both names of a rename, with saves of the source held until
 * the rename is done (*hold, save_hold_locked) and a close's save of the
 * destination waited for. Lock held for write; dropped while waiting, then
 * both are resolved again. */
static int resolve_pair(struct fs *fs, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			const char *newname, struct target *s, struct target *d,
			struct save_hold **hold)
{
	for (int i = 0; i < 2; i++) {
		int ret = resolve(fs, parent, name, s);
		if (ret == 0)
			ret = resolve(fs, newparent, newname, d);
		if (*hold && (ret < 0 || s->n != save_hold_node(*hold))) {
			/* the source changed while we waited: hold nothing */
			save_unhold_locked(fs->save, *hold);
			*hold = NULL;
		}
		if (ret < 0 || i == 1)
			return ret;
		bool src = s->n && save_local(s->n)->file;
		bool dst = d->n && d->n != s->n && save_local(d->n)->file;
		if (!src && !dst)
			return 0;
		if (src)
			cache_ref_open(fs->cache, s->n); /* alive across d's wait */
		if (dst)
			wait_for_save(fs, d->n);
		/* after d's: a rename holds no other file while it holds these */
		if (src) {
			*hold = save_hold_locked(fs->save, s->n);
			cache_unref_open(fs->cache, s->n);
		}
	}
	return 0;
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
	int64_t taken = 0; /* the destination's pending delete, taken over */
	/* the moved node's writers follow it (save_file_moved) */
	struct cache_node *moved = NULL;
	int64_t from_rev = 0, moved_rev = 0;
	struct save_hold *hold = NULL;
	pthread_mutex_lock(&fs->rename_mu);
	cache_wrlock(c);
	int ret = resolve_pair(fs, parent, name, newparent, newname, &s, &d, &hold);
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
		if (dst_visible && (cache_n_children(dn) || dn->has_value)) {
			ret = -ENOTEMPTY;
			goto out_unlock;
		}
		if (cache_n_children(sn) == 0 && !sn->has_value) {
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
	bool src_local = save_local(sn)->local_file && !sn->has_value;
	bool dst_shadow = save_is_shadow_name(fs->save, newname);

	if (src_local && dst_shadow) {
		/* shadow -> shadow: purely local (a new file that replaces
		 * a key leaves that key's name: the key goes, as by unlink) */
		ret = leave_replaced_key(fs, sn);
		if (ret == 0)
			ret = cache_move_locked(c, sn, d.dir, d.ns, d.seg, d.seg_len);
		if (ret == 0)
			save_local_mut(sn)->shadow = true; /* a local file has one */
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
		/* The moved node (the kernel's inode) becomes the shadow; the
		 * key's name is free, its delete parked until the shadow goes
		 * (or taken by a create of the name). */
		struct cache_node *keep = sn;
		int64_t mr = sn->mod_revision;
		struct cache_local *kl = save_local_mut(keep);
		skey = kl ? cache_node_key(c, keep, &sklen) : NULL;
		ret = skey ? save_park_key_locked(fs->save, skey, sklen, mr, keep->id) : -ENOMEM;
		if (ret == 0)
			ret = cache_move_locked(c, keep, d.dir, d.ns, d.seg, d.seg_len);
		if (ret < 0) {
			if (skey)
				save_take_deferred_locked(fs->save, skey, sklen, &mr);
			free(content);
			goto out_unlock;
		}
		cache_forget_key_locked(c, keep);
		cache_drop_rendered_locked(c, keep);
		kl->local_file = true;
		kl->shadow = true;
		free(kl->local_data);
		kl->local_data = content;
		kl->local_len = clen;
		kl->origin_rev = crev;
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
	/* The destination may be a key whose unlink is pending, or a new
	 * file replacing one: the rename's put replaces it at that
	 * revision. A failed rename leaves the pending delete as it was. */
	if (d_absent && dn && save_local(dn)->local_file && !save_local(dn)->shadow)
		d_rev = save_local(dn)->origin_rev;
	else if (d_absent && save_take_deferred_locked(fs->save, dkey, dklen, &taken))
		d_rev = taken;
	d_absent = d_rev == 0;
	uint64_t sn_id = sn->id;
	if (src_local) {
		/* shadow -> key (sed -i, perl -pi, rsync, emacs): a
		 * compare-and-swap put of the shadow's content. The key must
		 * not have changed since the shadow was made. */
		char *content =
			save_local(sn)->local_data ? malloc(save_local(sn)->local_len + 1) : NULL;
		size_t clen = save_local(sn)->local_len;
		if (content)
			memcpy(content, save_local(sn)->local_data, clen);
		/* An edit is lost only if the key existed when the file was
		 * made (it may have been read for it) and someone else changed
		 * it since; one created later, or changed through this mount
		 * (its own save: any process here), is replaced, as on any
		 * filesystem. */
		int64_t born = save_local(sn)->born_rev;
		bool changed = dn && dn->has_value && born && dn->create_revision <= born &&
			       dn->mod_revision > born &&
			       save_local(dn)->own_rev != dn->mod_revision;
		/* a new file replacing a key: that key goes with its name */
		int64_t s_origin = save_local(sn)->shadow ? 0 : save_local(sn)->origin_rev;
		from_rev = save_local(sn)->origin_rev;
		if (s_origin && !(skey = cache_node_key(c, sn, &sklen))) {
			free(content);
			ret = -ENOMEM;
			goto out_untake;
		}
		cache_unlock(c);
		if (changed) {
			ret = save_reject_edit(fs->save, dkey, dklen, content ? content : "", clen,
					       d_rev);
			free(content);
			goto out_untake_lock;
		}
		int64_t rev;
		ret = save_store_text(fs->save, dkey, dklen, content ? content : "", clen, d_rev,
				      d_absent, &rev);
		free(content);
		if (ret < 0)
			goto out_untake_lock;
		cache_wrlock(c);
		sn = cache_node_by_id(c, sn_id);
		if (sn && !sn->detached) {
			/* The moved node takes over the key. */
			take_over_key(c, sn, &d, rev, clen);
			cache_ref_open(c, sn);
			moved = sn;
			moved_rev = rev;
		}
		if (s_origin && save_defer_delete_locked(fs->save, skey, sklen, s_origin) < 0)
			log_err("rename: out of memory; %.*s stays in etcd", (int)sklen, skey);
		goto out_unlock;
	}
	/* key -> key: delete the old, put the new, compares on both. The
	 * source node is pinned so that the watch's delete event cannot prune
	 * it before it moves onto the new name (the kernel's inode). */
	struct cache_local *sl = save_local_mut(sn);
	skey = sl ? cache_node_key(c, sn, &sklen) : NULL;
	if (skey)
		sl->pinned = true;
	from_rev = sn->mod_revision;
	cache_unlock(c);
	if (!skey) {
		ret = -ENOMEM;
		goto out_untake_lock;
	}
	int64_t rev;
	ret = save_move_key(fs->save, skey, sklen, dkey, dklen, d_rev, d_absent, &rev);
	if (ret < 0)
		goto out_unpin;
	cache_wrlock(c);
	sn = cache_node_by_id(c, sn_id);
	if (sn)
		save_unpin_locked(sn);
	if (sn && !sn->detached && cache_n_children(sn) == 0 &&
	    cache_child(c, d.dir, d.ns, d.seg, d.seg_len)) {
		/* Keep the kernel's inode: the moved node takes over the new
		 * key (save_move_key put its metadata on the node at the new
		 * name). */
		take_over_key(c, sn, &d, rev, 0);
		cache_ref_open(c, sn);
		moved = sn;
		moved_rev = rev;
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
		save_unpin_locked(sn);
		if (!sn->has_value && !sn->detached)
			cache_prune_locked(c, sn);
	}
	goto out_untake;
out_untake_lock:
	cache_wrlock(c);
out_untake:
	/* the pending delete of the destination goes on */
	if (taken && save_defer_delete_locked(fs->save, dkey, dklen, taken) < 0)
		log_err("rename: out of memory; %.*s stays in etcd", (int)dklen, dkey);
out_unlock:
	cache_unlock(c);
out_reply:
	if (moved) {
		save_file_moved(fs->save, moved, from_rev, from_rev == 0, moved_rev, hold);
		fs_release_node(fs, moved);
	}
	if (hold) {
		cache_wrlock(c);
		save_unhold_locked(fs->save, hold);
		cache_unlock(c);
	}
	pthread_mutex_unlock(&fs->rename_mu);
	if (ret == 0)
		rename_touched(fs, parent, newparent);
	free(skey);
	free(dkey);
	reply_err(req, ret);
}

/* chown by a caller who is not root: only to itself, and to a group it is
 * in (the kernel checks this too under default_permissions). */
static bool may_chown(fuse_req_t req, const struct stat *attr, int to_set, uid_t owner)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (ctx->uid == 0)
		return true;
	if ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != owner)
		return false;
	if (!(to_set & FUSE_SET_ATTR_GID) || attr->st_gid == ctx->gid)
		return true;
	gid_t groups[64];
	int n = fuse_req_getgroups(req, 64, groups);
	for (int i = 0; i < n && i < 64; i++)
		if (groups[i] == attr->st_gid)
			return true;
	return false;
}

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* The metadata part of a setattr, as save_attr. */
static struct save_attr attr_of(const struct stat *attr, int to_set)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct save_attr a = {.mode = attr->st_mode & 07777,
			      .uid = attr->st_uid,
			      .gid = attr->st_gid,
			      .atime_ns = ts_ns(&attr->st_atim),
			      .mtime_ns = ts_ns(&attr->st_mtim)};
	if (to_set & FUSE_SET_ATTR_MODE)
		a.what |= SAVE_ATTR_MODE;
	if (to_set & FUSE_SET_ATTR_UID)
		a.what |= SAVE_ATTR_UID;
	if (to_set & FUSE_SET_ATTR_GID)
		a.what |= SAVE_ATTR_GID;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
		a.what |= SAVE_ATTR_ATIME;
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
		a.what |= SAVE_ATTR_MTIME;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		a.atime_ns = ts_ns(&now);
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		a.mtime_ns = ts_ns(&now);
	return a;
}

/* truncate and ftruncate: through the handle's shared content, or one
 * immediate save. */
static int set_size(struct fs *fs, fuse_ino_t ino, off_t size, struct fuse_file_info *fi, int pid)
{
	if (cache_ino_kind(ino) == CACHE_INO_DIR)
		return -EISDIR;
	if (size < 0)
		return -EINVAL;
	if ((uint64_t)size > SAVE_MAX_FILE)
		return -EFBIG;
	struct fhandle *fh = fi ? (struct fhandle *)(uintptr_t)fi->fh : NULL;
	if (fh && fh->file)
		return save_file_truncate(fh->file, size);
	struct cache *c = fs->cache;
	cache_rdlock(c);
	struct cache_node *n = cache_node_by_id(c, cache_ino_id(ino));
	if (!n || !fs_visible_file(n)) {
		cache_unlock(c);
		return -ENOENT;
	}
	cache_ref_open(c, n);
	cache_unlock(c);
	int ret = save_truncate(fs->save, n, size, pid);
	fs_release_node(fs, n);
	return ret;
}

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	struct cache *c = fs->cache;
	if (refused_read_only(fs, req))
		return;
	if (cache_ino_kind(ino) == CACHE_INO_RAW || fs_history_ino(ino)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	int ret = 0;
	if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		struct stat cur;
		cache_rdlock(c);
		ret = fs_fill_attr(fs, ino, &cur);
		cache_unlock(c);
		if (ret > 0)
			ret = 0; /* a writer's size: the owner is what matters here */
		if (ret == 0 && !may_chown(req, attr, to_set, cur.st_uid))
			ret = -EPERM;
	}
	bool resized = false;
	if (ret == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		struct stat cur;
		cache_rdlock(c);
		resized = fs_fill_attr(fs, ino, &cur) >= 0 && cur.st_size != attr->st_size;
		cache_unlock(c);
		ret = set_size(fs, ino, attr->st_size, fi, fuse_req_ctx(req)->pid);
	}
	if (ret < 0) {
		reply_err(req, ret);
		return;
	}
	cache_wrlock(c);
	struct cache_node *n = cache_node_by_id(c, cache_ino_id(ino));
	struct save_attr a = attr_of(attr, to_set);
	/* Modes, owners and times are kept in memory for this mount only:
	 * etcd has no place for them (docs/writes.md). A size change moves
	 * mtime and ctime: ftruncate sends MTIME_NOW with it, truncate(2)
	 * does not (the filesystem is to do it, as tmpfs and ext4 do). */
	if (resized && !(a.what & SAVE_ATTR_MTIME)) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		a.what |= SAVE_ATTR_MTIME;
		a.mtime_ns = ts_ns(&now);
	}
	ret = n ? save_setattr_locked(n, &a) : -ENOENT;
	struct stat st;
	if (ret == 0)
		ret = fs_fill_attr(fs, ino, &st);
	cache_unlock(c);
	if (ret < 0)
		reply_err(req, ret);
	else
		fuse_reply_attr(req, &st, fs_attr_timeout(fs, ino, ret));
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (refused_read_only(fs, req))
		return;
	/* etcd has no symlinks; only local shadow names (emacs' .#x lock)
	 * may be links. */
	if (!save_is_shadow_name(fs->save, name)) {
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
		ret = save_mkfile_locked(c, t.dir, t.ns, t.seg, t.seg_len, &n);
	if (ret == 0) {
		struct cache_local *l = save_local_mut(n); /* a local file has one */
		l->shadow = true;
		l->is_link = true;
		l->local_data = strdup(link);
		l->local_len = l->local_data ? strlen(link) : 0;
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
	if (!n || !save_local(n)->is_link || !save_local(n)->local_data) {
		cache_unlock(fs->cache);
		fuse_reply_err(req, EINVAL);
		return;
	}
	char *copy = strdup(save_local(n)->local_data);
	cache_unlock(fs->cache);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_readlink(req, copy);
	free(copy);
}
