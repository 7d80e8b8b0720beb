/* fuzz_snapshot.c: libFuzzer target for the backend-file parser (bbolt + mvcc).
 *
 * Each input is written to a memfd and opened with snapshot_open_fd(); when it
 * opens, a few reads exercise the index and the value reads. Built as a real
 * fuzzer with clang (-fsanitize=fuzzer); with any compiler, fuzz_replay.c
 * runs it over given files as a regression test. See docs/snapshot.md.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kv.h"
#include "core/log.h"
#include "snapshot/snapshot.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	log_set_level(LOG_CRIT); /* every broken input logs an error */
	return 0;
}

static void read_some(struct kv *kv, int64_t rev, enum kv_sort_target target, int64_t limit)
{
	struct kv_range_req req = {.key = "\0",
				   .key_len = 1,
				   .range_end = "\0",
				   .range_end_len = 1,
				   .revision = rev,
				   .limit = limit,
				   .sort_target = target,
				   .sort_order = limit ? KV_SORT_DESCEND : KV_SORT_NONE};
	struct kv_range_result res;
	kv_range(kv, &req, &res);
	kv_range_result_free(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	for (size_t off = 0; off < size;) {
		ssize_t n = write(fd, data + off, size - off);
		if (n <= 0) {
			close(fd);
			return 0;
		}
		off += (size_t)n;
	}
	struct kv *kv;
	if (snapshot_open_fd(fd, "fuzz-input", &kv) < 0)
		return 0;
	struct snapshot_info info;
	snapshot_get_info(kv, &info);
	read_some(kv, 0, KV_SORT_KEY, 0);
	read_some(kv, info.compact_revision, KV_SORT_VALUE, 3);
	read_some(kv, info.max_revision, KV_SORT_MOD, 2);
	struct kv_compare cmp = {.target = KV_CMP_VALUE,
				 .result = KV_CMP_GREATER,
				 .key = "\0",
				 .key_len = 1,
				 .range_end = "\0",
				 .range_end_len = 1,
				 .value = "m",
				 .value_len = 1};
	struct kv_op op = {.type = KV_OP_RANGE,
			   .key = "/",
			   .key_len = 1,
			   .range_end = "\0",
			   .range_end_len = 1,
			   .keys_only = true};
	struct kv_txn txn = {.compare = &cmp, .n_compare = 1, .success = &op, .n_success = 1};
	struct kv_txn_result tres;
	kv_txn(kv, &txn, &tres);
	kv_txn_result_free(&tres);
	kv_destroy(kv);
	return 0;
}
