/* test_cache_mem.c: what the cache's tree costs per key (docs/design.md,
 * Memory): keys never written through the mount, in 98 directories, over
 * the in-memory backend (kvmem). Prints sizeof(struct cache_node), the
 * segment and hash-slot bytes per node, and, when the allocator can tell
 * (not under ASan), the heap the cache takes per key with the value cache
 * off and with every value cached. Checks the parts the code decides.
 *
 * ETCDFS_MEM_KEYS=100000 build/tests/unit/cache/test_cache_mem measures
 * at another size (default 20,000). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "core/log.h"
#include "kvmem.h"
#include "test.h"

static size_t heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

/* Segments and hash slots of c, in bytes. Lock held. */
static void tree_bytes(struct cache *c, size_t *nodes, size_t *seg, size_t *slots)
{
	*nodes = *seg = 0;
	for (size_t b = 0; b < c->by_id_cap; b++)
		for (struct cache_node *n = c->by_id[b]; n; n = n->inext) {
			(*nodes)++;
			*seg += n->seg_len + 1;
		}
	*slots = (c->by_id_cap + c->by_name_cap) * sizeof(struct cache_node *);
}

static int mount(struct kv *kv, size_t max_bytes, size_t *heap, struct cache **out)
{
	struct cache_config cfg = {
		.kv = kv, .prefix = "/registry/", .prefix_len = 10, .max_bytes = max_bytes};
	malloc_trim(0);
	size_t before = heap_used();
	int ret = cache_new(&cfg, out);
	*heap = heap_used() - before;
	return ret;
}

int main(void)
{
	log_set_level(LOG_WARNING);
	const char *e = getenv("ETCDFS_MEM_KEYS");
	size_t nkeys = e ? strtoul(e, NULL, 10) : 20000;
	struct kv *kv = kvmem_new();
	REQUIRE(kv, "kvmem_new");
	char key[96], val[100];
	memset(val, 'v', sizeof(val));
	size_t raw = 0;
	for (size_t i = 0; i < nkeys; i++) {
		int klen = snprintf(key, sizeof(key),
				    "/registry/pods/team-%03zu/app%03zu-%010llx-%05zx", i % 98,
				    i % 997, (unsigned long long)(i * 2654435761u), i);
		int ret = kv_put(kv, key, (size_t)klen, val, sizeof(val), NULL);
		REQUIRE(ret == 0, "put %s: %d", key, ret);
		raw += (size_t)klen + sizeof(val);
	}

	struct cache *c;
	size_t heap;
	int ret = mount(kv, 0, &heap, &c);
	REQUIRE(ret == 0, "cache_new: %d", ret);
	cache_rdlock(c);
	size_t nodes, seg, slots;
	tree_bytes(c, &nodes, &seg, &slots);
	CHECK(c->n_keys == nkeys, "keys %llu", (unsigned long long)c->n_keys);
	CHECK(c->lru_bytes == 0, "value cache off: %zu bytes cached", c->lru_bytes);
	cache_unlock(c);
	double per_node = sizeof(struct cache_node) + (double)(seg + slots) / nodes;
	printf("%zu keys, %zu nodes: sizeof(struct cache_node) %zu, segment %.1f, hash slots "
	       "%.1f: %.1f bytes per node\n",
	       nkeys, nodes, sizeof(struct cache_node), (double)seg / nodes, (double)slots / nodes,
	       per_node);
	/* two tables of load factor up to 1: 8 to 16 bytes each per node */
	CHECK((double)slots / nodes <= 32.0, "hash slots %.1f bytes per node",
	      (double)slots / nodes);
	CHECK(sizeof(struct cache_node) <= 240, "struct cache_node grew: %zu bytes",
	      sizeof(struct cache_node));
	CHECK(per_node <= 300.0, "%.1f bytes per node", per_node);
	if (heap)
		printf("heap per key, value cache off: %.1f bytes\n", (double)heap / nkeys);
	cache_destroy(c);

	ret = mount(kv, 1u << 30, &heap, &c);
	REQUIRE(ret == 0, "cache_new: %d", ret);
	CHECK(c->lru_bytes == nkeys * sizeof(val), "every value cached: %zu", c->lru_bytes);
	if (heap)
		printf("heap per key, every value cached: %.1f bytes, %.1f beyond the value; heap "
		       "%.2f x raw key+value bytes\n",
		       (double)heap / nkeys, (double)heap / nkeys - sizeof(val),
		       (double)heap / raw);
	cache_destroy(c);
	kv_destroy(kv);
	return test_summary();
}
