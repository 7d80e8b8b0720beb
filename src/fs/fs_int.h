/* fs_int.h: state shared by the fs/ source files (not a public API). */
#ifndef ETCDFS_FS_INT_H
#define ETCDFS_FS_INT_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>

#include "fs.h"
#include "history/history.h"
#include "save/save.h"

struct notify_item;

/* How many of the latest readers of changing files a no_open mount keeps
 * (fs_reader_note). */
#define FS_READERS 64

struct fs {
	struct fs_config cfg;
	struct cache *cache;	 /* borrowed */
	struct save *save;	 /* the write path's commit model, owned */
	struct fuse_session *se; /* set once mounted */
	struct history *history; /* NAME%history/ (fs/history.c), owned */
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
	uint64_t nq_sent;     /* protected by nq_lock */
	uint64_t nq_enqueued; /* protected by nq_lock */
	pthread_cond_t nq_done_cv;

	/* Serializes renames: a rename holds every writer's file of its
	 * source (save_hold_locked) and may take a newly opened one's too,
	 * so two renames must not hold files at once (lock order first). */
	pthread_mutex_t rename_mu;

	bool ro_explained; /* the first EROFS logs why */
	/* A read-only mount whose kernel opens files without asking (FUSE
	 * NO_OPEN): reads arrive with fh 0 and go through the page cache, and
	 * no handle state exists (docs/consistency.md, "Read-only mounts").
	 * Set in init, before any request. */
	bool no_open;

	/* no_open: the latest readers of changing files (fs_reader_*),
	 * a ring */
	pthread_mutex_t rd_lock;
	struct fs_reader {
		uint64_t ino;
		int pid;
		int64_t ms;
	} readers[FS_READERS];
	unsigned rd_next;

	/* request counters (atomics) */
	uint64_t n_requests, n_lookup, n_getattr, n_open, n_read, n_readdir, n_errors;
};

#define CNT(fs, field) __atomic_add_fetch(&(fs)->field, 1, __ATOMIC_RELAXED)

static inline struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Ctrl-C on a process waiting for a slow backend: the FUSE INTERRUPT is
 * answered with EINTR at once, and the handler, when its backend call
 * returns, finds the reply taken. Exactly one reply either way. */
struct fs_intr {
	int done;
};
void fs_intr_arm(fuse_req_t req, struct fs_intr *it);
/* True if the caller still owns the reply (not interrupted). */
bool fs_intr_claim(struct fs_intr *it);

/* The process a handler answers (its thread's pid), for fs_fill_attr. */
extern __thread int fs_asker;
/* no_open mounts: the kernel samples a file's size after a read's pages
 * arrive, and reads on past the first pages if the size grew meanwhile; so
 * while a reader may still be copying pages of one version, no other
 * reader is told the size of another. fs_reader_note records that pid was
 * told the size of, or read, ino (a file that changed within the last
 * second); fs_reader_other says whether another process was, within the
 * last FS_READER_MS. */
#define FS_READER_MS 20
/* A file changed within this many ms is "hot" (docs/consistency.md). */
#define FS_HOT_MS 1000
void fs_reader_note(struct fs *fs, uint64_t ino, int pid);
bool fs_reader_other(struct fs *fs, uint64_t ino, int pid);

/* fs.c helpers shared with write.c */
double fs_timeout(struct fs *fs);
int fs_check_backend(struct fs *fs);
int fs_errno_out(int ret);
/* Fills st for ino. Returns 1 when the size is a writer's unsaved one,
 * which the kernel must not keep for long (it changes with every write
 * and goes with a refused save). Cache lock held. */
int fs_fill_attr(struct fs *fs, uint64_t ino, struct stat *st);
/* How long the kernel may keep attributes fs_fill_attr returned ret for. */
double fs_attr_timeout(struct fs *fs, uint64_t ino, int ret);
/* Replies with n's entry; called with the cache lock held, releases it. */
void fs_reply_entry(fuse_req_t req, struct fs *fs, struct cache_node *n, bool as_file);
/* A file the user can see: a key not hidden, or a local file. */
static inline bool fs_visible_file(const struct cache_node *n)
{
	return (n->has_value && !save_local(n)->hidden) || save_local(n)->local_file;
}

/* NAME%history/ (history.c): the directory is inode 4*id+3 of the key's
 * node, its version files HISTORY_INO_BASE and up (src/history). */
#define FS_INO_HISTORY 3
/* Adds entry i of a listing (0 and 1: "." and "..", which get no lookup count) to a
 * READDIR(PLUS) reply buffer; the size it needs, as fuse_add_direntry gives it. */
size_t fs_add_dirent(fuse_req_t req, char *buf, size_t size, const char *name,
		     struct fuse_entry_param *e, off_t i, bool plus);

#define FS_HISTORY_SUFFIX "%history"
static inline bool fs_history_ino(uint64_t ino)
{
	return history_is_ino(ino) || cache_ino_kind(ino) == FS_INO_HISTORY;
}
/* Whether n's key matches --secrets-match (mode 0600). Cache lock held. */
bool fs_is_secret(struct fs *fs, struct cache_node *n);
int fs_history_new(struct fs *fs);
/* Attributes of a history inode. Cache lock held. */
int fs_history_attr(struct fs *fs, uint64_t ino, struct stat *st);
/* Lookup of NAME%history, n the key's node or NULL: with the cache lock
 * held (read), which it releases. */
void fs_history_lookup_dir(fuse_req_t req, struct fs *fs, struct cache_node *n);
void fs_history_lookup_version(fuse_req_t req, struct fs *fs, fuse_ino_t parent, const char *name);
void fs_history_forget(struct fs *fs, uint64_t ino, uint64_t nlookup);
void fs_history_opendir(fuse_req_t req, struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_history_readdir(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi, bool plus);
void fs_history_releasedir(struct fs *fs, struct fuse_file_info *fi);
void fs_history_open(fuse_req_t req, struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_history_read(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size, off_t off);
void fs_history_getxattr(fuse_req_t req, struct fs *fs, fuse_ino_t ino, const char *name,
			 size_t size);
void fs_history_listxattr(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size);

/* An open file (file.c). */
struct fhandle {
	struct cache_node *node; /* referenced through nopen */
	struct save_fh *file;	 /* writable handles: the inode's shared content */
	bool raw;		 /* reads come from buf: NAME%raw, or a hot file */
	bool hot;		 /* raw for a hot file: rereading from 0 refreshes buf */
	bool read_any;		 /* buf was read from, protected by mu */
	bool cached;		 /* through the page cache with its process's content */
	int pid;		 /* the process that opened it */
	pthread_mutex_t mu;
	char *buf; /* raw: the private copy, protected by mu */
	size_t len;
};

void fs_release_node(struct fs *fs, struct cache_node *n);   /* drops an open reference */
void fs_release_lookup(struct fs *fs, struct cache_node *n); /* drops one lookup */
/* Ends a handle: closes its share of the content, drops the node. */
void fs_handle_free(struct fs *fs, struct fhandle *fh);

/* Sets how the writable handle fh (its file joined) reaches the kernel:
 * the page cache when its process's content is the page cache's (mmap
 * works), else direct I/O (docs/writes.md). created: a FUSE_CREATE, whose
 * reply carries the size (and whose caller holds the directory's lock, so
 * waiting for the notifier, which may need it, could stall). Without the
 * lock. */
void fs_writer_io(struct fs *fs, struct fhandle *fh, struct fuse_file_info *fi, bool created);
/* Asks the kernel to allow MAP_SHARED on direct I/O handles
 * (FUSE_DIRECT_IO_ALLOW_MMAP): through conn in init with a libfuse that
 * names it, else through se once mounted, before the session loop. */
void fs_want_dio_mmap(struct fuse_session *se, struct fuse_conn_info *conn);
/* file.c: open, read, write, flush, fsync, release */
void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi);
void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* ns.c: the namespace operations and setattr */
void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi);
void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags);
void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi);
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void fs_op_readlink(fuse_req_t req, fuse_ino_t ino);
void fs_reply_erofs(struct fs *fs, fuse_req_t req);
/* Logs (once, after lead) why writes are refused and keeps it for the
 * root's user.etcdfs.last_error: at every refusal, and when a read-only
 * mount mounts, as the kernel then refuses its writes without asking (it
 * is mounted read-only). */
void fs_explain_read_only(struct fs *fs, const char *lead);

int fs_notifier_start(struct fs *fs);
/* Waits (bounded) until every invalidation queued so far reached the
 * kernel. Called by handlers holding no lock, so that a save's effect on
 * the kernel's caches is complete when close() returns; the notifier thread
 * still does the notifying (docs/design.md). */
void fs_notify_wait(struct fs *fs, long timeout_ms);
void fs_notifier_stop(struct fs *fs);

#endif
