/* grpc_kv.c: etcd's unary gRPC calls over kv.h: KV (Range, Put, DeleteRange, Txn, Compact),
 * Lease (Grant, Revoke, TimeToLive, Leases), Maintenance (Status, Alarm, HashKV, Hash) and
 * Cluster.MemberList, with etcd's status codes and messages. The streaming calls are in
 * grpc_watch.c; the table of every method served is at the end of this file.
 *
 * Range options kv.h lacks are applied as the JSON gateway applies them (kvapi.c).
 */
#include "grpc_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int grpc_reply(struct ctx *x, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *p = ctx_calloc(x, n ? n : 1, 1);
	if (!p)
		return -1;
	protobuf_c_message_pack(m, p);
	x->pb = p;
	x->pb_len = n;
	return 0;
}

void grpc_header_fill(struct gw *gw, V3pb__Header *h, int64_t rev)
{
	v3pb__header__init(h);
	h->cluster_id = gw->cluster_id;
	h->member_id = gw->member_id;
	h->revision = rev;
}

int grpc_reply_at(struct ctx *x, const ProtobufCMessage *m, V3pb__Header **header, int64_t rev)
{
	V3pb__Header *h = ctx_calloc(x, 1, sizeof(*h));
	if (!h)
		return -1;
	grpc_header_fill(x->gw, h, rev);
	*header = h;
	return grpc_reply(x, m);
}

void grpc_kv_fill(V3pb__KeyValue *o, const struct kv_kv *kv)
{
	v3pb__key_value__init(o);
	o->key.data = (uint8_t *)kv->key;
	o->key.len = kv->key_len;
	o->value.data = (uint8_t *)kv->value;
	o->value.len = kv->value ? kv->value_len : 0;
	o->create_revision = kv->create_revision;
	o->mod_revision = kv->mod_revision;
	o->version = kv->version;
	o->lease = kv->lease;
}

int grpc_kv_fail(struct ctx *x, int err, bool write, bool lease)
{
	if (err == -ENOENT && lease)
		return ctx_fail(x, GRPC_NOT_FOUND, ERR_LEASE_NOT_FOUND);
	if (err == -ENOSYS)
		return ctx_fail(x, GRPC_UNIMPLEMENTED,
				"etcdfs gateway: this backend has no leases");
	if (err == -EEXIST)
		return ctx_fail(x, GRPC_FAILED_PRECONDITION, ERR_LEASE_EXISTS);
	return ctx_kv_fail(x, err, write);
}

/* Borrowed KeyValues of kvs, as the pointer array a repeated field wants. */
static V3pb__KeyValue **kvs_pb(struct ctx *x, const struct kv_kv *kvs, size_t n)
{
	V3pb__KeyValue **a = ctx_calloc(x, n, sizeof(*a));
	V3pb__KeyValue *o = ctx_calloc(x, n, sizeof(*o));
	if (!a || !o)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		grpc_kv_fill(&o[i], &kvs[i]);
		a[i] = &o[i];
	}
	return a;
}

/* ---- Range ---- */

static int range_req(struct ctx *x, const V3pb__RangeRequest *r, struct kv_range_req *q,
		     struct range_post *p)
{
	memset(q, 0, sizeof(*q));
	memset(p, 0, sizeof(*p));
	if (!r->key.len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	q->key = r->key.data;
	q->key_len = r->key.len;
	q->range_end = r->range_end.data;
	q->range_end_len = r->range_end.len;
	q->revision = r->revision;
	q->serializable = r->serializable;
	q->keys_only = r->keys_only;
	p->limit = r->limit;
	p->count_only = r->count_only;
	p->sort_order = r->sort_order >= 0 && r->sort_order <= 2 ? r->sort_order : 0;
	p->sort_target = r->sort_target >= 0 && r->sort_target <= 4 ? r->sort_target : 0;
	p->min_mod = r->min_mod_revision;
	p->max_mod = r->max_mod_revision;
	p->min_create = r->min_create_revision;
	p->max_create = r->max_create_revision;
	/* etcd: a sort target other than KEY without an order sorts ascending. */
	if (p->sort_order == KV_SORT_NONE && p->sort_target != KV_SORT_KEY)
		p->sort_order = KV_SORT_ASCEND;
	q->limit = p->limit;
	q->count_only = p->count_only;
	q->sort_order = (enum kv_sort_order)p->sort_order;
	q->sort_target = (enum kv_sort_target)p->sort_target;
	return 0;
}

/* Fills o from res (borrowing its kvs). */
static int range_pb(struct ctx *x, V3pb__RangeResponse *o, V3pb__Header *h,
		    const struct kv_range_result *res, int64_t rev)
{
	v3pb__range_response__init(o);
	grpc_header_fill(x->gw, h, rev);
	o->header = h;
	o->more = res->more;
	o->count = res->count;
	o->n_kvs = res->n_kvs;
	if (res->n_kvs && !(o->kvs = kvs_pb(x, res->kvs, res->n_kvs)))
		return -1;
	return 0;
}

static int kv_range_call(struct ctx *x, void *req)
{
	V3pb__RangeRequest *r = req;
	struct kv_range_req q;
	struct range_post post;
	struct kv_range_result res;
	int ret;
	if (range_req(x, r, &q, &post) < 0)
		return -1;
	bool post_apply = gw_range_plan(&q, &post);
	ret = kv_range(x->gw->kv, &q, &res);
	if (ret < 0)
		return ctx_kv_fail(x, ret, false);
	if (post_apply)
		gw_range_post_apply(&res, &post);
	V3pb__RangeResponse o;
	V3pb__Header h;
	ret = range_pb(x, &o, &h, &res, res.revision);
	if (!ret)
		ret = grpc_reply(x, &o.base);
	kv_range_result_free(&res);
	return ret;
}

/* ---- Put, DeleteRange, Txn ---- */

static int put_op(struct ctx *x, const V3pb__PutRequest *r, struct kv_op *op,
		  bool allow_ignore_value)
{
	memset(op, 0, sizeof(*op));
	op->type = KV_OP_PUT;
	if (!r->key.len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	if (r->ignore_value && !allow_ignore_value)
		return ctx_fail(
			x, GRPC_UNIMPLEMENTED,
			"etcdfs gateway: ignore_value inside a txn is not supported by this "
			"server");
	if (r->ignore_value && r->value.len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_VALUE_PROVIDED);
	if (r->ignore_lease && r->lease)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_LEASE_PROVIDED);
	op->key = r->key.data;
	op->key_len = r->key.len;
	op->value = r->value.data;
	op->value_len = r->value.len;
	op->lease = r->lease;
	op->ignore_lease = r->ignore_lease;
	op->prev_kv = r->prev_kv;
	return 0;
}

static int delete_op(struct ctx *x, const V3pb__DeleteRangeRequest *r, struct kv_op *op)
{
	memset(op, 0, sizeof(*op));
	op->type = KV_OP_DELETE;
	if (!r->key.len)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_EMPTY_KEY);
	op->key = r->key.data;
	op->key_len = r->key.len;
	op->range_end = r->range_end.data;
	op->range_end_len = r->range_end.len;
	op->prev_kv = r->prev_kv;
	return 0;
}

static bool names_lease(const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ops[i].type == KV_OP_PUT && ops[i].lease)
			return true;
	return false;
}

static int run_one(struct ctx *x, const struct kv_op *op, struct kv_txn_result *res)
{
	struct kv_txn txn = {.success = op, .n_success = 1};
	int ret = kv_txn(x->gw->kv, &txn, res);
	if (ret < 0)
		return grpc_kv_fail(x, ret, true, names_lease(op, 1));
	if (res->n_results != 1 || res->results[0].type != op->type) {
		kv_txn_result_free(res);
		return ctx_fail(x, GRPC_INTERNAL, "etcdfs gateway: backend returned no result");
	}
	return 0;
}

/* etcd's ignore_value on a lone put: the key keeps its value (and must exist). kv.h has no
 * such op, so it is a put of the value read, on condition that the key's mod revision is
 * still the one read, retried while the key changes under it. */
static int run_keep_value(struct ctx *x, const struct kv_op *op, struct kv_txn_result *res)
{
	for (int tries = 0; tries < 32; tries++) {
		struct kv_kv cur;
		int ret = kv_get(x->gw->kv, op->key, op->key_len, &cur);
		if (ret == -ENOENT)
			return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_KEY_NOT_FOUND);
		if (ret < 0)
			return ctx_kv_fail(x, ret, false);
		struct kv_compare c = {.target = KV_CMP_MOD,
				       .result = KV_CMP_EQUAL,
				       .key = op->key,
				       .key_len = op->key_len,
				       .number = cur.mod_revision};
		struct kv_op put = *op;
		put.value = cur.value;
		put.value_len = cur.value_len;
		struct kv_txn txn = {
			.compare = &c, .n_compare = 1, .success = &put, .n_success = 1};
		ret = kv_txn(x->gw->kv, &txn, res);
		kv_kv_free(&cur);
		if (ret < 0)
			return grpc_kv_fail(x, ret, true, op->lease != 0);
		if (res->succeeded && res->n_results == 1 && res->results[0].type == KV_OP_PUT)
			return 0;
		kv_txn_result_free(res);
	}
	return ctx_fail(x, GRPC_UNAVAILABLE,
			"etcdfs gateway: the key kept changing under a put with ignore_value");
}

static int kv_put_call(struct ctx *x, void *req)
{
	V3pb__PutRequest *r = req;
	struct kv_op op;
	struct kv_txn_result res;
	int ret;
	if (put_op(x, r, &op, true) < 0 ||
	    (r->ignore_value ? run_keep_value(x, &op, &res) : run_one(x, &op, &res)) < 0)
		return -1;
	V3pb__PutResponse o = V3PB__PUT_RESPONSE__INIT;
	V3pb__Header h;
	V3pb__KeyValue prev;
	grpc_header_fill(x->gw, &h, res.revision);
	o.header = &h;
	if (op.prev_kv && res.results[0].range.n_kvs) {
		grpc_kv_fill(&prev, &res.results[0].range.kvs[0]);
		o.prev_kv = &prev;
	}
	ret = grpc_reply(x, &o.base);
	kv_txn_result_free(&res);
	return ret;
}

static int delete_pb(struct ctx *x, V3pb__DeleteRangeResponse *o, V3pb__Header *h,
		     const struct kv_op_result *r, int64_t rev)
{
	v3pb__delete_range_response__init(o);
	grpc_header_fill(x->gw, h, rev);
	o->header = h;
	o->deleted = r->deleted;
	o->n_prev_kvs = r->range.n_kvs;
	if (r->range.n_kvs && !(o->prev_kvs = kvs_pb(x, r->range.kvs, r->range.n_kvs)))
		return -1;
	return 0;
}

static int kv_delete_call(struct ctx *x, void *req)
{
	V3pb__DeleteRangeRequest *r = req;
	struct kv_op op;
	struct kv_txn_result res;
	int ret;
	if (delete_op(x, r, &op) < 0 || run_one(x, &op, &res) < 0)
		return -1;
	V3pb__DeleteRangeResponse o;
	V3pb__Header h;
	ret = delete_pb(x, &o, &h, &res.results[0], res.revision);
	if (!ret)
		ret = grpc_reply(x, &o.base);
	kv_txn_result_free(&res);
	return ret;
}

static int compare_of(struct ctx *x, const V3pb__Compare *c, struct kv_compare *k)
{
	memset(k, 0, sizeof(*k));
	if (c->result < 0 || c->result > 3 || c->target < 0 || c->target > 4)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "etcdserver: unknown compare");
	k->result = (enum kv_cmp_result)c->result;
	k->target = (enum kv_cmp_target)c->target;
	k->key = c->key.data;
	k->key_len = c->key.len;
	k->range_end = c->range_end.data;
	k->range_end_len = c->range_end.len;
	/* The operand is a oneof; one of another target (or none) compares as zero / empty,
	 * as etcd's generated getters do. */
	switch (c->target_union_case) {
	case V3PB__COMPARE__TARGET_UNION_VERSION:
		k->number = k->target == KV_CMP_VERSION ? c->version : 0;
		break;
	case V3PB__COMPARE__TARGET_UNION_CREATE_REVISION:
		k->number = k->target == KV_CMP_CREATE ? c->create_revision : 0;
		break;
	case V3PB__COMPARE__TARGET_UNION_MOD_REVISION:
		k->number = k->target == KV_CMP_MOD ? c->mod_revision : 0;
		break;
	case V3PB__COMPARE__TARGET_UNION_LEASE:
		k->number = k->target == KV_CMP_LEASE ? c->lease : 0;
		break;
	case V3PB__COMPARE__TARGET_UNION_VALUE:
		if (k->target == KV_CMP_VALUE) {
			k->value = c->value.data;
			k->value_len = c->value.len;
		}
		break;
	default:
		break;
	}
	return 0;
}

static int op_of(struct ctx *x, const V3pb__RequestOp *o, struct kv_op *op, struct range_post *p)
{
	memset(p, 0, sizeof(*p));
	switch (o->request_case) {
	case V3PB__REQUEST_OP__REQUEST_REQUEST_RANGE: {
		struct kv_range_req q;
		if (range_req(x, o->request_range, &q, p) < 0)
			return -1;
		if (q.revision)
			return ctx_fail(x, GRPC_UNIMPLEMENTED,
					"etcdfs gateway: a range at a revision inside a txn is not "
					"supported");
		memset(op, 0, sizeof(*op));
		op->type = KV_OP_RANGE;
		op->key = q.key;
		op->key_len = q.key_len;
		op->range_end = q.range_end;
		op->range_end_len = q.range_end_len;
		op->keys_only = q.keys_only;
		return 0;
	}
	case V3PB__REQUEST_OP__REQUEST_REQUEST_PUT:
		return put_op(x, o->request_put, op, false);
	case V3PB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
		return delete_op(x, o->request_delete_range, op);
	case V3PB__REQUEST_OP__REQUEST_REQUEST_TXN:
		return ctx_fail(x, GRPC_UNIMPLEMENTED,
				"etcdfs gateway: nested txns are not supported by this server");
	default:
		return ctx_fail(x, GRPC_INVALID_ARGUMENT,
				"etcdserver: request op without a request");
	}
}

static int ops_of(struct ctx *x, V3pb__RequestOp **in, size_t n, struct kv_op **ops,
		  struct range_post **posts)
{
	if (!(*ops = ctx_calloc(x, n, sizeof(**ops))) ||
	    !(*posts = ctx_calloc(x, n, sizeof(**posts))))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (op_of(x, in[i], &(*ops)[i], &(*posts)[i]) < 0)
			return -1;
	return 0;
}

/* One ResponseOp of a txn's result (borrowing r). */
static V3pb__ResponseOp *op_result_pb(struct ctx *x, struct kv_op_result *r, int64_t rev)
{
	V3pb__ResponseOp *o = ctx_calloc(x, 1, sizeof(*o));
	V3pb__Header *h = ctx_calloc(x, 1, sizeof(*h));
	if (!o || !h)
		return NULL;
	v3pb__response_op__init(o);
	switch (r->type) {
	case KV_OP_RANGE: {
		V3pb__RangeResponse *rr = ctx_calloc(x, 1, sizeof(*rr));
		if (!rr || range_pb(x, rr, h, &r->range, rev) < 0)
			return NULL;
		o->response_case = V3PB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
		o->response_range = rr;
		break;
	}
	case KV_OP_PUT: {
		V3pb__PutResponse *pr = ctx_calloc(x, 1, sizeof(*pr));
		if (!pr)
			return NULL;
		v3pb__put_response__init(pr);
		grpc_header_fill(x->gw, h, rev);
		pr->header = h;
		if (r->range.n_kvs) {
			V3pb__KeyValue *prev = ctx_calloc(x, 1, sizeof(*prev));
			if (!prev)
				return NULL;
			grpc_kv_fill(prev, &r->range.kvs[0]);
			pr->prev_kv = prev;
		}
		o->response_case = V3PB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
		o->response_put = pr;
		break;
	}
	case KV_OP_DELETE: {
		V3pb__DeleteRangeResponse *dr = ctx_calloc(x, 1, sizeof(*dr));
		if (!dr || delete_pb(x, dr, h, r, rev) < 0)
			return NULL;
		o->response_case = V3PB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
		o->response_delete_range = dr;
		break;
	}
	}
	return o;
}

static int txn_reply(struct ctx *x, struct kv_txn_result *res, const struct range_post *posts,
		     size_t n_ops)
{
	V3pb__TxnResponse o = V3PB__TXN_RESPONSE__INIT;
	V3pb__Header h;
	grpc_header_fill(x->gw, &h, res->revision);
	o.header = &h;
	o.succeeded = res->succeeded;
	/* etcd reports a range inside a txn at the revision it read: the one before the txn,
	 * plus one once an earlier op of the txn changed something. */
	bool changed = false;
	for (size_t i = 0; i < res->n_results; i++)
		changed |= res->results[i].type == KV_OP_PUT ||
			   (res->results[i].type == KV_OP_DELETE && res->results[i].deleted > 0);
	int64_t read_rev = changed ? res->revision - 1 : res->revision;
	if (res->n_results && !(o.responses = ctx_calloc(x, res->n_results, sizeof(*o.responses))))
		return -1;
	o.n_responses = res->n_results;
	for (size_t i = 0; i < res->n_results; i++) {
		static const struct range_post none;
		struct kv_op_result *r = &res->results[i];
		int64_t rev = res->revision;
		if (r->type == KV_OP_RANGE) {
			gw_range_post_apply(&r->range, i < n_ops ? &posts[i] : &none);
			rev = read_rev;
		} else if (r->type == KV_OP_PUT || r->deleted > 0) {
			read_rev = res->revision;
		}
		if (!(o.responses[i] = op_result_pb(x, r, rev)))
			return -1;
	}
	return grpc_reply(x, &o.base);
}

static int kv_txn_call(struct ctx *x, void *req)
{
	V3pb__TxnRequest *r = req;
	struct kv_txn txn = {0};
	struct kv_compare *cmps;
	struct kv_op *ops_s, *ops_f;
	struct range_post *post_s, *post_f;
	int ret;
	if (!(cmps = ctx_calloc(x, r->n_compare, sizeof(*cmps))))
		return -1;
	for (size_t i = 0; i < r->n_compare; i++)
		if (compare_of(x, r->compare[i], &cmps[i]) < 0)
			return -1;
	if (ops_of(x, r->success, r->n_success, &ops_s, &post_s) < 0 ||
	    ops_of(x, r->failure, r->n_failure, &ops_f, &post_f) < 0)
		return -1;
	txn = (struct kv_txn){cmps, r->n_compare, ops_s, r->n_success, ops_f, r->n_failure};
	struct kv_txn_result res;
	ret = kv_txn(x->gw->kv, &txn, &res);
	if (ret == -EINVAL && (gw_txn_has_duplicate(ops_s, txn.n_success) ||
			       gw_txn_has_duplicate(ops_f, txn.n_failure)))
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_DUPLICATE_KEY);
	if (ret < 0)
		return grpc_kv_fail(x, ret, true,
				    names_lease(ops_s, txn.n_success) ||
					    names_lease(ops_f, txn.n_failure));
	ret = txn_reply(x, &res, res.succeeded ? post_s : post_f,
			res.succeeded ? txn.n_success : txn.n_failure);
	kv_txn_result_free(&res);
	return ret;
}

static int kv_compact_call(struct ctx *x, void *req)
{
	V3pb__CompactionRequest *r = req;
	int64_t cur;
	int ret = kv_compact(x->gw->kv, r->revision, r->physical);
	if (ret < 0)
		return ctx_kv_fail(x, ret, false);
	if ((ret = ctx_current_rev(x, &cur)) < 0)
		return ret;
	V3pb__CompactionResponse o = V3PB__COMPACTION_RESPONSE__INIT;
	return grpc_reply_at(x, &o.base, &o.header, cur);
}

/* ---- Lease (KeepAlive is a stream: grpc_watch.c) ---- */

static int lease_grant_call(struct ctx *x, void *req)
{
	V3pb__LeaseGrantRequest *r = req;
	struct kv_lease l;
	int64_t cur;
	int ret = kv_lease_grant(x->gw->kv, r->id, r->ttl, &l);
	if (ret < 0)
		return grpc_kv_fail(x, ret, true, false);
	if ((ret = ctx_current_rev(x, &cur)) < 0)
		return ret;
	V3pb__LeaseGrantResponse o = V3PB__LEASE_GRANT_RESPONSE__INIT;
	o.id = l.id;
	o.ttl = l.granted_ttl ? l.granted_ttl : l.ttl;
	return grpc_reply_at(x, &o.base, &o.header, cur);
}

static int lease_revoke_call(struct ctx *x, void *req)
{
	V3pb__LeaseRevokeRequest *r = req;
	int64_t rev = 0;
	int ret = kv_lease_revoke(x->gw->kv, r->id, &rev);
	if (ret < 0)
		return grpc_kv_fail(x, ret, true, true);
	V3pb__LeaseRevokeResponse o = V3PB__LEASE_REVOKE_RESPONSE__INIT;
	return grpc_reply_at(x, &o.base, &o.header, rev);
}

static int lease_ttl_call(struct ctx *x, void *req)
{
	V3pb__LeaseTimeToLiveRequest *r = req;
	struct kv_lease l = {0};
	struct kv_range_result keys = {0};
	int64_t cur;
	int ret = -1;
	if (ctx_current_rev(x, &cur) < 0)
		goto out;
	ret = kv_lease_ttl(x->gw->kv, r->id, &l, r->keys ? &keys : NULL);
	V3pb__LeaseTimeToLiveResponse o = V3PB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
	o.id = r->id;
	if (ret == -ENOENT) {
		o.ttl = -1; /* etcd's answer for a lease that is gone: not an error */
	} else if (ret < 0) {
		ret = grpc_kv_fail(x, ret, false, false);
		goto out;
	} else {
		o.ttl = l.ttl;
		o.granted_ttl = l.granted_ttl;
		if (keys.n_kvs && !(o.keys = ctx_calloc(x, keys.n_kvs, sizeof(*o.keys)))) {
			ret = -1;
			goto out;
		}
		o.n_keys = keys.n_kvs;
		for (size_t i = 0; i < keys.n_kvs; i++) {
			o.keys[i].data = (uint8_t *)keys.kvs[i].key;
			o.keys[i].len = keys.kvs[i].key_len;
		}
	}
	ret = grpc_reply_at(x, &o.base, &o.header, cur);
out:
	kv_range_result_free(&keys);
	return ret;
}

static int lease_leases_call(struct ctx *x, void *req)
{
	(void)req; /* no fields */
	int64_t *ids = NULL, cur;
	size_t n = 0;
	int ret = kv_lease_list(x->gw->kv, &ids, &n);
	if (ret < 0)
		return grpc_kv_fail(x, ret, false, false);
	if (ctx_current_rev(x, &cur) < 0)
		goto out;
	V3pb__LeaseLeasesResponse o = V3PB__LEASE_LEASES_RESPONSE__INIT;
	V3pb__LeaseStatus *ls = ctx_calloc(x, n, sizeof(*ls));
	if (!ls || !(o.leases = ctx_calloc(x, n, sizeof(*o.leases))))
		goto out;
	for (size_t i = 0; i < n; i++) {
		v3pb__lease_status__init(&ls[i]);
		ls[i].id = ids[i];
		o.leases[i] = &ls[i];
	}
	o.n_leases = n;
	ret = grpc_reply_at(x, &o.base, &o.header, cur);
out:
	free(ids);
	return ret < 0 ? -1 : ret;
}

/* ---- Maintenance, Cluster ---- */

static void node_of(struct gw *gw, struct gw_node *n)
{
	memset(n, 0, sizeof(*n));
	n->leader = gw->member_id;
	if (gw->node_fn && gw->node_fn(gw->node_arg, n) < 0)
		memset(n, 0, sizeof(*n));
}

static int status_call(struct ctx *x, void *req)
{
	(void)req; /* no fields */
	int64_t cur;
	struct gw_node n;
	if (ctx_current_rev(x, &cur) < 0)
		return -1;
	node_of(x->gw, &n);
	V3pb__StatusResponse o = V3PB__STATUS_RESPONSE__INIT;
	o.version = API_VERSION;
	o.leader = n.leader;
	o.raft_index = n.raft_index;
	o.raft_applied_index = n.raft_index;
	return grpc_reply_at(x, &o.base, &o.header, cur);
}

static int alarm_call(struct ctx *x, void *req)
{
	V3pb__AlarmRequest *r = req;
	int64_t cur;
	int ret = -1;
	if (ctx_current_rev(x, &cur) < 0)
		return ret;
	/* No alarm is ever raised: GET and DEACTIVATE answer none; raising one is refused. */
	if (r->action == 1)
		return ctx_fail(x, GRPC_UNIMPLEMENTED,
				"etcdfs gateway: alarms cannot be raised on this server");
	V3pb__AlarmResponse o = V3PB__ALARM_RESPONSE__INIT;
	return grpc_reply_at(x, &o.base, &o.header, cur);
}

static uint32_t fnv1a(uint32_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

/* Our hash of the keyspace at rev: FNV-1a over every key's key, value and metadata in key
 * order. Equal on every member at one revision; not etcd's hash (etcd hashes its bolt
 * database, history included), so it is no use across etcd and etcdfs. */
static int hash_at(struct ctx *x, int64_t rev, uint32_t *hash, int64_t *at)
{
	struct kv_range_req q = {
		.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1, .revision = rev};
	struct kv_range_result res;
	int ret = kv_range(x->gw->kv, &q, &res);
	if (ret < 0)
		return ctx_kv_fail(x, ret, false);
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < res.n_kvs; i++) {
		const struct kv_kv *k = &res.kvs[i];
		int64_t meta[4] = {k->create_revision, k->mod_revision, k->version, k->lease};
		uint64_t lens[2] = {k->key_len, k->value_len};
		h = fnv1a(h, lens, sizeof(lens));
		h = fnv1a(h, k->key, k->key_len);
		h = fnv1a(h, k->value, k->value_len);
		h = fnv1a(h, meta, sizeof(meta));
	}
	*hash = h;
	*at = res.revision;
	kv_range_result_free(&res);
	return 0;
}

static int hashkv_call(struct ctx *x, void *req)
{
	V3pb__HashKVRequest *r = req;
	struct gw_node n;
	int64_t at;
	uint32_t hash;
	int ret = -1;
	if (hash_at(x, r->revision, &hash, &at) < 0)
		return ret;
	node_of(x->gw, &n);
	V3pb__HashKVResponse o = V3PB__HASH_KVRESPONSE__INIT;
	o.hash = hash;
	o.compact_revision = n.compact_revision;
	return grpc_reply_at(x, &o.base, &o.header, at);
}

static int hash_call(struct ctx *x, void *req)
{
	(void)req; /* no fields */
	int64_t at;
	uint32_t hash;
	if (hash_at(x, 0, &hash, &at) < 0)
		return -1;
	V3pb__HashResponse o = V3PB__HASH_RESPONSE__INIT;
	o.hash = hash;
	return grpc_reply_at(x, &o.base, &o.header, at);
}

static int cmp_member(const void *a, const void *b)
{
	const V3pb__Member *x = *(V3pb__Member *const *)a, *y = *(V3pb__Member *const *)b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* One member: this node with its client URL, another without (it is not known here). */
static V3pb__Member *member(struct ctx *x, uint64_t id, const char *peer_url)
{
	struct gw *gw = x->gw;
	V3pb__Member *m = ctx_calloc(x, 1, sizeof(*m));
	char **urls = ctx_calloc(x, 2, sizeof(*urls));
	char *name = ctx_calloc(x, sizeof(gw->name), 1);
	if (!m || !urls || !name)
		return NULL;
	v3pb__member__init(m);
	m->id = id;
	if (id == gw->member_id && gw->name[0])
		snprintf(name, sizeof(gw->name), "%s", gw->name);
	else
		snprintf(name, sizeof(gw->name), "etcdfs-%llu", (unsigned long long)id);
	m->name = name;
	if (peer_url) {
		urls[1] = (char *)peer_url;
		m->peer_urls = &urls[1];
		m->n_peer_urls = 1;
	}
	if (id == gw->member_id && gw->client_url[0]) {
		urls[0] = gw->client_url;
		m->client_urls = &urls[0];
		m->n_client_urls = 1;
	}
	return m;
}

static int member_list_call(struct ctx *x, void *req)
{
	(void)req; /* no fields */
	struct gw *gw = x->gw;
	int64_t cur;
	if (ctx_current_rev(x, &cur) < 0)
		return -1;
	V3pb__MemberListResponse o = V3PB__MEMBER_LIST_RESPONSE__INIT;
	V3pb__Header h;
	grpc_header_fill(gw, &h, cur);
	o.header = &h;
	size_t n = gw->n_peers ? gw->n_peers : 1;
	if (!(o.members = ctx_calloc(x, n, sizeof(*o.members))))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!(o.members[i] = gw->n_peers ? member(x, gw->peers[i].id, gw->peers[i].peer_url)
						 : member(x, gw->member_id, NULL)))
			return -1;
	o.n_members = n;
	qsort(o.members, n, sizeof(*o.members), cmp_member);
	return grpc_reply(x, &o.base);
}

/* ---- the methods served ---- */

#define UNARY(path, req, fn)                                                                       \
	{                                                                                          \
		path, &v3pb__##req##__descriptor, fn, NULL, NULL, NULL, false                      \
	}

const struct grpc_method grpc_methods[] = {
	UNARY("/etcdserverpb.KV/Range", range_request, kv_range_call),
	UNARY("/etcdserverpb.KV/Put", put_request, kv_put_call),
	UNARY("/etcdserverpb.KV/DeleteRange", delete_range_request, kv_delete_call),
	UNARY("/etcdserverpb.KV/Txn", txn_request, kv_txn_call),
	UNARY("/etcdserverpb.KV/Compact", compaction_request, kv_compact_call),
	{"/etcdserverpb.Watch/Watch", NULL, NULL, grpc_watch_open, grpc_watch_msg, grpc_watch_close,
	 true},
	UNARY("/etcdserverpb.Lease/LeaseGrant", lease_grant_request, lease_grant_call),
	UNARY("/etcdserverpb.Lease/LeaseRevoke", lease_revoke_request, lease_revoke_call),
	{"/etcdserverpb.Lease/LeaseKeepAlive", NULL, NULL, grpc_keepalive_open, grpc_keepalive_msg,
	 grpc_keepalive_close, false},
	UNARY("/etcdserverpb.Lease/LeaseTimeToLive", lease_time_to_live_request, lease_ttl_call),
	UNARY("/etcdserverpb.Lease/LeaseLeases", lease_leases_request, lease_leases_call),
	UNARY("/etcdserverpb.Maintenance/Status", status_request, status_call),
	UNARY("/etcdserverpb.Maintenance/Alarm", alarm_request, alarm_call),
	UNARY("/etcdserverpb.Maintenance/HashKV", hash_kvrequest, hashkv_call),
	UNARY("/etcdserverpb.Maintenance/Hash", hash_request, hash_call),
	{"/etcdserverpb.Maintenance/Snapshot", NULL, NULL, grpc_snapshot_open, grpc_snapshot_msg,
	 NULL, false},
	UNARY("/etcdserverpb.Cluster/MemberList", member_list_request, member_list_call),
};

const size_t grpc_n_methods = sizeof(grpc_methods) / sizeof(grpc_methods[0]);
