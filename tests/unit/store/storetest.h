/* storetest.h: helpers shared by the store's tests: temp dirs, opening a
 * store with test-friendly settings, small kv.h wrappers. Header-only so each
 * test program stays one file plus this. */
#ifndef ETCDFS_TEST_STORETEST_H
#define ETCDFS_TEST_STORETEST_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv.h"
#include "store/store.h"
#include "testutil.h"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static inline void rm_rf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory under $TMPDIR (or /tmp); caller frees and rm_rf()s. */
static inline char *tmpdir_new(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char *p;
	if (asprintf(&p, "%s/etcdfs-store-%s-XXXXXX", base ? base : "/tmp", tag) < 0)
		abort();
	if (!mkdtemp(p)) {
		perror("mkdtemp");
		abort();
	}
	return p;
}

static inline struct kv *open_at(const char *dir, struct store_config *cfg_in)
{
	struct store_config cfg;
	if (cfg_in) {
		cfg = *cfg_in;
	} else {
		store_config_init(&cfg);
	}
	cfg.data_dir = dir;
	struct kv *kv = NULL;
	int ret = store_open(&cfg, &kv);
	if (ret < 0) {
		fprintf(stderr, "store_open(%s): %s\n", dir, strerror(-ret));
		abort();
	}
	return kv;
}

static inline int put_s(struct kv *kv, const char *k, const char *v, int64_t *rev)
{
	return kv_put(kv, k, strlen(k), v, strlen(v), rev);
}

/* 0 and the value in *out (malloc'd) or -ENOENT. */
static inline int get_s(struct kv *kv, const char *k, struct kv_kv *out)
{
	return kv_get(kv, k, strlen(k), out);
}

#endif
