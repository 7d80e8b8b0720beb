/* fuzz_etcd_json.c: libFuzzer target for the parsing of etcd's JSON gateway
 * replies: range, txn, watch messages and error bodies, from any bytes. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "etcd/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct etcd_error e;
	etcd_json_error((const char *)data, size, 400, &e);
	json_t *o = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	if (!o)
		return 0;
	struct kv_range_result r = {0};
	if (etcd_json_parse_range(o, size & 1, &r) == 0)
		kv_range_result_free(&r);
	struct etcd_watch_msg w = {0};
	if (etcd_json_parse_watch(json_object_get(o, "result") ? json_object_get(o, "result") : o,
				  &w) == 0)
		etcd_watch_msg_free(&w);
	int64_t rev;
	etcd_json_header_revision(o, &rev);
	json_decref(o);
	return 0;
}
