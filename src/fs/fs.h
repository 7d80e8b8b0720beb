/* fs.h: the FUSE side of etcdfs: low-level operations over the cache, and
 * the notifier thread that turns cache changes into kernel invalidations.
 * The only module that includes FUSE headers or calls fuse_reply_* /
 * fuse_lowlevel_notify_*.
 */
#ifndef ETCDFS_FS_H
#define ETCDFS_FS_H

#include <stdbool.h>
#include <stdint.h>

#include "cache/cache.h"
#include "kv.h"

struct fs;
struct fuse_args;

struct fs_config {
	struct kv *kv;	    /* borrowed */
	const char *prefix; /* borrowed, normalized mount prefix */
	size_t prefix_len;
	bool read_only;		     /* -o ro: EROFS everywhere */
	const char *ro_reason;	     /* logged at the first refused write */
	bool linearizable;	     /* revalidate every open with a quorum read */
	double timeout_fresh;	     /* kernel entry/attr timeout, watch healthy */
	double timeout_stale;	     /* the same while it is not */
	const char *conflict_dir;    /* where rejected saves are kept */
	const char *shadow_patterns; /* editor temp names kept local, ':'-separated globs */
	const char *secrets_match;   /* keys containing this get mode 0600 */
	/* Turns saved text into stored bytes (k8s/k8s_mount.h: k8s_mount_encode); NULL to
	 * store text as is. -ENOTSUP from it also means "as is". */
	int (*encode)(void *arg, const char *key, size_t key_len, const char *orig, size_t orig_len,
		      int64_t orig_rev, const char *text, size_t text_len, char **out,
		      size_t *out_len, char **err);
	void *encode_arg;
	/* Whether encode applies to a key at all (so that saves of other keys
	 * do not fetch the original first); NULL = always. */
	bool (*encode_applies)(void *arg, const char *key, size_t key_len);
	/* A file's "user.etcdfs.k8s.*" xattr from its key and stored value
	 * (k8s_mount_xattr): 0 and a malloc'd value, or -ENODATA. NULL = none. */
	int (*value_xattr)(void *arg, const char *key, size_t key_len, const char *val,
			   size_t val_len, const char *name, char **out, size_t *out_len);
	void *value_xattr_arg;
};

/* Creates the fs; the notify hook must be given to the cache. */
int fs_new(const struct fs_config *cfg, struct fs **out);
/* Gives the fs its cache (borrowed) and sets up the write path over it
 * (src/save). -ENOMEM. */
int fs_set_cache(struct fs *fs, struct cache *cache);
/* Makes the mount read-only; reason is logged at the first refused write. */
void fs_set_read_only(struct fs *fs, const char *reason);
/* For cache_config.notify. */
void fs_cache_notify(void *fs, const struct cache_change *chg);

/* Mounts at mountpoint with the FUSE options in args and serves requests
 * until unmounted or signalled. ready(arg) is called once the mount is up
 * (main uses it to release the parent of a daemonized process).
 * Returns 0 or a negative errno. */
int fs_serve(struct fs *fs, struct fuse_args *args, const char *mountpoint, bool single_thread,
	     void (*ready)(void *arg), void *ready_arg);
void fs_destroy(struct fs *fs);

#endif
