/* test_gateway.c: the etcd v3 JSON gateway (src/gateway/gateway.h) over the embedded store,
 * driven by etcdfs's real etcd client (src/etcd/) so that wire compatibility is proven both
 * ways: the client's requests are understood, and the gateway's replies and errors decode to
 * the same results and errnos as with etcd. Also plain HTTP (curl, raw sockets) and a light
 * fuzz of the HTTP and JSON parsers; the gateway runs in this process, so AddressSanitizer
 * sees any memory error it makes.
 *
 * GATEWAY_FUZZ_ITERS (default 1500) sets the number of fuzz connections; GATEWAY_FUZZ_SEED
 * replays a run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "etcd/etcd.h"
#include "etcd_harness.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "kvtest.h"
#include "storetest.h"
#include "watchrec.h"

struct env {
	char *dir;
	struct kv *store;
	struct gw *gw;
	int port;
	struct kv *cl; /* etcd client pointed at the gateway */
};

static struct env E;

/* Opens the store in E.dir and serves it on port (0 = any free one). */
static void server_up(int port)
{
	char addr[64];
	E.store = open_at(E.dir, NULL);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	REQUIRE_EQ(gw_start(E.store, addr, &E.gw), 0);
	E.port = gw_port(E.gw);
	REQUIRE(E.port > 0);
	if (port)
		REQUIRE_EQ(E.port, port);
	gw_set_progress_interval(E.gw, 300);
}

static void server_down(void)
{
	gw_stop(E.gw);
	E.gw = NULL;
	kv_destroy(E.store);
	E.store = NULL;
}

static struct kv *client(size_t max_req, size_t max_ops)
{
	struct etcd_config cfg;
	struct kv *kv = NULL;
	char ep[64];
	etcd_config_init(&cfg);
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", E.port);
	REQUIRE_EQ(etcd_config_set_endpoints(&cfg, ep), 0);
	cfg.dial_timeout_ms = 1000;
	cfg.command_timeout_ms = 10000;
	if (max_req)
		cfg.max_request_bytes = max_req;
	if (max_ops)
		cfg.max_txn_ops = max_ops;
	/* JSON only, so that every request exercises the gateway (test_auto_transport checks
	 * the default transport, which tries gRPC first). */
	cfg.transport = ETCD_TRANSPORT_JSON;
	REQUIRE_EQ(etcd_client_new(&cfg, &kv), 0);
	etcd_config_free(&cfg);
	return kv;
}

static void check_same_kv(const struct kv_kv *a, const struct kv_kv *b)
{
	REQUIRE_EQ(a->key_len, b->key_len);
	REQUIRE(!memcmp(a->key, b->key, a->key_len));
	REQUIRE_EQ(a->value_len, b->value_len);
	REQUIRE(!a->value_len || !memcmp(a->value, b->value, a->value_len));
	REQUIRE_EQ(a->create_revision, b->create_revision);
	REQUIRE_EQ(a->mod_revision, b->mod_revision);
	REQUIRE_EQ(a->version, b->version);
	REQUIRE_EQ(a->lease, b->lease);
}

/* ---- raw HTTP ---- */

static int dial_port(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	REQUIRE(fd >= 0);
	REQUIRE_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void send_bytes(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w <= 0)
			return; /* the server may close early on garbage; that is fine */
		b += w;
		n -= (size_t)w;
	}
}

static int dial(void)
{
	return dial_port(E.port);
}

/* Reads until EOF or timeout_ms of silence into buf (NUL-terminated); returns the length. */
static size_t recv_all(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t n = 0;
	while (n + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = 0;
	return n;
}

/* One request on a fresh connection; the reply (until the server closes) in buf. */
static size_t exchange(const char *req, size_t len, char *buf, size_t cap)
{
	int fd = dial();
	send_bytes(fd, req, len);
	size_t n = recv_all(fd, buf, cap, 5000);
	close(fd);
	return n;
}

static size_t post(const char *path, const char *body, char *buf, size_t cap)
{
	char req[8192];
	int n = snprintf(req, sizeof(req),
			 "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 path, strlen(body), body);
	REQUIRE(n > 0 && (size_t)n < sizeof(req));
	return exchange(req, (size_t)n, buf, cap);
}

static int count_str(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* ---- tests ---- */

static void test_put_get(void)
{
	/* Binary key and value: every byte value, including NUL and 0xff. */
	char key[260], val[300];
	key[0] = '/';
	key[1] = 'b';
	for (int i = 0; i < 256; i++)
		key[2 + i] = (char)i;
	for (int i = 0; i < 300; i++)
		val[i] = (char)(255 - i % 256);
	int64_t rev = 0, rev2 = 0;
	REQUIRE_EQ(kv_put(E.cl, key, sizeof(key) - 2, val, sizeof(val), &rev), 0);
	REQUIRE(rev > 1);
	struct kv_kv a, b;
	REQUIRE_EQ(kv_get(E.cl, key, sizeof(key) - 2, &a), 0);
	REQUIRE_EQ(kv_get(E.store, key, sizeof(key) - 2, &b), 0);
	check_same_kv(&a, &b);
	CHECK_EQ(a.mod_revision, rev);
	CHECK_EQ(a.create_revision, rev);
	CHECK_EQ(a.version, 1);
	REQUIRE_EQ(a.value_len, sizeof(val));
	kv_kv_free(&a);
	kv_kv_free(&b);
	/* Overwrite with an empty value: version 2, value present but empty. */
	REQUIRE_EQ(kv_put(E.cl, key, sizeof(key) - 2, "", 0, &rev2), 0);
	REQUIRE_EQ(rev2, rev + 1);
	REQUIRE_EQ(kv_get(E.cl, key, sizeof(key) - 2, &a), 0);
	CHECK_EQ(a.version, 2);
	REQUIRE_EQ(a.value_len, 0);
	REQUIRE(a.value != NULL);
	CHECK_EQ(a.create_revision, rev);
	kv_kv_free(&a);
	REQUIRE_EQ(kv_get(E.cl, "/missing", 8, &a), -ENOENT);
	int64_t st = 0;
	REQUIRE_EQ(kv_status(E.cl, &st), 0);
	REQUIRE_EQ(st, rev2);
}

static void test_range_paging(void)
{
	enum { N = 2500 };
	char k[32], v[32];
	int64_t rev_2400 = 0, rev = 0;
	/* 25 txns of 100 puts through the client. */
	for (int t = 0; t < N / 100; t++) {
		struct kv_op ops[100];
		char keys[100][32], vals[100][32];
		for (int i = 0; i < 100; i++) {
			int n = t * 100 + i;
			snprintf(keys[i], 32, "/page/%05d", n);
			snprintf(vals[i], 32, "value-%d", n);
			ops[i] = kvtest_put(keys[i], strlen(keys[i]), vals[i], strlen(vals[i]));
		}
		struct kv_txn txn = {.success = ops, .n_success = 100};
		struct kv_txn_result res;
		REQUIRE_EQ(kv_txn(E.cl, &txn, &res), 0);
		REQUIRE(res.succeeded);
		REQUIRE_EQ(res.n_results, 100);
		rev = res.revision;
		if (t == N / 100 - 2)
			rev_2400 = res.revision;
		kv_txn_result_free(&res);
	}
	char end[8];
	size_t end_len = kv_prefix_end("/page/", 6, end);
	struct kv_range_req rq = {
		.key = "/page/", .key_len = 6, .range_end = end, .range_end_len = end_len};
	struct kv_range_result a, b;
	/* limit 0: the client pages (1000 keys per request) pinned to one revision. */
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(kv_range(E.store, &rq, &b), 0);
	REQUIRE_EQ(a.n_kvs, N);
	CHECK_EQ(a.count, N);
	CHECK_EQ(a.revision, rev);
	REQUIRE(!a.more);
	REQUIRE_EQ(b.n_kvs, N);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "/page/%05d", i);
		snprintf(v, sizeof(v), "value-%d", i);
		CHECK_STRN(a.kvs[i].key, a.kvs[i].key_len, k);
		CHECK_STRN(a.kvs[i].value, a.kvs[i].value_len, v);
		check_same_kv(&a.kvs[i], &b.kvs[i]);
	}
	kv_range_result_free(&a);
	kv_range_result_free(&b);
	/* limit: more + count of the whole range. */
	rq.limit = 10;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, 10);
	REQUIRE(a.more);
	CHECK_EQ(a.count, N);
	CHECK_STRN(a.kvs[9].key, a.kvs[9].key_len, "/page/00009");
	kv_range_result_free(&a);
	/* descending by key, limited */
	rq.limit = 3;
	rq.sort_order = KV_SORT_DESCEND;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, 3);
	CHECK_STRN(a.kvs[0].key, a.kvs[0].key_len, "/page/02499");
	CHECK_STRN(a.kvs[2].key, a.kvs[2].key_len, "/page/02497");
	kv_range_result_free(&a);
	/* descending, limit 0: the client pages backwards */
	rq.limit = 0;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, N);
	CHECK_STRN(a.kvs[0].key, a.kvs[0].key_len, "/page/02499");
	CHECK_STRN(a.kvs[N - 1].key, a.kvs[N - 1].key_len, "/page/00000");
	kv_range_result_free(&a);
	rq.sort_order = KV_SORT_NONE;
	/* keys_only and count_only */
	rq.keys_only = true;
	rq.limit = 5;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, 5);
	REQUIRE(a.kvs[0].value == NULL);
	REQUIRE(a.kvs[0].mod_revision > 0);
	kv_range_result_free(&a);
	rq.keys_only = false;
	rq.limit = 0;
	rq.count_only = true;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, 0);
	CHECK_EQ(a.count, N);
	kv_range_result_free(&a);
	/* at an older revision (before the last txn) */
	rq.count_only = false;
	rq.revision = rev_2400;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, N - 100);
	CHECK_EQ(a.count, N - 100);
	kv_range_result_free(&a);
	/* serializable */
	rq.revision = 0;
	rq.serializable = true;
	rq.limit = 1;
	REQUIRE_EQ(kv_range(E.cl, &rq, &a), 0);
	REQUIRE_EQ(a.n_kvs, 1);
	kv_range_result_free(&a);
}

static void test_txn(void)
{
	int64_t r1, r2;
	REQUIRE_EQ(put_s(E.cl, "/t/a", "1", &r1), 0);
	REQUIRE_EQ(put_s(E.cl, "/t/b", "2", &r2), 0);
	/* success branch: value compare holds; put with prev_kv, range, delete with prev_kv */
	struct kv_compare c1 = {.target = KV_CMP_VALUE,
				.result = KV_CMP_EQUAL,
				.key = "/t/a",
				.key_len = 4,
				.value = "1",
				.value_len = 1};
	struct kv_op ops[3] = {
		{.type = KV_OP_PUT,
		 .key = "/t/a",
		 .key_len = 4,
		 .value = "10",
		 .value_len = 2,
		 .prev_kv = true},
		{.type = KV_OP_RANGE,
		 .key = "/t/",
		 .key_len = 3,
		 .range_end = "/t0",
		 .range_end_len = 3},
		{.type = KV_OP_DELETE, .key = "/t/b", .key_len = 4, .prev_kv = true},
	};
	struct kv_op fail_op = {.type = KV_OP_RANGE, .key = "/t/a", .key_len = 4};
	struct kv_txn txn = {.compare = &c1,
			     .n_compare = 1,
			     .success = ops,
			     .n_success = 3,
			     .failure = &fail_op,
			     .n_failure = 1};
	struct kv_txn_result res;
	REQUIRE_EQ(kv_txn(E.cl, &txn, &res), 0);
	REQUIRE(res.succeeded);
	CHECK_EQ(res.revision, r2 + 1);
	REQUIRE_EQ(res.n_results, 3);
	REQUIRE_EQ(res.results[0].type, KV_OP_PUT);
	REQUIRE_EQ(res.results[0].range.n_kvs, 1);
	CHECK_STRN(res.results[0].range.kvs[0].value, res.results[0].range.kvs[0].value_len, "1");
	CHECK_EQ(res.results[0].range.kvs[0].mod_revision, r1);
	REQUIRE_EQ(res.results[1].type, KV_OP_RANGE);
	REQUIRE_EQ(res.results[1].range.n_kvs, 2); /* sees its own put */
	CHECK_STRN(res.results[1].range.kvs[0].value, res.results[1].range.kvs[0].value_len, "10");
	CHECK_EQ(res.results[1].range.count, 2);
	REQUIRE_EQ(res.results[2].type, KV_OP_DELETE);
	CHECK_EQ(res.results[2].deleted, 1);
	REQUIRE_EQ(res.results[2].range.n_kvs, 1);
	CHECK_STRN(res.results[2].range.kvs[0].key, res.results[2].range.kvs[0].key_len, "/t/b");
	kv_txn_result_free(&res);
	/* the same compare now fails: failure branch runs */
	REQUIRE_EQ(kv_txn(E.cl, &txn, &res), 0);
	REQUIRE(!res.succeeded);
	CHECK_EQ(res.revision, r2 + 1);
	REQUIRE_EQ(res.n_results, 1);
	REQUIRE_EQ(res.results[0].type, KV_OP_RANGE);
	CHECK_STRN(res.results[0].range.kvs[0].value, res.results[0].range.kvs[0].value_len, "10");
	kv_txn_result_free(&res);
	/* create-if-absent: VERSION == 0 (the compared 0 must survive the JSON round trip) */
	struct kv_compare c2 = {.target = KV_CMP_VERSION,
				.result = KV_CMP_EQUAL,
				.key = "/t/new",
				.key_len = 6,
				.number = 0};
	struct kv_op put_new = {
		.type = KV_OP_PUT, .key = "/t/new", .key_len = 6, .value = "n", .value_len = 1};
	struct kv_txn t2 = {.compare = &c2, .n_compare = 1, .success = &put_new, .n_success = 1};
	REQUIRE_EQ(kv_txn(E.cl, &t2, &res), 0);
	REQUIRE(res.succeeded);
	kv_txn_result_free(&res);
	REQUIRE_EQ(kv_txn(E.cl, &t2, &res), 0);
	REQUIRE(!res.succeeded);
	REQUIRE_EQ(res.n_results, 0);
	kv_txn_result_free(&res);
	/* MOD compare over a range: every key's mod_revision > r1 ("/t/a" and "/t/new") */
	struct kv_compare c3 = {.target = KV_CMP_MOD,
				.result = KV_CMP_GREATER,
				.key = "/t/",
				.key_len = 3,
				.range_end = "/t0",
				.range_end_len = 3,
				.number = r1};
	struct kv_txn t3 = {.compare = &c3, .n_compare = 1};
	REQUIRE_EQ(kv_txn(E.cl, &t3, &res), 0);
	REQUIRE(res.succeeded);
	kv_txn_result_free(&res);
	c3.number = r2 + 1; /* "/t/a" was modified at r2 + 1: not greater */
	REQUIRE_EQ(kv_txn(E.cl, &t3, &res), 0);
	REQUIRE(!res.succeeded);
	kv_txn_result_free(&res);
	/* CREATE and LESS / NOT_EQUAL */
	struct kv_compare c4[2] = {
		{.target = KV_CMP_CREATE,
		 .result = KV_CMP_LESS,
		 .key = "/t/a",
		 .key_len = 4,
		 .number = r1 + 1},
		{.target = KV_CMP_VALUE,
		 .result = KV_CMP_NOT_EQUAL,
		 .key = "/t/a",
		 .key_len = 4,
		 .value = "1",
		 .value_len = 1},
	};
	struct kv_txn t4 = {.compare = c4, .n_compare = 2};
	REQUIRE_EQ(kv_txn(E.cl, &t4, &res), 0);
	REQUIRE(res.succeeded);
	kv_txn_result_free(&res);
	/* ignore_lease on a missing key: etcd says "key not found" (InvalidArgument) */
	struct kv_op il = {.type = KV_OP_PUT,
			   .key = "/t/none",
			   .key_len = 7,
			   .value = "x",
			   .value_len = 1,
			   .ignore_lease = true};
	struct kv_txn t5 = {.success = &il, .n_success = 1};
	REQUIRE_EQ(kv_txn(E.cl, &t5, &res), -EINVAL);
	/* ignore_lease on an existing key keeps working */
	il.key = "/t/a";
	il.key_len = 4;
	REQUIRE_EQ(kv_txn(E.cl, &t5, &res), 0);
	kv_txn_result_free(&res);
	/* duplicate put of one key in a branch: refused like etcd (InvalidArgument) */
	struct kv_op dup[2] = {put_new, put_new};
	struct kv_txn t6 = {.success = dup, .n_success = 2};
	REQUIRE_EQ(kv_txn(E.cl, &t6, &res), -EINVAL);
}

static void test_delete(void)
{
	char k[32];
	for (int i = 0; i < 5; i++) {
		snprintf(k, sizeof(k), "/d/%d", i);
		REQUIRE_EQ(put_s(E.cl, k, "v", NULL), 0);
	}
	int64_t deleted = 0, rev = 0;
	REQUIRE_EQ(kv_delete_range(E.cl, "/d/0", 4, NULL, 0, &deleted, &rev), 0);
	REQUIRE_EQ(deleted, 1);
	struct kv_op del = {.type = KV_OP_DELETE,
			    .key = "/d/",
			    .key_len = 3,
			    .range_end = "/d0",
			    .range_end_len = 3,
			    .prev_kv = true};
	struct kv_txn txn = {.success = &del, .n_success = 1};
	struct kv_txn_result res;
	REQUIRE_EQ(kv_txn(E.cl, &txn, &res), 0);
	CHECK_EQ(res.revision, rev + 1);
	CHECK_EQ(res.results[0].deleted, 4);
	REQUIRE_EQ(res.results[0].range.n_kvs, 4);
	CHECK_STRN(res.results[0].range.kvs[3].key, res.results[0].range.kvs[3].key_len, "/d/4");
	CHECK_STRN(res.results[0].range.kvs[3].value, res.results[0].range.kvs[3].value_len, "v");
	kv_txn_result_free(&res);
	/* deleting nothing: 0 deleted, revision unchanged */
	REQUIRE_EQ(kv_delete_range(E.cl, "/d/", 3, "/d0", 3, &deleted, &rev), 0);
	REQUIRE_EQ(deleted, 0);
	REQUIRE_EQ(rev, res.revision);
}

static void test_compact(void)
{
	int64_t r1, r2, r3;
	char buf[4096];
	REQUIRE_EQ(put_s(E.cl, "/c/k", "1", &r1), 0);
	REQUIRE_EQ(put_s(E.cl, "/c/k", "2", &r2), 0);
	REQUIRE_EQ(put_s(E.cl, "/c/k", "3", &r3), 0);
	REQUIRE_EQ(kv_compact(E.cl, r2, true), 0);
	struct kv_range_req rq = {.key = "/c/k", .key_len = 4, .revision = r1};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(E.cl, &rq, &res), -ERANGE);
	rq.revision = r2;
	REQUIRE_EQ(kv_range(E.cl, &rq, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	CHECK_STRN(res.kvs[0].value, res.kvs[0].value_len, "2");
	kv_range_result_free(&res);
	REQUIRE_EQ(kv_compact(E.cl, r2, true), -ERANGE);
	rq.revision = r3 + 100;
	REQUIRE_EQ(kv_range(E.cl, &rq, &res), -ENOENT);
	REQUIRE_EQ(kv_compact(E.cl, r3 + 100, true), -ENOENT);
	/* The exact error bodies, as etcd's gateway sends them. */
	char body[128];
	snprintf(body, sizeof(body), "{\"key\":\"L2Mvaw==\",\"revision\":\"%lld\"}", (long long)r1);
	post("/v3/kv/range", body, buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 400 ", 13));
	REQUIRE(strstr(buf, "{\"error\":\"etcdserver: mvcc: required revision has been compacted\","
			    "\"message\":\"etcdserver: mvcc: required revision has been "
			    "compacted\",\"code\":11}"));
	snprintf(body, sizeof(body), "{\"key\":\"L2Mvaw==\",\"revision\":%lld}",
		 (long long)r3 + 100);
	post("/v3/kv/range", body, buf, sizeof(buf));
	REQUIRE(strstr(buf, "\"message\":\"etcdserver: mvcc: required revision is a future "
			    "revision\",\"code\":11"));
}

static void test_limits(void)
{
	/* A client that lets big requests through, so the server's limits are what trip. */
	struct kv *big = client((size_t)16 << 20, 10000);
	size_t n = (size_t)2 << 20;
	char *v = malloc((size_t)4 << 20);
	REQUIRE(v);
	memset(v, 'x', (size_t)4 << 20);
	/* 2 MiB: under the gateway's 4 MiB body bound, over the store's 1.5 MiB limit */
	REQUIRE_EQ(kv_put(big, "/big", 4, v, n, NULL), -EFBIG);
	/* 3.5 MiB: the JSON body (base64) exceeds the gateway's 4 MiB bound */
	REQUIRE_EQ(kv_put(big, "/big", 4, v, (size_t)7 << 19, NULL), -EFBIG);
	/* just under the store's limit goes through */
	REQUIRE_EQ(kv_put(big, "/big", 4, v, (size_t)1 << 20, NULL), 0);
	struct kv_kv kv;
	REQUIRE_EQ(kv_get(E.cl, "/big", 4, &kv), 0);
	REQUIRE_EQ(kv.value_len, (size_t)1 << 20);
	kv_kv_free(&kv);
	/* too many ops: the store refuses (128), the client maps etcd's message to E2BIG */
	enum { OPS = 200 };
	struct kv_op *ops = calloc(OPS, sizeof(*ops));
	char(*keys)[16] = calloc(OPS, 16);
	REQUIRE(ops && keys);
	for (int i = 0; i < OPS; i++) {
		snprintf(keys[i], 16, "/ops/%d", i);
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), "v", 1);
	}
	struct kv_txn txn = {.success = ops, .n_success = OPS};
	struct kv_txn_result res;
	REQUIRE_EQ(kv_txn(big, &txn, &res), -E2BIG);
	txn.n_success = 128;
	REQUIRE_EQ(kv_txn(big, &txn, &res), 0);
	kv_txn_result_free(&res);
	/* and the connection pool still works afterwards */
	REQUIRE_EQ(put_s(big, "/after", "ok", NULL), 0);
	free(ops);
	free(keys);
	free(v);
	kv_destroy(big);
}

/* ---- watch ---- */

static void check_ev(struct watchrec *r, size_t i, enum kv_event_type type, const char *key,
		     const char *val, int64_t mod)
{
	pthread_mutex_lock(&r->lock);
	REQUIRE(i < r->n_evs);
	struct watchrec_ev e = r->evs[i];
	pthread_mutex_unlock(&r->lock);
	REQUIRE_EQ(e.type, type);
	REQUIRE(!strcmp(e.key, key));
	if (val)
		REQUIRE(!strcmp(e.value, val));
	REQUIRE_EQ(e.mod_revision, mod);
}

static void test_watch(void)
{
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	struct kv_watch_req req = {
		.key = "/w/", .key_len = 3, .range_end = "/w0", .range_end_len = 3};
	REQUIRE_EQ(kv_watch(E.cl, &req, watchrec_cb, &r, &w), 0);
	REQUIRE(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	int64_t r1, r2, r3, rd, st;
	REQUIRE_EQ(kv_status(E.cl, &st), 0);
	REQUIRE_EQ(watchrec_get(&r, &r.last_rev[KV_WATCH_CONNECTED]), st);
	REQUIRE_EQ(put_s(E.cl, "/w/a", "1", &r1), 0);
	REQUIRE_EQ(put_s(E.cl, "/other", "x", NULL), 0); /* outside the range */
	REQUIRE_EQ(put_s(E.cl, "/w/b", "2", &r2), 0);
	REQUIRE_EQ(put_s(E.store, "/w/a", "3", &r3), 0); /* straight into the store */
	REQUIRE_EQ(kv_delete_range(E.cl, "/w/b", 4, NULL, 0, NULL, &rd), 0);
	REQUIRE(watchrec_wait(&r, -1, 4, 5000));
	check_ev(&r, 0, KV_EVENT_PUT, "/w/a", "1", r1);
	check_ev(&r, 1, KV_EVENT_PUT, "/w/b", "2", r2);
	check_ev(&r, 2, KV_EVENT_PUT, "/w/a", "3", r3);
	check_ev(&r, 3, KV_EVENT_DELETE, "/w/b", NULL, rd);
	/* heartbeats: with nothing happening, progress arrives every ~300 ms at the last
	 * revision, and the client's stall guard (1.5 s) never fires */
	pthread_mutex_lock(&r.lock);
	int before = r.n_state[KV_WATCH_PROGRESS];
	pthread_mutex_unlock(&r.lock);
	usleep(2500 * 1000);
	pthread_mutex_lock(&r.lock);
	int progress = r.n_state[KV_WATCH_PROGRESS] - before;
	int64_t prog_rev = r.last_rev[KV_WATCH_PROGRESS];
	int disc = r.n_state[KV_WATCH_DISCONNECTED];
	size_t n_evs = r.n_evs;
	pthread_mutex_unlock(&r.lock);
	fprintf(stderr, "  %d progress messages in 2.5 s idle\n", progress);
	REQUIRE(progress >= 3);
	REQUIRE_EQ(prog_rev, rd);
	REQUIRE_EQ(disc, 0);
	REQUIRE_EQ(n_evs, 4);
	kv_watch_cancel(E.cl, w);

	/* from an old revision: the history is replayed in order */
	watchrec_init(&r);
	req.start_revision = r2;
	REQUIRE_EQ(kv_watch(E.cl, &req, watchrec_cb, &r, &w), 0);
	REQUIRE(watchrec_wait(&r, -1, 3, 5000));
	REQUIRE_EQ(watchrec_get(&r, &r.last_rev[KV_WATCH_CONNECTED]), r2 - 1);
	check_ev(&r, 0, KV_EVENT_PUT, "/w/b", "2", r2);
	check_ev(&r, 1, KV_EVENT_PUT, "/w/a", "3", r3);
	check_ev(&r, 2, KV_EVENT_DELETE, "/w/b", NULL, rd);
	kv_watch_cancel(E.cl, w);

	/* compacted start: COMPACTED with the compaction revision, and the watch ends */
	REQUIRE_EQ(kv_compact(E.cl, r3, true), 0);
	watchrec_init(&r);
	req.start_revision = r1;
	REQUIRE_EQ(kv_watch(E.cl, &req, watchrec_cb, &r, &w), 0);
	REQUIRE(watchrec_wait(&r, KV_WATCH_COMPACTED, 1, 5000));
	REQUIRE_EQ(watchrec_get(&r, &r.compact_revision), r3);
	pthread_mutex_lock(&r.lock);
	REQUIRE_EQ(r.n_evs, 0);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(E.cl, w);
}

/* The server goes away and comes back on the same port and data dir: the client's watch
 * reconnects and resumes where it stopped, losing and repeating nothing. */
static void test_restart(void)
{
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	struct kv_watch_req req = {
		.key = "/r/", .key_len = 3, .range_end = "/r0", .range_end_len = 3};
	REQUIRE_EQ(kv_watch(E.cl, &req, watchrec_cb, &r, &w), 0);
	REQUIRE(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	int64_t r1, r2, r3;
	REQUIRE_EQ(put_s(E.cl, "/r/1", "one", &r1), 0);
	REQUIRE(watchrec_wait(&r, -1, 1, 5000));
	int port = E.port;
	server_down();
	REQUIRE(watchrec_wait(&r, KV_WATCH_DISCONNECTED, 1, 5000));
	REQUIRE_EQ(put_s(E.cl, "/r/x", "down", NULL), -ECONNREFUSED);
	/* a write the watch could not see while the server was down */
	E.store = open_at(E.dir, NULL);
	REQUIRE_EQ(put_s(E.store, "/r/2", "two", &r2), 0);
	kv_destroy(E.store);
	server_up(port);
	REQUIRE_EQ(put_s(E.cl, "/r/3", "three", &r3), 0);
	REQUIRE(watchrec_wait(&r, -1, 3, 15000));
	REQUIRE(watchrec_wait(&r, KV_WATCH_CONNECTED, 2, 1000));
	usleep(300 * 1000);
	pthread_mutex_lock(&r.lock);
	REQUIRE_EQ(r.n_evs, 3);
	REQUIRE_EQ(r.n_state[KV_WATCH_DISCONNECTED], 1);
	pthread_mutex_unlock(&r.lock);
	check_ev(&r, 0, KV_EVENT_PUT, "/r/1", "one", r1);
	check_ev(&r, 1, KV_EVENT_PUT, "/r/2", "two", r2);
	check_ev(&r, 2, KV_EVENT_PUT, "/r/3", "three", r3);
	REQUIRE_EQ(r2, r1 + 1);
	REQUIRE_EQ(r3, r2 + 1);
	kv_watch_cancel(E.cl, w);
	/* everything written before is still there */
	struct kv_kv kv;
	REQUIRE_EQ(kv_get(E.cl, "/page/01234", 11, &kv), 0);
	CHECK_STRN(kv.value, kv.value_len, "value-1234");
	kv_kv_free(&kv);
}

static void test_curl(void)
{
	char cmd[512], out[4096];
	REQUIRE_EQ(put_s(E.cl, "/curl/k", "hello", NULL), 0);
	/* "/curl/k" and "hello" in base64 */
	snprintf(cmd, sizeof(cmd),
		 "curl -sS -X POST http://127.0.0.1:%d/v3/kv/range -d '{\"key\":\"L2N1cmwvaw==\"}'",
		 E.port);
	FILE *p = popen(cmd, "r");
	REQUIRE(p);
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	REQUIRE_EQ(pclose(p), 0);
	fprintf(stderr, "  curl: %s\n", out);
	REQUIRE(strstr(out, "\"key\":\"L2N1cmwvaw==\""));
	REQUIRE(strstr(out, "\"value\":\"aGVsbG8=\""));
	REQUIRE(strstr(out, "\"count\":\"1\""));
	REQUIRE(strstr(out, "\"version\":\"1\""));
}

static void test_http(void)
{
	static char buf[1 << 16];
	/* Two pipelined requests on one keep-alive connection. */
	const char *two = "POST /v3/maintenance/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
			  "\r\n{}"
			  "POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
			  "Content-Length: 20\r\n\r\n{\"key\":\"L2N1cmwvaw==\"}";
	/* (the second body is 22 bytes; Content-Length 20 cuts it, so it is invalid JSON) */
	exchange(two, strlen(two), buf, sizeof(buf));
	REQUIRE_EQ(count_str(buf, "HTTP/1.1 "), 2);
	REQUIRE(!strncmp(buf, "HTTP/1.1 200 OK", 15));
	REQUIRE(strstr(buf, "\"version\":\"3.4.0\""));
	REQUIRE(strstr(buf, "HTTP/1.1 400 Bad Request"));
	REQUIRE(strstr(buf, "invalid JSON"));
	/* correct pipelining */
	const char *two_ok = "POST /v3/kv/range HTTP/1.1\r\nContent-Length: 22\r\n\r\n"
			     "{\"key\":\"L2N1cmwvaw==\"}"
			     "POST /v3/kv/range HTTP/1.1\r\nContent-Length: 22\r\n"
			     "Connection: close\r\n\r\n{\"key\":\"L2N1cmwvaw==\"}";
	exchange(two_ok, strlen(two_ok), buf, sizeof(buf));
	REQUIRE_EQ(count_str(buf, "HTTP/1.1 200 OK"), 2);
	REQUIRE_EQ(count_str(buf, "\"value\":\"aGVsbG8=\""), 2);
	/* HTTP/1.0: one request, then the server closes */
	const char *h10 = "POST /v3/kv/range HTTP/1.0\r\nContent-Length: 22\r\n\r\n"
			  "{\"key\":\"L2N1cmwvaw==\"}";
	exchange(h10, strlen(h10), buf, sizeof(buf));
	REQUIRE(strstr(buf, "Connection: close"));
	REQUIRE(strstr(buf, "aGVsbG8="));
	/* Expect: 100-continue */
	int fd = dial();
	const char *exp = "POST /v3/kv/range HTTP/1.1\r\nContent-Length: 22\r\n"
			  "Expect: 100-continue\r\nConnection: close\r\n\r\n";
	send_bytes(fd, exp, strlen(exp));
	recv_all(fd, buf, 64, 2000);
	REQUIRE(!strncmp(buf, "HTTP/1.1 100 Continue\r\n\r\n", 25));
	send_bytes(fd, "{\"key\":\"L2N1cmwvaw==\"}", 22);
	recv_all(fd, buf, sizeof(buf), 5000);
	close(fd);
	REQUIRE(!strncmp(buf, "HTTP/1.1 200 OK", 15));
	REQUIRE(strstr(buf, "aGVsbG8="));
	/* chunked request body, split inside the JSON, with an extension and a trailer */
	const char *ch = "POST /v3/kv/range HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
			 "Connection: close\r\n\r\n"
			 "5;x=y\r\n{\"key\r\n11\r\n\":\"L2N1cmwvaw==\"}\r\n0\r\nX-T: 1\r\n\r\n";
	exchange(ch, strlen(ch), buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 200 OK", 15));
	REQUIRE(strstr(buf, "aGVsbG8="));
	/* camelCase field names and enums by name, as jsonpb accepts them */
	post("/v3/kv/range",
	     "{\"key\":\"L3BhZ2Uv\",\"rangeEnd\":\"L3BhZ2Uw\",\"limit\":\"2\","
	     "\"sortOrder\":\"DESCEND\",\"keysOnly\":true}",
	     buf, sizeof(buf));
	REQUIRE(strstr(buf, "\"more\":true"));
	REQUIRE(strstr(buf, "\"count\":\"2500\""));
	REQUIRE(!strstr(buf, "\"value\""));
	REQUIRE(strstr(buf, "\"key\":\"L3BhZ2UvMDI0OTk=\"")); /* /page/02499 */
	/* revision filters (done by the gateway): only keys created at or after a revision */
	post("/v3/kv/range",
	     "{\"key\":\"L3BhZ2Uv\",\"range_end\":\"L3BhZ2Uw\",\"min_create_revision\":"
	     "\"1000000\"}",
	     buf, sizeof(buf));
	REQUIRE(strstr(buf, "HTTP/1.1 200 OK"));
	REQUIRE(!strstr(buf, "\"kvs\""));
	REQUIRE(strstr(buf, "\"count\":\"2500\""));
	/* errors: unknown path, wrong method, empty key, bad base64, bad types, too large */
	post("/v3/nothing", "{}", buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 404 ", 13));
	REQUIRE(strstr(buf, "\r\n\r\nNot Found\n"));
	const char *get = "GET /v3/kv/range HTTP/1.1\r\nConnection: close\r\n\r\n";
	exchange(get, strlen(get), buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 405 ", 13));
	post("/v3/kv/put", "{\"value\":\"eA==\"}", buf, sizeof(buf));
	REQUIRE(strstr(buf, "\"message\":\"etcdserver: key is not provided\",\"code\":3"));
	post("/v3/kv/put", "{\"key\":\"!!!\"}", buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 400 ", 13));
	REQUIRE(strstr(buf, "base64"));
	post("/v3/kv/range", "{\"key\":\"eA==\",\"limit\":\"ten\"}", buf, sizeof(buf));
	REQUIRE(strstr(buf, "\"code\":3"));
	post("/v3/kv/range", "[1,2]", buf, sizeof(buf));
	REQUIRE(strstr(buf, "\"code\":3"));
	post("/v3/kv/txn", "{\"success\":[{\"request_txn\":{}}]}", buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 501 ", 13));
	REQUIRE(strstr(buf, "\"code\":12"));
	post("/v3/auth/authenticate", "{\"name\":\"a\",\"password\":\"b\"}", buf, sizeof(buf));
	REQUIRE(strstr(buf, "authentication is not enabled"));
	const char *huge = "POST /v3/kv/put HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n{\"key\":";
	exchange(huge, strlen(huge), buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 400 ", 13));
	REQUIRE(strstr(buf, "etcdserver: request is too large"));
	char *bighead = malloc(40000);
	REQUIRE(bighead);
	int hn = snprintf(bighead, 40000, "POST /v3/kv/range HTTP/1.1\r\nX-Pad: ");
	memset(bighead + hn, 'a', 30000);
	memcpy(bighead + hn + 30000, "\r\n\r\n", 5);
	exchange(bighead, strlen(bighead), buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 431 ", 13));
	free(bighead);
	const char *both = "POST /v3/kv/range HTTP/1.1\r\nContent-Length: 3\r\n"
			   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
	exchange(both, strlen(both), buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 400 ", 13));
	/* health, version, aliases, an empty body */
	const char *health = "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
	exchange(health, strlen(health), buf, sizeof(buf));
	REQUIRE(strstr(buf, "{\"health\":\"true\"}"));
	post("/v3beta/maintenance/status", "", buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 200 OK", 15));
	REQUIRE(strstr(buf, "\"header\":{\"revision\":\""));
}

/* The watch stream on the wire: chunked, one {"result": ...} per line. */
static void test_watch_wire(void)
{
	static char buf[1 << 16];
	int64_t cur;
	REQUIRE_EQ(kv_status(E.store, &cur), 0);
	int fd = dial();
	/* "/ww/" .. "/ww0", from now, with a NOPUT filter on a second watch */
	const char *body = "{\"create_request\":{\"key\":\"L3d3Lw==\",\"range_end\":\"L3d3MA==\"}}"
			   "{\"create_request\":{\"key\":\"L3d3Lw==\",\"range_end\":\"L3d3MA==\","
			   "\"filters\":[\"NOPUT\"]}}";
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "POST /v3/watch HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(body),
			 body);
	send_bytes(fd, req, (size_t)n);
	size_t got = recv_all(fd, buf, sizeof(buf), 500);
	REQUIRE(got > 0);
	REQUIRE(!strncmp(buf, "HTTP/1.1 200 OK", 15));
	REQUIRE(strstr(buf, "Transfer-Encoding: chunked"));
	char created0[128], created1[128];
	snprintf(created0, sizeof(created0),
		 "{\"result\":{\"header\":{\"revision\":\"%lld\"},"
		 "\"created\":true}}\n",
		 (long long)cur);
	snprintf(created1, sizeof(created1),
		 "{\"result\":{\"header\":{\"revision\":\"%lld\"},"
		 "\"watch_id\":\"1\",\"created\":true}}\n",
		 (long long)cur);
	REQUIRE(strstr(buf, created0));
	REQUIRE(strstr(buf, created1));
	int64_t r1, r2;
	REQUIRE_EQ(put_s(E.store, "/ww/k", "v", &r1), 0);
	REQUIRE_EQ(kv_delete_range(E.store, "/ww/k", 5, NULL, 0, NULL, &r2), 0);
	got = recv_all(fd, buf, sizeof(buf), 800);
	close(fd);
	char put_ev[256], del_ev[256];
	snprintf(put_ev, sizeof(put_ev),
		 "{\"result\":{\"header\":{\"revision\":\"%lld\"},\"events\":[{\"kv\":{\"key\":"
		 "\"L3d3L2s=\",\"create_revision\":\"%lld\",\"mod_revision\":\"%lld\","
		 "\"version\":\"1\",\"value\":\"dg==\"}}]}}\n",
		 (long long)r1, (long long)r1, (long long)r1);
	snprintf(
		del_ev, sizeof(del_ev),
		"{\"result\":{\"header\":{\"revision\":\"%lld\"},\"watch_id\":\"1\",\"events\":"
		"[{\"type\":\"DELETE\",\"kv\":{\"key\":\"L3d3L2s=\",\"mod_revision\":\"%lld\"}}]}}",
		(long long)r2, (long long)r2);
	REQUIRE(strstr(buf, put_ev));
	REQUIRE(strstr(buf, del_ev));
	/* the NOPUT watch (id 1) never saw the put */
	char bad[64];
	snprintf(bad, sizeof(bad), "\"watch_id\":\"1\",\"events\":[{\"kv\"");
	REQUIRE(!strstr(buf, bad));
	/* a malformed watch body is a plain error reply */
	post("/v3/watch", "{\"create_request\":", buf, sizeof(buf));
	REQUIRE(!strncmp(buf, "HTTP/1.1 400 ", 13));
}

/* ---- fuzz ---- */

static uint64_t rng;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static const char *const templates[] = {
	"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
	"POST /v3/kv/txn HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s",
	"POST /v3/kv/put HTTP/1.1\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n%s",
	"POST /v3/watch HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s",
	("POST /v3/kv/deleterange HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	 "%zx\r\n%s\r\n0\r\n\r\n"),
	"POST /v3/kv/compaction HTTP/1.0\r\nContent-Length: %zu\r\n\r\n%s",
};

static const char *const bodies[] = {
	"{\"key\":\"L2Z1enov\",\"range_end\":\"L2Z1enow\",\"limit\":3,\"sort_target\":\"MOD\","
	"\"min_mod_revision\":\"2\"}",
	"{\"compare\":[{\"result\":\"GREATER\",\"target\":\"VERSION\",\"key\":\"L2Z1enov\","
	"\"version\":\"0\"}],\"success\":[{\"request_put\":{\"key\":\"L2Z1enovYQ==\",\"value\":"
	"\"eA==\",\"prev_kv\":true}},{\"request_range\":{\"key\":\"L2Z1enov\",\"range_end\":"
	"\"L2Z1enow\",\"limit\":\"1\",\"count_only\":true,\"sort_order\":2}}],\"failure\":["
	"{\"request_delete_range\":{\"key\":\"L2Z1enovYg==\",\"prev_kv\":true}}]}",
	"{\"key\":\"L2Z1enovYg==\",\"value\":\"AAEC/w==\",\"lease\":\"0\",\"prev_kv\":true}",
	"{\"create_request\":{\"key\":\"L2Z1enov\",\"range_end\":\"L2Z1enow\",\"start_revision\":"
	"\"1\",\"progress_notify\":true,\"filters\":[\"NODELETE\"]}}{\"progress_request\":{}}"
	"{\"cancel_request\":{\"watch_id\":\"0\"}}",
	"{\"key\":\"L2Z1enov\",\"range_end\":\"L2Z1enow\",\"prev_kv\":true}",
	"{\"revision\":\"1\",\"physical\":false}",
};

static void fuzz_one(char *out, size_t cap, size_t *len)
{
	int kind = (int)(rnd() % 4);
	if (kind == 0) { /* random bytes, sometimes after a plausible request line */
		size_t n = rnd() % 1500, off = 0;
		if (rnd() % 2)
			off = (size_t)snprintf(out, cap, "POST /v3/kv/range HTTP/1.1\r\n");
		for (size_t i = 0; i < n && off + i < cap; i++)
			out[off + i] = (char)rnd();
		*len = off + n < cap ? off + n : cap;
		return;
	}
	size_t t = rnd() % (sizeof(templates) / sizeof(templates[0]));
	const char *body = bodies[t];
	char mbody[2048];
	size_t bl = strlen(body);
	memcpy(mbody, body, bl + 1);
	if (kind >= 2) { /* mutate the JSON body */
		int muts = 1 + (int)(rnd() % 4);
		for (int m = 0; m < muts; m++) {
			size_t pos = rnd() % (bl + 1);
			switch (rnd() % 4) {
			case 0:
				if (pos < bl)
					mbody[pos] = (char)rnd();
				break;
			case 1:
				if (pos < bl) {
					memmove(mbody + pos, mbody + pos + 1, bl - pos);
					bl--;
				}
				break;
			case 2:
				if (bl + 1 < sizeof(mbody)) {
					memmove(mbody + pos + 1, mbody + pos, bl - pos + 1);
					mbody[pos] = "{}[]\",:0-9eA\\"[rnd() % 13];
					bl++;
				}
				break;
			default: /* truncate */
				bl = pos;
				mbody[bl] = 0;
				break;
			}
		}
		mbody[bl] = 0;
	}
	int n = snprintf(out, cap, templates[t], strlen(mbody), mbody);
	*len = n > 0 && (size_t)n < cap ? (size_t)n : 0;
	if (kind == 3 || kind == 1) { /* mutate the HTTP bytes too, sometimes */
		int muts = (int)(rnd() % 3);
		for (int m = 0; m < muts && *len; m++)
			out[rnd() % *len] =
				rnd() % 2 ? (char)rnd() : " :\r\n0123456789"[rnd() % 15];
	}
}

static void test_fuzz(void)
{
	const char *it_s = getenv("GATEWAY_FUZZ_ITERS"), *seed_s = getenv("GATEWAY_FUZZ_SEED");
	long iters = it_s ? atol(it_s) : 1500;
	rng = seed_s ? strtoull(seed_s, NULL, 0) : (uint64_t)time(NULL) * 2654435761u + 1;
	fprintf(stderr, "  fuzz: %ld connections, GATEWAY_FUZZ_SEED=%llu\n", iters,
		(unsigned long long)rng);
	/* A store of its own: mutated requests may delete or compact anything in it. */
	char *dir = test_tmpdir("gateway-fuzz");
	struct kv *store = open_at(dir, NULL);
	struct gw *gw;
	REQUIRE_EQ(gw_start(store, "127.0.0.1:0", &gw), 0);
	/* A watch stream that a case opens notices the client's half-close when it next
	 * wakes: 500 ms later with the default progress interval, 51 ms with this one. */
	gw_set_progress_interval(gw, 100);
	int main_port = E.port;
	E.port = gw_port(gw);
	struct kv *cl = client(0, 0);
	static char req[8192], resp[1 << 16];
	int answered = 0, ok200 = 0;
	for (long i = 0; i < iters; i++) {
		size_t len;
		int fd = dial();
		/* one to three requests on the connection, then end the input */
		int reqs = 1 + (int)(rnd() % 3);
		for (int k = 0; k < reqs; k++) {
			fuzz_one(req, sizeof(req), &len);
			send_bytes(fd, req, len);
		}
		shutdown(fd, SHUT_WR);
		int64_t t0 = util_now_ms();
		recv_all(fd, resp, sizeof(resp), 3000);
		close(fd);
		if (util_now_ms() - t0 > 500)
			fprintf(stderr, "  slow fuzz case %ld: %lld ms: %.60s\n", i,
				(long long)(util_now_ms() - t0), req);
		answered += !strncmp(resp, "HTTP/1.1 ", 9);
		ok200 += !strncmp(resp, "HTTP/1.1 200", 12);
		if (i % 250 == 249) {
			/* still serving, through the real client */
			int64_t rev;
			REQUIRE_EQ(kv_status(cl, &rev), 0);
			REQUIRE_EQ(put_s(cl, "/fuzzcheck", "alive", NULL), 0);
		}
	}
	fprintf(stderr, "  fuzz: %d replies (%d with status 200)\n", answered, ok200);
	REQUIRE(answered > iters / 2);
	REQUIRE(ok200 > 0);
	struct kv_kv kv;
	REQUIRE_EQ(put_s(cl, "/fuzzcheck", "end", NULL), 0);
	REQUIRE_EQ(kv_get(cl, "/fuzzcheck", 10, &kv), 0);
	CHECK_STRN(kv.value, kv.value_len, "end");
	kv_kv_free(&kv);
	REQUIRE_EQ(store_check(store), 0);
	kv_destroy(cl);
	gw_stop(gw);
	kv_destroy(store);
	test_rm_rf(dir);
	free(dir);
	E.port = main_port;
	/* the main server was not disturbed */
	REQUIRE_EQ(kv_get(E.cl, "/page/02499", 11, &kv), 0);
	CHECK_STRN(kv.value, kv.value_len, "value-2499");
	kv_kv_free(&kv);
}

/* etcdfs's default transport tries gRPC (HTTP/2) for ranges first; the gateway serves gRPC
 * on the same port (it sniffs the HTTP/2 preface), so the client stays on gRPC: no fallback,
 * no JSON range. */
static void test_auto_transport(void)
{
	struct kv *cl = client(0, 0);
	struct etcd_client_stats st;
	struct kv_kv kv;
	etcd_client_set_transport(cl, ETCD_TRANSPORT_AUTO);
	REQUIRE_EQ(kv_get(cl, "/curl/k", 7, &kv), 0);
	CHECK_STRN(kv.value, kv.value_len, "hello");
	kv_kv_free(&kv);
	REQUIRE_EQ(kv_get(cl, "/page/00007", 11, &kv), 0);
	CHECK_STRN(kv.value, kv.value_len, "value-7");
	kv_kv_free(&kv);
	etcd_client_get_stats(cl, &st);
	fprintf(stderr, "  auto: %llu gRPC fallbacks, %llu JSON ranges, %llu gRPC ranges\n",
		(unsigned long long)st.grpc_fallbacks, (unsigned long long)st.json_ranges,
		(unsigned long long)st.grpc_ranges);
	REQUIRE(st.grpc_ranges >= 2);
	REQUIRE_EQ(st.json_ranges, 0);
	REQUIRE_EQ(st.grpc_fallbacks, 0);
	kv_destroy(cl);
}

/* ---- differential test against etcd 3.4 ---- */

/* Removes the header fields only a real etcd has (cluster_id, member_id, raft_term). */
static void strip_ids(char *s)
{
	static const char *const f[] = {"\"cluster_id\":\"", "\"member_id\":\"",
					"\"raft_term\":\""};
	for (size_t i = 0; i < 3; i++) {
		char *p;
		while ((p = strstr(s, f[i]))) {
			char *e = strchr(p + strlen(f[i]), '"');
			REQUIRE(e);
			e++;
			if (*e == ',')
				e++;
			else if (p > s && p[-1] == ',')
				p--;
			memmove(p, e, strlen(e) + 1);
		}
	}
}

/* Decodes a chunked body starting at p (up to end) into out; stops at the last chunk or at
 * the end of the data read so far. */
static void dechunk(const char *p, const char *end, char *out, size_t cap)
{
	size_t o = 0;
	for (;;) {
		char *e;
		unsigned long len = strtoul(p, &e, 16);
		if (e == p || !len || strncmp(e, "\r\n", 2))
			break;
		p = e + 2;
		REQUIRE((size_t)(end - p) >= len + 2 && o + len < cap);
		memcpy(out + o, p, len);
		o += len;
		p += len + 2;
	}
	out[o] = 0;
}

/* Status code and body of one POST (Connection: close) to port, ids stripped. */
static void post_port(int port, const char *path, const char *body, char *out, size_t cap)
{
	static char buf[1 << 16];
	int save = E.port;
	E.port = port;
	size_t n = post(path, body, buf, sizeof(buf));
	E.port = save;
	char *b = strstr(buf, "\r\n\r\n");
	REQUIRE(b && !strncmp(buf, "HTTP/1.1 ", 9));
	*b = 0;
	bool chunked = strcasestr(buf, "\r\nTransfer-Encoding: chunked") != NULL;
	int hn = snprintf(out, cap, "%.3s ", buf + 9);
	if (chunked)
		dechunk(b + 4, buf + n, out + hn, cap - (size_t)hn);
	else
		snprintf(out + hn, cap - (size_t)hn, "%s", b + 4);
	strip_ids(out);
}

/* The decoded (de-chunked) body of a watch stream read for ms, ids stripped. */
static void watch_port(int port, const char *body, const char *then_path, const char *then_body,
		       char *out, size_t cap)
{
	static char buf[1 << 16], tmp[4096];
	char req[1024];
	int fd = dial_port(port);
	int n = snprintf(req, sizeof(req),
			 "POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
			 strlen(body), body);
	send_bytes(fd, req, (size_t)n);
	size_t got = recv_all(fd, buf, sizeof(buf), 400);
	if (then_path)
		post_port(port, then_path, then_body, tmp, sizeof(tmp));
	got += recv_all(fd, buf + got, sizeof(buf) - got, 400);
	close(fd);
	char *p = strstr(buf, "\r\n\r\n");
	if (!p || strncmp(buf, "HTTP/1.1 200", 12))
		fprintf(stderr, "  watch reply from port %d: %.300s\n", port, buf);
	REQUIRE(p && !strncmp(buf, "HTTP/1.1 200", 12));
	dechunk(p + 4, buf + got, out, cap);
	strip_ids(out);
}

/* The same requests to a fresh etcd 3.4 and a fresh store behind the gateway must give the
 * same status and the same body, byte for byte, once the header fields only etcd has are
 * removed. Parse errors are left out: their texts come from Go's JSON decoder. */
static void test_vs_etcd(void)
{
	static const char *const reqs[][2] = {
		{"/v3/kv/put", "{\"key\":\"L2Ev\",\"value\":\"MQ==\"}"},
		{"/v3/kv/put", "{\"key\":\"L2Ev\",\"value\":\"Mg==\",\"prev_kv\":true}"},
		{"/v3/kv/put", "{\"key\":\"L2IK\",\"value\":\"\"}"},
		{"/v3/kv/put", "{\"key\":\"L2Q=\",\"value\":\"AP8=\",\"lease\":\"0\"}"},
		{"/v3/kv/range", "{\"key\":\"Lw==\",\"range_end\":\"MA==\",\"limit\":1}"},
		{"/v3/kv/range", "{\"key\":\"Lw==\",\"range_end\":\"MA==\",\"count_only\":true}"},
		{"/v3/kv/range", "{\"key\":\"Lw==\",\"range_end\":\"MA==\",\"keys_only\":true,"
				 "\"sort_order\":\"DESCEND\",\"sort_target\":\"MOD\"}"},
		{"/v3/kv/range",
		 "{\"key\":\"AA==\",\"range_end\":\"AA==\",\"min_mod_revision\":\"3\","
		 "\"limit\":\"1\"}"},
		{"/v3/kv/range", "{\"key\":\"L3g=\"}"},
		{"/v3/kv/range", "{\"key\":\"L2Ev\",\"revision\":2,\"serializable\":true}"},
		{"/v3/kv/txn",
		 "{\"compare\":[{\"key\":\"L2Ev\",\"target\":\"VALUE\",\"value\":\"Mg==\"}],"
		 "\"success\":[{\"request_range\":{\"key\":\"L2Ev\"}},{\"request_put\":{\"key\":"
		 "\"L2M=\",\"value\":\"Mw==\",\"prev_kv\":true}},{\"request_range\":{\"key\":"
		 "\"Lw==\",\"range_end\":\"MA==\",\"limit\":\"2\",\"sort_order\":\"DESCEND\"}},"
		 "{\"request_delete_range\":{\"key\":\"L2IK\",\"prev_kv\":true}}]}"},
		{"/v3/kv/txn", "{\"compare\":[{\"key\":\"L2Ev\",\"target\":\"VERSION\",\"version\":"
			       "\"9\"}],\"failure\":[{\"request_range\":{\"key\":\"L3o=\"}}]}"},
		{"/v3/kv/txn", "{\"compare\":[{\"key\":\"L25ldw==\",\"target\":\"CREATE\","
			       "\"create_revision\":\"0\"}],\"success\":[{\"request_put\":{\"key\":"
			       "\"L25ldw==\",\"value\":\"bg==\"}}]}"},
		{"/v3/kv/txn", "{\"compare\":[{\"key\":\"Lw==\",\"range_end\":\"MA==\",\"target\":"
			       "\"MOD\",\"result\":\"LESS\",\"mod_revision\":\"100\"}]}"},
		{"/v3/kv/txn", "{}"},
		{"/v3/kv/deleterange", "{\"key\":\"L3o=\"}"},
		{"/v3/kv/deleterange",
		 "{\"key\":\"L2M=\",\"range_end\":\"L2Q=\",\"prev_kv\":true}"},
		{"/v3/kv/compaction", "{\"revision\":\"3\"}"},
		{"/v3/kv/range", "{\"key\":\"L2Ev\",\"revision\":\"2\"}"},
		{"/v3/kv/range", "{\"key\":\"L2Ev\",\"revision\":\"100\"}"},
		{"/v3/kv/compaction", "{\"revision\":\"2\"}"},
		{"/v3/kv/compaction", "{\"revision\":\"100\"}"},
		{"/v3/kv/put", "{\"value\":\"eA==\"}"},
		{"/v3/kv/range", "{}"},
		{"/v3/kv/put", "{\"key\":\"L2Ev\",\"lease\":\"5\",\"ignore_lease\":true}"},
		{"/v3/kv/put", "{\"key\":\"L25vbmU=\",\"ignore_lease\":true}"},
		{"/v3/kv/txn",
		 "{\"success\":[{\"request_put\":{\"key\":\"L2Ev\"}},{\"request_put\":"
		 "{\"key\":\"L2Ev\"}}]}"},
		{"/v3/kv/txn",
		 "{\"success\":[{\"request_delete_range\":{\"key\":\"Lw==\",\"range_end\":"
		 "\"MA==\"}},{\"request_put\":{\"key\":\"L2Ev\"}}]}"},
		{"/v3/nothing", "{}"},
	};
	struct etcd_harness h;
	REQUIRE_EQ(etcd_harness_start(&h, NULL), 0);
	char *dir = test_tmpdir("gateway-diff");
	struct kv *store = open_at(dir, NULL);
	struct gw *gw;
	REQUIRE_EQ(gw_start(store, "127.0.0.1:0", &gw), 0);
	int sp = gw_port(gw);
	static char a[1 << 15], b[1 << 15];
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		post_port(h.client_port, reqs[i][0], reqs[i][1], a, sizeof(a));
		post_port(sp, reqs[i][0], reqs[i][1], b, sizeof(b));
		if (strcmp(a, b)) {
			fprintf(stderr, "  %s %s\n  etcd:    %s\n  gateway: %s\n", reqs[i][0],
				reqs[i][1], a, b);
			REQUIRE(!strcmp(a, b));
		}
	}
	/* watches: created + canceled for a compacted start; created + live delete event */
	static const char *const w_compacted =
		"{\"create_request\":{\"key\":\"L2Ev\",\"start_revision\":\"1\"}}";
	static const char *const w_live = "{\"create_request\":{\"key\":\"L25ldw==\"}}";
	watch_port(h.client_port, w_compacted, NULL, NULL, a, sizeof(a));
	watch_port(sp, w_compacted, NULL, NULL, b, sizeof(b));
	fprintf(stderr, "  compacted watch: %s", b);
	REQUIRE(!strcmp(a, b));
	watch_port(h.client_port, w_live, "/v3/kv/deleterange", "{\"key\":\"L25ldw==\"}", a,
		   sizeof(a));
	watch_port(sp, w_live, "/v3/kv/deleterange", "{\"key\":\"L25ldw==\"}", b, sizeof(b));
	fprintf(stderr, "  live watch: %s", b);
	REQUIRE(!strcmp(a, b));
	REQUIRE(strstr(b, "\"type\":\"DELETE\""));
	gw_stop(gw);
	kv_destroy(store);
	test_rm_rf(dir);
	free(dir);
	etcd_harness_destroy(&h);
}

static void test_bad_listen(void)
{
	struct gw *gw;
	char addr[64];
	REQUIRE_EQ(gw_start(E.store, "nonsense", &gw), -EINVAL);
	REQUIRE_EQ(gw_start(E.store, "127.0.0.1:99999", &gw), -EINVAL);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", E.port);
	REQUIRE_EQ(gw_start(E.store, addr, &gw), -EADDRINUSE);
	/* IPv6 loopback works where the machine has it */
	int r = gw_start(E.store, "[::1]:0", &gw);
	REQUIRE(r == 0 || r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT);
	if (r == 0)
		gw_stop(gw);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_WARNING);
	E.dir = test_tmpdir("gateway");
	server_up(0);
	E.cl = client(0, 0);
	etcd_client_set_watch_stall_ms(E.cl, 1500);
	TEST_RUN(test_put_get);
	TEST_RUN(test_range_paging);
	TEST_RUN(test_txn);
	TEST_RUN(test_delete);
	TEST_RUN(test_compact);
	TEST_RUN(test_limits);
	TEST_RUN(test_watch);
	TEST_RUN(test_restart);
	TEST_RUN(test_curl);
	TEST_RUN(test_http);
	TEST_RUN(test_watch_wire);
	TEST_RUN(test_auto_transport);
	TEST_RUN(test_vs_etcd);
	TEST_RUN(test_bad_listen);
	TEST_RUN(test_fuzz);
	kv_destroy(E.cl);
	server_down();
	test_rm_rf(E.dir);
	free(E.dir);
	return test_summary();
}
