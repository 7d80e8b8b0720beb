/* save.c: the save txns (compare-and-put, delete-with-compare, rename) and
 * the copies of rejected saves. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "save_int.h"

#define DEFAULT_SHADOW ".*.sw?:.*.sw??:4913:*~:*.bak:.#*:#*#:sed??????:XX??????:.*.??????"

int save_new(const struct save_config *cfg, struct save **out)
{
	struct save *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	pthread_mutex_init(&s->dd_lock, NULL);
	pthread_mutex_init(&s->why_lock, NULL);
	pthread_cond_init(&s->dd_cv, NULL);
	pthread_cond_init(&s->dd_done, NULL);
	cache_set_local_ops(cfg->cache, &save_local_ops);
	*out = s;
	return 0;
}

void save_destroy(struct save *s)
{
	if (!s)
		return;
	save_stop(s);
	save_flush_deferred(s, true); /* also when the thread never ran */
	save_drop_parked(s);	      /* hidden keys stay in etcd */
	save_why_destroy(s);
	pthread_mutex_destroy(&s->why_lock);
	pthread_mutex_destroy(&s->dd_lock);
	pthread_cond_destroy(&s->dd_cv);
	pthread_cond_destroy(&s->dd_done);
	free(s);
}

bool save_is_shadow_name(const struct save *s, const char *name)
{
	const char *pats = s->cfg.shadow_patterns ? s->cfg.shadow_patterns : DEFAULT_SHADOW;
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

/* ---- copies of rejected saves ---- */

/* The conflict directory's path into dir. */
static void kept_dir(const struct save *s, char *dir, size_t dirsz)
{
	if (s->cfg.conflict_dir)
		snprintf(dir, dirsz, "%s", s->cfg.conflict_dir);
	else
		snprintf(dir, dirsz, "/tmp/etcdfs-conflicts-%u", (unsigned)s->cfg.uid);
}

static int write_all(int fd, const char *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);
		if (w <= 0)
			return -EIO;
		off += w;
	}
	return 0;
}

/* Writes a new file at path (0600) holding head then buf. */
static int write_new(const char *path, const char *head, const char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return -errno;
	int ret = write_all(fd, head, strlen(head));
	if (ret == 0)
		ret = write_all(fd, buf, len);
	close(fd);
	return ret;
}

/* Keeps a rejected save's content in the conflict directory (path gets its
 * name, or why it could not be kept) and says why it was refused, as
 * kubectl edit does: text shown as YAML or JSON starts with a comment
 * block (etcdfs reads past it when the copy is saved back); any other
 * value is kept byte for byte, with the reason in PATH.why beside it. */
static void keep_rejected(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
			  const char *reason, char *path, size_t pathsz)
{
	char dir[256];
	kept_dir(s, dir, sizeof(dir));
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
	bool text = s->cfg.encode &&
		    (!s->cfg.encode_applies || s->cfg.encode_applies(s->cfg.encode_arg, key, klen));
	char head[1600];
	snprintf(head, sizeof(head),
		 "# etcdfs did not save this to %.*s:\n# %s\n"
		 "# Fix it and copy it back over the file; these lines are ignored, and\n"
		 "# line numbers above count from the first line after them.\n#\n",
		 (int)klen, key, reason);
	int ret = write_new(path, text ? head : "", buf, len);
	if (ret == 0 && !text) {
		char why[600];
		snprintf(why, sizeof(why), "%s.why", path);
		snprintf(head, sizeof(head), "etcdfs did not save %s to %.*s:\n%s\n", path,
			 (int)klen, key, reason);
		ret = write_new(why, head, "", 0);
	}
	if (ret < 0)
		snprintf(path, pathsz, "(could not keep it: %s)", strerror(-ret));
	save_prune_kept(s, dir);
}

int save_reject_edit(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		     int64_t now)
{
	char reason[512], path[512];
	snprintf(reason, sizeof(reason), "it changed (revision %lld) while it was being edited",
		 (long long)now);
	keep_rejected(s, key, klen, buf, len, reason, path, sizeof(path));
	save_refuse(s, key, klen,
		    "conflict: %.*s changed (revision %lld) while it was being edited; "
		    "nothing written, your version is in %s",
		    (int)klen, key, (long long)now, path);
	return -ESTALE;
}

static void log_conflict(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
			 int64_t base, bool absent, const struct kv_txn_result *res)
{
	int64_t now = 0;
	if (res->n_results && res->results[0].range.n_kvs)
		now = res->results[0].range.kvs[0].mod_revision;
	char reason[512], path[512];
	if (absent)
		snprintf(reason, sizeof(reason),
			 "it was created by someone else (revision %lld) while this file was "
			 "being written",
			 (long long)now);
	else
		snprintf(reason, sizeof(reason),
			 "it changed since it was opened (opened at revision %lld, now %s %lld)",
			 (long long)base, now ? "revision" : "deleted at or after",
			 (long long)(now ? now : base));
	keep_rejected(s, key, klen, buf, len, reason, path, sizeof(path));
	if (absent)
		save_refuse(
			s, key, klen,
			"conflict: %.*s was created by someone else (revision %lld) "
			"while this file was being written; nothing written, your version is in %s",
			(int)klen, key, (long long)now, path);
	else
		save_refuse(s, key, klen,
			    "conflict: %.*s changed since it was opened (opened at "
			    "revision %lld, now %s %lld); nothing written, your version is in %s",
			    (int)klen, key, (long long)base,
			    now ? "revision" : "deleted at or after", (long long)(now ? now : base),
			    path);
}

/* ---- commit ---- */

int save_put_txn(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		 int64_t base, bool absent, const struct kv_op *extra, size_t n_extra,
		 const struct kv_compare *xcmp, size_t n_xcmp, int64_t *rev)
{
	struct kv *kv = s->cfg.kv;
	size_t limit = kv->ops->max_request_bytes ? kv->ops->max_request_bytes(kv) : (3u << 19);
	if (len + klen + 256 > limit) {
		save_refuse(s, key, klen,
			    "save of %.*s refused: the value is %zu bytes, over etcd's request "
			    "limit of %zu bytes; nothing written",
			    (int)klen, key, len, limit);
		return -EFBIG;
	}
	if (n_xcmp + 1 > SAVE_MAX_COMPARES || n_extra > SAVE_MAX_EXTRA_OPS) {
		save_refuse(s, key, klen,
			    "save of %.*s refused: %zu compares and %zu extra operations, over "
			    "the txn builder's %d and %d; nothing written",
			    (int)klen, key, n_xcmp + 1, n_extra, SAVE_MAX_COMPARES,
			    SAVE_MAX_EXTRA_OPS);
		return -E2BIG;
	}
	struct kv_compare cmp[SAVE_MAX_COMPARES];
	size_t nc = 0;
	cmp[nc++] = (struct kv_compare){
		.target = absent ? KV_CMP_CREATE : KV_CMP_MOD,
		.result = KV_CMP_EQUAL,
		.key = key,
		.key_len = klen,
		.number = absent ? 0 : base,
	};
	for (size_t i = 0; i < n_xcmp; i++)
		cmp[nc++] = xcmp[i];
	struct kv_op ops[SAVE_MAX_EXTRA_OPS + 1];
	size_t no = 0;
	for (size_t i = 0; i < n_extra; i++)
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
	if (absent)
		save_wait_delete(s, key, klen);
	int ret = kv_txn(kv, &txn, &res);
	if (ret < 0) {
		save_refuse(s, key, klen, "save of %.*s failed: %s%s", (int)klen, key,
			    strerror(-ret),
			    ret == -ETIMEDOUT || ret == -EIO
				    ? "; etcd did not confirm it: the value may or may not have "
				      "been written"
				    : "; nothing written");
		return ret;
	}
	if (!res.succeeded) {
		log_conflict(s, key, klen, buf, len, base, absent, &res);
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
	cache_apply_local(s->cfg.cache, key, klen, &nkv, *rev);
	save_why_clear(s, key, klen);
	return 0;
}

int save_store(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
	       int64_t base, bool absent, int64_t *rev)
{
	return save_put_txn(s, key, klen, buf, len, base, absent, NULL, 0, NULL, 0, rev);
}

int save_encode(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		int64_t base_rev, bool absent, char **raw, size_t *rawlen, bool *owned)
{
	*raw = (char *)buf;
	*rawlen = len;
	*owned = false;
	if (!s->cfg.encode ||
	    (s->cfg.encode_applies && !s->cfg.encode_applies(s->cfg.encode_arg, key, klen)))
		return 0;
	struct kv_kv orig;
	memset(&orig, 0, sizeof(orig));
	bool have = false;
	if (!absent) {
		int r = kv_get(s->cfg.kv, key, klen, &orig);
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
	int ret = s->cfg.encode(s->cfg.encode_arg, key, klen, have ? orig.value : NULL,
				have ? orig.value_len : 0, have ? orig.mod_revision : 0,
				buf ? buf : "", len, &out, &ol, &err);
	if (ret == -ENOTSUP) {
		ret = 0;
	} else if (ret == 0) {
		*raw = out;
		*rawlen = ol;
		*owned = true;
	} else {
		char reason[1024], path[512];
		snprintf(reason, sizeof(reason), "%s", err ? err : strerror(-ret));
		keep_rejected(s, key, klen, buf ? buf : "", len, reason, path, sizeof(path));
		save_refuse(s, key, klen,
			    "save of %.*s refused: %s; nothing written, your version "
			    "is in %s",
			    (int)klen, key, reason, path);
	}
	free(err);
	kv_kv_free(&orig);
	return ret;
}

int save_store_text(struct save *s, const char *key, size_t klen, const char *text, size_t len,
		    int64_t base, bool absent, int64_t *rev)
{
	char *raw;
	size_t rawlen;
	bool owned;
	int ret = save_encode(s, key, klen, text, len, base, absent, &raw, &rawlen, &owned);
	if (ret < 0)
		return ret;
	ret = save_store(s, key, klen, raw, rawlen, base, absent, rev);
	if (owned)
		free(raw);
	return ret;
}

int save_move_key(struct save *s, const char *skey, size_t sklen, const char *dkey, size_t dklen,
		  int64_t d_rev, bool d_absent, int64_t *rev)
{
	struct kv_kv src;
	int ret = kv_get(s->cfg.kv, skey, sklen, &src);
	if (ret < 0)
		return ret;
	struct kv_compare scmp = {.target = KV_CMP_MOD,
				  .result = KV_CMP_EQUAL,
				  .key = skey,
				  .key_len = sklen,
				  .number = src.mod_revision};
	struct kv_op del = {.type = KV_OP_DELETE, .key = skey, .key_len = sklen};
	ret = save_put_txn(s, dkey, dklen, src.value ? src.value : "", src.value_len, d_rev,
			   d_absent, &del, 1, &scmp, 1, rev);
	kv_kv_free(&src);
	return ret;
}

int save_delete(struct save *s, const char *key, size_t klen, int64_t rev)
{
	struct kv_compare cmp = {.target = KV_CMP_MOD,
				 .result = KV_CMP_EQUAL,
				 .key = key,
				 .key_len = klen,
				 .number = rev};
	struct kv_op op = {.type = KV_OP_DELETE, .key = key, .key_len = klen};
	struct kv_txn txn = {.compare = &cmp, .n_compare = 1, .success = &op, .n_success = 1};
	struct kv_txn_result res;
	int ret = kv_txn(s->cfg.kv, &txn, &res);
	if (ret < 0) {
		save_refuse(s, key, klen, "delete of %.*s failed: %s%s", (int)klen, key,
			    strerror(-ret),
			    ret == -ETIMEDOUT || ret == -EIO
				    ? "; etcd did not confirm it: the key may or may not be deleted"
				    : "; the key is unchanged");
		return ret;
	}
	bool ok = res.succeeded;
	int64_t drev = res.revision;
	kv_txn_result_free(&res);
	if (!ok) {
		save_refuse(s, key, klen, "conflict: %.*s changed since revision %lld; not deleted",
			    (int)klen, key, (long long)rev);
		return -ESTALE;
	}
	cache_apply_local(s->cfg.cache, key, klen, NULL, drev);
	save_why_clear(s, key, klen);
	return 0;
}
