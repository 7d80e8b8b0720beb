/* kvapi.c: the unary calls of etcd's JSON API over kv.h: range, put, deleterange, txn,
 * compaction, maintenance status and auth (which answers "not enabled").
 *
 * Range options kv.h lacks (min/max mod/create revision filters; limit, sort and count_only
 * inside a txn) are applied here as etcd applies them.
 */
#include "gateway_int.h"
#include "v3json/v3json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- range ---- */

static const char *const sort_orders[] = {"NONE", "ASCEND", "DESCEND"};
static const char *const sort_targets[] = {"KEY", "VERSION", "CREATE", "MOD", "VALUE"};

bool gw_range_has_filters(const struct range_post *p)
{
	return p->min_mod || p->max_mod || p->min_create || p->max_create;
}

bool gw_range_sorts_itself(const struct range_post *p)
{
	return p->sort_order == KV_SORT_DESCEND && p->sort_target != KV_SORT_KEY;
}

static int parse_range(struct ctx *x, const json_t *o, struct kv_range_req *r, struct range_post *p,
		       int64_t *revision)
{
	memset(r, 0, sizeof(*r));
	memset(p, 0, sizeof(*p));
	if (jp_get_bytes(x, o, "key", NULL, &r->key, &r->key_len) < 0 ||
	    jp_get_bytes(x, o, "range_end", "rangeEnd", &r->range_end, &r->range_end_len) < 0 ||
	    jp_get_i64(x, o, "limit", NULL, &p->limit) < 0 ||
	    jp_get_i64(x, o, "revision", NULL, revision) < 0 ||
	    jp_get_enum(x, o, "sort_order", "sortOrder", sort_orders, 3, &p->sort_order) < 0 ||
	    jp_get_enum(x, o, "sort_target", "sortTarget", sort_targets, 5, &p->sort_target) < 0 ||
	    jp_get_bool(x, o, "serializable", NULL, &r->serializable) < 0 ||
	    jp_get_bool(x, o, "keys_only", "keysOnly", &r->keys_only) < 0 ||
	    jp_get_bool(x, o, "count_only", "countOnly", &p->count_only) < 0 ||
	    jp_get_i64(x, o, "min_mod_revision", "minModRevision", &p->min_mod) < 0 ||
	    jp_get_i64(x, o, "max_mod_revision", "maxModRevision", &p->max_mod) < 0 ||
	    jp_get_i64(x, o, "min_create_revision", "minCreateRevision", &p->min_create) < 0 ||
	    jp_get_i64(x, o, "max_create_revision", "maxCreateRevision", &p->max_create) < 0)
		return -1;
	if (!r->key_len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
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

static int cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

/* The sort target alone, no tie-break. */
static int cmp_target(const struct kv_kv *a, const struct kv_kv *b, int target)
{
	switch (target) {
	case KV_SORT_VERSION:
		return cmp_i64(a->version, b->version);
	case KV_SORT_CREATE:
		return cmp_i64(a->create_revision, b->create_revision);
	case KV_SORT_MOD:
		return cmp_i64(a->mod_revision, b->mod_revision);
	case KV_SORT_VALUE:
		return kv_key_cmp(a->value, a->value ? a->value_len : 0, b->value,
				  b->value ? b->value_len : 0);
	default:
		return kv_key_cmp(a->key, a->key_len, b->key, b->key_len);
	}
}

/* etcd's order: by target in the asked direction; ties keep their ascending key order (etcd
 * sorts the key-ordered range with sort.Reverse, which leaves ties as they were). */
static int cmp_kv(const void *pa, const void *pb, void *arg)
{
	const struct range_post *p = arg;
	int c = cmp_target(pa, pb, p->sort_target);
	if (p->sort_order == KV_SORT_DESCEND)
		c = -c;
	return c ? c : cmp_target(pa, pb, KV_SORT_KEY);
}

void gw_range_post_apply(struct kv_range_result *r, const struct range_post *p)
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
	if (!key_asc && n > 1)
		qsort_r(r->kvs, n, sizeof(*r->kvs), cmp_kv, (void *)p);
	if (p->limit > 0 && n > (size_t)p->limit) {
		for (size_t i = (size_t)p->limit; i < n; i++)
			kv_kv_free(&r->kvs[i]);
		r->n_kvs = (size_t)p->limit;
		r->more = true;
	}
}

/* Splits a range between the backend and the gateway: when the gateway must sort or filter
 * (options kv.h lacks), the backend is asked for the whole range. Returns whether
 * gw_range_post_apply must then run on the result. */
bool gw_range_plan(struct kv_range_req *req, struct range_post *post)
{
	bool post_filter = gw_range_has_filters(post) && !post->count_only;
	bool post_sort = gw_range_sorts_itself(post) && !post->count_only;
	if (post_sort) {
		/* the whole range in key order; sorted, filtered and limited here */
		req->limit = 0;
		req->sort_order = KV_SORT_NONE;
		req->sort_target = KV_SORT_KEY;
	} else if (post_filter) {
		/* etcd filters the whole sorted range, then applies the limit. */
		req->limit = 0;
		post->sort_order = KV_SORT_NONE;
		post->sort_target = KV_SORT_KEY;
	}
	return post_filter || post_sort;
}

static json_t *range_json(const struct kv_range_result *r, int64_t revision)
{
	json_t *o = jp_reply(revision);
	return jp_done(o, !o || jp_set_kvs(o, "kvs", r->kvs, r->n_kvs) < 0 ||
				  v3json_set_true(o, "more", r->more) < 0 ||
				  jp_set_i64(o, "count", r->count) < 0);
}

int api_range(struct ctx *x, const json_t *body)
{
	struct kv_range_req req;
	struct range_post post;
	struct kv_range_result res;
	int64_t rev;
	if (parse_range(x, body, &req, &post, &rev) < 0)
		return -1;
	bool post_apply = gw_range_plan(&req, &post);
	int ret = kv_range(x->gw->kv, &req, &res);
	if (ret < 0)
		return ctx_kv_fail(x, ret, false);
	if (post_apply)
		gw_range_post_apply(&res, &post);
	ret = ctx_reply(x, range_json(&res, res.revision), 0);
	kv_range_result_free(&res);
	return ret;
}

/* ---- put, deleterange, txn ---- */

static int parse_put(struct ctx *x, const json_t *o, struct kv_op *op)
{
	bool ignore_value;
	memset(op, 0, sizeof(*op));
	op->type = KV_OP_PUT;
	if (jp_get_bytes(x, o, "key", NULL, &op->key, &op->key_len) < 0 ||
	    jp_get_bytes(x, o, "value", NULL, &op->value, &op->value_len) < 0 ||
	    jp_get_i64(x, o, "lease", NULL, &op->lease) < 0 ||
	    jp_get_bool(x, o, "prev_kv", "prevKv", &op->prev_kv) < 0 ||
	    jp_get_bool(x, o, "ignore_value", "ignoreValue", &ignore_value) < 0 ||
	    jp_get_bool(x, o, "ignore_lease", "ignoreLease", &op->ignore_lease) < 0)
		return -1;
	if (!op->key_len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	if (ignore_value)
		return ctx_fail(x, GRPC_UNIMPLEMENTED,
				"etcdfs gateway: ignore_value is not supported by this server");
	if (op->ignore_lease && op->lease)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_LEASE_PROVIDED);
	return 0;
}

static int parse_delete(struct ctx *x, const json_t *o, struct kv_op *op)
{
	memset(op, 0, sizeof(*op));
	op->type = KV_OP_DELETE;
	if (jp_get_bytes(x, o, "key", NULL, &op->key, &op->key_len) < 0 ||
	    jp_get_bytes(x, o, "range_end", "rangeEnd", &op->range_end, &op->range_end_len) < 0 ||
	    jp_get_bool(x, o, "prev_kv", "prevKv", &op->prev_kv) < 0)
		return -1;
	if (!op->key_len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	return 0;
}

static int run_one(struct ctx *x, const struct kv_op *op, struct kv_txn_result *res)
{
	struct kv_txn txn = {.success = op, .n_success = 1};
	int ret = kv_txn(x->gw->kv, &txn, res);
	if (ret < 0)
		return ctx_kv_fail(x, ret, true);
	if (res->n_results != 1 || res->results[0].type != op->type) {
		kv_txn_result_free(res);
		return ctx_fail(x, GRPC_INTERNAL, "etcdfs gateway: backend returned no result");
	}
	return 0;
}

int api_put(struct ctx *x, const json_t *body)
{
	struct kv_op op;
	struct kv_txn_result res;
	if (parse_put(x, body, &op) < 0 || run_one(x, &op, &res) < 0)
		return -1;
	json_t *o = jp_reply(res.revision);
	int err = 0;
	const struct kv_range_result *prev = &res.results[0].range;
	if (o && op.prev_kv && prev->n_kvs)
		err = json_object_set_new(o, "prev_kv", jp_kv(&prev->kvs[0]));
	kv_txn_result_free(&res);
	return ctx_reply(x, o, err);
}

static json_t *delete_json(const struct kv_op_result *r, int64_t revision)
{
	json_t *o = jp_reply(revision);
	return jp_done(o, !o || jp_set_i64(o, "deleted", r->deleted) < 0 ||
				  jp_set_kvs(o, "prev_kvs", r->range.kvs, r->range.n_kvs) < 0);
}

int api_delete(struct ctx *x, const json_t *body)
{
	struct kv_op op;
	struct kv_txn_result res;
	if (parse_delete(x, body, &op) < 0 || run_one(x, &op, &res) < 0)
		return -1;
	int ret = ctx_reply(x, delete_json(&res.results[0], res.revision), 0);
	kv_txn_result_free(&res);
	return ret;
}

static const char *const cmp_results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
static const char *const cmp_targets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};

static int parse_compare(struct ctx *x, const json_t *o, struct kv_compare *c)
{
	int result, target;
	memset(c, 0, sizeof(*c));
	if (jp_check_object(x, o, "compare") < 0 ||
	    jp_get_enum(x, o, "result", NULL, cmp_results, 4, &result) < 0 ||
	    jp_get_enum(x, o, "target", NULL, cmp_targets, 5, &target) < 0 ||
	    jp_get_bytes(x, o, "key", NULL, &c->key, &c->key_len) < 0 ||
	    jp_get_bytes(x, o, "range_end", "rangeEnd", &c->range_end, &c->range_end_len) < 0)
		return -1;
	c->result = (enum kv_cmp_result)result;
	c->target = (enum kv_cmp_target)target;
	/* The compared value is a oneof; an absent one compares as zero / empty, as in etcd. */
	switch (c->target) {
	case KV_CMP_VERSION:
		return jp_get_i64(x, o, "version", NULL, &c->number);
	case KV_CMP_CREATE:
		return jp_get_i64(x, o, "create_revision", "createRevision", &c->number);
	case KV_CMP_MOD:
		return jp_get_i64(x, o, "mod_revision", "modRevision", &c->number);
	case KV_CMP_LEASE:
		return jp_get_i64(x, o, "lease", NULL, &c->number);
	case KV_CMP_VALUE:
		return jp_get_bytes(x, o, "value", NULL, &c->value, &c->value_len);
	}
	return 0;
}

static int parse_op(struct ctx *x, const json_t *o, struct kv_op *op, struct range_post *post)
{
	const json_t *v;
	memset(post, 0, sizeof(*post));
	if (jp_check_object(x, o, "request op") < 0)
		return -1;
	if ((v = jp_field(o, "request_range", "requestRange"))) {
		struct kv_range_req r;
		int64_t rev;
		if (jp_check_object(x, v, "request_range") < 0 ||
		    parse_range(x, v, &r, post, &rev) < 0)
			return -1;
		if (rev)
			return ctx_fail(x, GRPC_UNIMPLEMENTED,
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
	if ((v = jp_field(o, "request_put", "requestPut")))
		return jp_check_object(x, v, "request_put") < 0 ? -1 : parse_put(x, v, op);
	if ((v = jp_field(o, "request_delete_range", "requestDeleteRange")))
		return jp_check_object(x, v, "request_delete_range") < 0 ? -1
									 : parse_delete(x, v, op);
	if (jp_field(o, "request_txn", "requestTxn"))
		return ctx_fail(x, GRPC_UNIMPLEMENTED,
				"etcdfs gateway: nested txns are not supported by this server");
	return ctx_fail(x, GRPC_INVALID_ARGUMENT, "request op without a request");
}

static int parse_ops(struct ctx *x, const json_t *o, const char *name, struct kv_op **ops,
		     struct range_post **posts, size_t *n)
{
	const json_t *a = jp_field(o, name, NULL);
	*ops = NULL;
	*posts = NULL;
	*n = 0;
	if (!a)
		return 0;
	if (!json_is_array(a))
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "\"%s\" must be an array", name);
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
	json_t *inner = NULL;
	const char *name;
	switch (r->type) {
	case KV_OP_RANGE:
		inner = range_json(&r->range, revision);
		name = "response_range";
		break;
	case KV_OP_PUT:
		inner = jp_reply(revision);
		name = "response_put";
		if (inner && r->range.n_kvs &&
		    json_object_set_new(inner, "prev_kv", jp_kv(&r->range.kvs[0])) < 0)
			goto out_err;
		break;
	case KV_OP_DELETE:
		inner = delete_json(r, revision);
		name = "response_delete_range";
		break;
	default:
		goto out_err;
	}
	return v3json_wrap(name, inner);
out_err:
	json_decref(inner);
	return NULL;
}

bool gw_txn_has_duplicate(const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n && n <= 1024; i++) {
		if (ops[i].type != KV_OP_PUT)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (j == i)
				continue;
			if (ops[j].type == KV_OP_PUT && j > i &&
			    !kv_key_cmp(ops[i].key, ops[i].key_len, ops[j].key, ops[j].key_len))
				return true;
			if (ops[j].type == KV_OP_DELETE &&
			    kv_key_in_range(ops[i].key, ops[i].key_len, ops[j].key, ops[j].key_len,
					    ops[j].range_end, ops[j].range_end_len))
				return true;
		}
	}
	return false;
}

int api_txn(struct ctx *x, const json_t *body)
{
	struct kv_txn txn = {0};
	struct kv_compare *cmps = NULL;
	struct range_post *post_s, *post_f;
	const json_t *a = jp_field(body, "compare", NULL);
	if (a && !json_is_array(a))
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "\"compare\" must be an array");
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
	if (ret == -EINVAL && (gw_txn_has_duplicate(ops_s, txn.n_success) ||
			       gw_txn_has_duplicate(ops_f, txn.n_failure)))
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_DUPLICATE_KEY);
	if (ret < 0)
		return ctx_kv_fail(x, ret, true);
	const struct range_post *posts = res.succeeded ? post_s : post_f;
	size_t n_ops = res.succeeded ? txn.n_success : txn.n_failure;
	/* etcd reports a range inside a txn at the revision it read: the one before the txn,
	 * plus one once an earlier op of the txn changed something. */
	bool changed = false;
	for (size_t i = 0; i < res.n_results; i++)
		changed |= res.results[i].type == KV_OP_PUT ||
			   (res.results[i].type == KV_OP_DELETE && res.results[i].deleted > 0);
	int64_t read_rev = changed ? res.revision - 1 : res.revision;
	json_t *o = jp_reply(res.revision), *arr = NULL;
	int err = !o ? -1 : v3json_set_true(o, "succeeded", res.succeeded);
	if (!err && res.n_results) {
		arr = json_array();
		err = json_object_set_new(o, "responses", arr);
	}
	for (size_t i = 0; !err && i < res.n_results; i++) {
		static const struct range_post none;
		struct kv_op_result *r = &res.results[i];
		int64_t rev = res.revision;
		if (r->type == KV_OP_RANGE) {
			gw_range_post_apply(&r->range, i < n_ops ? &posts[i] : &none);
			rev = read_rev;
		} else if (r->type == KV_OP_PUT || r->deleted > 0) {
			read_rev = res.revision;
		}
		err = json_array_append_new(arr, op_result_json(r, rev));
	}
	kv_txn_result_free(&res);
	return ctx_reply(x, o, err);
}

/* ---- compaction, status, auth ---- */

int api_compact(struct ctx *x, const json_t *body)
{
	int64_t rev, cur = 0;
	bool physical;
	if (jp_get_i64(x, body, "revision", NULL, &rev) < 0 ||
	    jp_get_bool(x, body, "physical", NULL, &physical) < 0)
		return -1;
	int ret = kv_compact(x->gw->kv, rev, physical);
	if (ret < 0)
		return ctx_kv_fail(x, ret, false);
	kv_status(x->gw->kv, &cur);
	return ctx_reply(x, jp_reply(cur), 0);
}

int api_status(struct ctx *x, const json_t *body)
{
	int64_t cur;
	(void)body;
	int ret = kv_status(x->gw->kv, &cur);
	if (ret < 0)
		return ctx_kv_fail(x, ret, false);
	json_t *o = jp_reply(cur);
	int err = !o ? -1 : json_object_set_new(o, "version", json_string(API_VERSION));
	return ctx_reply(x, o, err);
}

int api_auth(struct ctx *x, const json_t *body)
{
	(void)body;
	/* etcd's answer when auth is off; clients then go on without a token. */
	return ctx_fail(x, GRPC_FAILED_PRECONDITION, ERR_AUTH_OFF);
}
