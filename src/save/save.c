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

/* ---- conflict files ---- */

static void keep_rejected(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
			  char *path, size_t pathsz)
{
	char dir[256];
	if (s->cfg.conflict_dir)
		snprintf(dir, sizeof(dir), "%s", s->cfg.conflict_dir);
	else
		snprintf(dir, sizeof(dir), "/tmp/etcdfs-conflicts-%u", (unsigned)s->cfg.uid);
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

int save_reject_edit(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		     int64_t now)
{
	char path[512];
	keep_rejected(s, key, klen, buf, len, path, sizeof(path));
	log_err("conflict: %.*s changed (revision %lld) while it was being edited; "
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
	char path[512];
	keep_rejected(s, key, klen, buf, len, path, sizeof(path));
	if (absent)
		log_err("conflict: %.*s was created by someone else (revision %lld) while "
			"this file was being written; nothing written, your version is in "
			"%s",
			(int)klen, key, (long long)now, path);
	else
		log_err("conflict: %.*s changed since it was opened (opened at revision "
			"%lld, "
			"now %s %lld); nothing written, your version is in %s",
			(int)klen, key, (long long)base, now ? "revision" : "deleted at or after",
			(long long)(now ? now : base), path);
}

/* ---- commit ---- */

int save_put_txn(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		 int64_t base, bool absent, const struct kv_op *extra, size_t n_extra,
		 const struct kv_compare *xcmp, size_t n_xcmp, int64_t *rev)
{
	struct kv *kv = s->cfg.kv;
	size_t limit = kv->ops->max_request_bytes ? kv->ops->max_request_bytes(kv) : (3u << 19);
	if (len + klen + 256 > limit) {
		log_err("save of %.*s refused: the value is %zu bytes, over etcd's request limit "
			"of "
			"%zu bytes; nothing written",
			(int)klen, key, len, limit);
		return -EFBIG;
	}
	if (n_xcmp + 1 > SAVE_MAX_COMPARES || n_extra > SAVE_MAX_EXTRA_OPS) {
		log_err("save of %.*s refused: %zu compares and %zu extra operations, over the "
			"txn builder's %d and %d; nothing written",
			(int)klen, key, n_xcmp + 1, n_extra, SAVE_MAX_COMPARES, SAVE_MAX_EXTRA_OPS);
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
	int ret = kv_txn(kv, &txn, &res);
	if (ret < 0) {
		log_err("save of %.*s failed: %s; nothing written", (int)klen, key, strerror(-ret));
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
		log_err("save of %.*s refused: %s; nothing written", (int)klen, key,
			err ? err : strerror(-ret));
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
	cache_apply_local(s->cfg.cache, key, klen, NULL, drev);
	return 0;
}
