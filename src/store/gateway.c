/* gateway.c: etcd v3 JSON gateway (grpc-gateway subset, HTTP/1.1) over any kv.h backend.
 *
 * The wire shapes follow etcd 3.4's gateway (jsonpb with original field names): bytes as
 * standard base64, int64 as decimal strings, zero values omitted, enums by name, errors as
 * {"error": msg, "code": grpc_code, "message": msg} with grpc-gateway's HTTP status. Requests
 * are accepted the way jsonpb accepts them: snake_case or lowerCamelCase names, int64 as
 * strings or numbers, enums as names or numbers, unknown fields ignored.
 *
 * Structure: an accept thread hands each connection to its own thread, which reads requests
 * (bounded head and body, keep-alive, pipelining, chunked bodies, Expect: 100-continue),
 * answers unary calls synchronously and turns itself into a stream writer for /v3/watch.
 * A connection thread never closes its socket: whoever joins it does, so store_gateway_stop()
 * can shutdown() any socket at any time without racing a reuse of the descriptor.
 */
#include "gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/base64.h"
#include "core/log.h"
#include "core/util.h"

#define BODY_MAX ((size_t)4 << 20) /* larger request bodies are refused */
#define HEAD_MAX ((size_t)16 << 10)
#define IN_MAX (BODY_MAX + HEAD_MAX + ((size_t)64 << 10))
#define DRAIN_MAX ((size_t)64 << 20) /* bytes read and dropped before closing on an error */
#define MAX_HEADERS 100
#define MAX_CONNS 256
#define IDLE_TIMEOUT_MS 300000 /* keep-alive connection without a request */
#define IO_TIMEOUT_MS 30000    /* silence in the middle of a request */
#define SEND_TIMEOUT_S 30      /* a client that does not read for this long is dropped */
#define DEFAULT_PROGRESS_MS 5000
#define API_VERSION "3.4.0" /* the etcd API level this gateway mimics */

/* gRPC status codes used here. */
enum {
	GRPC_OK = 0,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

#define ERR_COMPACTED "etcdserver: mvcc: required revision has been compacted"
#define ERR_FUTURE_REV "etcdserver: mvcc: required revision is a future revision"
#define ERR_TOO_LARGE "etcdserver: request is too large"
#define ERR_TOO_MANY_OPS "etcdserver: too many operations in txn request"
#define ERR_EMPTY_KEY "etcdserver: key is not provided"
#define ERR_KEY_NOT_FOUND "etcdserver: key not found"
#define ERR_LEASE_PROVIDED "etcdserver: lease is provided"
#define ERR_TIMEOUT "etcdserver: request timed out"
#define ERR_NO_SPACE "etcdserver: mvcc: database space exceeded"
#define ERR_AUTH_OFF "etcdserver: authentication is not enabled"
#define ERR_DUPLICATE_KEY "etcdserver: duplicate key given in txn request"

struct conn {
	struct store_gateway *gw;
	int fd;
	pthread_t thread;
	bool done;	   /* protected by gw->lock: the thread has ended */
	struct conn *next; /* protected by gw->lock */
	/* input buffer, conn thread only: bytes [in_off, in_len) are unconsumed */
	char *in;
	size_t in_len, in_cap, in_off;
};

struct store_gateway {
	struct kv *kv; /* borrowed */
	int lfd;
	int wake[2]; /* pipe: wakes the accept thread on stop */
	int port;
	pthread_t accept_thread;
	long progress_ms; /* atomic */
	pthread_mutex_t lock;
	struct conn *conns; /* protected by lock */
	size_t n_conns;	    /* protected by lock */
	bool stopping;	    /* protected by lock */
};

/* ---- base64: src/base64.c; as a server, lenient like etcd's own gateway (the URL-safe
 * alphabet, missing padding and non-canonical trailing bits are accepted) ---- */

static json_t *b64_json(const void *data, size_t len)
{
	size_t n;
	char *out = base64_encode(data, len, &n);
	if (!out)
		return NULL;
	json_t *j = json_stringn_nocheck(out, n);
	free(out);
	return j;
}

/* ---- request context: reply and allocations freed after the reply is sent ---- */

struct ctx {
	struct store_gateway *gw;
	int code; /* gRPC code; GRPC_OK with body set on success */
	char msg[256];
	json_t *body;
	void **allocs;
	size_t n_allocs, cap_allocs;
};

static void ctx_free(struct ctx *x)
{
	for (size_t i = 0; i < x->n_allocs; i++)
		free(x->allocs[i]);
	free(x->allocs);
	json_decref(x->body);
	x->allocs = NULL;
	x->body = NULL;
	x->n_allocs = x->cap_allocs = 0;
}

static __attribute__((format(printf, 3, 4))) int fail(struct ctx *x, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->msg, sizeof(x->msg), fmt, ap);
	va_end(ap);
	x->code = code;
	return -1;
}

static int oom(struct ctx *x)
{
	return fail(x, GRPC_RESOURCE_EXHAUSTED, "etcdfs gateway: out of memory");
}

/* Remembers p (freed with the context). On failure frees p and sets the error. */
static int keep(struct ctx *x, void *p)
{
	if (!p)
		return oom(x);
	if (x->n_allocs == x->cap_allocs) {
		size_t cap = x->cap_allocs ? x->cap_allocs * 2 : 16;
		void **a = realloc(x->allocs, cap * sizeof(*a));
		if (!a) {
			free(p);
			return oom(x);
		}
		x->allocs = a;
		x->cap_allocs = cap;
	}
	x->allocs[x->n_allocs++] = p;
	return 0;
}

static void *ctx_calloc(struct ctx *x, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	return keep(x, p) < 0 ? NULL : p;
}

/* Maps a kv.h errno to etcd's error. ENOENT means a future revision for reads and
 * compaction, and a missing key (ignore_lease) for writes. */
static int kv_fail(struct ctx *x, int err, bool write)
{
	switch (err) {
	case -ERANGE:
		return fail(x, GRPC_OUT_OF_RANGE, ERR_COMPACTED);
	case -ENOENT:
		return write ? fail(x, GRPC_INVALID_ARGUMENT, ERR_KEY_NOT_FOUND)
			     : fail(x, GRPC_OUT_OF_RANGE, ERR_FUTURE_REV);
	case -EFBIG:
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
	case -E2BIG:
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_TOO_MANY_OPS);
	case -EINVAL:
		return fail(x, GRPC_INVALID_ARGUMENT,
			    "etcdserver: invalid argument (refused by the store: duplicate key in "
			    "txn, empty key or bad range)");
	case -ETIMEDOUT:
		return fail(x, GRPC_UNAVAILABLE, ERR_TIMEOUT);
	case -ENOSPC:
		return fail(x, GRPC_RESOURCE_EXHAUSTED, ERR_NO_SPACE);
	case -EACCES:
		return fail(x, GRPC_PERMISSION_DENIED, "etcdserver: permission denied");
	case -ECONNREFUSED:
		return fail(x, GRPC_UNAVAILABLE, "etcdfs gateway: the backend is unreachable");
	case -ENOMEM:
		return oom(x);
	default:
		return fail(x, GRPC_UNKNOWN, "etcdfs gateway: backend error: %s", strerror(-err));
	}
}

/* ---- request field readers (jsonpb rules) ---- */

static const json_t *field(const json_t *o, const char *snake, const char *camel)
{
	const json_t *v = json_object_get(o, snake);
	if (!v && camel)
		v = json_object_get(o, camel);
	return v && !json_is_null(v) ? v : NULL;
}

static int get_i64(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		   int64_t *out)
{
	const json_t *v = field(o, snake, camel);
	*out = 0;
	if (!v)
		return 0;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		errno = 0;
		long long n = strtoll(s, &end, 10);
		if (*s && !*end && !errno && strlen(s) == json_string_length(v)) {
			*out = (int64_t)n;
			return 0;
		}
	}
	return fail(x, GRPC_INVALID_ARGUMENT, "bad value for int64 field \"%s\"", snake);
}

static int get_bool(struct ctx *x, const json_t *o, const char *snake, const char *camel, bool *out)
{
	const json_t *v = field(o, snake, camel);
	*out = false;
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return fail(x, GRPC_INVALID_ARGUMENT, "bad value for bool field \"%s\"", snake);
	*out = json_is_true(v);
	return 0;
}

static int get_enum(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		    const char *const *names, int n, int *out)
{
	const json_t *v = field(o, snake, camel);
	*out = 0;
	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < n) {
		*out = (int)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v))
		for (int i = 0; i < n; i++)
			if (!strcmp(json_string_value(v), names[i])) {
				*out = i;
				return 0;
			}
	return fail(x, GRPC_INVALID_ARGUMENT, "bad value for enum field \"%s\"", snake);
}

/* Decodes a bytes field; absent gives ("", 0). The buffer lives as long as the context. */
static int get_bytes(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		     const void **p, size_t *n)
{
	const json_t *v = field(o, snake, camel);
	*p = "";
	*n = 0;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(x, GRPC_INVALID_ARGUMENT, "bad value for bytes field \"%s\"", snake);
	char *buf;
	int ret = base64_decode(json_string_value(v), json_string_length(v),
				BASE64_URL_SAFE | BASE64_LAX, &buf, n);
	if (ret == -ENOMEM)
		return oom(x);
	if (ret < 0)
		return fail(x, GRPC_INVALID_ARGUMENT, "bad base64 in bytes field \"%s\"", snake);
	if (keep(x, buf) < 0)
		return -1;
	*p = buf;
	return 0;
}

static int check_object(struct ctx *x, const json_t *o, const char *what)
{
	if (o && !json_is_object(o))
		return fail(x, GRPC_INVALID_ARGUMENT, "%s must be a JSON object", what);
	return 0;
}

/* ---- response builders (any failure is ENOMEM; callers check the final result) ---- */

static json_t *i64_json(int64_t v)
{
	char b[24];
	snprintf(b, sizeof(b), "%lld", (long long)v);
	return json_string(b);
}

static int set_i64(json_t *o, const char *k, int64_t v)
{
	return v ? json_object_set_new(o, k, i64_json(v)) : 0;
}

static int set_bytes(json_t *o, const char *k, const void *p, size_t n)
{
	return n ? json_object_set_new(o, k, b64_json(p, n)) : 0;
}

static int set_true(json_t *o, const char *k, bool v)
{
	return v ? json_object_set_new(o, k, json_true()) : 0;
}

static json_t *header_json(int64_t revision)
{
	json_t *h = json_object();
	if (h && set_i64(h, "revision", revision) < 0) {
		json_decref(h);
		return NULL;
	}
	return h;
}

static json_t *kv_json(const struct kv_kv *kv)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (set_bytes(o, "key", kv->key, kv->key_len) < 0 ||
	    set_i64(o, "create_revision", kv->create_revision) < 0 ||
	    set_i64(o, "mod_revision", kv->mod_revision) < 0 ||
	    set_i64(o, "version", kv->version) < 0 ||
	    (kv->value && set_bytes(o, "value", kv->value, kv->value_len) < 0) ||
	    set_i64(o, "lease", kv->lease) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int set_kvs(json_t *o, const char *k, const struct kv_kv *kvs, size_t n)
{
	if (!n)
		return 0;
	json_t *a = json_array();
	if (!a || json_object_set_new(o, k, a) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(a, kv_json(&kvs[i])) < 0)
			return -1;
	return 0;
}

static int set_reply(struct ctx *x, json_t *body, int err)
{
	if (err < 0 || !body) {
		json_decref(body);
		return oom(x);
	}
	x->code = GRPC_OK;
	x->body = body;
	return 0;
}

/* ---- range ---- */

static const char *const sort_orders[] = {"NONE", "ASCEND", "DESCEND"};
static const char *const sort_targets[] = {"KEY", "VERSION", "CREATE", "MOD", "VALUE"};

/* Range options applied by the gateway itself: inside a txn (kv_op carries only key,
 * range_end and keys_only) and for the revision filters kv.h does not have. */
struct range_post {
	int64_t limit;
	bool count_only;
	int sort_order, sort_target;
	int64_t min_mod, max_mod, min_create, max_create;
};

static bool has_filters(const struct range_post *p)
{
	return p->min_mod || p->max_mod || p->min_create || p->max_create;
}

static int parse_range(struct ctx *x, const json_t *o, struct kv_range_req *r, struct range_post *p,
		       int64_t *revision)
{
	memset(r, 0, sizeof(*r));
	memset(p, 0, sizeof(*p));
	if (get_bytes(x, o, "key", NULL, &r->key, &r->key_len) < 0 ||
	    get_bytes(x, o, "range_end", "rangeEnd", &r->range_end, &r->range_end_len) < 0 ||
	    get_i64(x, o, "limit", NULL, &p->limit) < 0 ||
	    get_i64(x, o, "revision", NULL, revision) < 0 ||
	    get_enum(x, o, "sort_order", "sortOrder", sort_orders, 3, &p->sort_order) < 0 ||
	    get_enum(x, o, "sort_target", "sortTarget", sort_targets, 5, &p->sort_target) < 0 ||
	    get_bool(x, o, "serializable", NULL, &r->serializable) < 0 ||
	    get_bool(x, o, "keys_only", "keysOnly", &r->keys_only) < 0 ||
	    get_bool(x, o, "count_only", "countOnly", &p->count_only) < 0 ||
	    get_i64(x, o, "min_mod_revision", "minModRevision", &p->min_mod) < 0 ||
	    get_i64(x, o, "max_mod_revision", "maxModRevision", &p->max_mod) < 0 ||
	    get_i64(x, o, "min_create_revision", "minCreateRevision", &p->min_create) < 0 ||
	    get_i64(x, o, "max_create_revision", "maxCreateRevision", &p->max_create) < 0)
		return -1;
	if (!r->key_len)
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	/* etcd: a sort target other than KEY without an order sorts ascending. */
	if (p->sort_order == KV_SORT_NONE && p->sort_target != KV_SORT_KEY)
		p->sort_order = KV_SORT_ASCEND;
	r->revision = *revision;
	r->limit = p->limit;
	r->count_only = p->count_only;
	r->sort_order = (enum kv_sort_order)p->sort_order;
	r->sort_target = (enum kv_sort_target)p->sort_target;
	return 0;
}

static int cmp_bytes(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : (al > bl) - (al < bl);
}

static int cmp_kv(const void *pa, const void *pb, void *target)
{
	const struct kv_kv *a = pa, *b = pb;
	int64_t x = 0, y = 0;
	switch (*(const int *)target) {
	case KV_SORT_VERSION:
		x = a->version, y = b->version;
		break;
	case KV_SORT_CREATE:
		x = a->create_revision, y = b->create_revision;
		break;
	case KV_SORT_MOD:
		x = a->mod_revision, y = b->mod_revision;
		break;
	case KV_SORT_VALUE: {
		int c = cmp_bytes(a->value ? a->value : "", a->value ? a->value_len : 0,
				  b->value ? b->value : "", b->value ? b->value_len : 0);
		if (c)
			return c;
		break;
	}
	default:
		break;
	}
	if (x != y)
		return x < y ? -1 : 1;
	return cmp_bytes(a->key, a->key_len, b->key, b->key_len);
}

/* Applies filters, sort, limit and count_only to a result holding the whole range in
 * ascending key order, the way etcd does: count is the size of the range before filtering. */
static void range_post_apply(struct kv_range_result *r, const struct range_post *p)
{
	if (!r->count)
		r->count = (int64_t)r->n_kvs;
	if (p->count_only) {
		for (size_t i = 0; i < r->n_kvs; i++)
			kv_kv_free(&r->kvs[i]);
		r->n_kvs = 0;
		return;
	}
	size_t n = 0;
	for (size_t i = 0; i < r->n_kvs; i++) {
		const struct kv_kv *k = &r->kvs[i];
		bool drop = (p->min_mod && k->mod_revision < p->min_mod) ||
			    (p->max_mod && k->mod_revision > p->max_mod) ||
			    (p->min_create && k->create_revision < p->min_create) ||
			    (p->max_create && k->create_revision > p->max_create);
		if (drop)
			kv_kv_free(&r->kvs[i]);
		else
			r->kvs[n++] = r->kvs[i];
	}
	r->n_kvs = n;
	bool key_asc = p->sort_target == KV_SORT_KEY && p->sort_order != KV_SORT_DESCEND;
	if (!key_asc && n > 1) {
		int target = p->sort_target;
		qsort_r(r->kvs, n, sizeof(*r->kvs), cmp_kv, &target);
		if (p->sort_order == KV_SORT_DESCEND)
			for (size_t i = 0; i < n / 2; i++) {
				struct kv_kv t = r->kvs[i];
				r->kvs[i] = r->kvs[n - 1 - i];
				r->kvs[n - 1 - i] = t;
			}
	}
	if (p->limit > 0 && n > (size_t)p->limit) {
		for (size_t i = (size_t)p->limit; i < n; i++)
			kv_kv_free(&r->kvs[i]);
		r->n_kvs = (size_t)p->limit;
		r->more = true;
	}
}

static json_t *range_json(const struct kv_range_result *r, int64_t revision)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (json_object_set_new(o, "header", header_json(revision)) < 0 ||
	    set_kvs(o, "kvs", r->kvs, r->n_kvs) < 0 || set_true(o, "more", r->more) < 0 ||
	    set_i64(o, "count", r->count) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int h_range(struct ctx *x, const json_t *body)
{
	struct kv_range_req req;
	struct range_post post;
	struct kv_range_result res;
	int64_t rev;
	if (parse_range(x, body, &req, &post, &rev) < 0)
		return -1;
	bool post_filter = has_filters(&post) && !post.count_only;
	if (post_filter) {
		/* etcd filters the whole sorted range, then applies the limit. */
		req.limit = 0;
		post.sort_order = KV_SORT_NONE;
		post.sort_target = KV_SORT_KEY;
	}
	int ret = kv_range(x->gw->kv, &req, &res);
	if (ret < 0)
		return kv_fail(x, ret, false);
	if (post_filter)
		range_post_apply(&res, &post);
	ret = set_reply(x, range_json(&res, res.revision), 0);
	kv_range_result_free(&res);
	return ret;
}

/* ---- put, deleterange, txn ---- */

static int parse_put(struct ctx *x, const json_t *o, struct kv_op *op)
{
	bool ignore_value;
	memset(op, 0, sizeof(*op));
	op->type = KV_OP_PUT;
	if (get_bytes(x, o, "key", NULL, &op->key, &op->key_len) < 0 ||
	    get_bytes(x, o, "value", NULL, &op->value, &op->value_len) < 0 ||
	    get_i64(x, o, "lease", NULL, &op->lease) < 0 ||
	    get_bool(x, o, "prev_kv", "prevKv", &op->prev_kv) < 0 ||
	    get_bool(x, o, "ignore_value", "ignoreValue", &ignore_value) < 0 ||
	    get_bool(x, o, "ignore_lease", "ignoreLease", &op->ignore_lease) < 0)
		return -1;
	if (!op->key_len)
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	if (ignore_value)
		return fail(x, GRPC_UNIMPLEMENTED,
			    "etcdfs gateway: ignore_value is not supported by this server");
	if (op->ignore_lease && op->lease)
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_LEASE_PROVIDED);
	return 0;
}

static int parse_delete(struct ctx *x, const json_t *o, struct kv_op *op)
{
	memset(op, 0, sizeof(*op));
	op->type = KV_OP_DELETE;
	if (get_bytes(x, o, "key", NULL, &op->key, &op->key_len) < 0 ||
	    get_bytes(x, o, "range_end", "rangeEnd", &op->range_end, &op->range_end_len) < 0 ||
	    get_bool(x, o, "prev_kv", "prevKv", &op->prev_kv) < 0)
		return -1;
	if (!op->key_len)
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	return 0;
}

static int run_one(struct ctx *x, const struct kv_op *op, struct kv_txn_result *res)
{
	struct kv_txn txn = {.success = op, .n_success = 1};
	int ret = kv_txn(x->gw->kv, &txn, res);
	if (ret < 0)
		return kv_fail(x, ret, true);
	if (res->n_results != 1 || res->results[0].type != op->type) {
		kv_txn_result_free(res);
		return fail(x, GRPC_INTERNAL, "etcdfs gateway: backend returned no result");
	}
	return 0;
}

static int h_put(struct ctx *x, const json_t *body)
{
	struct kv_op op;
	struct kv_txn_result res;
	if (parse_put(x, body, &op) < 0 || run_one(x, &op, &res) < 0)
		return -1;
	json_t *o = json_object();
	int err = !o ? -1 : json_object_set_new(o, "header", header_json(res.revision));
	const struct kv_range_result *prev = &res.results[0].range;
	if (!err && op.prev_kv && prev->n_kvs)
		err = json_object_set_new(o, "prev_kv", kv_json(&prev->kvs[0]));
	kv_txn_result_free(&res);
	return set_reply(x, o, err);
}

static json_t *delete_json(const struct kv_op_result *r, int64_t revision)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (json_object_set_new(o, "header", header_json(revision)) < 0 ||
	    set_i64(o, "deleted", r->deleted) < 0 ||
	    set_kvs(o, "prev_kvs", r->range.kvs, r->range.n_kvs) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int h_delete(struct ctx *x, const json_t *body)
{
	struct kv_op op;
	struct kv_txn_result res;
	if (parse_delete(x, body, &op) < 0 || run_one(x, &op, &res) < 0)
		return -1;
	int ret = set_reply(x, delete_json(&res.results[0], res.revision), 0);
	kv_txn_result_free(&res);
	return ret;
}

static const char *const cmp_results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
static const char *const cmp_targets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};

static int parse_compare(struct ctx *x, const json_t *o, struct kv_compare *c)
{
	int result, target;
	memset(c, 0, sizeof(*c));
	if (check_object(x, o, "compare") < 0 ||
	    get_enum(x, o, "result", NULL, cmp_results, 4, &result) < 0 ||
	    get_enum(x, o, "target", NULL, cmp_targets, 5, &target) < 0 ||
	    get_bytes(x, o, "key", NULL, &c->key, &c->key_len) < 0 ||
	    get_bytes(x, o, "range_end", "rangeEnd", &c->range_end, &c->range_end_len) < 0)
		return -1;
	c->result = (enum kv_cmp_result)result;
	c->target = (enum kv_cmp_target)target;
	/* The compared value is a oneof; an absent one compares as zero / empty, as in etcd. */
	switch (c->target) {
	case KV_CMP_VERSION:
		return get_i64(x, o, "version", NULL, &c->number);
	case KV_CMP_CREATE:
		return get_i64(x, o, "create_revision", "createRevision", &c->number);
	case KV_CMP_MOD:
		return get_i64(x, o, "mod_revision", "modRevision", &c->number);
	case KV_CMP_LEASE:
		return get_i64(x, o, "lease", NULL, &c->number);
	case KV_CMP_VALUE:
		return get_bytes(x, o, "value", NULL, &c->value, &c->value_len);
	}
	return 0;
}

static int parse_op(struct ctx *x, const json_t *o, struct kv_op *op, struct range_post *post)
{
	const json_t *v;
	memset(post, 0, sizeof(*post));
	if (check_object(x, o, "request op") < 0)
		return -1;
	if ((v = field(o, "request_range", "requestRange"))) {
		struct kv_range_req r;
		int64_t rev;
		if (check_object(x, v, "request_range") < 0 ||
		    parse_range(x, v, &r, post, &rev) < 0)
			return -1;
		if (rev)
			return fail(x, GRPC_UNIMPLEMENTED,
				    "etcdfs gateway: a range at a revision inside a txn is not "
				    "supported");
		memset(op, 0, sizeof(*op));
		op->type = KV_OP_RANGE;
		op->key = r.key;
		op->key_len = r.key_len;
		op->range_end = r.range_end;
		op->range_end_len = r.range_end_len;
		op->keys_only = r.keys_only;
		return 0;
	}
	if ((v = field(o, "request_put", "requestPut")))
		return check_object(x, v, "request_put") < 0 ? -1 : parse_put(x, v, op);
	if ((v = field(o, "request_delete_range", "requestDeleteRange")))
		return check_object(x, v, "request_delete_range") < 0 ? -1 : parse_delete(x, v, op);
	if (field(o, "request_txn", "requestTxn"))
		return fail(x, GRPC_UNIMPLEMENTED,
			    "etcdfs gateway: nested txns are not supported by this server");
	return fail(x, GRPC_INVALID_ARGUMENT, "request op without a request");
}

static int parse_ops(struct ctx *x, const json_t *o, const char *name, struct kv_op **ops,
		     struct range_post **posts, size_t *n)
{
	const json_t *a = field(o, name, NULL);
	*ops = NULL;
	*posts = NULL;
	*n = 0;
	if (!a)
		return 0;
	if (!json_is_array(a))
		return fail(x, GRPC_INVALID_ARGUMENT, "\"%s\" must be an array", name);
	size_t cnt = json_array_size(a);
	if (!(*ops = ctx_calloc(x, cnt, sizeof(**ops))) ||
	    !(*posts = ctx_calloc(x, cnt, sizeof(**posts))))
		return -1;
	for (size_t i = 0; i < cnt; i++)
		if (parse_op(x, json_array_get(a, i), &(*ops)[i], &(*posts)[i]) < 0)
			return -1;
	*n = cnt;
	return 0;
}

static json_t *op_result_json(const struct kv_op_result *r, int64_t revision)
{
	json_t *inner = NULL, *o = json_object();
	const char *name;
	if (!o)
		return NULL;
	switch (r->type) {
	case KV_OP_RANGE:
		inner = range_json(&r->range, revision);
		name = "response_range";
		break;
	case KV_OP_PUT:
		inner = json_object();
		name = "response_put";
		if (inner &&
		    (json_object_set_new(inner, "header", header_json(revision)) < 0 ||
		     (r->range.n_kvs &&
		      json_object_set_new(inner, "prev_kv", kv_json(&r->range.kvs[0])) < 0)))
			goto out_err;
		break;
	case KV_OP_DELETE:
		inner = delete_json(r, revision);
		name = "response_delete_range";
		break;
	default:
		goto out_err;
	}
	if (!inner || json_object_set_new(o, name, inner) < 0) {
		inner = NULL;
		goto out_err;
	}
	return o;
out_err:
	json_decref(inner);
	json_decref(o);
	return NULL;
}

static bool in_range(const struct kv_op *del, const void *key, size_t key_len)
{
	int c = cmp_bytes(key, key_len, del->key, del->key_len);
	if (!del->range_end_len)
		return c == 0;
	if (c < 0)
		return false;
	if (del->range_end_len == 1 && !((const char *)del->range_end)[0])
		return true; /* "\0": every key from key on */
	return cmp_bytes(key, key_len, del->range_end, del->range_end_len) < 0;
}

/* etcd's rule, used to name the error the store gave: one branch may not put a key twice,
 * nor put a key that one of its deletes covers. Only run after a refusal, on at most the
 * few hundred ops a txn may hold. */
static bool has_duplicate(const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n && n <= 1024; i++) {
		if (ops[i].type != KV_OP_PUT)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (j == i)
				continue;
			if (ops[j].type == KV_OP_PUT && j > i &&
			    !cmp_bytes(ops[i].key, ops[i].key_len, ops[j].key, ops[j].key_len))
				return true;
			if (ops[j].type == KV_OP_DELETE &&
			    in_range(&ops[j], ops[i].key, ops[i].key_len))
				return true;
		}
	}
	return false;
}

static int h_txn(struct ctx *x, const json_t *body)
{
	struct kv_txn txn = {0};
	struct kv_compare *cmps = NULL;
	struct range_post *post_s, *post_f;
	const json_t *a = field(body, "compare", NULL);
	if (a && !json_is_array(a))
		return fail(x, GRPC_INVALID_ARGUMENT, "\"compare\" must be an array");
	size_t nc = a ? json_array_size(a) : 0;
	if (nc && !(cmps = ctx_calloc(x, nc, sizeof(*cmps))))
		return -1;
	for (size_t i = 0; i < nc; i++)
		if (parse_compare(x, json_array_get(a, i), &cmps[i]) < 0)
			return -1;
	struct kv_op *ops_s, *ops_f;
	if (parse_ops(x, body, "success", &ops_s, &post_s, &txn.n_success) < 0 ||
	    parse_ops(x, body, "failure", &ops_f, &post_f, &txn.n_failure) < 0)
		return -1;
	txn.compare = cmps;
	txn.n_compare = nc;
	txn.success = ops_s;
	txn.failure = ops_f;
	struct kv_txn_result res;
	int ret = kv_txn(x->gw->kv, &txn, &res);
	if (ret == -EINVAL &&
	    (has_duplicate(ops_s, txn.n_success) || has_duplicate(ops_f, txn.n_failure)))
		return fail(x, GRPC_INVALID_ARGUMENT, ERR_DUPLICATE_KEY);
	if (ret < 0)
		return kv_fail(x, ret, true);
	const struct range_post *posts = res.succeeded ? post_s : post_f;
	size_t n_ops = res.succeeded ? txn.n_success : txn.n_failure;
	/* etcd reports a range inside a txn at the revision it read: the one before the txn,
	 * plus one once an earlier op of the txn changed something. */
	bool changed = false;
	for (size_t i = 0; i < res.n_results; i++)
		changed |= res.results[i].type == KV_OP_PUT ||
			   (res.results[i].type == KV_OP_DELETE && res.results[i].deleted > 0);
	int64_t read_rev = changed ? res.revision - 1 : res.revision;
	json_t *o = json_object(), *arr = NULL;
	int err = !o ? -1 : json_object_set_new(o, "header", header_json(res.revision));
	if (!err)
		err = set_true(o, "succeeded", res.succeeded);
	if (!err && res.n_results) {
		arr = json_array();
		err = json_object_set_new(o, "responses", arr);
	}
	for (size_t i = 0; !err && i < res.n_results; i++) {
		static const struct range_post none;
		struct kv_op_result *r = &res.results[i];
		int64_t rev = res.revision;
		if (r->type == KV_OP_RANGE) {
			range_post_apply(&r->range, i < n_ops ? &posts[i] : &none);
			rev = read_rev;
		} else if (r->type == KV_OP_PUT || r->deleted > 0) {
			read_rev = res.revision;
		}
		err = json_array_append_new(arr, op_result_json(r, rev));
	}
	kv_txn_result_free(&res);
	return set_reply(x, o, err);
}

/* ---- compaction, status, auth ---- */

static int h_compact(struct ctx *x, const json_t *body)
{
	int64_t rev, cur = 0;
	bool physical;
	if (get_i64(x, body, "revision", NULL, &rev) < 0 ||
	    get_bool(x, body, "physical", NULL, &physical) < 0)
		return -1;
	int ret = kv_compact(x->gw->kv, rev, physical);
	if (ret < 0)
		return kv_fail(x, ret, false);
	kv_status(x->gw->kv, &cur);
	json_t *o = json_object();
	return set_reply(x, o, !o ? -1 : json_object_set_new(o, "header", header_json(cur)));
}

static int h_status(struct ctx *x, const json_t *body)
{
	int64_t cur;
	(void)body;
	int ret = kv_status(x->gw->kv, &cur);
	if (ret < 0)
		return kv_fail(x, ret, false);
	json_t *o = json_object();
	int err = !o ? -1 : json_object_set_new(o, "header", header_json(cur));
	if (!err)
		err = json_object_set_new(o, "version", json_string(API_VERSION));
	return set_reply(x, o, err);
}

static int h_auth(struct ctx *x, const json_t *body)
{
	(void)body;
	/* etcd's answer when auth is off; clients then go on without a token. */
	return fail(x, GRPC_FAILED_PRECONDITION, ERR_AUTH_OFF);
}

/* ---- HTTP plumbing ---- */

static const char *status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 417:
		return "Expectation Failed";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Internal Server Error";
	}
}

/* grpc-gateway's mapping of gRPC codes to HTTP statuses. */
static int http_status(int code)
{
	static const int map[] = {200, 408, 500, 400, 504, 404, 409, 403, 429,
				  400, 409, 400, 501, 500, 503, 500, 401};
	return code >= 0 && code < (int)(sizeof(map) / sizeof(map[0])) ? map[code] : 500;
}

/* Sends everything or fails (-EPIPE, -EAGAIN after SEND_TIMEOUT_S, ...). */
static int send_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int send_typed(struct conn *c, int status, const char *type, const char *body, size_t len,
		      bool keep)
{
	char head[256];
	int hn = snprintf(head, sizeof(head),
			  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
			  "Content-Length: %zu\r\n%s\r\n",
			  status, status_text(status), type, len,
			  keep ? "" : "Connection: close\r\n");
	char *all = malloc((size_t)hn + len);
	if (!all)
		return -ENOMEM;
	memcpy(all, head, (size_t)hn);
	memcpy(all + hn, body, len);
	int ret = send_all(c->fd, all, (size_t)hn + len);
	free(all);
	return ret;
}

static int send_response(struct conn *c, int status, const char *body, size_t len, bool keep)
{
	return send_typed(c, status, "application/json", body, len, keep);
}

static int send_json(struct conn *c, int status, json_t *o, bool keep)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	int ret;
	if (!s) {
		static const char e[] = "{\"error\":\"etcdfs gateway: out of memory\",\"code\":8,"
					"\"message\":\"etcdfs gateway: out of memory\"}";
		return send_response(c, 500, e, sizeof(e) - 1, keep);
	}
	ret = send_response(c, status, s, strlen(s), keep);
	free(s);
	return ret;
}

static int send_error(struct conn *c, int code, const char *msg, bool keep)
{
	json_t *o = json_pack("{s:s, s:s, s:i}", "error", msg, "message", msg, "code", code);
	int ret = send_json(c, http_status(code), o, keep);
	json_decref(o);
	return ret;
}

/* Closes the sending side and drops what the client still sends (bounded), so that the
 * reply is not lost to a reset caused by unread input. */
static void linger_drain(struct conn *c)
{
	char buf[65536];
	size_t total = 0;
	int64_t deadline = util_now_ms() + 2000;
	shutdown(c->fd, SHUT_WR);
	while (total < DRAIN_MAX) {
		int64_t left = deadline - util_now_ms();
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

/* Reads more input. >0 bytes read, 0 at EOF, -ETIMEDOUT, -ENOBUFS when the buffer is at its
 * bound, or another negative errno. */
static ssize_t fill(struct conn *c, int timeout_ms)
{
	if (c->in_off && c->in_len == c->in_cap) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in_len == c->in_cap) {
		if (c->in_cap >= IN_MAX)
			return -ENOBUFS;
		size_t cap = c->in_cap ? c->in_cap * 2 : 16384;
		if (cap > IN_MAX)
			cap = IN_MAX;
		char *p = realloc(c->in, cap);
		if (!p)
			return -ENOMEM;
		c->in = p;
		c->in_cap = cap;
	}
	for (;;) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		c->in_len += (size_t)n;
		return n;
	}
}

struct request {
	char method[16];
	char path[1024];
	int minor; /* HTTP/1.minor */
	bool keep_alive;
	bool chunked;
	bool expect_continue;
	long long content_length; /* -1: none */
	char *body;		  /* malloc'd, NUL-terminated */
	size_t body_len;
};

/* An HTTP-level refusal: status, message, and whether the connection can go on. */
struct http_err {
	int status;
	int code;
	const char *msg;
};

static int http_fail(struct http_err *e, int status, int code, const char *msg)
{
	e->status = status;
	e->code = code;
	e->msg = msg;
	return -1;
}

static bool is_token_char(unsigned char ch)
{
	return ch > 32 && ch < 127 && !strchr("()<>@,;:\\\"/[]?={}", ch);
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = 0;
	return s;
}

static bool has_token(const char *value, const char *tok)
{
	size_t tl = strlen(tok);
	for (const char *p = value; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		size_t n = (size_t)(e - p);
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == tl && !strncasecmp(p, tok, tl))
			return true;
		p = e;
	}
	return false;
}

/* Parses the head in head[0..len) (NUL-terminated copy, no NUL inside). */
static int parse_head(char *head, struct request *rq, struct http_err *e)
{
	char *save = NULL, *line = strtok_r(head, "\n", &save);
	if (!line)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "empty request");
	size_t ll = strlen(line);
	if (ll && line[ll - 1] == '\r')
		line[--ll] = 0;
	/* METHOD SP TARGET SP HTTP/1.x */
	char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || strchr(sp2 + 1, ' '))
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed request line");
	*sp1 = *sp2 = 0;
	size_t ml = strlen(line), tl = strlen(sp1 + 1);
	if (!ml || ml >= sizeof(rq->method) || !tl)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed request line");
	for (size_t i = 0; i < ml; i++)
		if (!is_token_char((unsigned char)line[i]))
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed method");
	if (tl >= sizeof(rq->path))
		return http_fail(e, 414, GRPC_INVALID_ARGUMENT, "request target too long");
	const char *ver = sp2 + 1;
	if (strncmp(ver, "HTTP/1.", 7) || (ver[7] != '0' && ver[7] != '1') || ver[8])
		return http_fail(e, strncmp(ver, "HTTP/", 5) ? 400 : 505, GRPC_INVALID_ARGUMENT,
				 "unsupported HTTP version");
	memcpy(rq->method, line, ml + 1);
	memcpy(rq->path, sp1 + 1, tl + 1);
	char *q = strchr(rq->path, '?');
	if (q)
		*q = 0;
	rq->minor = ver[7] - '0';
	rq->content_length = -1;
	bool close = false, keep = false, te = false;
	int n_headers = 0;
	while ((line = strtok_r(NULL, "\n", &save))) {
		ll = strlen(line);
		if (ll && line[ll - 1] == '\r')
			line[--ll] = 0;
		if (!ll)
			break;
		if (++n_headers > MAX_HEADERS)
			return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "too many header fields");
		if (line[0] == ' ' || line[0] == '\t')
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "folded header line");
		char *colon = strchr(line, ':');
		if (!colon || colon == line)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed header line");
		for (char *p = line; p < colon; p++)
			if (!is_token_char((unsigned char)*p))
				return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
						 "malformed header name");
		*colon = 0;
		char *v = trim(colon + 1);
		if (!strcasecmp(line, "Content-Length")) {
			size_t vl = strlen(v);
			if (!vl || vl > 18 || strspn(v, "0123456789") != vl)
				return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
						 "bad Content-Length");
			long long cl = strtoll(v, NULL, 10);
			if (rq->content_length >= 0 && rq->content_length != cl)
				return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
						 "conflicting Content-Length");
			rq->content_length = cl;
		} else if (!strcasecmp(line, "Transfer-Encoding")) {
			if (te || strcasecmp(v, "chunked"))
				return http_fail(e, 501, GRPC_UNIMPLEMENTED,
						 "unsupported Transfer-Encoding");
			te = true;
		} else if (!strcasecmp(line, "Connection")) {
			close |= has_token(v, "close");
			keep |= has_token(v, "keep-alive");
		} else if (!strcasecmp(line, "Expect")) {
			if (strcasecmp(v, "100-continue"))
				return http_fail(e, 417, GRPC_INVALID_ARGUMENT,
						 "unsupported expectation");
			rq->expect_continue = rq->minor >= 1;
		}
	}
	if (te && rq->content_length >= 0)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
				 "both Content-Length and Transfer-Encoding");
	rq->chunked = te;
	/* HTTP/1.0 clients get one request per connection (no keep-alive header games). */
	(void)keep;
	rq->keep_alive = rq->minor >= 1 && !close;
	return 0;
}

/* Finds the end of the head (after the empty line) in b[0..n); 0 if not there yet. */
static size_t head_end(const char *b, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (b[i] != '\n')
			continue;
		if (b[i + 1] == '\n')
			return i + 2;
		if (b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Reads a line ending in LF from the input (for chunk sizes and trailers); returns its
 * length without CR LF, the line starting at c->in + c->in_off, and *adv the bytes to consume.
 * -1 with e set on errors, or a negative errno (-2 style values are not used). */
static int read_line(struct conn *c, size_t max, size_t *len, size_t *adv, struct http_err *e)
{
	for (;;) {
		char *s = c->in + c->in_off;
		size_t avail = c->in_len - c->in_off;
		char *nl = memchr(s, '\n', avail < max ? avail : max);
		if (nl) {
			size_t n = (size_t)(nl - s);
			*adv = n + 1;
			if (n && s[n - 1] == '\r')
				n--;
			*len = n;
			return 0;
		}
		if (avail >= max)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed chunked body");
		ssize_t r = fill(c, IO_TIMEOUT_MS);
		if (r <= 0)
			return http_fail(e, 0, 0, NULL); /* status 0: just close */
	}
}

static int read_chunked(struct conn *c, struct request *rq, struct http_err *e)
{
	size_t cap = 0;
	for (;;) {
		size_t len, adv;
		if (read_line(c, 1024, &len, &adv, e) < 0)
			return -1;
		const char *s = c->in + c->in_off;
		size_t size = 0, i = 0;
		for (; i < len && i < 9; i++) {
			int d = s[i] >= '0' && s[i] <= '9'   ? s[i] - '0'
				: s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
				: s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 10
							     : -1;
			if (d < 0)
				break;
			size = size * 16 + (size_t)d;
		}
		if (!i || (i < len && s[i] != ';' && s[i] != ' ' && s[i] != '\t') || i > 8)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed chunk size");
		c->in_off += adv;
		if (size == 0)
			break;
		if (size > BODY_MAX || rq->body_len + size > BODY_MAX)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
		if (rq->body_len + size + 1 > cap) {
			size_t ncap = cap ? cap : 4096;
			while (ncap < rq->body_len + size + 1)
				ncap *= 2;
			char *p = realloc(rq->body, ncap);
			if (!p)
				return http_fail(e, 500, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			rq->body = p;
			cap = ncap;
		}
		size_t need = size + 1; /* data + at least LF */
		while (c->in_len - c->in_off < need + 1) {
			ssize_t r = fill(c, IO_TIMEOUT_MS);
			if (r <= 0)
				return http_fail(e, 0, 0, NULL);
		}
		memcpy(rq->body + rq->body_len, c->in + c->in_off, size);
		rq->body_len += size;
		c->in_off += size;
		const char *t = c->in + c->in_off;
		if (t[0] == '\r' && t[1] == '\n')
			c->in_off += 2;
		else if (t[0] == '\n')
			c->in_off += 1;
		else
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed chunk");
	}
	/* Trailer fields up to an empty line. */
	for (int n = 0;; n++) {
		size_t len, adv;
		if (n > MAX_HEADERS)
			return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "too many trailer fields");
		if (read_line(c, HEAD_MAX, &len, &adv, e) < 0)
			return -1;
		c->in_off += adv;
		if (!len)
			break;
	}
	if (!rq->body && !(rq->body = malloc(1)))
		return http_fail(e, 500, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	rq->body[rq->body_len] = 0;
	return 0;
}

/* Reads one request. 0: rq filled; 1: the connection ended quietly (EOF, idle timeout);
 * -1: e says what to answer before closing (status 0: close silently). */
static int read_request(struct conn *c, struct request *rq, struct http_err *e)
{
	size_t end;
	memset(rq, 0, sizeof(*rq));
	if (c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	bool started = false;
	for (;;) {
		/* Empty lines before a request line are allowed (RFC 9112 2.2). */
		while (c->in_off < c->in_len &&
		       (c->in[c->in_off] == '\r' || c->in[c->in_off] == '\n'))
			c->in_off++;
		if (c->in_off < c->in_len)
			started = true;
		end = head_end(c->in + c->in_off, c->in_len - c->in_off);
		if (end)
			break;
		if (c->in_len - c->in_off > HEAD_MAX)
			return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "request head too large");
		ssize_t r = fill(c, started ? IO_TIMEOUT_MS : IDLE_TIMEOUT_MS);
		if (r == 0 || (r == -ETIMEDOUT && !started) || r == -ECONNRESET)
			return 1;
		if (r < 0)
			return http_fail(e, r == -ETIMEDOUT ? 408 : 0, GRPC_INVALID_ARGUMENT,
					 "request timed out");
	}
	if (end > HEAD_MAX)
		return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "request head too large");
	char head[HEAD_MAX + 1];
	memcpy(head, c->in + c->in_off, end);
	head[end] = 0;
	if (memchr(head, 0, end))
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "NUL byte in request head");
	c->in_off += end;
	if (parse_head(head, rq, e) < 0)
		return -1;
	if (rq->chunked) {
		if (rq->expect_continue && send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
			return http_fail(e, 0, 0, NULL);
		return read_chunked(c, rq, e);
	}
	size_t cl = rq->content_length > 0 ? (size_t)rq->content_length : 0;
	if (rq->content_length > (long long)BODY_MAX)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
	if (cl && rq->expect_continue && c->in_len == c->in_off &&
	    send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
		return http_fail(e, 0, 0, NULL);
	while (c->in_len - c->in_off < cl) {
		ssize_t r = fill(c, IO_TIMEOUT_MS);
		if (r <= 0)
			return http_fail(e, r == -ETIMEDOUT ? 408 : 0, GRPC_INVALID_ARGUMENT,
					 "request timed out");
	}
	if (!(rq->body = malloc(cl + 1)))
		return http_fail(e, 500, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	memcpy(rq->body, c->in + c->in_off, cl);
	rq->body[cl] = 0;
	rq->body_len = cl;
	c->in_off += cl;
	return 0;
}

/* ---- watch streams ---- */

static const char *const filter_names[] = {"NOPUT", "NODELETE"};

struct stream;

struct watcher {
	struct stream *st;
	int64_t id;
	struct kv_watch *w;
	int64_t start_rev;
	bool progress_notify, no_put, no_delete;
	bool created;	       /* protected by st->lock */
	bool finished;	       /* protected by st->lock: canceled or compacted */
	int64_t delivered_rev; /* protected by st->lock: every event up to it was sent */
	int64_t last_send_ms;  /* protected by st->lock */
};

struct stream {
	struct conn *c;
	pthread_mutex_t lock; /* serializes chunks on the socket */
	bool broken;	      /* protected by lock: a send failed, nothing more is sent */
	struct watcher **ws;
	size_t n_ws;
	int64_t next_id;
};

/* Sends {"result": r} as one chunk. Called with st->lock held; steals r. */
static void stream_send(struct stream *st, json_t *r)
{
	json_t *o = r ? json_pack("{s:o}", "result", r) : NULL;
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s) {
		log_err("gateway: out of memory encoding a watch message; ending the stream");
		goto out_broken;
	}
	size_t n = strlen(s);
	char head[24];
	int hn = snprintf(head, sizeof(head), "%zx\r\n", n + 1);
	int ret = st->broken ? -EPIPE : send_all(st->c->fd, head, (size_t)hn);
	if (!ret)
		ret = send_all(st->c->fd, s, n);
	if (!ret)
		ret = send_all(st->c->fd, "\n\r\n", 3);
	free(s);
	if (!ret)
		return;
	if (ret != -EPIPE && ret != -ECONNRESET)
		log_info("gateway: watch client does not read (%s); closing its stream",
			 strerror(-ret));
out_broken:
	st->broken = true;
	shutdown(st->c->fd, SHUT_RDWR); /* wakes the connection thread */
}

static json_t *watch_msg(const struct watcher *wt, int64_t revision)
{
	json_t *r = json_object();
	if (r && (json_object_set_new(r, "header", header_json(revision)) < 0 ||
		  set_i64(r, "watch_id", wt->id) < 0)) {
		json_decref(r);
		return NULL;
	}
	return r;
}

static void send_created(struct watcher *wt, int64_t revision)
{
	json_t *r = watch_msg(wt, revision);
	if (r && json_object_set_new(r, "created", json_true()) < 0) {
		json_decref(r);
		r = NULL;
	}
	stream_send(wt->st, r);
	wt->created = true;
}

static void watch_cb(void *arg, const struct kv_watch_batch *b)
{
	struct watcher *wt = arg;
	struct stream *st = wt->st;
	json_t *r = NULL;
	pthread_mutex_lock(&st->lock);
	if (st->broken || wt->finished)
		goto out;
	if (!wt->created && b->state != KV_WATCH_DISCONNECTED) {
		/* etcd's created header carries the current revision; for a watch from now
		 * that is where events resume, which CONNECTED reports. */
		int64_t rev = b->state == KV_WATCH_CONNECTED ? b->revision : 0;
		if (wt->start_rev > 0 || b->state != KV_WATCH_CONNECTED) {
			int64_t cur;
			if (kv_status(st->c->gw->kv, &cur) == 0 && cur > rev)
				rev = cur;
		}
		send_created(wt, rev);
		if (b->state == KV_WATCH_CONNECTED)
			wt->delivered_rev = b->revision;
		wt->last_send_ms = util_now_ms();
	}
	switch (b->state) {
	case KV_WATCH_CONNECTED:
	case KV_WATCH_DISCONNECTED:
		/* A backend that reconnects resumes without loss or repetition. */
		break;
	case KV_WATCH_EVENTS: {
		json_t *evs = json_array();
		r = watch_msg(wt, b->revision);
		if (!r || !evs || json_object_set_new(r, "events", evs) < 0) {
			json_decref(r);
			stream_send(st, NULL);
			goto out;
		}
		for (size_t i = 0; i < b->n_events; i++) {
			const struct kv_event *ev = &b->events[i];
			bool del = ev->type == KV_EVENT_DELETE;
			if ((del && wt->no_delete) || (!del && wt->no_put))
				continue;
			json_t *e = json_object();
			if (!e || json_array_append_new(evs, e) < 0 ||
			    (del && json_object_set_new(e, "type", json_string("DELETE")) < 0) ||
			    json_object_set_new(e, "kv", kv_json(&ev->kv)) < 0) {
				json_decref(r);
				stream_send(st, NULL);
				goto out;
			}
		}
		wt->delivered_rev = b->revision;
		size_t n_sent = json_array_size(evs);
		if (!n_sent)
			json_object_del(r, "events"); /* jsonpb omits empty lists; frees evs */
		if (n_sent || wt->progress_notify) {
			stream_send(st, r);
			wt->last_send_ms = util_now_ms();
		} else {
			json_decref(r);
		}
		break;
	}
	case KV_WATCH_PROGRESS:
		wt->delivered_rev = b->revision;
		if (wt->progress_notify) {
			stream_send(st, watch_msg(wt, b->revision));
			wt->last_send_ms = util_now_ms();
		}
		break;
	case KV_WATCH_COMPACTED:
		/* etcd: compact_revision with canceled, and no header revision. */
		r = watch_msg(wt, 0);
		if (r && (json_object_set_new(r, "canceled", json_true()) < 0 ||
			  set_i64(r, "compact_revision", b->compact_revision) < 0)) {
			json_decref(r);
			r = NULL;
		}
		stream_send(st, r);
		wt->finished = true;
		break;
	case KV_WATCH_CANCELED:
		r = watch_msg(wt, b->revision);
		if (r &&
		    (json_object_set_new(r, "canceled", json_true()) < 0 ||
		     json_object_set_new(r, "cancel_reason",
					 json_string(strerror(-b->err ? -b->err : EIO))) < 0)) {
			json_decref(r);
			r = NULL;
		}
		stream_send(st, r);
		wt->finished = true;
		break;
	}
out:
	pthread_mutex_unlock(&st->lock);
}

/* Handles one create_request. The reply comes from the backend's CONNECTED callback. */
static void watch_create(struct stream *st, const json_t *o)
{
	struct ctx x = {.gw = st->c->gw};
	struct kv_watch_req req = {0};
	const json_t *filters = field(o, "filters", NULL);
	struct watcher *wt = calloc(1, sizeof(*wt));
	bool prev_kv;
	int ret;
	if (!wt) {
		oom(&x);
		goto out_refuse;
	}
	wt->st = st;
	wt->id = st->next_id;
	if (check_object(&x, o, "create_request") < 0 ||
	    get_bytes(&x, o, "key", NULL, &req.key, &req.key_len) < 0 ||
	    get_bytes(&x, o, "range_end", "rangeEnd", &req.range_end, &req.range_end_len) < 0 ||
	    get_i64(&x, o, "start_revision", "startRevision", &req.start_revision) < 0 ||
	    get_bool(&x, o, "progress_notify", "progressNotify", &wt->progress_notify) < 0 ||
	    get_bool(&x, o, "prev_kv", "prevKv", &prev_kv) < 0)
		goto out_refuse;
	if (filters && !json_is_array(filters)) {
		fail(&x, GRPC_INVALID_ARGUMENT, "\"filters\" must be an array");
		goto out_refuse;
	}
	for (size_t i = 0; filters && i < json_array_size(filters); i++) {
		json_t *tmp = json_pack("{s:O}", "f", json_array_get(filters, i));
		int f;
		ret = tmp ? get_enum(&x, tmp, "f", NULL, filter_names, 2, &f) : oom(&x);
		json_decref(tmp);
		if (ret < 0)
			goto out_refuse;
		if (f)
			wt->no_delete = true;
		else
			wt->no_put = true;
	}
	if (req.start_revision < 0) {
		fail(&x, GRPC_INVALID_ARGUMENT, "negative start_revision");
		goto out_refuse;
	}
	/* kv.h events carry no previous value: prev_kv is accepted and not honoured. */
	req.prev_kv = prev_kv;
	wt->start_rev = req.start_revision;
	struct watcher **ws = realloc(st->ws, (st->n_ws + 1) * sizeof(*ws));
	if (!ws) {
		oom(&x);
		goto out_refuse;
	}
	st->ws = ws;
	ret = kv_watch(st->c->gw->kv, &req, watch_cb, wt, &wt->w);
	if (ret < 0) {
		kv_fail(&x, ret, false);
		goto out_refuse;
	}
	st->ws[st->n_ws++] = wt;
	st->next_id++;
	ctx_free(&x);
	return;
out_refuse:
	/* etcd answers a failed create with created + canceled and watch_id -1. */
	log_info("gateway: watch refused: %s", x.msg);
	free(wt);
	pthread_mutex_lock(&st->lock);
	json_t *r = json_object();
	if (r && (json_object_set_new(r, "header", json_object()) < 0 ||
		  json_object_set_new(r, "watch_id", json_string("-1")) < 0 ||
		  json_object_set_new(r, "created", json_true()) < 0 ||
		  json_object_set_new(r, "canceled", json_true()) < 0 ||
		  json_object_set_new(r, "cancel_reason", json_string(x.msg)) < 0)) {
		json_decref(r);
		r = NULL;
	}
	stream_send(st, r);
	pthread_mutex_unlock(&st->lock);
	ctx_free(&x);
}

static void watch_cancel_req(struct stream *st, const json_t *o)
{
	struct ctx x = {.gw = st->c->gw};
	int64_t id;
	if (!json_is_object(o) || get_i64(&x, o, "watch_id", "watchId", &id) < 0)
		return;
	for (size_t i = 0; i < st->n_ws; i++) {
		struct watcher *wt = st->ws[i];
		if (wt->id != id || !wt->w)
			continue;
		kv_watch_cancel(st->c->gw->kv, wt->w);
		wt->w = NULL;
		int64_t cur = 0;
		kv_status(st->c->gw->kv, &cur);
		pthread_mutex_lock(&st->lock);
		if (!wt->finished) {
			json_t *r = watch_msg(wt, cur);
			if (r && json_object_set_new(r, "canceled", json_true()) < 0) {
				json_decref(r);
				r = NULL;
			}
			stream_send(st, r);
			wt->finished = true;
		}
		pthread_mutex_unlock(&st->lock);
	}
}

/* Sends a progress message for every live watch silent for interval_ms (or for all when
 * force: a progress_request). The revision is the last one fully delivered. */
static void send_progress(struct stream *st, long interval_ms, bool force)
{
	int64_t now = util_now_ms();
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->n_ws && !st->broken; i++) {
		struct watcher *wt = st->ws[i];
		if (!wt->created || wt->finished || !wt->w)
			continue;
		if (!force && (!wt->progress_notify || now - wt->last_send_ms < interval_ms))
			continue;
		stream_send(st, watch_msg(wt, wt->delivered_rev));
		wt->last_send_ms = now;
	}
	pthread_mutex_unlock(&st->lock);
}

static bool gw_stopping(struct store_gateway *gw)
{
	pthread_mutex_lock(&gw->lock);
	bool s = gw->stopping;
	pthread_mutex_unlock(&gw->lock);
	return s;
}

/* Serves POST /v3/watch until the client goes away or the gateway stops. The request body
 * holds one or more WatchRequest objects. */
static void serve_watch(struct conn *c, const struct request *rq)
{
	struct stream st = {.c = c};
	json_error_t jerr;
	size_t off = 0;
	json_t *msgs = json_array();
	if (!msgs) {
		send_error(c, GRPC_RESOURCE_EXHAUSTED, "etcdfs gateway: out of memory", false);
		return;
	}
	/* Parse everything first: a malformed body gets a plain error reply. */
	while (off < rq->body_len) {
		while (off < rq->body_len && strchr(" \t\r\n", rq->body[off]))
			off++;
		if (off >= rq->body_len)
			break;
		json_t *o = json_loadb(rq->body + off, rq->body_len - off, JSON_DISABLE_EOF_CHECK,
				       &jerr);
		if (!o || !json_is_object(o)) {
			char msg[256];
			snprintf(msg, sizeof(msg), "bad watch request: %s",
				 o ? "not an object" : jerr.text);
			json_decref(o);
			json_decref(msgs);
			send_error(c, GRPC_INVALID_ARGUMENT, msg, false);
			return;
		}
		off += jerr.position;
		json_array_append_new(msgs, o);
	}
	pthread_mutex_init(&st.lock, NULL);
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n";
	if (send_all(c->fd, head, sizeof(head) - 1) < 0)
		goto out;
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m)
	{
		const json_t *v;
		if ((v = field(m, "create_request", "createRequest")))
			watch_create(&st, v);
		else if ((v = field(m, "cancel_request", "cancelRequest")))
			watch_cancel_req(&st, v);
		else if (field(m, "progress_request", "progressRequest"))
			send_progress(&st, 0, true);
	}
	/* Now only the client's going away (or stop) ends the stream; input is dropped. */
	for (;;) {
		long interval = __atomic_load_n(&c->gw->progress_ms, __ATOMIC_RELAXED);
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, interval < 1000 ? (int)(interval / 2 + 1) : 500);
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0) {
			char buf[4096];
			ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				break;
		}
		pthread_mutex_lock(&st.lock);
		bool broken = st.broken;
		pthread_mutex_unlock(&st.lock);
		if (broken || gw_stopping(c->gw))
			break;
		send_progress(&st, interval, false);
	}
out:
	for (i = 0; i < st.n_ws; i++) {
		if (st.ws[i]->w)
			kv_watch_cancel(c->gw->kv, st.ws[i]->w);
		free(st.ws[i]);
	}
	free(st.ws);
	pthread_mutex_destroy(&st.lock);
	json_decref(msgs);
}

/* ---- dispatch ---- */

typedef int (*handler_fn)(struct ctx *x, const json_t *body);

static const struct route {
	const char *path;
	handler_fn fn;
} routes[] = {
	{"/v3/kv/range", h_range},	   {"/v3/kv/put", h_put},
	{"/v3/kv/deleterange", h_delete},  {"/v3/kv/txn", h_txn},
	{"/v3/kv/compaction", h_compact},  {"/v3/maintenance/status", h_status},
	{"/v3/auth/authenticate", h_auth}, {"/v3/watch", NULL},
};

/* Maps /v3beta/... and /v3alpha/... to /v3/... in place. */
static void normalize_path(char *p)
{
	static const char *const aliases[] = {"/v3beta/", "/v3alpha/"};
	for (size_t i = 0; i < 2; i++) {
		size_t n = strlen(aliases[i]);
		if (!strncmp(p, aliases[i], n)) {
			p[3] = '/';
			memmove(p + 4, p + n, strlen(p + n) + 1);
		}
	}
}

/* Answers one request. Returns false when the connection must end. */
static bool handle(struct conn *c, struct request *rq)
{
	struct store_gateway *gw = c->gw;
	normalize_path(rq->path);
	if (!strcmp(rq->method, "GET") && !strcmp(rq->path, "/health")) {
		int64_t rev;
		bool ok = kv_status(gw->kv, &rev) == 0;
		json_t *o = json_pack("{s:s}", "health", ok ? "true" : "false");
		int ret = send_json(c, ok ? 200 : 503, o, rq->keep_alive);
		json_decref(o);
		return !ret && rq->keep_alive;
	}
	if (!strcmp(rq->method, "GET") && !strcmp(rq->path, "/version")) {
		json_t *o = json_pack("{s:s, s:s}", "etcdserver", API_VERSION, "etcdcluster",
				      API_VERSION);
		int ret = send_json(c, 200, o, rq->keep_alive);
		json_decref(o);
		return !ret && rq->keep_alive;
	}
	const struct route *rt = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (!strcmp(rq->path, routes[i].path))
			rt = &routes[i];
	if (!rt) {
		/* What etcd's HTTP mux answers for a path it does not serve. */
		static const char nf[] = "Not Found\n";
		int ret = send_typed(c, 404, "text/plain; charset=utf-8", nf, sizeof(nf) - 1,
				     rq->keep_alive);
		return !ret && rq->keep_alive;
	}
	if (strcmp(rq->method, "POST")) {
		json_t *o = json_pack("{s:s, s:s, s:i}", "error", "Method Not Allowed", "message",
				      "Method Not Allowed", "code", GRPC_UNIMPLEMENTED);
		int ret = send_json(c, 405, o, rq->keep_alive);
		json_decref(o);
		return !ret && rq->keep_alive;
	}
	if (!rt->fn) {
		serve_watch(c, rq);
		return false;
	}
	struct ctx x = {.gw = gw};
	json_error_t jerr;
	json_t *body = NULL;
	size_t skip = strspn(rq->body, " \t\r\n");
	if (skip < rq->body_len) {
		body = json_loadb(rq->body, rq->body_len, 0, &jerr);
		if (!body)
			fail(&x, GRPC_INVALID_ARGUMENT, "invalid JSON: %s", jerr.text);
	} else {
		body = json_object(); /* an empty body is an empty request, as in grpc-gateway */
		if (!body)
			oom(&x);
	}
	if (body && !json_is_object(body))
		fail(&x, GRPC_INVALID_ARGUMENT, "the request must be a JSON object");
	else if (body)
		rt->fn(&x, body);
	json_decref(body);
	int ret;
	if (x.code == GRPC_OK && x.body) {
		ret = send_json(c, 200, x.body, rq->keep_alive);
	} else {
		if (x.code == GRPC_OK)
			fail(&x, GRPC_INTERNAL, "etcdfs gateway: no reply");
		log_debug("gateway: %s: %s (code %d)", rq->path, x.msg, x.code);
		ret = send_error(c, x.code, x.msg, rq->keep_alive);
	}
	ctx_free(&x);
	return !ret && rq->keep_alive;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	for (;;) {
		struct request rq;
		struct http_err e = {0};
		int ret = read_request(c, &rq, &e);
		if (ret == 1) {
			free(rq.body);
			break;
		}
		if (ret < 0) {
			free(rq.body);
			if (e.status) {
				log_debug("gateway: refusing a request: %s", e.msg);
				json_t *o = json_pack("{s:s, s:s, s:i}", "error", e.msg, "message",
						      e.msg, "code", e.code);
				send_json(c, e.status, o, false);
				json_decref(o);
				linger_drain(c);
			}
			break;
		}
		bool go_on = handle(c, &rq);
		free(rq.body);
		if (!go_on || gw_stopping(c->gw))
			break;
	}
	free(c->in);
	c->in = NULL;
	/* The client sees the end now; the descriptor itself is closed by the reaper. */
	shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_lock(&c->gw->lock);
	c->done = true;
	pthread_mutex_unlock(&c->gw->lock);
	return NULL;
}

/* Joins and frees connections whose thread has ended (all of them when all is set, after
 * their sockets were shut down). */
static void reap(struct store_gateway *gw, bool all)
{
	struct conn *dead = NULL;
	pthread_mutex_lock(&gw->lock);
	for (struct conn **pp = &gw->conns; *pp;) {
		struct conn *c = *pp;
		if (all || c->done) {
			*pp = c->next;
			c->next = dead;
			dead = c;
			gw->n_conns--;
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&gw->lock);
	while (dead) {
		struct conn *c = dead;
		dead = c->next;
		pthread_join(c->thread, NULL);
		close(c->fd);
		free(c);
	}
}

static void refuse_busy(int fd)
{
	static const char body[] =
		"{\"error\":\"etcdfs gateway: too many connections\","
		"\"code\":14,\"message\":\"etcdfs gateway: too many connections\"}";
	char msg[512];
	int n = snprintf(msg, sizeof(msg),
			 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 sizeof(body) - 1, body);
	if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("gateway: could not answer a refused connection: %s", strerror(errno));
	close(fd);
}

static void *accept_main(void *arg)
{
	struct store_gateway *gw = arg;
	for (;;) {
		struct pollfd p[2] = {{.fd = gw->lfd, .events = POLLIN},
				      {.fd = gw->wake[0], .events = POLLIN}};
		int r = poll(p, 2, 1000);
		reap(gw, false);
		if (r < 0 && errno != EINTR) {
			log_err("gateway: poll failed: %s", strerror(errno));
			usleep(100000);
			continue;
		}
		if (p[1].revents)
			break;
		if (r <= 0 || !(p[0].revents & POLLIN))
			continue;
		int fd = accept4(gw->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warn("gateway: cannot accept a connection: %s",
					 strerror(errno));
				usleep(100000);
			}
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		struct conn *c = calloc(1, sizeof(*c));
		pthread_mutex_lock(&gw->lock);
		bool busy = gw->n_conns >= MAX_CONNS || gw->stopping || !c;
		if (!busy) {
			c->gw = gw;
			c->fd = fd;
			if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
				busy = true;
			} else {
				c->next = gw->conns;
				gw->conns = c;
				gw->n_conns++;
			}
		}
		pthread_mutex_unlock(&gw->lock);
		if (busy) {
			log_warn("gateway: refusing a connection (%s)",
				 c ? "too many connections" : "out of memory");
			free(c);
			refuse_busy(fd);
		}
	}
	return NULL;
}

/* ---- start / stop ---- */

/* Splits "host:port" / "[v6]:port" into host and port. */
static int split_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size)
{
	const char *colon = strrchr(addr, ':');
	if (!colon || !colon[1] || strlen(colon + 1) >= port_size ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1) || atol(colon + 1) > 65535)
		return -EINVAL;
	const char *h = addr;
	size_t hl = (size_t)(colon - addr);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (!hl || hl >= host_size)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	strcpy(port, colon + 1);
	return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

int store_gateway_start(struct kv *kv, const char *listen_addr, struct store_gateway **out)
{
	char host[256], port[8];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
			*ai = NULL;
	int ret, fd = -1;
	*out = NULL;
	if (!kv || !listen_addr ||
	    split_addr(listen_addr, host, sizeof(host), port, sizeof(port)) < 0) {
		log_err("gateway: bad listen address '%s' (want IP:PORT)",
			listen_addr ? listen_addr : "(null)");
		return -EINVAL;
	}
	int gai = getaddrinfo(host, port, &hints, &ai);
	if (gai) {
		log_err("gateway: cannot resolve '%s': %s", listen_addr, gai_strerror(gai));
		return -EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		log_err("gateway: socket: %s", strerror(errno));
		goto out_err;
	}
	int one = 1;
	/* A restart on the same port must not wait for TIME_WAIT connections. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		ret = -errno;
		log_err("gateway: cannot listen on %s: %s", listen_addr, strerror(errno));
		goto out_err;
	}
	if (!is_loopback(ai->ai_addr))
		log_warn("gateway: listening on %s, which is not a loopback address: there is no "
			 "TLS and no authentication, anyone who reaches it can read and write the "
			 "whole keyspace",
			 listen_addr);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	struct store_gateway *gw = calloc(1, sizeof(*gw));
	if (!gw) {
		ret = -ENOMEM;
		goto out_err;
	}
	gw->kv = kv;
	gw->lfd = fd;
	gw->progress_ms = DEFAULT_PROGRESS_MS;
	gw->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						  : ((struct sockaddr_in *)&ss)->sin_port);
	pthread_mutex_init(&gw->lock, NULL);
	if (pipe2(gw->wake, O_CLOEXEC) < 0) {
		ret = -errno;
		goto out_free;
	}
	ret = -pthread_create(&gw->accept_thread, NULL, accept_main, gw);
	if (ret < 0) {
		log_err("gateway: cannot start a thread: %s", strerror(-ret));
		close(gw->wake[0]);
		close(gw->wake[1]);
		goto out_free;
	}
	freeaddrinfo(ai);
	log_info("gateway: serving the etcd v3 JSON API on %s (port %d)", listen_addr, gw->port);
	*out = gw;
	return 0;
out_free:
	pthread_mutex_destroy(&gw->lock);
	free(gw);
out_err:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return ret;
}

int store_gateway_port(const struct store_gateway *gw)
{
	return gw->port;
}

void store_gateway_set_progress_interval(struct store_gateway *gw, long ms)
{
	__atomic_store_n(&gw->progress_ms, ms > 0 ? ms : DEFAULT_PROGRESS_MS, __ATOMIC_RELAXED);
}

void store_gateway_stop(struct store_gateway *gw)
{
	if (!gw)
		return;
	pthread_mutex_lock(&gw->lock);
	gw->stopping = true;
	pthread_mutex_unlock(&gw->lock);
	char b = 1;
	if (write(gw->wake[1], &b, 1) < 0)
		log_warn("gateway: cannot wake the accept thread: %s", strerror(errno));
	pthread_join(gw->accept_thread, NULL);
	close(gw->lfd);
	pthread_mutex_lock(&gw->lock);
	for (struct conn *c = gw->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&gw->lock);
	reap(gw, true);
	close(gw->wake[0]);
	close(gw->wake[1]);
	pthread_mutex_destroy(&gw->lock);
	log_info("gateway: stopped");
	free(gw);
}
