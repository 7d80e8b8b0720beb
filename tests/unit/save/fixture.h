/* fixture.h: what the save tests share: an in-memory backend (kvmem), a cache over it and a
 * save module keeping its conflict copies in a temp dir. */
#ifndef ETCDFS_TEST_SAVE_FIXTURE_H
#define ETCDFS_TEST_SAVE_FIXTURE_H

#include <stdbool.h>

#include "cache/cache.h"
#include "kvmem.h"
#include "save/save.h"

extern struct kv *kv;
extern struct cache *cache;
extern struct save *save;
extern char *conflicts; /* the conflict dir */

/* Sets everything up (aborting the test if it cannot); watch starts the cache's watch. */
void fixture_setup(bool watch, const char *tag);
/* Tears it down and returns test_summary() for main(). */
int fixture_teardown(void);

#endif
