/* storetest.h: helpers shared by the tests that run the embedded store (the store's own
 * and the gateway's): opening a store, small kv.h wrappers. Assertions and temp dirs come
 * from test.h, put_s() from kvtest.h. Header-only so each test program stays one file plus this. */
#ifndef ETCDFS_TEST_STORETEST_H
#define ETCDFS_TEST_STORETEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "kvtest.h"
#include "store/store.h"
#include "test.h"

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

/* 0 and the value in *out (malloc'd) or -ENOENT. */
static inline int get_s(struct kv *kv, const char *k, struct kv_kv *out)
{
	return kv_get(kv, k, strlen(k), out);
}

#endif
