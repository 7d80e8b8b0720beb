/* file.c: file handles: open, read, write, flush, fsync and release.
 *
 * A thin translation over src/save: every writable handle of an inode
 * shares its content (struct save_file), and a save (flush, fsync, the
 * last release) commits it as ONE transaction that compares the key's
 * mod_revision with the one seen at open (create_revision == 0 for a new
 * key). Shadows (editor temp files) keep their content in this mount. See
 * docs/writes.md.
 *
 * The kernel's page cache of an inode holds one content: the key's (the
 * version the kernel was last told the size of, src/cache), or the
 * unsaved content of the one process writing it through the page cache
 * (fs_writer_io). Handles that would see another content (another
 * process's writes, its readers meanwhile, a hot file's private copy,
 * NAME%raw) use direct I/O. See docs/writes.md, "Commit model".
 *
 * Locking: the cache lock is never held across a backend call; a save_file
 * lock is taken before the cache lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "fs_int.h"

void fs_release_node(struct fs *fs, struct cache_node *n)
{
	cache_wrlock(fs->cache);
	cache_unref_open(fs->cache, n);
	cache_unlock(fs->cache);
}

void fs_release_lookup(struct fs *fs, struct cache_node *n)
{
	cache_wrlock(fs->cache);
	cache_unref_lookup(fs->cache, n, 1);
	cache_unlock(fs->cache);
}

/* Content changed here: mtime and ctime move. A write by anyone but root
 * (root stands for CAP_FSETID, which FUSE does not pass on) drops setuid
 * and setgid: for direct I/O writes the kernel leaves that to us, and
 * libfuse 3.14 does not pass on its FUSE_WRITE_KILL_SUIDGID flag. */
static void touch_node(struct fs *fs, struct cache_node *n, bool kill_priv)
{
	cache_wrlock(fs->cache);
	/* Times and modes are best effort under memory pressure: the data
	 * matters. */
	(void)save_touch_locked(n, SAVE_MTIME | SAVE_CTIME);
	if (kill_priv)
		(void)save_kill_priv_locked(n);
	cache_unlock(fs->cache);
}

/* The kernel forgets its pages and size of n (and has, on return): the
 * content its page cache holds changes owner. */
static void forget_kernel_view(struct fs *fs, struct cache_node *n)
{
	cache_rdlock(fs->cache);
	struct cache_change chg = {
		.kind = CACHE_CHG_CONTENT, .ino = cache_file_ino(n), .rev = n->mod_revision};
	/* The next reader's open drops whatever pages are left. */
	cache_set_kernel_rev(n, -1);
	cache_unlock(fs->cache);
	fs_cache_notify(fs, &chg);
	fs_notify_wait(fs, 2000);
}

void fs_writer_io(struct fs *fs, struct fhandle *fh, struct fuse_file_info *fi, bool created)
{
	struct cache_node *n = fh->node;
	cache_wrlock(fs->cache);
	bool joined = save_file_cached_by_locked(n, fh->pid);
	/* An append lands where the kernel's i_size says, which the
	 * invalidation below leaves as it was until a getattr: appends never
	 * start writing through the page cache (they join it once it holds
	 * their process's content, whose size the kernel then tracks). */
	fh->cached = joined || (!(fi->flags & O_APPEND) && save_file_cache_locked(n, fh->file));
	if (fh->cached)
		cache_set_kernel_rev(n, -1);
	cache_unlock(fs->cache);
	/* Alone with the file, a writer goes through the page cache, so a
	 * shared writable mmap works. Else its content is its process's
	 * until the save (the kernel's i_size and pages are another's), and
	 * the handle bypasses them. */
	fi->direct_io = !fh->cached;
	fi->keep_cache = joined;
	/* The kernel may still hold the size of an older version, or of
	 * another process's content that a save rejected: the first
	 * reader of this content must not read it with that size. */
	if (fh->cached && !joined && !created)
		forget_kernel_view(fs, n);
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
	fh->raw = true;
	fi->fh = (uintptr_t)fh;
	fi->direct_io = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) < 0)
		fs_handle_free(fs, fh);
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_open);
	if (fs->no_open) {
		/* The kernel stops asking: this file and every later one are
		 * opened without us (fs_op_init). */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (fs_history_ino(ino)) {
		fs_history_open(req, fs, ino, fi);
		return;
	}
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
	fh->pid = fuse_req_ctx(req)->pid;
	if (writable) {
		ret = save_file_open(fs->save, n, trunc, fuse_req_ctx(req)->pid, &fh->file);
		if (ret < 0) {
			free(fh);
			goto out_unref;
		}
		if (trunc)
			touch_node(fs, n, fuse_req_ctx(req)->uid != 0);
		fs_writer_io(fs, fh, fi, false);
	} else {
		/* The page cache is kept only if it holds the current
		 * revision (after any change the next open rereads), or
		 * this process's content that it writes through it. */
		cache_rdlock(fs->cache);
		bool mine = save_file_cached_by_locked(n, fh->pid);
		int64_t cur = n->mod_revision;
		bool same = cache_kernel_rev(n) == cur;
		if (!mine && !save_local(n)->file)
			cache_set_kernel_rev(n, cur);
		/* Another process's writer through the page cache, or
		 * writers with direct I/O: this handle's content is not the
		 * page cache's. */
		bool shared = save_local(n)->file != NULL && !mine;
		bool own = save_file_writes_locked(n, fh->pid);
		/* A file that changed within the last second is "hot", and one
		 * that another process writes may change at any save: their
		 * readers get direct I/O from a private copy, so a reader
		 * racing a change never mixes two versions, even over several
		 * read calls. A reader in a process that writes the file
		 * reads that process's content instead. */
		bool hot = !local && !own &&
			   (shared ||
			    (cache_changed_ms(n) && util_now_ms() - cache_changed_ms(n) < 1000));
		cache_unlock(fs->cache);
		if (hot) {
			int64_t rev;
			ret = cache_get_content(fs->cache, n, &fh->buf, &fh->len, &rev);
			if (ret < 0) {
				free(fh);
				goto out_unref;
			}
			fh->raw = true;
			fh->hot = true;
			shared = true;
		}
		fi->keep_cache = mine || (fresh && same && !local && !shared);
		fi->direct_io = shared;
		/* A reader has nothing to save: spare the close its FLUSH. */
		fi->noflush = 1;
	}
	fi->fh = (uintptr_t)fh;
	if (fuse_reply_open(req, fi) < 0)
		fs_handle_free(fs, fh);
	return;
out_unref:
	fs_release_node(fs, n);
	fuse_reply_err(req, fs_errno_out(ret));
}

/* Reads a handle's private copy: NAME%raw's snapshot, or a hot file's
 * version. A hot file read again from offset 0 (a reader that seeks back,
 * tail -f, less's reload) takes the version current then, as a reread of
 * any file does: one read still never mixes two versions. */
static void read_snapshot(fuse_req_t req, struct fs *fs, struct fhandle *fh, size_t size, off_t off)
{
	pthread_mutex_lock(&fh->mu);
	if (fh->hot && off == 0 && fh->read_any) {
		char *nb;
		size_t nl;
		int64_t rev;
		/* On failure the handle keeps the version it has. */
		if (cache_get_content(fs->cache, fh->node, &nb, &nl, &rev) == 0) {
			free(fh->buf);
			fh->buf = nb;
			fh->len = nl;
		}
	}
	fh->read_any = true;
	size_t cnt = (size_t)off < fh->len ? fh->len - off : 0;
	if (cnt > size)
		cnt = size;
	/* Copy, then unlock, then reply: once the reply is out the kernel
	 * may release (free) this handle at any moment. */
	char *tmp = malloc(cnt ? cnt : 1);
	if (tmp && cnt)
		memcpy(tmp, fh->buf + off, cnt);
	pthread_mutex_unlock(&fh->mu);
	if (tmp)
		fuse_reply_buf(req, tmp, cnt);
	else
		fuse_reply_err(req, ENOMEM);
	free(tmp);
}

/* Reads n for any handle: the content process pid's writers share, a
 * local file's data, else the key's content (pid -1: no process's). */
static ssize_t read_node(struct fs *fs, struct cache_node *n, int pid, char *buf, size_t size,
			 off_t off)
{
	struct cache *c = fs->cache;
	cache_rdlock(c);
	bool plain = !save_local(n)->file && !save_local(n)->local_file;
	cache_unlock(c);
	if (plain)
		return cache_read(c, n, buf, size, off);
	cache_wrlock(c);
	struct save_file *f = pid >= 0 ? save_file_ref_locked(n, pid) : NULL;
	if (f) {
		cache_unlock(c);
		size_t cnt = save_file_read(f, buf, size, off);
		cache_wrlock(c);
		save_file_unref_locked(n, f);
		cache_unlock(c);
		return cnt;
	}
	const struct cache_local *l = save_local(n);
	if (l->local_file) {
		size_t cnt = (size_t)off < l->local_len ? l->local_len - off : 0;
		if (cnt > size)
			cnt = size;
		if (cnt)
			memcpy(buf, l->local_data + off, cnt);
		cache_unlock(c);
		return cnt;
	}
	cache_unlock(c);
	return cache_read(c, n, buf, size, off);
}

/* Copies the part of buf at off, up to size bytes, as the reply. */
static void reply_slice(fuse_req_t req, const char *buf, size_t len, size_t size, off_t off)
{
	size_t cnt = (size_t)off < len ? len - off : 0;
	fuse_reply_buf(req, buf + (cnt ? off : 0), cnt < size ? cnt : size);
}

/* A read of a file the kernel opened without asking (no_open): no handle;
 * it fills the page cache, which the notifier empties at every change. The
 * node lives as long as the kernel's inode, which this READ names. */
static void read_unopened(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size, off_t off)
{
	cache_rdlock(fs->cache);
	struct cache_node *n = cache_node_by_id(fs->cache, cache_ino_id(ino));
	bool hot = n && cache_changed_ms(n) && util_now_ms() - cache_changed_ms(n) < FS_HOT_MS;
	cache_unlock(fs->cache);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* Until this reader has copied the pages, no other is told the size
	 * of another version (file_size, fs.c). */
	if (hot)
		fs_reader_note(fs, ino, fuse_req_ctx(req)->pid);
	/* While the watch is down nothing is served without the backend
	 * answering (no OPEN does that here), and the pages this read fills
	 * are dropped again after it, so that the next read asks too. */
	bool fresh = cache_fresh(fs->cache);
	bool raw = cache_ino_kind(ino) == CACHE_INO_RAW;
	char *buf = NULL;
	size_t len = 0;
	ssize_t ret = 0;
	if (!fresh && !raw) {
		struct fs_intr it;
		fs_intr_arm(req, &it);
		ret = cache_revalidate(fs->cache, n);
		if (!fs_intr_claim(&it))
			return; /* interrupted: EINTR was the reply */
	}
	if (ret == 0 && raw) {
		/* NAME%raw: the stored bytes as etcd has them now */
		ret = cache_get_raw(fs->cache, n, &buf, &len);
		if (ret == 0)
			reply_slice(req, buf, len, size, off);
	} else if (ret == 0) {
		buf = malloc(size ? size : 1);
		ret = buf ? read_node(fs, n, -1, buf, size, off) : -ENOMEM;
		if (ret >= 0)
			fuse_reply_buf(req, buf, ret);
	}
	if (ret < 0)
		fuse_reply_err(req, fs_errno_out(ret));
	free(buf);
	if (!fresh) {
		cache_rdlock(fs->cache);
		struct cache_change chg = {.kind = CACHE_CHG_CONTENT,
					   .ino = cache_file_ino(n),
					   .rev = n->mod_revision};
		cache_unlock(fs->cache);
		fs_cache_notify(fs, &chg);
	}
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	CNT(fs, n_read);
	if (history_is_ino(ino)) {
		fs_history_read(req, fs, ino, size, off);
		return;
	}
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	if (!fh) {
		read_unopened(req, fs, ino, size, off);
		return;
	}
	/* A read that fills the page cache (the kernel sends a lock owner
	 * with every direct read, none with a fill) through a direct I/O
	 * handle comes from mmap: it reads the content the page cache holds
	 * (the page-cache writer's, else the key's), never the handle's own
	 * view, so every user of the page cache sees one content. */
	bool fill = fi->lock_owner == 0;
	if (fh->raw && !(fh->hot && fill)) {
		read_snapshot(req, fs, fh, size, off);
		return;
	}
	int pid = fh->pid;
	if (fill) {
		cache_rdlock(fs->cache);
		int owner = save_file_cached_pid_locked(fh->node);
		cache_unlock(fs->cache);
		if (owner >= 0 || fh->hot)
			pid = owner;
	}
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n_read = read_node(fs, fh->node, pid, buf, size, off);
	if (n_read < 0)
		fuse_reply_err(req, fs_errno_out(n_read));
	else
		fuse_reply_buf(req, buf, n_read);
	free(buf);
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	struct fhandle *fh = (struct fhandle *)(uintptr_t)fi->fh;
	if (!fh || !fh->file) {
		fuse_reply_err(req, EBADF);
		return;
	}
	size_t end;
	/* Through the page cache the kernel placed an append itself, at the
	 * i_size that is this content's length. */
	bool append = (fi->flags & O_APPEND) && !fh->cached;
	int ret = save_file_write(fh->file, buf, size, off, append, &end);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	touch_node(fs, fh->node, fuse_req_ctx(req)->uid != 0);
	fuse_reply_write(req, size);
}

/* A save of fh: flush (force: fsync). */
static int save_handle(struct fs *fs, struct fhandle *fh, bool force)
{
	if (!fh || !fh->file) /* !fh: opened without us (no_open) */
		return 0;
	bool wrote;
	int ret = save_file_flush(fs->save, fh->node, fh->file, force, &wrote);
	if (wrote)
		fs_notify_wait(fs, 2000);
	return ret;
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *fs = fs_of(req);
	CNT(fs, n_requests);
	if (!fi->fh && fs->no_open) {
		/* Nothing to save on a read-only mount: the kernel stops
		 * sending FLUSH too. */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* A shell's "cmd > file" opens with O_TRUNC, dup2()s and closes the
	 * original fd before cmd writes: save_file_flush leaves a file
	 * nothing was written to since for the last close. */
	int ret = save_handle(fs, (struct fhandle *)(uintptr_t)fi->fh, false);
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : 0);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync;
	int ret = save_handle(fs_of(req), (struct fhandle *)(uintptr_t)fi->fh, true);
	fuse_reply_err(req, ret < 0 ? fs_errno_out(ret) : 0);
}

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	save_flush_deferred(fs_of(req)->save, true);
	fuse_reply_err(req, 0);
}

void fs_handle_free(struct fs *fs, struct fhandle *fh)
{
	bool stale = false;
	if (fh->file)
		save_file_close_view(fs->save, fh->node, fh->file, &stale);
	/* The page cache held content that was not saved: others must not
	 * read its pages or size. */
	if (stale)
		forget_kernel_view(fs, fh->node);
	fs_release_node(fs, fh->node);
	pthread_mutex_destroy(&fh->mu);
	free(fh->buf);
	free(fh);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	if (fi->fh) /* else opened without us (no_open): nothing to free */
		fs_handle_free(fs_of(req), (struct fhandle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* FUSE_DIRECT_IO_ALLOW_MMAP (protocol 7.39, Linux 6.6): MAP_SHARED on a
 * handle opened with direct I/O (a hot file's reader, a writer that is not
 * alone). Bit 36 of the INIT flags: bit 4 of flags2. libfuse before 3.16
 * has no name for it, so the INIT reply is completed on its way out. */
#ifndef FUSE_CAP_DIRECT_IO_ALLOW_MMAP
#define DIO_MMAP_FLAG2 (1u << (36 - 32))

static uint64_t init_unique; /* the kernel's INIT request */
static bool init_offered;    /* ...offered the flag; cleared once answered */

static ssize_t io_read(int fd, void *buf, size_t len, void *arg)
{
	(void)arg;
	ssize_t n = read(fd, buf, len);
	struct fuse_in_header h;
	struct fuse_init_in in;
	if (n < (ssize_t)(sizeof(h) + offsetof(struct fuse_init_in, unused)))
		return n;
	memcpy(&h, buf, sizeof(h));
	if (h.opcode != FUSE_INIT)
		return n;
	memset(&in, 0, sizeof(in));
	memcpy(&in, (char *)buf + sizeof(h), offsetof(struct fuse_init_in, unused));
	__atomic_store_n(&init_unique, h.unique, __ATOMIC_RELAXED);
	__atomic_store_n(&init_offered, (in.flags & FUSE_INIT_EXT) && (in.flags2 & DIO_MMAP_FLAG2),
			 __ATOMIC_RELEASE);
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *arg)
{
	(void)arg;
	if (__atomic_load_n(&init_offered, __ATOMIC_ACQUIRE) && count >= 2 &&
	    iov[0].iov_len == sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, unused)) {
		struct fuse_out_header *oh = iov[0].iov_base;
		struct fuse_init_out *out = iov[1].iov_base;
		if (oh->unique == __atomic_load_n(&init_unique, __ATOMIC_RELAXED) &&
		    oh->error == 0) {
			if (out->flags & FUSE_INIT_EXT)
				out->flags2 |= DIO_MMAP_FLAG2;
			__atomic_store_n(&init_offered, false, __ATOMIC_RELAXED);
		}
	}
	return writev(fd, iov, count);
}
#endif

void fs_want_dio_mmap(struct fuse_session *se, struct fuse_conn_info *conn)
{
#ifdef FUSE_CAP_DIRECT_IO_ALLOW_MMAP
	if (conn && (conn->capable & FUSE_CAP_DIRECT_IO_ALLOW_MMAP))
		conn->want |= FUSE_CAP_DIRECT_IO_ALLOW_MMAP;
	(void)se;
#else
	if (conn || !se)
		return;
	static const struct fuse_custom_io io = {.read = io_read, .writev = io_writev};
	/* Without it, MAP_SHARED of a direct I/O handle is ENODEV. */
	if (fuse_session_custom_io(se, &io, fuse_session_fd(se)) < 0)
		log_warn("cannot ask for shared mmap of direct I/O files");
#endif
}
