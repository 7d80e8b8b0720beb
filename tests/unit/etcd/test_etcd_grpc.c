/* test_etcd_grpc.c: the native gRPC range and txn paths.
 *
 * First the codec without a server: gRPC framing, grpc-message decoding, status mapping, and
 * our etcdserver.proto messages checked against wire bytes written out by hand from the protobuf
 * encoding rules (plus one reply recorded from etcd 3.4.23). Then against real etcds started by
 * the harness: a gRPC-only client and a JSON-only client must return the same results for many
 * kinds of range (binary keys and values, empty values, a lease, 2600+ keys paged, keys_only,
 * count_only, sorts, an old revision, compacted and future revisions) and of txn (every
 * compare, saves and conflicts, prev kvs, multi-op, keys-only failure branches, etcd's request
 * limits), paging stays pinned to one revision under concurrent writes, a server that does not
 * speak HTTP/2 makes AUTO fall back to JSON (writes never once they may have been applied),
 * timeouts and failover behave as over JSON, and the same holds over TLS with client
 * certificates and with authentication (permissions, token expiry). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "kvtest.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "grpc.h"
#include "watchrec.h"

/* ---- codec, no server ---- */

static void test_framing(void)
{
	uint8_t hdr[ETCD_GRPC_FRAME_HDR];
	etcd_grpc_frame_header(hdr, 0x01020304);
	static const uint8_t want[] = {0, 1, 2, 3, 4};
	CHECK_MEM(hdr, 5, want, 5);

	const uint8_t *msg;
	size_t len, used;
	static const uint8_t two[] = {0, 0, 0, 0, 2, 'h', 'i', 0, 0, 0, 0, 0};
	CHECK_EQ(etcd_grpc_frame_next(two, 3, 100, &msg, &len, &used), 0); /* header incomplete */
	CHECK_EQ(len, 0);
	CHECK_EQ(etcd_grpc_frame_next(two, 6, 100, &msg, &len, &used), 0); /* body incomplete */
	CHECK_EQ(len, 2);
	CHECK_EQ(etcd_grpc_frame_next(two, sizeof(two), 100, &msg, &len, &used), 1);
	CHECK(len == 2 && used == 7 && msg == two + 5);
	/* The empty message that follows is a frame too. */
	CHECK_EQ(etcd_grpc_frame_next(two + 7, 5, 100, &msg, &len, &used), 1);
	CHECK(len == 0 && used == 5);
	static const uint8_t compressed[] = {1, 0, 0, 0, 1, 'x'};
	CHECK_EQ(etcd_grpc_frame_next(compressed, 6, 100, &msg, &len, &used), -EPROTO);
	static const uint8_t huge[] = {0, 0x7f, 0xff, 0xff, 0xff};
	CHECK_EQ(etcd_grpc_frame_next(huge, 5, 1 << 20, &msg, &len, &used), -EMSGSIZE);
}

static void test_status(void)
{
	char out[64];
	const char *enc = "etcdserver%3A mvcc%3a 100%25 %zz%";
	etcd_grpc_percent_decode(enc, strlen(enc), out, sizeof(out));
	CHECK(strcmp(out, "etcdserver: mvcc: 100% %zz%") == 0);
	etcd_grpc_percent_decode("abcdef", 6, out, 4); /* truncated, still terminated */
	CHECK(strcmp(out, "abc") == 0);

	struct etcd_error e;
	etcd_grpc_status_error(11, "etcdserver: mvcc: required revision has been compacted", &e);
	CHECK_EQ(e.err, -ERANGE);
	etcd_grpc_status_error(11, "etcdserver: mvcc: required revision is a future revision", &e);
	CHECK_EQ(e.err, -ENOENT);
	etcd_grpc_status_error(11, "something else out of range", &e);
	CHECK_EQ(e.err, -ERANGE);
	etcd_grpc_status_error(3, "etcdserver: invalid auth token", &e);
	CHECK(e.err == -EACCES && e.retry_auth);
	etcd_grpc_status_error(16, "", &e);
	CHECK(e.err == -EACCES && e.retry_auth);
	etcd_grpc_status_error(7, "etcdserver: permission denied", &e);
	CHECK(e.err == -EACCES && !e.retry_auth);
	etcd_grpc_status_error(8, "grpc: received message larger than max (3 vs. 2)", &e);
	CHECK_EQ(e.err, -EFBIG);
	etcd_grpc_status_error(4, "context deadline exceeded", &e);
	CHECK_EQ(e.err, -ETIMEDOUT);
	etcd_grpc_status_error(13, "internal", &e);
	CHECK(e.err == -EIO && e.grpc_code == 13);
}

static void test_range_codec(void)
{
	/* Every RangeRequest field we set, in field-number order, as protobuf encodes them:
	 * tag = field << 3 | wire type (0 varint, 2 length-delimited). */
	/* clang-format off */
	static const uint8_t want[] = {
		0, 0, 0, 0, 23,		/* frame header: 23 bytes follow */
		0x0a, 2, '/', 'a',	/* 1 key */
		0x12, 2, '/', 'b',	/* 2 range_end */
		0x18, 5,		/* 3 limit 5 */
		0x20, 0xac, 0x02,	/* 4 revision 300 */
		0x28, 2,		/* 5 sort_order DESCEND */
		0x30, 3,		/* 6 sort_target MOD */
		0x38, 1, 0x40, 1, 0x48, 1, /* 7 serializable, 8 keys_only, 9 count_only */
	};
	/* clang-format on */
	struct kv_range_req req = {.sort_order = KV_SORT_DESCEND,
				   .sort_target = KV_SORT_MOD,
				   .serializable = true,
				   .keys_only = true,
				   .count_only = true};
	uint8_t *buf = NULL;
	size_t len = 0;
	CHECK_EQ(etcd_grpc_range_req(&req, "/a", 2, "/b", 2, 300, 5, &buf, &len), 0);
	CHECK_MEM(buf, len, want, sizeof(want));
	free(buf);
	/* Zero fields are omitted; an empty key too (etcd reads it as ""). */
	struct kv_range_req zero = {0};
	CHECK_EQ(etcd_grpc_range_req(&zero, NULL, 0, NULL, 0, 0, 0, &buf, &len), 0);
	static const uint8_t empty[] = {0, 0, 0, 0, 0};
	CHECK_MEM(buf, len, empty, 5);
	free(buf);

	/* A reply recorded from etcd 3.4.23 for key "/a" = "b" (frame header included). */
	static const uint8_t recorded[] = {
		0x00, 0x00, 0x00, 0x00, 0x2c, 0x0a, 0x19, 0x08, 0x9e, 0x8c, 0xdc, 0xd6, 0xef,
		0xdf, 0x85, 0xfd, 0xf2, 0x01, 0x10, 0xff, 0xfc, 0xd5, 0xb7, 0xf5, 0x8d, 0xa4,
		0x81, 0x74, 0x18, 0x02, 0x20, 0x02, 0x12, 0x0d, 0x0a, 0x02, 0x2f, 0x61, 0x10,
		0x02, 0x18, 0x02, 0x20, 0x01, 0x2a, 0x01, 0x62, 0x20, 0x01};
	const uint8_t *msg;
	size_t used;
	CHECK_EQ(etcd_grpc_frame_next(recorded, sizeof(recorded), 1 << 20, &msg, &len, &used), 1);
	CHECK_EQ(used, sizeof(recorded));
	struct kv_range_result res = {0};
	CHECK_EQ(etcd_grpc_parse_range(msg, len, false, &res), 0);
	CHECK_EQ(res.revision, 2);
	CHECK_EQ(res.count, 1);
	CHECK(!res.more);
	CHECK_EQ(res.n_kvs, 1);
	if (res.n_kvs == 1) {
		CHECK_MEM(res.kvs[0].key, res.kvs[0].key_len, "/a", 2);
		CHECK(res.kvs[0].key[2] == 0);
		CHECK_MEM(res.kvs[0].value, res.kvs[0].value_len, "b", 1);
		CHECK_EQ(res.kvs[0].create_revision, 2);
		CHECK_EQ(res.kvs[0].mod_revision, 2);
		CHECK_EQ(res.kvs[0].version, 1);
		CHECK_EQ(res.kvs[0].lease, 0);
	}
	kv_range_result_free(&res);

	/* Hand-built: header{revision 7}, a kv with a lease and no value, a kv with a binary key,
	 * more, count 42. Parsed twice into one result: pages append. */
	/* clang-format off */
	static const uint8_t built[] = {
		0x0a, 2, 0x18, 7,		/* header { revision 7 } */
		0x12, 11,			/* kv { */
		0x0a, 1, 'k',			/*   key "k" */
		0x10, 2, 0x18, 3, 0x20, 1,	/*   create 2, mod 3, version 1 */
		0x30, 5,			/*   lease 5 } */
		0x12, 9,			/* kv { */
		0x0a, 2, 0x00, 0xff,		/*   key "\0\xff" */
		0x2a, 3, 'x', 'y', 'z',		/*   value "xyz" } */
		0x18, 1,			/* more */
		0x20, 42,			/* count 42 */
	};
	/* clang-format on */
	CHECK_EQ(etcd_grpc_parse_range(built, sizeof(built), false, &res), 0);
	CHECK_EQ(etcd_grpc_parse_range(built, sizeof(built), false, &res), 0);
	CHECK(res.revision == 7 && res.more && res.count == 42 && res.n_kvs == 4);
	if (res.n_kvs == 4) {
		CHECK_MEM(res.kvs[0].key, res.kvs[0].key_len, "k", 1);
		CHECK(res.kvs[0].value != NULL && res.kvs[0].value_len == 0);
		CHECK(res.kvs[0].create_revision == 2 && res.kvs[0].mod_revision == 3 &&
		      res.kvs[0].version == 1 && res.kvs[0].lease == 5);
		CHECK_MEM(res.kvs[1].key, res.kvs[1].key_len, "\0\xff", 2);
		CHECK_MEM(res.kvs[1].value, res.kvs[1].value_len, "xyz", 3);
		CHECK_MEM(res.kvs[3].value, res.kvs[3].value_len, "xyz", 3);
	}
	kv_range_result_free(&res);
	/* keys_only leaves values NULL. */
	CHECK_EQ(etcd_grpc_parse_range(built, sizeof(built), true, &res), 0);
	CHECK(res.n_kvs == 2 && !res.kvs[0].value && !res.kvs[1].value);
	kv_range_result_free(&res);
	/* An empty message is an empty reply. */
	CHECK_EQ(etcd_grpc_parse_range(built, 0, false, &res), 0);
	CHECK(res.n_kvs == 0 && res.count == 0);
	kv_range_result_free(&res);

	/* Malformed: truncated inside a field (every cut but the field boundaries 4, 17, 28
	 * and 30), a length beyond the end, kvs as a varint. */
	for (size_t cut = 1; cut < sizeof(built); cut++) {
		if (cut == 4 || cut == 17 || cut == 28 || cut == 30)
			continue;
		memset(&res, 0, sizeof(res));
		int ret = etcd_grpc_parse_range(built, cut, false, &res);
		if (ret != -EINVAL)
			fprintf(stderr, "  truncation at %zu parsed\n", cut);
		CHECK_EQ(ret, -EINVAL);
		kv_range_result_free(&res);
	}
	static const uint8_t overlong[] = {0x12, 50, 0x0a, 1, 'k'};
	CHECK_EQ(etcd_grpc_parse_range(overlong, sizeof(overlong), false, &res), -EINVAL);
	kv_range_result_free(&res);
	static const uint8_t wrong_type[] = {0x10, 5};
	CHECK_EQ(etcd_grpc_parse_range(wrong_type, sizeof(wrong_type), false, &res), -EINVAL);
	kv_range_result_free(&res);
}

static void test_watch_codec(void)
{
	/* clang-format off */
	static const uint8_t want[] = {
		0, 0, 0, 0, 16,			/* frame header */
		0x0a, 14,			/* 1 create_request { */
		0x0a, 2, '/', 'w',		/*   1 key */
		0x12, 2, '/', 'x',		/*   2 range_end */
		0x18, 5,			/*   3 start_revision 5 */
		0x20, 1,			/*   4 progress_notify */
		0x30, 1,			/*   6 prev_kv } */
	};
	/* clang-format on */
	struct kv_watch_req req = {
		.key = "/w", .key_len = 2, .range_end = "/x", .range_end_len = 2, .prev_kv = true};
	uint8_t *buf = NULL;
	size_t len = 0;
	CHECK_EQ(etcd_grpc_watch_req(&req, 5, &buf, &len), 0);
	CHECK_MEM(buf, len, want, sizeof(want));
	free(buf);

	/* clang-format off */
	static const uint8_t events[] = {
		0x0a, 2, 0x18, 9,		/* header { revision 9 } */
		0x5a, 10,			/* 11 event { (PUT: type 0 omitted) */
		0x12, 8,			/*   kv { */
		0x0a, 1, 'a', 0x18, 8,		/*     key "a", mod_revision 8 */
		0x2a, 1, 'v',			/*     value "v" } } */
		0x5a, 9,			/* 11 event { */
		0x08, 1,			/*   type DELETE */
		0x12, 5, 0x0a, 1, 'b', 0x18, 9,	/*   kv { key "b", mod_revision 9 } } */
	};
	static const uint8_t created[] = {0x0a, 2, 0x18, 4, 0x18, 1};
	static const char reason[] = "etcdserver: mvcc: required revision has been compacted";
	/* clang-format on */
	struct etcd_watch_msg m;
	CHECK_EQ(etcd_grpc_parse_watch(events, sizeof(events), &m), 0);
	CHECK(m.revision == 9 && !m.created && !m.canceled && m.n_events == 2);
	if (m.n_events == 2) {
		CHECK_EQ(m.events[0].type, KV_EVENT_PUT);
		CHECK_MEM(m.events[0].kv.key, m.events[0].kv.key_len, "a", 1);
		CHECK_MEM(m.events[0].kv.value, m.events[0].kv.value_len, "v", 1);
		CHECK_EQ(m.events[0].kv.mod_revision, 8);
		CHECK_EQ(m.events[1].type, KV_EVENT_DELETE);
		CHECK_MEM(m.events[1].kv.key, m.events[1].kv.key_len, "b", 1);
		CHECK(m.events[1].kv.value == NULL);
		CHECK_EQ(m.events[1].kv.mod_revision, 9);
	}
	etcd_watch_msg_free(&m);
	CHECK_EQ(etcd_grpc_parse_watch(created, sizeof(created), &m), 0);
	CHECK(m.created && m.revision == 4 && m.n_events == 0);
	etcd_watch_msg_free(&m);
	uint8_t canceled[128] = {0x0a, 2, 0x18, 9, 0x20, 1, 0x28, 7, 0x32, sizeof(reason) - 1};
	memcpy(canceled + 10, reason, sizeof(reason) - 1);
	CHECK_EQ(etcd_grpc_parse_watch(canceled, 10 + sizeof(reason) - 1, &m), 0);
	CHECK(m.canceled && m.compact_revision == 7);
	CHECK(strcmp(m.error.msg, reason) == 0 && m.error.err == -ERANGE);
	etcd_watch_msg_free(&m);
	/* An event type etcd does not have. */
	static const uint8_t bad_type[] = {0x5a, 2, 0x08, 5};
	CHECK_EQ(etcd_grpc_parse_watch(bad_type, sizeof(bad_type), &m), -EINVAL);
	etcd_watch_msg_free(&m);
}

static void test_txn_codec(void)
{
	/* Three compares (a create_revision of 0 and an empty value: both must be on the wire,
	 * they are oneof members; a range compare), a put with every flag, a range delete, an
	 * empty put, and a keys-only range in the failure branch. */
	/* clang-format off */
	static const uint8_t want[] = {
		0, 0, 0, 0, 83,			/* frame header */
		0x0a, 8,			/* 1 compare { (result EQUAL omitted) */
		0x10, 1,			/*   2 target CREATE */
		0x1a, 2, '/', 'a',		/*   3 key */
		0x28, 0,			/*   5 create_revision 0 } */
		0x0a, 10,			/* 1 compare { */
		0x08, 3, 0x10, 3,		/*   result NOT_EQUAL, target VALUE */
		0x1a, 2, '/', 'a',		/*   3 key */
		0x3a, 0,			/*   7 value "" } */
		0x0a, 14,			/* 1 compare { */
		0x08, 1, 0x10, 2,		/*   result GREATER, target MOD */
		0x1a, 1, '/',			/*   3 key */
		0x30, 0xac, 0x02,		/*   6 mod_revision 300 */
		0x82, 0x04, 1, '0',		/*   64 range_end "0" } */
		0x12, 15, 0x12, 13,		/* 2 success { 2 put { */
		0x0a, 2, '/', 'a',		/*   key */
		0x12, 1, 'v',			/*   value */
		0x18, 5,			/*   lease 5 */
		0x20, 1, 0x30, 1,		/*   4 prev_kv, 6 ignore_lease } } */
		0x12, 12, 0x1a, 10,		/* 2 success { 3 delete_range { */
		0x0a, 2, '/', 'b',		/*   key */
		0x12, 2, '/', 'c',		/*   range_end */
		0x18, 1,			/*   prev_kv } } */
		0x12, 2, 0x12, 0,		/* 2 success { 2 put { } }: empty key and value */
		0x1a, 8, 0x0a, 6,		/* 3 failure { 1 range { */
		0x0a, 2, '/', 'a',		/*   key */
		0x40, 1,			/*   8 keys_only } } */
	};
	/* clang-format on */
	struct kv_compare cmps[] = {
		{.target = KV_CMP_CREATE, .result = KV_CMP_EQUAL, .key = "/a", .key_len = 2},
		{.target = KV_CMP_VALUE,
		 .result = KV_CMP_NOT_EQUAL,
		 .key = "/a",
		 .key_len = 2,
		 .value = "",
		 .value_len = 0},
		{.target = KV_CMP_MOD,
		 .result = KV_CMP_GREATER,
		 .key = "/",
		 .key_len = 1,
		 .range_end = "0",
		 .range_end_len = 1,
		 .number = 300},
	};
	struct kv_op succ[] = {
		{.type = KV_OP_PUT,
		 .key = "/a",
		 .key_len = 2,
		 .value = "v",
		 .value_len = 1,
		 .lease = 5,
		 .prev_kv = true,
		 .ignore_lease = true},
		{.type = KV_OP_DELETE,
		 .key = "/b",
		 .key_len = 2,
		 .range_end = "/c",
		 .range_end_len = 2,
		 .prev_kv = true},
		{.type = KV_OP_PUT},
	};
	struct kv_op fail = {.type = KV_OP_RANGE, .key = "/a", .key_len = 2, .keys_only = true};
	struct kv_txn txn = {.compare = cmps,
			     .n_compare = 3,
			     .success = succ,
			     .n_success = 3,
			     .failure = &fail,
			     .n_failure = 1};
	uint8_t *buf = NULL;
	size_t len = 0;
	CHECK_EQ(etcd_grpc_txn_req(&txn, &buf, &len), 0);
	CHECK_MEM(buf, len, want, sizeof(want));
	free(buf);
	/* Version and lease 0 are sent too. */
	struct kv_compare zeros[] = {{.target = KV_CMP_VERSION}, {.target = KV_CMP_LEASE}};
	struct kv_txn zt = {.compare = zeros, .n_compare = 2};
	/* clang-format off */
	static const uint8_t zwant[] = {
		0, 0, 0, 0, 10,
		0x0a, 2, 0x20, 0,		/* compare { 4 version 0 } */
		0x0a, 4, 0x10, 4, 0x40, 0,	/* compare { target LEASE, 8 lease 0 } */
	};
	/* clang-format on */
	CHECK_EQ(etcd_grpc_txn_req(&zt, &buf, &len), 0);
	CHECK_MEM(buf, len, zwant, sizeof(zwant));
	free(buf);
	/* An empty txn is an empty message; an unknown kind is refused. */
	struct kv_txn empty = {0};
	static const uint8_t ewant[] = {0, 0, 0, 0, 0};
	CHECK_EQ(etcd_grpc_txn_req(&empty, &buf, &len), 0);
	CHECK_MEM(buf, len, ewant, sizeof(ewant));
	free(buf);
	buf = NULL;
	struct kv_compare bad_cmp = {.target = (enum kv_cmp_target)9};
	struct kv_txn bt = {.compare = &bad_cmp, .n_compare = 1};
	CHECK_EQ(etcd_grpc_txn_req(&bt, &buf, &len), -EINVAL);
	CHECK(buf == NULL);
	struct kv_op bad_op = {.type = (enum kv_op_type)7};
	struct kv_txn bo = {.failure = &bad_op, .n_failure = 1};
	CHECK_EQ(etcd_grpc_txn_req(&bo, &buf, &len), -EINVAL);

	/* A reply: header{revision 12}, succeeded, a put with its previous kv, a delete of two
	 * keys with theirs (one with an empty value), a keys-only range, a put without a
	 * previous kv. */
	/* clang-format off */
	static const uint8_t reply[] = {
		0x0a, 2, 0x18, 12,		/* header { revision 12 } */
		0x10, 1,			/* succeeded */
		0x1a, 23, 0x12, 21,		/* 3 responses { 2 put { */
		0x0a, 2, 0x18, 12,		/*   header { revision 12 } */
		0x12, 15,			/*   2 prev_kv { */
		0x0a, 2, '/', 'a',		/*     key */
		0x10, 3, 0x18, 4, 0x20, 2,	/*     create 3, mod 4, version 2 */
		0x2a, 3, 'o', 'l', 'd',		/*     value } } } */
		0x1a, 20, 0x1a, 18,		/* 3 responses { 3 delete_range { */
		0x10, 2,			/*   deleted 2 */
		0x1a, 4, 0x0a, 2, '/', 'b',	/*   prev_kvs { key "/b" } */
		0x1a, 8, 0x0a, 3, '/', 'b', '2', /*  prev_kvs { key "/b2", */
		0x2a, 1, 'x',			/*     value "x" } } } */
		0x1a, 10, 0x0a, 8,		/* 3 responses { 1 range { */
		0x12, 4, 0x0a, 2, '/', 'a',	/*   kvs { key "/a" } */
		0x20, 1,			/*   count 1 } } */
		0x1a, 2, 0x12, 0,		/* 3 responses { 2 put { } } */
	};
	/* clang-format on */
	struct kv_op rops[] = {
		{.type = KV_OP_PUT, .prev_kv = true},
		{.type = KV_OP_DELETE, .prev_kv = true},
		{.type = KV_OP_RANGE, .keys_only = true},
		{.type = KV_OP_PUT},
	};
	struct kv_txn rt = {.success = rops, .n_success = 4};
	struct kv_txn_result r = {0};
	CHECK_EQ(etcd_grpc_parse_txn(reply, sizeof(reply), &rt, &r), 0);
	CHECK(r.succeeded && r.revision == 12 && r.n_results == 4);
	if (r.n_results == 4) {
		const struct kv_op_result *o = r.results;
		CHECK(o[0].type == KV_OP_PUT && o[0].range.n_kvs == 1 && o[0].range.count == 1);
		if (o[0].range.n_kvs == 1) {
			const struct kv_kv *k = &o[0].range.kvs[0];
			CHECK_MEM(k->key, k->key_len, "/a", 2);
			CHECK_MEM(k->value, k->value_len, "old", 3);
			CHECK(k->create_revision == 3 && k->mod_revision == 4 && k->version == 2);
		}
		CHECK(o[1].type == KV_OP_DELETE && o[1].deleted == 2 && o[1].range.n_kvs == 2 &&
		      o[1].range.count == 2);
		if (o[1].range.n_kvs == 2) {
			CHECK(o[1].range.kvs[0].value != NULL && o[1].range.kvs[0].value_len == 0);
			CHECK_MEM(o[1].range.kvs[1].key, o[1].range.kvs[1].key_len, "/b2", 3);
			CHECK_MEM(o[1].range.kvs[1].value, o[1].range.kvs[1].value_len, "x", 1);
		}
		CHECK(o[2].type == KV_OP_RANGE && o[2].range.n_kvs == 1 && o[2].range.count == 1);
		if (o[2].range.n_kvs == 1)
			CHECK(o[2].range.kvs[0].value == NULL);
		CHECK(o[3].type == KV_OP_PUT && o[3].range.n_kvs == 0 && o[3].range.count == 0);
		for (int i = 0; i < 4; i++)
			CHECK_EQ(o[i].range.revision, 12);
	}
	kv_txn_result_free(&r);
	/* An empty message: the compares failed and the failure branch was empty. */
	memset(&r, 0, sizeof(r));
	CHECK_EQ(etcd_grpc_parse_txn(reply, 0, &rt, &r), 0);
	CHECK(!r.succeeded && r.n_results == 0);
	/* A nested txn's result (we never send one) and an empty result are malformed. */
	static const uint8_t nested[] = {0x10, 1, 0x1a, 2, 0x22, 0};
	CHECK_EQ(etcd_grpc_parse_txn(nested, sizeof(nested), &rt, &r), -EINVAL);
	kv_txn_result_free(&r);
	memset(&r, 0, sizeof(r));
	static const uint8_t unset[] = {0x10, 1, 0x1a, 0};
	CHECK_EQ(etcd_grpc_parse_txn(unset, sizeof(unset), &rt, &r), -EINVAL);
	kv_txn_result_free(&r);
	/* Every truncation decodes cleanly or is refused. */
	int refused = 0;
	for (size_t cut = 1; cut < sizeof(reply); cut++) {
		memset(&r, 0, sizeof(r));
		int ret = etcd_grpc_parse_txn(reply, cut, &rt, &r);
		CHECK(ret == 0 || ret == -EINVAL);
		refused += ret == -EINVAL;
		kv_txn_result_free(&r);
	}
	CHECK(refused > (int)sizeof(reply) / 2);
}

/* Random byte flips, truncations and insertions into valid messages: every result is either a
 * clean decode or -EINVAL, never a crash or a leak (ASan and UBSan watch this build). */
static void test_codec_mutations(void)
{
	/* clang-format off */
	static const uint8_t seeds[][72] = {
		{0x0a, 2, 0x18, 7, 0x12, 11, 0x0a, 1, 'k', 0x10, 2, 0x18, 3, 0x20, 1, 0x30, 5,
		 0x12, 9, 0x0a, 2, 0x00, 0xff, 0x2a, 3, 'x', 'y', 'z', 0x18, 1, 0x20, 42},
		{0x0a, 2, 0x18, 9, 0x5a, 10, 0x12, 8, 0x0a, 1, 'a', 0x18, 8, 0x2a,
		 1, 'v', 0x5a, 9, 0x08, 1, 0x12, 5, 0x0a, 1, 'b', 0x18, 9},
		/* the TxnResponse of test_txn_codec() */
		{0x0a, 2, 0x18, 12, 0x10, 1, 0x1a, 23, 0x12, 21, 0x0a, 2, 0x18, 12, 0x12, 15,
		 0x0a, 2, '/', 'a', 0x10, 3, 0x18, 4, 0x20, 2, 0x2a, 3, 'o', 'l', 'd',
		 0x1a, 20, 0x1a, 18, 0x10, 2, 0x1a, 4, 0x0a, 2, '/', 'b', 0x1a, 8, 0x0a, 3, '/',
		 'b', '2', 0x2a, 1, 'x', 0x1a, 10, 0x0a, 8, 0x12, 4, 0x0a, 2, '/', 'a', 0x20, 1,
		 0x1a, 2, 0x12, 0},
	};
	/* clang-format on */
	static const size_t lens[] = {32, 27, 69};
	struct kv_op rops[] = {
		{.type = KV_OP_PUT, .prev_kv = true},
		{.type = KV_OP_DELETE, .prev_kv = true},
		{.type = KV_OP_RANGE, .keys_only = true},
	};
	struct kv_txn rt = {.success = rops, .n_success = 3, .failure = rops + 2, .n_failure = 1};
	unsigned seed = 12345;
	int ok = 0, refused = 0, other = 0;
	for (int round = 0; round < 30000; round++) {
		uint8_t buf[96];
		size_t which = (size_t)round % 3, len = lens[which];
		memcpy(buf, seeds[which], len);
		int edits = 1 + (int)(rand_r(&seed) % 4);
		for (int e = 0; e < edits; e++) {
			unsigned op = (unsigned)rand_r(&seed) % 3;
			size_t at = (size_t)rand_r(&seed) % len;
			if (op == 0)
				buf[at] = (uint8_t)rand_r(&seed);
			else if (op == 1)
				len = at + 1;
			else if (len < sizeof(buf)) {
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = (uint8_t)rand_r(&seed);
				len++;
			}
		}
		int ret;
		if (which == 0) {
			struct kv_range_result res = {0};
			ret = etcd_grpc_parse_range(buf, len, round % 2 == 0, &res);
			kv_range_result_free(&res);
		} else if (which == 2) {
			struct kv_txn_result res = {0};
			ret = etcd_grpc_parse_txn(buf, len, &rt, &res);
			kv_txn_result_free(&res);
		} else {
			struct etcd_watch_msg m;
			ret = etcd_grpc_parse_watch(buf, len, &m);
			etcd_watch_msg_free(&m);
		}
		if (ret == 0)
			ok++;
		else if (ret == -EINVAL)
			refused++;
		else
			other++;
	}
	fprintf(stderr, "mutated messages: %d decoded, %d refused, %d other\n", ok, refused, other);
	CHECK_EQ(other, 0);
	CHECK(ok > 0 && refused > 0);
}

/* ---- helpers for the server tests ---- */

struct copts {
	const char *endpoints;
	enum etcd_transport transport;
	long cmd_ms;
	const char *user;
	const char *cacert, *cert, *key;
	size_t max_req, max_ops; /* client-side limits; 0 = defaults */
};

static struct kv *client(const struct copts *o)
{
	struct etcd_config cfg;
	etcd_config_init(&cfg);
	etcd_config_set_endpoints(&cfg, o->endpoints);
	cfg.transport = o->transport;
	if (o->cmd_ms)
		cfg.command_timeout_ms = o->cmd_ms;
	cfg.max_request_bytes = o->max_req;
	cfg.max_txn_ops = o->max_ops;
	etcd_config_set_string(&cfg.user, o->user);
	etcd_config_set_string(&cfg.cacert, o->cacert);
	etcd_config_set_string(&cfg.cert, o->cert);
	etcd_config_set_string(&cfg.key, o->key);
	return etcd_harness_client(&cfg);
}

static struct etcd_client_stats stats(struct kv *kv)
{
	struct etcd_client_stats s;
	etcd_client_get_stats(kv, &s);
	return s;
}

static bool same_kv(const struct kv_kv *a, const struct kv_kv *b)
{
	if (a->key_len != b->key_len || memcmp(a->key, b->key, a->key_len))
		return false;
	if (!a->value != !b->value)
		return false;
	if (a->value && (a->value_len != b->value_len || memcmp(a->value, b->value, a->value_len)))
		return false;
	return a->create_revision == b->create_revision && a->mod_revision == b->mod_revision &&
	       a->version == b->version && a->lease == b->lease;
}

/* Runs req through both clients and checks that the results are identical. Returns the
 * number of kvs (or the shared error). */
static long compare_range(struct kv *g, struct kv *j, const struct kv_range_req *req,
			  const char *what)
{
	struct kv_range_result rg, rj;
	int eg = kv_range(g, req, &rg), ej = kv_range(j, req, &rj);
	long n = eg < 0 ? eg : (long)rg.n_kvs;
	bool ok = eg == ej;
	if (ok && eg == 0) {
		ok = rg.n_kvs == rj.n_kvs && rg.count == rj.count && rg.more == rj.more &&
		     rg.revision == rj.revision;
		for (size_t i = 0; ok && i < rg.n_kvs; i++)
			if (!same_kv(&rg.kvs[i], &rj.kvs[i])) {
				fprintf(stderr, "  %s: kv %zu differs\n", what, i);
				ok = false;
			}
	}
	if (!ok)
		fprintf(stderr,
			"  %s: gRPC %d (%zu kvs, count %lld, more %d, rev %lld) vs JSON %d (%zu "
			"kvs, count %lld, more %d, rev %lld)\n",
			what, eg, eg ? 0 : rg.n_kvs, eg ? 0LL : (long long)rg.count,
			eg ? 0 : rg.more, eg ? 0LL : (long long)rg.revision, ej, ej ? 0 : rj.n_kvs,
			ej ? 0LL : (long long)rj.count, ej ? 0 : rj.more,
			ej ? 0LL : (long long)rj.revision);
	CHECK(ok);
	kv_range_result_free(&rg);
	kv_range_result_free(&rj);
	return n;
}

/* Puts n_ops (key, value) pairs in txns of up to 100 puts. */
static struct kv_range_req prefix_req(const char *prefix, char *end_buf)
{
	size_t end_len = kv_prefix_end(prefix, strlen(prefix), end_buf);
	return (struct kv_range_req){.key = prefix,
				     .key_len = strlen(prefix),
				     .range_end = end_buf,
				     .range_end_len = end_len};
}

/* Grants a lease with etcdctl and returns its id (0 on failure). */
static int64_t grant_lease(struct etcd_harness *h)
{
	const char *args[] = {"lease", "grant", "600", NULL};
	char out[256];
	if (etcd_harness_etcdctl(h, NULL, out, sizeof(out), args) != 0)
		return 0;
	unsigned long long id = 0;
	if (sscanf(out, "lease %llx granted", &id) != 1)
		return 0;
	return (int64_t)id;
}

/* ---- the same results through gRPC and JSON ---- */

#define N_PAGED 2600

static void test_equivalence(struct etcd_harness *h)
{
	struct copts og = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_GRPC};
	struct copts oj = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_JSON};
	struct kv *g = client(&og), *j = client(&oj);
	CHECK(g && j);
	if (!g || !j)
		goto out;

	/* 2600 keys with varied values: empty, every byte value, and text of 1..300 bytes. */
	static char keys[N_PAGED][24];
	static char vals[N_PAGED][320];
	static struct kv_op ops[N_PAGED];
	unsigned char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	for (int i = 0; i < N_PAGED; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/g/k/%05d", i);
		size_t vlen = (size_t)(i % 300) + 1;
		const void *v = vals[i];
		if (i % 7 == 0)
			vlen = 0;
		else if (i % 11 == 0)
			v = all, vlen = 256;
		else
			for (size_t k = 0; k < vlen; k++)
				vals[i][k] = (char)('a' + (i + k) % 26);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), v, vlen);
	}
	CHECK_EQ(kvtest_put_all(j, ops, N_PAGED), 0);
	/* Binary keys: "/g/b/" followed by each byte value, and NULs inside a key. */
	static char bkeys[256][8];
	for (int i = 0; i < 256; i++) {
		memcpy(bkeys[i], "/g/b/", 5);
		bkeys[i][5] = (char)i;
		ops[i] = kvtest_put(bkeys[i], 6, all, (size_t)i);
	}
	CHECK_EQ(kvtest_put_all(j, ops, 256), 0);
	CHECK_EQ(kv_put(j, "/g/n\0ul\0", 8, "\0\0", 2, NULL), 0);
	CHECK_EQ(kv_put(j, "/g/\xff\xff", 5, "ff", 2, NULL), 0);
	/* A 200 KiB value, a key with three versions, a key with a lease. */
	char *big = malloc(200 << 10);
	for (size_t i = 0; i < (200 << 10); i++)
		big[i] = (char)(i * 7);
	CHECK_EQ(kv_put(j, "/g/big", 6, big, 200 << 10, NULL), 0);
	free(big);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(put_s(j, "/g/versions", i == 2 ? "third" : "earlier", NULL), 0);
	int64_t lease = grant_lease(h);
	CHECK(lease != 0);
	struct kv_op lop = {.type = KV_OP_PUT,
			    .key = "/g/leased",
			    .key_len = 9,
			    .value = "L",
			    .value_len = 1,
			    .lease = lease};
	CHECK_EQ(kvtest_put_all(j, &lop, 1), 0);
	int64_t rev_a;
	CHECK_EQ(kv_status(j, &rev_a), 0);
	/* Later changes, so that the old revision differs from the latest. */
	CHECK_EQ(kv_delete_range(j, "/g/k/00100", 10, "/g/k/00200", 10, NULL, NULL), 0);
	CHECK_EQ(put_s(j, "/g/k/00001", "changed", NULL), 0);
	CHECK_EQ(put_s(j, "/g/late", "x", NULL), 0);

	struct etcd_client_stats g0 = stats(g), j0 = stats(j);
	char end[64];
	const size_t total = N_PAGED + 256 + 5; /* at rev_a */
	struct kv_range_req all_g = prefix_req("/g/", end);
	long n = compare_range(g, j, &all_g, "whole prefix");
	CHECK_EQ(n, (long)(total - 100 + 1));

	struct kv_range_req r = all_g;
	r.keys_only = true;
	compare_range(g, j, &r, "keys_only");
	r = all_g;
	r.count_only = true;
	CHECK_EQ(compare_range(g, j, &r, "count_only"), 0);
	r = all_g;
	r.limit = 10;
	CHECK_EQ(compare_range(g, j, &r, "limit 10"), 10);
	r.limit = 1500;
	CHECK_EQ(compare_range(g, j, &r, "limit 1500"), 1500);
	r = all_g;
	r.sort_order = KV_SORT_DESCEND;
	compare_range(g, j, &r, "descending by key, paged");
	r.keys_only = true;
	compare_range(g, j, &r, "descending by key, keys only");
	r = all_g;
	r.sort_order = KV_SORT_ASCEND;
	r.sort_target = KV_SORT_MOD;
	compare_range(g, j, &r, "ascending by mod revision");
	r.sort_order = KV_SORT_DESCEND;
	r.sort_target = KV_SORT_VALUE;
	r.limit = 100;
	compare_range(g, j, &r, "descending by value, limit 100");
	r = all_g;
	r.revision = rev_a;
	CHECK_EQ(compare_range(g, j, &r, "old revision"), (long)total);
	r.keys_only = true;
	r.sort_order = KV_SORT_DESCEND;
	compare_range(g, j, &r, "old revision, descending keys");
	r = all_g;
	r.serializable = true;
	compare_range(g, j, &r, "serializable");
	struct kv_range_req one = {.key = "/g/big", .key_len = 6};
	CHECK_EQ(compare_range(g, j, &one, "200 KiB value"), 1);
	one = (struct kv_range_req){.key = "/g/leased", .key_len = 9};
	CHECK_EQ(compare_range(g, j, &one, "leased key"), 1);
	one = (struct kv_range_req){.key = "/g/versions", .key_len = 11};
	CHECK_EQ(compare_range(g, j, &one, "three versions"), 1);
	one = (struct kv_range_req){.key = "/g/n\0ul\0", .key_len = 8};
	CHECK_EQ(compare_range(g, j, &one, "NULs in key"), 1);
	one = (struct kv_range_req){.key = bkeys[0], .key_len = 6};
	CHECK_EQ(compare_range(g, j, &one, "binary key, empty value"), 1);
	one = (struct kv_range_req){.key = "/g/none", .key_len = 7};
	CHECK_EQ(compare_range(g, j, &one, "missing key"), 0);
	one = (struct kv_range_req){.key = "/g/k/00007", .key_len = 10};
	CHECK_EQ(compare_range(g, j, &one, "empty value"), 1);
	struct kv_range_req ge = {
		.key = "/g/b/", .key_len = 5, .range_end = "\0", .range_end_len = 1};
	compare_range(g, j, &ge, "every key >= /g/b/");
	struct kv_range_req everything = {
		.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1};
	CHECK(compare_range(g, j, &everything, "whole keyspace") > (long)total - 100);
	struct kv_range_req backwards = {
		.key = "/g/z", .key_len = 4, .range_end = "/g/a", .range_end_len = 4};
	CHECK_EQ(compare_range(g, j, &backwards, "end before start"), 0);

	struct etcd_client_stats g1 = stats(g), j1 = stats(j);
	fprintf(stderr, "gRPC client: %llu gRPC round trips, %llu connections opened\n",
		(unsigned long long)(g1.grpc_ranges - g0.grpc_ranges),
		(unsigned long long)(g1.grpc_connects - g0.grpc_connects));
	CHECK(g1.grpc_ranges - g0.grpc_ranges >= 20);
	CHECK_EQ(g1.json_ranges, g0.json_ranges);
	CHECK_EQ(g1.grpc_fallbacks, 0);
	/* Sequential requests ride one kept-alive h2c connection (with libcurl 7.88 too). */
	CHECK_EQ(g1.grpc_connects - g0.grpc_connects, 1);
	CHECK_EQ(j1.grpc_ranges, 0);
	CHECK(j1.json_ranges > j0.json_ranges);

	/* Compacted and future revisions map the same way. */
	int64_t now;
	CHECK_EQ(kv_status(j, &now), 0);
	CHECK_EQ(kv_compact(j, rev_a + 1, true), 0);
	r = all_g;
	r.revision = rev_a;
	CHECK_EQ(compare_range(g, j, &r, "compacted, paged"), -ERANGE);
	one = (struct kv_range_req){.key = "/g/big", .key_len = 6, .revision = rev_a};
	CHECK_EQ(compare_range(g, j, &one, "compacted, one key"), -ERANGE);
	r.revision = now + 100;
	CHECK_EQ(compare_range(g, j, &r, "future revision"), -ENOENT);
	r.revision = rev_a + 1;
	compare_range(g, j, &r, "oldest kept revision");

	/* AUTO: ranges go through gRPC, single keys too. */
	struct copts oa = {.endpoints = h->endpoint};
	struct kv *a = client(&oa);
	struct kv_range_result res;
	CHECK_EQ(kv_range(a, &all_g, &res), 0);
	CHECK_EQ(res.n_kvs, total - 100 + 1);
	kv_range_result_free(&res);
	struct etcd_client_stats s = stats(a);
	CHECK(s.grpc_ranges >= 2 && s.json_ranges == 0);
	struct kv_kv kv1;
	CHECK_EQ(kv_get(a, "/g/late", 7, &kv1), 0);
	kv_kv_free(&kv1);
	s = stats(a);
	CHECK_EQ(s.json_ranges, 0);
	CHECK_EQ(s.grpc_connects, 1);
	kv_destroy(a);

	int64_t deleted;
	CHECK_EQ(kv_delete_range(j, "/g/", 3, "/g0", 3, &deleted, NULL), 0);
out:
	if (g)
		kv_destroy(g);
	if (j)
		kv_destroy(j);
}

/* ---- txns over gRPC and JSON ---- */

/* A transcript of txn outcomes that does not depend on where or when they ran: keys without
 * their prefix, revisions relative to the store revision before the first txn. Two runs on
 * different prefixes of the same sequence must give the same text. */
struct tx {
	char *p;
	size_t len, cap;
	size_t strip;
	int64_t base;
};

static void tx_printf(struct tx *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tx_printf(struct tx *t, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(t->p ? t->p + t->len : NULL, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap <= t->len + (size_t)n)
			cap *= 2;
		char *p = realloc(t->p, cap);
		if (!p)
			return;
		t->p = p;
		t->cap = cap;
	}
}

static void tx_bytes(struct tx *t, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			tx_printf(t, "%c", c);
		else
			tx_printf(t, "\\x%02x", c);
	}
}

static int64_t tx_rev(const struct tx *t, int64_t rev)
{
	return rev ? rev - t->base : 0;
}

static void tx_kv(struct tx *t, const struct kv_kv *kv)
{
	size_t strip = kv->key_len >= t->strip ? t->strip : 0;
	tx_printf(t, "    ");
	tx_bytes(t, kv->key + strip, kv->key_len - strip);
	tx_printf(t, " create %lld mod %lld version %lld lease %s value ",
		  (long long)tx_rev(t, kv->create_revision), (long long)tx_rev(t, kv->mod_revision),
		  (long long)kv->version, kv->lease ? "set" : "0");
	if (kv->value)
		tx_bytes(t, kv->value, kv->value_len);
	else
		tx_printf(t, "(none)");
	tx_printf(t, "\n");
}

/* Runs txn on kv and writes its outcome into t. r is left for the caller (free it). */
static int tx_run(struct kv *kv, struct tx *t, const char *what, const struct kv_txn *txn,
		  struct kv_txn_result *r)
{
	int ret = kv_txn(kv, txn, r);
	tx_printf(t, "%s: %s", what, ret < 0 ? strerror(-ret) : "ok");
	if (ret < 0) {
		tx_printf(t, "\n");
		return ret;
	}
	tx_printf(t, ", %s at %lld, %zu results\n", r->succeeded ? "succeeded" : "failed",
		  (long long)tx_rev(t, r->revision), r->n_results);
	static const char *const types[] = {"range", "put", "delete"};
	for (size_t i = 0; i < r->n_results; i++) {
		const struct kv_op_result *o = &r->results[i];
		tx_printf(t, "  %s: %zu kvs, count %lld, more %d, deleted %lld, at %lld\n",
			  (unsigned)o->type < 3 ? types[o->type] : "?", o->range.n_kvs,
			  (long long)o->range.count, o->range.more, (long long)o->deleted,
			  (long long)tx_rev(t, o->range.revision));
		for (size_t k = 0; k < o->range.n_kvs; k++)
			tx_kv(t, &o->range.kvs[k]);
	}
	return ret;
}

static bool value_is(const struct kv_kv *kv, const void *v, size_t n)
{
	return kv->value && kv->value_len == n && (n == 0 || !memcmp(kv->value, v, n));
}

/* The txns etcdfs sends (a save: compare mod_revision or create_revision == 0, put with
 * prev_kv, failure = keys-only range) and every other shape kv.h allows, with their expected
 * outcomes; the transcript goes to t. */
static void txn_suite(struct kv *kv, const char *pfx, int64_t lease, struct tx *t)
{
	char k[64], m1[64], m2[64], m3[64], bin[64], gone[64], mlo[64], mhi[64], end[64];
	size_t pl = strlen(pfx);
	snprintf(k, sizeof(k), "%sk", pfx);
	snprintf(m1, sizeof(m1), "%sm1", pfx);
	snprintf(m2, sizeof(m2), "%sm2", pfx);
	snprintf(m3, sizeof(m3), "%sm3", pfx);
	snprintf(bin, sizeof(bin), "%sbin", pfx);
	snprintf(gone, sizeof(gone), "%sgone", pfx);
	snprintf(mlo, sizeof(mlo), "%sm", pfx);
	snprintf(mhi, sizeof(mhi), "%sn", pfx);
	size_t end_len = kv_prefix_end(pfx, pl, end);
	unsigned char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	t->strip = pl;
	CHECK_EQ(kv_status(kv, &t->base), 0);
	struct kv_txn_result r;

	/* 1. Create: create_revision == 0 holds on an absent key. */
	struct kvtest_save create;
	kvtest_save_init(&create, KV_CMP_CREATE, k, "v1", 2);
	CHECK_EQ(tx_run(kv, t, "create on an absent key", &create.txn, &r), 0);
	CHECK(r.succeeded && r.n_results == 1);
	CHECK(r.n_results == 1 && r.results[0].type == KV_OP_PUT && r.results[0].range.n_kvs == 0);
	int64_t rev1 = r.revision;
	CHECK_EQ(rev1, t->base + 1);
	kv_txn_result_free(&r);

	/* 2. The same on the present key: the failure branch's keys-only range. */
	CHECK_EQ(tx_run(kv, t, "create on a present key", &create.txn, &r), 0);
	CHECK(!r.succeeded && r.n_results == 1 && r.revision == rev1);
	if (r.n_results == 1) {
		const struct kv_range_result *g = &r.results[0].range;
		CHECK(r.results[0].type == KV_OP_RANGE && g->n_kvs == 1 && g->count == 1);
		if (g->n_kvs == 1)
			CHECK(g->kvs[0].value == NULL && g->kvs[0].create_revision == rev1 &&
			      g->kvs[0].version == 1);
	}
	kv_txn_result_free(&r);

	/* 3. A save: mod_revision matches, the put returns the previous kv. */
	struct kvtest_save save;
	kvtest_save_init(&save, KV_CMP_MOD, k, "v2", 2);
	save.cmp.number = rev1;
	CHECK_EQ(tx_run(kv, t, "save", &save.txn, &r), 0);
	CHECK(r.succeeded && r.n_results == 1 && r.revision == rev1 + 1);
	if (r.n_results == 1 && r.results[0].range.n_kvs == 1) {
		const struct kv_kv *p = &r.results[0].range.kvs[0];
		CHECK(value_is(p, "v1", 2) && p->mod_revision == rev1 && p->version == 1);
	} else {
		CHECK(!"no previous kv");
	}
	kv_txn_result_free(&r);

	/* 4. The same save again: a conflict, nothing written. */
	CHECK_EQ(tx_run(kv, t, "stale save", &save.txn, &r), 0);
	CHECK(!r.succeeded && r.revision == rev1 + 1 && r.n_results == 1);
	if (r.n_results == 1 && r.results[0].range.n_kvs == 1)
		CHECK(r.results[0].range.kvs[0].mod_revision == rev1 + 1 &&
		      r.results[0].range.kvs[0].version == 2);
	kv_txn_result_free(&r);

	/* 5. Many ops: puts (a 0-byte value, all 256 byte values, one with a lease), a range
	 * that sees them, a delete with prev_kv (of another key: etcd refuses a txn that puts
	 * and deletes one key). */
	CHECK_EQ(put_s(kv, gone, "g", NULL), 0);
	struct kv_compare v2 = {.target = KV_CMP_VERSION,
				.result = KV_CMP_EQUAL,
				.key = k,
				.key_len = strlen(k),
				.number = 2};
	struct kv_op multi[] = {
		{.type = KV_OP_PUT, .key = m1, .key_len = strlen(m1), .value = "1", .value_len = 1},
		{.type = KV_OP_PUT,
		 .key = m2,
		 .key_len = strlen(m2),
		 .value = "22",
		 .value_len = 2,
		 .lease = lease},
		{.type = KV_OP_PUT, .key = m3, .key_len = strlen(m3), .value = "", .value_len = 0},
		{.type = KV_OP_PUT,
		 .key = bin,
		 .key_len = strlen(bin),
		 .value = all,
		 .value_len = 256},
		{.type = KV_OP_RANGE,
		 .key = pfx,
		 .key_len = pl,
		 .range_end = end,
		 .range_end_len = end_len},
		{.type = KV_OP_DELETE, .key = gone, .key_len = strlen(gone), .prev_kv = true},
	};
	struct kv_txn many = {.compare = &v2, .n_compare = 1, .success = multi, .n_success = 6};
	CHECK_EQ(tx_run(kv, t, "six ops", &many, &r), 0);
	CHECK(r.succeeded && r.n_results == 6 && r.revision == rev1 + 3);
	if (r.n_results == 6) {
		const struct kv_range_result *g = &r.results[4].range;
		CHECK(r.results[4].type == KV_OP_RANGE && g->n_kvs == 6 && g->count == 6);
		for (size_t i = 0; i < g->n_kvs; i++) {
			CHECK(g->kvs[i].value != NULL);
			if (g->kvs[i].key_len == strlen(bin) && !memcmp(g->kvs[i].key, bin, 4))
				CHECK(value_is(&g->kvs[i], all, 256));
		}
		CHECK(r.results[5].type == KV_OP_DELETE && r.results[5].deleted == 1);
		CHECK(r.results[5].range.n_kvs == 1 &&
		      value_is(&r.results[5].range.kvs[0], "g", 1));
		for (int i = 0; i < 6; i++)
			CHECK_EQ(r.results[i].range.revision, rev1 + 3);
	}
	kv_txn_result_free(&r);

	/* 6. Compares on values and numbers; an empty operand is sent (NOT_EQUAL "" on a
	 * non-empty value holds only when etcd received the "" to compare with). */
	struct kv_compare cmps[] = {
		{.target = KV_CMP_VALUE,
		 .result = KV_CMP_EQUAL,
		 .key = bin,
		 .key_len = strlen(bin),
		 .value = all,
		 .value_len = 256},
		{.target = KV_CMP_VALUE,
		 .result = KV_CMP_EQUAL,
		 .key = m3,
		 .key_len = strlen(m3),
		 .value = "",
		 .value_len = 0},
		{.target = KV_CMP_VALUE,
		 .result = KV_CMP_NOT_EQUAL,
		 .key = k,
		 .key_len = strlen(k),
		 .value = "",
		 .value_len = 0},
		{.target = KV_CMP_LEASE,
		 .result = KV_CMP_EQUAL,
		 .key = m2,
		 .key_len = strlen(m2),
		 .number = lease},
		{.target = KV_CMP_LEASE, .result = KV_CMP_EQUAL, .key = k, .key_len = strlen(k)},
		{.target = KV_CMP_VERSION,
		 .result = KV_CMP_GREATER,
		 .key = k,
		 .key_len = strlen(k),
		 .number = 1},
		{.target = KV_CMP_CREATE,
		 .result = KV_CMP_LESS,
		 .key = k,
		 .key_len = strlen(k),
		 .number = rev1 + 1},
		{.target = KV_CMP_MOD, /* every key in the prefix changed at most at rev1 + 3 */
		 .result = KV_CMP_LESS,
		 .key = pfx,
		 .key_len = pl,
		 .range_end = end,
		 .range_end_len = end_len,
		 .number = rev1 + 4},
	};
	struct kv_op get_bin = {.type = KV_OP_RANGE, .key = bin, .key_len = strlen(bin)};
	struct kv_txn cmp_all = {
		.compare = cmps, .n_compare = 8, .success = &get_bin, .n_success = 1};
	CHECK_EQ(tx_run(kv, t, "eight compares that hold", &cmp_all, &r), 0);
	CHECK(r.succeeded && r.n_results == 1);
	if (r.n_results == 1 && r.results[0].range.n_kvs == 1)
		CHECK(value_is(&r.results[0].range.kvs[0], all, 256));
	kv_txn_result_free(&r);
	/* Each one negated fails the txn. */
	for (size_t i = 0; i < 8; i++) {
		struct kv_compare c = cmps[i];
		c.result = c.result == KV_CMP_EQUAL	  ? KV_CMP_NOT_EQUAL
			   : c.result == KV_CMP_NOT_EQUAL ? KV_CMP_EQUAL
			   : c.result == KV_CMP_LESS	  ? KV_CMP_GREATER
							  : KV_CMP_LESS;
		if (cmps[i].target == KV_CMP_CREATE || cmps[i].target == KV_CMP_MOD)
			c.number = cmps[i].number - 1; /* neither less nor greater: equal */
		if (cmps[i].target == KV_CMP_VERSION)
			c.number = 2;
		struct kv_txn one = {.compare = &c, .n_compare = 1};
		char what[64];
		snprintf(what, sizeof(what), "compare %zu negated", i);
		CHECK_EQ(tx_run(kv, t, what, &one, &r), 0);
		CHECK(!r.succeeded);
		if (r.succeeded)
			fprintf(stderr, "  %s held\n", what);
		kv_txn_result_free(&r);
	}

	/* 7. A range delete with prev_kv: m1, m2 and m3 (the empty value is a value). */
	struct kv_op del = {.type = KV_OP_DELETE,
			    .key = mlo,
			    .key_len = strlen(mlo),
			    .range_end = mhi,
			    .range_end_len = strlen(mhi),
			    .prev_kv = true};
	struct kv_txn dt = {.success = &del, .n_success = 1};
	CHECK_EQ(tx_run(kv, t, "range delete", &dt, &r), 0);
	CHECK(r.succeeded && r.n_results == 1);
	if (r.n_results == 1) {
		const struct kv_op_result *o = &r.results[0];
		CHECK(o->deleted == 3 && o->range.n_kvs == 3 && o->range.count == 3);
		if (o->range.n_kvs == 3)
			CHECK(value_is(&o->range.kvs[0], "1", 1) &&
			      value_is(&o->range.kvs[1], "22", 2) &&
			      o->range.kvs[1].lease == lease && value_is(&o->range.kvs[2], "", 0));
	}
	kv_txn_result_free(&r);
	/* Deleting nothing, put without prev_kv on a present key: no kvs. */
	struct kv_op nothing[] = {
		del,
		{.type = KV_OP_PUT, .key = k, .key_len = strlen(k), .value = "v3", .value_len = 2},
	};
	struct kv_txn nt = {.success = nothing, .n_success = 2};
	CHECK_EQ(tx_run(kv, t, "delete nothing, plain put", &nt, &r), 0);
	CHECK(r.n_results == 2 && r.results[0].deleted == 0 && r.results[0].range.n_kvs == 0 &&
	      r.results[1].range.n_kvs == 0);
	kv_txn_result_free(&r);

	/* 8. Read only: no compares, a keys-only range in the success branch. */
	struct kv_op scan = {.type = KV_OP_RANGE,
			     .key = pfx,
			     .key_len = pl,
			     .range_end = end,
			     .range_end_len = end_len,
			     .keys_only = true};
	struct kv_txn ro = {.success = &scan, .n_success = 1};
	CHECK_EQ(tx_run(kv, t, "read only", &ro, &r), 0);
	CHECK(r.succeeded && r.n_results == 1 && r.results[0].range.n_kvs == 2);
	kv_txn_result_free(&r);

	/* 9. Refused by etcd: one key put twice in a txn. Nothing written. */
	struct kv_op twice[] = {create.put, save.put};
	struct kv_txn dup = {.success = twice, .n_success = 2};
	CHECK_EQ(tx_run(kv, t, "duplicate key", &dup, &r), -EINVAL);
	kv_txn_result_free(&r);
	struct kv_kv got;
	CHECK_EQ(kv_get(kv, k, strlen(k), &got), 0);
	CHECK(value_is(&got, "v3", 2));
	kv_kv_free(&got);

	CHECK_EQ(kv_delete_range(kv, pfx, pl, end, end_len, NULL, NULL), 0);
}

static void test_txn(struct etcd_harness *h)
{
	struct copts og = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_GRPC};
	struct copts oj = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_JSON};
	struct kv *g = client(&og), *j = client(&oj);
	int64_t lease = grant_lease(h);
	CHECK(g && j && lease);
	if (!g || !j)
		goto out;
	struct tx tg = {0}, tj = {0};
	txn_suite(g, "/x/grpc/", lease, &tg);
	struct etcd_client_stats sg = stats(g);
	txn_suite(j, "/x/json/", lease, &tj);
	struct etcd_client_stats sj = stats(j);
	fprintf(stderr, "txns: %llu over gRPC, %llu over JSON\n", (unsigned long long)sg.grpc_txns,
		(unsigned long long)sj.json_txns);
	/* Every txn of the gRPC client went over gRPC, none of the JSON client's: 19 each
	 * (the suite's txns but the refused one, and the cleanup). */
	CHECK_EQ(sg.grpc_txns, 19);
	CHECK_EQ(sg.json_txns, 0);
	CHECK_EQ(sg.grpc_fallbacks, 0);
	CHECK_EQ(sj.json_txns, 19);
	CHECK_EQ(sj.grpc_txns, 0);
	CHECK(tg.len > 0 && tg.len == tj.len && tg.p && tj.p && !memcmp(tg.p, tj.p, tg.len));
	if (!(tg.len == tj.len && tg.p && tj.p && !memcmp(tg.p, tj.p, tg.len)))
		fprintf(stderr, "gRPC transcript:\n%.*s\nJSON transcript:\n%.*s\n", (int)tg.len,
			tg.p, (int)tj.len, tj.p);
	free(tg.p);
	free(tj.p);
out:
	if (g)
		kv_destroy(g);
	if (j)
		kv_destroy(j);
}

/* Request limits: refused client side before sending, or by etcd, mapped alike. */
static void test_txn_limits(struct etcd_harness *h)
{
	char *v = malloc(3 << 20);
	memset(v, 'x', 3 << 20);
	static const enum etcd_transport ts[] = {ETCD_TRANSPORT_GRPC, ETCD_TRANSPORT_JSON};
	for (int i = 0; i < 2; i++) {
		struct copts o = {.endpoints = h->endpoint, .transport = ts[i]};
		struct kv *kv = client(&o);
		struct kv_kv got;
		/* The default limit (etcd's 1.5 MiB): refused here, nothing sent. */
		CHECK_EQ(kv_put(kv, "/lim/big", 8, v, 2 << 20, NULL), -EFBIG);
		struct etcd_client_stats s = stats(kv);
		CHECK_EQ(s.grpc_txns + s.json_txns, 0);
		/* 1 MiB fits. */
		CHECK_EQ(kv_put(kv, "/lim/big", 8, v, 1 << 20, NULL), 0);
		CHECK_EQ(kv_get(kv, "/lim/big", 8, &got), 0);
		CHECK(value_is(&got, v, 1 << 20));
		kv_kv_free(&got);
		s = stats(kv);
		CHECK_EQ(i == 0 ? s.grpc_txns : s.json_txns, 1);
		kv_destroy(kv);

		/* A client believing in larger limits: etcd refuses. 1.8 MiB passes gRPC's
		 * message limit (2 MiB) and meets "request is too large". */
		o.max_req = 64 << 20;
		o.max_ops = 1000;
		kv = client(&o);
		CHECK_EQ(kv_put(kv, "/lim/big2", 9, v, 1887436, NULL), -EFBIG);
		/* 3 MiB does not pass it: the gateway reports etcd's refusal, but over gRPC etcd
		 * resets the stream before reading the message and libcurl 7.88 reports no status.
		 * The request is known unapplied (not all of it left), but not why: -EIO. */
		CHECK_EQ(kv_put(kv, "/lim/big2", 9, v, 3 << 20, NULL), i == 0 ? -EIO : -EFBIG);
		CHECK_EQ(kv_get(kv, "/lim/big2", 9, &got), -ENOENT);
		struct kv_op ops[129];
		static char keys[129][16];
		for (int k = 0; k < 129; k++) {
			snprintf(keys[k], sizeof(keys[k]), "/lim/op%03d", k);
			ops[k] = (struct kv_op){
				.type = KV_OP_PUT, .key = keys[k], .key_len = strlen(keys[k])};
		}
		struct kv_txn txn = {.success = ops, .n_success = 129};
		struct kv_txn_result r;
		CHECK_EQ(kv_txn(kv, &txn, &r), -E2BIG); /* "too many operations in txn request" */
		kv_txn_result_free(&r);
		CHECK_EQ(kv_get(kv, "/lim/op000", 10, &got), -ENOENT);
		s = stats(kv);
		fprintf(stderr,
			"%s: limits refused by etcd, %llu gRPC / %llu JSON txns, %llu "
			"fallbacks\n",
			i == 0 ? "gRPC" : "JSON", (unsigned long long)s.grpc_txns,
			(unsigned long long)s.json_txns, (unsigned long long)s.grpc_fallbacks);
		CHECK_EQ(i == 0 ? s.json_txns : s.grpc_txns, 0);
		CHECK_EQ(s.grpc_fallbacks, 0);
		CHECK_EQ(kv_delete_range(kv, "/lim/", 5, "/lim0", 5, NULL, NULL), 0);
		kv_destroy(kv);
	}
	/* AUTO: the 3 MiB write is redone through JSON (nothing was applied) and gets etcd's
	 * -EFBIG. */
	struct copts oa = {.endpoints = h->endpoint, .max_req = 64 << 20};
	struct kv *a = client(&oa);
	struct kv_kv got;
	CHECK_EQ(kv_get(a, "/lim/big2", 9, &got), -ENOENT); /* proves gRPC: writes use it */
	CHECK_EQ(kv_put(a, "/lim/big2", 9, v, 3 << 20, NULL), -EFBIG);
	CHECK_EQ(kv_get(a, "/lim/big2", 9, &got), -ENOENT);
	struct etcd_client_stats s = stats(a);
	CHECK_EQ(s.grpc_fallbacks, 1);
	kv_destroy(a);
	free(v);
}

/* ---- paging pinned to one revision while others write ---- */

/* Keys before and after the pages read so far, and overwrites. */
static void late_key(int n, char *buf, size_t size)
{
	snprintf(buf, size, "/p/%05d%s", (n * 7919) % 12000, n % 2 ? "x" : "");
}

static void test_pinned_paging(struct etcd_harness *h)
{
	struct copts og = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_GRPC};
	struct kv *g = client(&og);
	static char keys[12000][16];
	static struct kv_op ops[12000];
	for (int i = 0; i < 12000; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/p/%05d", i);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), keys[i], strlen(keys[i]));
	}
	CHECK_EQ(kvtest_put_all(g, ops, 12000), 0);
	struct kvtest_writer w = {.kv = g, .max = 2000, .key = late_key};
	kvtest_writer_start(&w);
	char end[16];
	struct kv_range_req req = prefix_req("/p/", end);
	struct kv_range_result res;
	struct etcd_client_stats s0 = stats(g);
	long long t0 = util_now_ms();
	CHECK_EQ(kv_range(g, &req, &res), 0);
	long long dt = util_now_ms() - t0;
	int written = kvtest_writer_stop(&w);
	struct etcd_client_stats s1 = stats(g);
	fprintf(stderr, "gRPC paged %zu keys in %lld ms (%llu pages) while %d writes happened\n",
		res.n_kvs, dt, (unsigned long long)(s1.grpc_ranges - s0.grpc_ranges), written);
	CHECK(written > 0);
	CHECK(s1.grpc_ranges - s0.grpc_ranges >= 2);
	CHECK_EQ((long long)res.n_kvs, res.count);
	bool pinned = true, ordered = true;
	for (size_t i = 0; i < res.n_kvs; i++) {
		if (res.kvs[i].mod_revision > res.revision)
			pinned = false;
		/* Keys are NUL-terminated text here. */
		if (i && strcmp(res.kvs[i - 1].key, res.kvs[i].key) >= 0)
			ordered = false;
	}
	CHECK(pinned);
	CHECK(ordered);
	/* The same revision read again in one request (no paging) gives the same keys. */
	struct kv_range_req at = req;
	at.revision = res.revision;
	at.sort_order = KV_SORT_ASCEND;
	at.sort_target = KV_SORT_CREATE; /* not key order: sent as one request */
	struct kv_range_result once;
	CHECK_EQ(kv_range(g, &at, &once), 0);
	CHECK_EQ(once.n_kvs, res.n_kvs);
	kv_range_result_free(&once);
	kv_range_result_free(&res);
	CHECK_EQ(kv_delete_range(g, "/p/", 3, "/p0", 3, NULL, NULL), 0);
	kv_destroy(g);
}

/* ---- a reply limit: pages shrink until they fit, over both transports ---- */

static void test_reply_limit(struct etcd_harness *h)
{
	struct copts og = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_GRPC};
	struct copts oj = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_JSON};
	struct kv *g = client(&og), *j = client(&oj);
	/* 600 keys x 2 KiB: a first page of 1000 keys would be ~1.2 MiB (gRPC) and ~1.6 MiB
	 * (JSON, base64), both above a 256 KiB limit. */
	static char keys[600][16];
	static char val[2048];
	static struct kv_op ops[600];
	memset(val, 'q', sizeof(val));
	for (int i = 0; i < 600; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/lim/%03d", i);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), val, sizeof(val));
	}
	CHECK_EQ(kvtest_put_all(j, ops, 600), 0);
	etcd_client_set_max_reply_bytes(g, 256 << 10);
	etcd_client_set_max_reply_bytes(j, 256 << 10);
	char end[16];
	struct kv_range_req req = prefix_req("/lim/", end);
	struct etcd_client_stats g0 = stats(g), j0 = stats(j);
	CHECK_EQ(compare_range(g, j, &req, "pages shrunk to fit 256 KiB"), 600);
	struct etcd_client_stats g1 = stats(g), j1 = stats(j);
	fprintf(stderr, "256 KiB reply limit: 600 x 2 KiB keys in %llu gRPC / %llu JSON pages\n",
		(unsigned long long)(g1.grpc_ranges - g0.grpc_ranges),
		(unsigned long long)(j1.json_ranges - j0.json_ranges));
	CHECK(g1.grpc_ranges - g0.grpc_ranges >= 5);
	CHECK(j1.json_ranges - j0.json_ranges >= 6);
	/* An explicit limit is not paged: a reply above the limit is an error. */
	req.limit = 500;
	CHECK_EQ(compare_range(g, j, &req, "explicit limit over the reply limit"), -EIO);
	/* One value larger than the limit cannot be served at all. */
	char *big = calloc(1, 300 << 10);
	CHECK_EQ(kv_put(j, "/lim/zbig", 9, big, 300 << 10, NULL), 0);
	free(big);
	req.limit = 0;
	CHECK_EQ(compare_range(g, j, &req, "a value above the reply limit"), -EIO);
	etcd_client_set_max_reply_bytes(g, 0);
	etcd_client_set_max_reply_bytes(j, 0);
	CHECK_EQ(compare_range(g, j, &req, "default limit again"), 601);
	CHECK_EQ(kv_delete_range(j, "/lim/", 5, "/lim0", 5, NULL, NULL), 0);
	kv_destroy(g);
	kv_destroy(j);
}

/* ---- an endpoint that does not speak HTTP/2: AUTO falls back to JSON ---- */

/* A TCP proxy in front of etcd that refuses HTTP/2 like an HTTP/1.1-only reverse proxy
 * (answers the HTTP/2 preface with 400 and closes) and forwards everything else. */
struct h1proxy {
	int lfd, port, upstream_port;
	int wake[2];
	pthread_t th;
	int n_refused; /* HTTP/2 connections refused; read after stop */
};

#define PROXY_MAX 32

static void *proxy_main(void *arg)
{
	struct h1proxy *p = arg;
	int cfd[PROXY_MAX], ufd[PROXY_MAX], n = 0;
	for (;;) {
		struct pollfd pf[2 + 2 * PROXY_MAX];
		int np = 0;
		pf[np++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
		pf[np++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
		for (int i = 0; i < n; i++) {
			pf[np++] = (struct pollfd){.fd = cfd[i], .events = POLLIN};
			pf[np++] =
				(struct pollfd){.fd = ufd[i], .events = ufd[i] >= 0 ? POLLIN : 0};
		}
		if (poll(pf, (nfds_t)np, -1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			break;
		if ((pf[1].revents & POLLIN) && n < PROXY_MAX) {
			int fd = accept(p->lfd, NULL, NULL);
			if (fd >= 0) {
				cfd[n] = fd;
				ufd[n] = -1;
				n++;
			}
		}
		for (int i = 0; i < n; i++) {
			short cr = pf[2 + 2 * i].revents, ur = pf[3 + 2 * i].revents;
			char buf[65536];
			bool close_pair = false;
			if (ufd[i] < 0 && cr) {
				char pre[14];
				ssize_t k = recv(cfd[i], pre, sizeof(pre), MSG_PEEK);
				if (k <= 0) {
					close_pair = true;
				} else if (k == sizeof(pre) && !memcmp(pre, "PRI * HTTP/2.0", 14)) {
					static const char resp[] =
						"HTTP/1.1 400 Bad Request\r\nContent-Length: "
						"0\r\nConnection: close\r\n\r\n";
					ssize_t wr = write(cfd[i], resp, sizeof(resp) - 1);
					(void)wr;
					p->n_refused++;
					close_pair = true;
				} else if (k < (ssize_t)sizeof(pre) && !memcmp(pre, "PRI", 3)) {
					continue; /* wait for the whole preface */
				} else {
					struct sockaddr_in a = {
						.sin_family = AF_INET,
						.sin_port = htons((uint16_t)p->upstream_port),
						.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
					ufd[i] = socket(AF_INET, SOCK_STREAM, 0);
					if (connect(ufd[i], (struct sockaddr *)&a, sizeof(a)) < 0)
						close_pair = true;
					else
						cr = POLLIN;
				}
			}
			if (!close_pair && ufd[i] >= 0 && (cr & (POLLIN | POLLHUP | POLLERR))) {
				ssize_t k = read(cfd[i], buf, sizeof(buf));
				if (k <= 0 || write(ufd[i], buf, (size_t)k) != k)
					close_pair = true;
			}
			if (!close_pair && ufd[i] >= 0 && (ur & (POLLIN | POLLHUP | POLLERR))) {
				ssize_t k = read(ufd[i], buf, sizeof(buf));
				if (k <= 0 || write(cfd[i], buf, (size_t)k) != k)
					close_pair = true;
			}
			if (close_pair) {
				close(cfd[i]);
				if (ufd[i] >= 0)
					close(ufd[i]);
				cfd[i] = cfd[n - 1];
				ufd[i] = ufd[n - 1];
				n--;
				break; /* pollfd indexes moved: poll again */
			}
		}
	}
	for (int i = 0; i < n; i++) {
		close(cfd[i]);
		if (ufd[i] >= 0)
			close(ufd[i]);
	}
	return NULL;
}

static int proxy_start(struct h1proxy *p, int upstream_port)
{
	memset(p, 0, sizeof(*p));
	p->upstream_port = upstream_port;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(p->lfd, 16) < 0 || getsockname(p->lfd, (struct sockaddr *)&a, &len) < 0 ||
	    pipe(p->wake) < 0)
		return -errno;
	p->port = ntohs(a.sin_port);
	return -pthread_create(&p->th, NULL, proxy_main, p);
}

static void proxy_stop(struct h1proxy *p)
{
	ssize_t wr = write(p->wake[1], "x", 1);
	(void)wr;
	pthread_join(p->th, NULL);
	close(p->lfd);
	close(p->wake[0]);
	close(p->wake[1]);
}

/* AUTO: writes go over gRPC once the endpoint has answered gRPC (see client.c). */
static void test_txn_auto(struct etcd_harness *h)
{
	struct copts oa = {.endpoints = h->endpoint};
	struct kv *a = client(&oa);
	struct kv_kv got;
	CHECK_EQ(put_s(a, "/auto/1", "a", NULL), 0); /* a fresh client: JSON */
	struct etcd_client_stats s = stats(a);
	CHECK(s.json_txns == 1 && s.grpc_txns == 0);
	CHECK_EQ(kv_get(a, "/auto/1", 7, &got), 0); /* gRPC: the endpoint speaks it */
	kv_kv_free(&got);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(put_s(a, "/auto/1", "b", NULL), 0);
	/* A read-only txn needs no proof. */
	struct kv_op look = {.type = KV_OP_RANGE, .key = "/auto/1", .key_len = 7};
	struct kv_txn ro = {.success = &look, .n_success = 1};
	struct kv_txn_result r;
	CHECK_EQ(kv_txn(a, &ro, &r), 0);
	CHECK(r.n_results == 1 && r.results[0].range.n_kvs == 1);
	kv_txn_result_free(&r);
	s = stats(a);
	CHECK_EQ(s.grpc_txns, 11);
	CHECK_EQ(s.json_txns, 1);
	CHECK_EQ(s.grpc_fallbacks, 0);
	CHECK_EQ(s.grpc_connects, 1);
	kv_destroy(a);
	/* A read-only txn on a fresh client goes over gRPC at once. */
	a = client(&oa);
	CHECK_EQ(kv_txn(a, &ro, &r), 0);
	kv_txn_result_free(&r);
	s = stats(a);
	CHECK(s.grpc_txns == 1 && s.json_txns == 0);
	kv_destroy(a);
	/* A watch stream created over gRPC proves the endpoint too: the next write uses it. */
	a = client(&oa);
	static struct watchrec wr; /* large: not on the stack */
	watchrec_init(&wr);
	struct kv_watch_req wq = {.key = "/auto/", .key_len = 6};
	struct kv_watch *w;
	CHECK_EQ(kv_watch(a, &wq, watchrec_cb, &wr, &w), 0);
	CHECK(watchrec_wait(&wr, KV_WATCH_CONNECTED, 1, 5000));
	CHECK_EQ(put_s(a, "/auto/1", "c", NULL), 0);
	kv_watch_cancel(a, w);
	watchrec_destroy(&wr);
	s = stats(a);
	CHECK(s.grpc_watch_streams == 1 && s.grpc_txns == 1 && s.json_txns == 0);
	CHECK_EQ(kv_delete_range(a, "/auto/1", 7, NULL, 0, NULL, NULL), 0);
	kv_destroy(a);
}

static void test_fallback(struct etcd_harness *h)
{
	struct h1proxy p;
	if (proxy_start(&p, h->client_port) < 0) {
		CHECK(!"proxy did not start");
		return;
	}
	char ep[64];
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", p.port);
	struct copts oj = {.endpoints = h->endpoint, .transport = ETCD_TRANSPORT_JSON};
	struct kv *j = client(&oj);
	static char keys[1500][16];
	static struct kv_op ops[1500];
	for (int i = 0; i < 1500; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/f/%04d", i);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), "v", 1);
	}
	CHECK_EQ(kvtest_put_all(j, ops, 1500), 0);

	struct copts oa = {.endpoints = ep};
	struct kv *a = client(&oa);
	char end[16];
	struct kv_range_req req = prefix_req("/f/", end);
	/* A write first: the endpoint has not answered gRPC yet, so it goes through JSON
	 * without trying gRPC (an HTTP/1.1 server's refusal could not be told from a lost
	 * reply after the write was applied). */
	CHECK_EQ(put_s(a, "/f/w", "1", NULL), 0);
	struct etcd_client_stats s = stats(a);
	CHECK(s.json_txns == 1 && s.grpc_txns == 0 && s.grpc_fallbacks == 0);
	CHECK_EQ(kv_delete_range(a, "/f/w", 4, NULL, 0, NULL, NULL), 0);
	CHECK_EQ(compare_range(a, j, &req, "through an HTTP/1.1-only proxy"), 1500);
	s = stats(a);
	fprintf(stderr, "through the HTTP/1.1 proxy: %llu fallback(s), %llu JSON round trips\n",
		(unsigned long long)s.grpc_fallbacks, (unsigned long long)s.json_ranges);
	CHECK_EQ(s.grpc_fallbacks, 1);
	CHECK_EQ(s.grpc_ranges, 0);
	CHECK(s.json_ranges >= 2); /* 1500 keys are two JSON pages */
	/* gRPC is not tried again right away: no second fallback, writes stay on JSON. */
	CHECK_EQ(compare_range(a, j, &req, "again through the proxy"), 1500);
	CHECK_EQ(put_s(a, "/f/w", "2", NULL), 0);
	s = stats(a);
	CHECK_EQ(s.grpc_fallbacks, 1);
	CHECK(s.json_txns == 3 && s.grpc_txns == 0);
	kv_destroy(a);
	/* A read-only txn needs no proof: it tries gRPC and falls back like a range. */
	a = client(&oa);
	struct kv_op look = {.type = KV_OP_RANGE, .key = "/f/w", .key_len = 4};
	struct kv_txn ro = {.success = &look, .n_success = 1};
	struct kv_txn_result tr;
	CHECK_EQ(kv_txn(a, &ro, &tr), 0);
	CHECK(tr.n_results == 1 && tr.results[0].range.n_kvs == 1);
	kv_txn_result_free(&tr);
	s = stats(a);
	CHECK(s.grpc_fallbacks == 1 && s.json_txns == 1 && s.grpc_txns == 0);
	kv_destroy(a);

	/* A watch through the proxy: the gRPC stream is refused, JSON takes over at once. */
	a = client(&oa);
	static struct watchrec wr; /* large: not on the stack */
	watchrec_init(&wr);
	struct kv_watch_req wq = {.key = req.key,
				  .key_len = req.key_len,
				  .range_end = req.range_end,
				  .range_end_len = req.range_end_len};
	struct kv_watch *w;
	CHECK_EQ(kv_watch(a, &wq, watchrec_cb, &wr, &w), 0);
	CHECK(watchrec_wait(&wr, KV_WATCH_CONNECTED, 1, 5000));
	CHECK_EQ(put_s(j, "/f/new", "1", NULL), 0);
	CHECK(watchrec_wait(&wr, -1, 1, 5000));
	kv_watch_cancel(a, w);
	s = stats(a);
	fprintf(stderr, "watch through the HTTP/1.1 proxy: %llu JSON stream(s), %llu fallback(s)\n",
		(unsigned long long)s.json_watch_streams, (unsigned long long)s.grpc_fallbacks);
	CHECK_EQ(s.json_watch_streams, 1);
	CHECK_EQ(s.grpc_watch_streams, 0);
	CHECK_EQ(s.grpc_fallbacks, 1);
	/* the switch is invisible to the consumer */
	CHECK_EQ(wr.n_state[KV_WATCH_DISCONNECTED], 0);
	watchrec_destroy(&wr);
	kv_destroy(a);

	/* gRPC only: the failure is reported, not hidden; a write too (never redone through
	 * JSON), and nothing was written. */
	struct copts og = {.endpoints = ep, .transport = ETCD_TRANSPORT_GRPC};
	struct kv *g = client(&og);
	struct kv_range_result res;
	CHECK_EQ(kv_range(g, &req, &res), -EIO);
	kv_range_result_free(&res);
	CHECK_EQ(put_s(g, "/f/g", "1", NULL), -EIO);
	s = stats(g);
	CHECK(s.json_txns == 0 && s.grpc_txns == 0);
	struct kv_kv got;
	CHECK_EQ(kv_get(j, "/f/g", 4, &got), -ENOENT);
	kv_destroy(g);
	proxy_stop(&p);
	CHECK(p.n_refused >= 2);
	CHECK_EQ(kv_delete_range(j, "/f/", 3, "/f0", 3, NULL, NULL), 0);
	kv_destroy(j);
}

/* ---- failover and timeouts keep their JSON behaviour ---- */

static void test_failover_timeout(struct etcd_harness *h)
{
	char both[160];
	snprintf(both, sizeof(both), "http://127.0.0.1:%d,%s", etcd_harness_free_port(),
		 h->endpoint);
	struct copts oa = {.endpoints = both, .cmd_ms = 1000};
	struct kv *a = client(&oa);
	CHECK_EQ(put_s(a, "/t/1", "x", NULL), 0); /* JSON txn fails over to the live endpoint */
	char end[16];
	struct kv_range_req req = prefix_req("/t/", end);
	struct kv_range_result res;
	CHECK_EQ(kv_range(a, &req, &res), 0);
	CHECK_EQ(res.n_kvs, 1);
	kv_range_result_free(&res);
	/* The dead endpoint was skipped without falling back to JSON. */
	struct etcd_client_stats s = stats(a);
	CHECK_EQ(s.grpc_ranges, 1);
	CHECK_EQ(s.grpc_fallbacks, 0);
	kv_destroy(a);

	/* A dead endpoint alone: refused quickly, as over JSON. */
	char dead[64];
	snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", etcd_harness_free_port());
	oa = (struct copts){.endpoints = dead};
	a = client(&oa);
	long long t0 = util_now_ms();
	CHECK_EQ(kv_range(a, &req, &res), -ECONNREFUSED);
	CHECK(util_now_ms() - t0 < 1000);
	kv_range_result_free(&res);
	kv_destroy(a);

	/* A stopped server: -ETIMEDOUT after the command timeout, not twice that. */
	oa = (struct copts){.endpoints = h->endpoint, .cmd_ms = 1000};
	a = client(&oa);
	CHECK_EQ(kv_range(a, &req, &res), 0);
	kv_range_result_free(&res);
	CHECK_EQ(etcd_harness_signal(h, SIGSTOP), 0);
	t0 = util_now_ms();
	CHECK_EQ(kv_range(a, &req, &res), -ETIMEDOUT);
	long long dt = util_now_ms() - t0;
	fprintf(stderr, "gRPC range against a stopped etcd timed out after %lld ms\n", dt);
	CHECK(dt >= 950 && dt <= 1900);
	kv_range_result_free(&res);
	s = stats(a);
	CHECK_EQ(s.grpc_fallbacks, 0);
	CHECK_EQ(etcd_harness_signal(h, SIGCONT), 0);
	int ret = -1;
	for (int i = 0; i < 50 && ret; i++) {
		ret = kv_range(a, &req, &res);
		kv_range_result_free(&res);
		if (ret)
			usleep(100000);
	}
	CHECK_EQ(ret, 0);

	/* A restart kills the kept-alive connection: the next range opens a new one, over gRPC,
	 * without falling back. */
	struct etcd_client_stats before = stats(a);
	CHECK_EQ(etcd_harness_restart(h), 0);
	CHECK_EQ(kv_range(a, &req, &res), 0);
	CHECK_EQ(res.n_kvs, 1);
	kv_range_result_free(&res);
	s = stats(a);
	CHECK_EQ(s.grpc_ranges - before.grpc_ranges, 1);
	CHECK_EQ(s.grpc_connects - before.grpc_connects, 1);
	CHECK_EQ(s.grpc_fallbacks, 0);
	CHECK_EQ(s.json_ranges, 0);
	kv_delete_range(a, "/t/", 3, "/t0", 3, NULL, NULL);
	kv_destroy(a);

	/* Writes over gRPC: a refused connection left nothing, so the next endpoint gets the
	 * write; a stopped server may have it, so it is not sent again elsewhere. */
	struct copts og = {.endpoints = both, .transport = ETCD_TRANSPORT_GRPC, .cmd_ms = 1000};
	struct kv *g = client(&og);
	CHECK_EQ(put_s(g, "/t/2", "x", NULL), 0);
	s = stats(g);
	CHECK(s.grpc_txns == 1 && s.json_txns == 0);
	kv_destroy(g);
	struct etcd_harness h2;
	if (etcd_harness_start(&h2, NULL) < 0) {
		CHECK(!"second etcd did not start");
		return;
	}
	char stopped_first[160];
	snprintf(stopped_first, sizeof(stopped_first), "%s,%s", h->endpoint, h2.endpoint);
	static const enum etcd_transport ts[] = {ETCD_TRANSPORT_GRPC, ETCD_TRANSPORT_AUTO};
	for (int i = 0; i < 2; i++) {
		og = (struct copts){.endpoints = stopped_first, .transport = ts[i], .cmd_ms = 1000};
		g = client(&og);
		CHECK_EQ(kv_range(g, &req, &res), 0); /* AUTO: now known to speak gRPC */
		kv_range_result_free(&res);
		CHECK_EQ(etcd_harness_signal(h, SIGSTOP), 0);
		t0 = util_now_ms();
		CHECK_EQ(put_s(g, "/t/once", "1", NULL), -ETIMEDOUT);
		dt = util_now_ms() - t0;
		CHECK(dt >= 950 && dt <= 1900);
		CHECK_EQ(etcd_harness_signal(h, SIGCONT), 0);
		s = stats(g);
		CHECK(s.grpc_fallbacks == 0 && s.json_txns == 0);
		kv_destroy(g);
	}
	oa = (struct copts){.endpoints = h2.endpoint};
	a = client(&oa);
	struct kv_kv got;
	CHECK_EQ(kv_get(a, "/t/once", 7, &got), -ENOENT);
	kv_destroy(a);
	etcd_harness_destroy(&h2);
	/* The stopped server may have applied it after all; only no hang is required. */
	oa = (struct copts){.endpoints = h->endpoint};
	a = client(&oa);
	int64_t rev;
	for (int i = 0; i < 50 && kv_status(a, &rev) != 0; i++)
		usleep(100000);
	kv_delete_range(a, "/t/", 3, "/t0", 3, NULL, NULL);
	kv_destroy(a);
}

/* ---- TLS with client certificates ---- */

static void test_tls(void)
{
	struct etcd_harness h;
	if (etcd_harness_start_tls(&h) < 0) {
		CHECK(!"TLS etcd did not start");
		return;
	}
	struct copts og = {.endpoints = h.endpoint,
			   .transport = ETCD_TRANSPORT_GRPC,
			   .cacert = h.ca,
			   .cert = h.cert,
			   .key = h.key};
	struct copts oj = og;
	oj.transport = ETCD_TRANSPORT_JSON;
	struct kv *g = client(&og), *j = client(&oj);
	static char keys[1500][16];
	static struct kv_op ops[1500];
	for (int i = 0; i < 1500; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/s/%04d", i);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), keys[i], (size_t)(i % 9));
	}
	CHECK_EQ(kvtest_put_all(j, ops, 1500), 0);
	char end[16];
	struct kv_range_req req = prefix_req("/s/", end);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(compare_range(g, j, &req, "over TLS"), 1500);
	req.keys_only = true;
	compare_range(g, j, &req, "over TLS, keys only");
	struct etcd_client_stats s = stats(g);
	fprintf(stderr, "TLS: %llu gRPC round trips over %llu connection(s)\n",
		(unsigned long long)s.grpc_ranges, (unsigned long long)s.grpc_connects);
	CHECK_EQ(s.grpc_ranges, 12);
	CHECK_EQ(s.grpc_fallbacks, 0);
	CHECK_EQ(s.grpc_connects, 1); /* TLS HTTP/2 connections are reused */
	/* Writes over TLS, on the same connection. */
	struct tx tg = {0};
	txn_suite(g, "/s/txn/", 0, &tg);
	free(tg.p);
	s = stats(g);
	CHECK_EQ(s.grpc_txns, 19);
	CHECK(s.json_txns == 0 && s.grpc_connects == 1);
	kv_destroy(g);

	/* A CA that did not sign the server: -EACCES, no fallback. */
	CHECK_EQ(etcd_harness_make_certs(h.dir, "other"), 0);
	char other_ca[1200];
	snprintf(other_ca, sizeof(other_ca), "%s/other-ca.crt", h.dir);
	struct copts bad = {
		.endpoints = h.endpoint, .cacert = other_ca, .cert = h.cert, .key = h.key};
	struct kv *b = client(&bad);
	struct kv_range_result res;
	CHECK_EQ(kv_range(b, &req, &res), -EACCES);
	kv_range_result_free(&res);
	s = stats(b);
	CHECK_EQ(s.grpc_fallbacks, 0);
	kv_destroy(b);
	/* No client certificate: refused by the server, -EACCES. Over HTTP/2 the refusal shows
	 * up as a failed send of the connection preface, which AUTO cannot tell from a
	 * protocol problem: the request is redone through JSON, which reads the TLS alert. */
	bad = (struct copts){.endpoints = h.endpoint, .cacert = h.ca};
	b = client(&bad);
	int ret = kv_range(b, &req, &res);
	fprintf(stderr, "gRPC over TLS without a client certificate: %s\n", strerror(-ret));
	CHECK_EQ(ret, -EACCES);
	kv_range_result_free(&res);
	kv_destroy(b);
	kv_destroy(j);
	etcd_harness_destroy(&h);
}

/* ---- authentication ---- */

static void test_auth(void)
{
	struct etcd_harness h;
	if (etcd_harness_start_auth(&h, "read") < 0) {
		CHECK(!"etcd with the auth users did not start");
		return;
	}
	CHECK_EQ(etcd_harness_ctl(&h, NULL, "auth", "enable", NULL), 0);

	struct copts og = {
		.endpoints = h.endpoint, .transport = ETCD_TRANSPORT_GRPC, .user = "root:pw"};
	struct copts oj = og;
	oj.transport = ETCD_TRANSPORT_JSON;
	struct kv *g = client(&og), *j = client(&oj);
	static char keys[1200][16];
	static struct kv_op ops[1200];
	for (int i = 0; i < 1200; i++) {
		snprintf(keys[i], sizeof(keys[i]), i % 2 ? "/bob/%04d" : "/eve/%04d", i);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), "s", 1);
	}
	CHECK_EQ(kvtest_put_all(j, ops, 1200), 0);
	char end[16];
	struct kv_range_req bobs = prefix_req("/bob/", end);
	char end2[16];
	struct kv_range_req eves = prefix_req("/eve/", end2);
	CHECK_EQ(compare_range(g, j, &bobs, "root, /bob/"), 600);
	CHECK_EQ(compare_range(g, j, &eves, "root, /eve/"), 600);

	/* bob may read /bob/ only. */
	struct copts ob = {
		.endpoints = h.endpoint, .transport = ETCD_TRANSPORT_GRPC, .user = "bob:bpw"};
	struct kv *bob = client(&ob);
	struct kv_range_result res;
	CHECK_EQ(kv_range(bob, &bobs, &res), 0);
	CHECK_EQ(res.n_kvs, 600);
	kv_range_result_free(&res);
	CHECK_EQ(kv_range(bob, &eves, &res), -EACCES);
	kv_range_result_free(&res);
	/* bob may not write, over gRPC as over JSON; a read-only txn is fine. */
	CHECK_EQ(put_s(bob, "/bob/new", "1", NULL), -EACCES);
	struct kv_op look = {.type = KV_OP_RANGE, .key = "/bob/0001", .key_len = 9};
	struct kv_txn ro = {.success = &look, .n_success = 1};
	struct kv_txn_result tr;
	CHECK_EQ(kv_txn(bob, &ro, &tr), 0);
	CHECK(tr.n_results == 1 && tr.results[0].range.n_kvs == 1);
	kv_txn_result_free(&tr);
	struct etcd_client_stats s = stats(bob);
	CHECK(s.grpc_txns == 1 && s.json_txns == 0);
	kv_destroy(bob);
	/* Wrong password and no user at all. */
	ob.user = "bob:wrong";
	bob = client(&ob);
	CHECK_EQ(kv_range(bob, &bobs, &res), -EACCES);
	kv_range_result_free(&res);
	kv_destroy(bob);
	ob.user = NULL;
	bob = client(&ob);
	CHECK_EQ(kv_range(bob, &bobs, &res), -EACCES);
	kv_range_result_free(&res);
	kv_destroy(bob);

	/* The token expires (TTL 2 s): the gRPC path authenticates again transparently. */
	sleep(4);
	CHECK_EQ(compare_range(g, j, &bobs, "root after token expiry"), 600);
	s = stats(g);
	CHECK_EQ(s.grpc_fallbacks, 0);
	CHECK_EQ(s.json_ranges, 0);
	CHECK(s.grpc_ranges >= 3);
	/* A write with an expired token: refused before it ran, so sent again. */
	sleep(4);
	CHECK_EQ(put_s(g, "/eve/new", "1", NULL), 0);
	s = stats(g);
	CHECK(s.grpc_txns == 1 && s.json_txns == 0 && s.grpc_fallbacks == 0);
	struct kv_kv got;
	CHECK_EQ(kv_get(j, "/eve/new", 8, &got), 0);
	kv_kv_free(&got);
	kv_destroy(g);
	kv_destroy(j);
	etcd_harness_destroy(&h);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_framing();
	test_status();
	test_range_codec();
	test_watch_codec();
	test_txn_codec();
	test_codec_mutations();
	struct etcd_harness h;
	if (etcd_harness_start(&h, NULL) < 0) {
		fprintf(stderr, "cannot start etcd\n");
		return 1;
	}
	test_equivalence(&h);
	test_txn(&h);
	test_txn_limits(&h);
	test_txn_auto(&h);
	test_pinned_paging(&h);
	test_reply_limit(&h);
	test_fallback(&h);
	test_failover_timeout(&h);
	etcd_harness_destroy(&h);
	test_tls();
	test_auth();
	return test_summary();
}
