/* fixture.c: the save tests' setup and teardown (fixture.h). */
#include "fixture.h"

#include <stdlib.h>

#include "core/log.h"
#include "test.h"

struct kv *kv;
struct cache *cache;
struct save *save;
char *conflicts;

void fixture_setup(bool watch, const char *tag)
{
	log_set_level(LOG_CRIT);
	kv = kvmem_new();
	REQUIRE(kv);
	struct cache_config ccfg = {
		.kv = kv, .prefix = "", .max_bytes = 1 << 20, .no_watch = !watch};
	REQUIRE_EQ(cache_new(&ccfg, &cache), 0);
	conflicts = test_tmpdir(tag);
	struct save_config cfg = {.kv = kv, .cache = cache, .conflict_dir = conflicts};
	REQUIRE_EQ(save_new(&cfg, &save), 0);
}

int fixture_teardown(void)
{
	save_destroy(save);
	cache_destroy(cache);
	kv_destroy(kv);
	CHECK_EQ(test_rm_rf(conflicts), 0);
	free(conflicts);
	return test_summary();
}
