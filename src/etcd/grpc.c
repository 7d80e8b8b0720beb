/* grpc.c: etcd's native gRPC API over HTTP/2 (libcurl) and the protobuf-c codec of our own
 * rpc.proto messages (see grpc.h). The request loop (failover, auth retry, fallback to the
 * JSON gateway) lives in request.c; this file does one exchange with one endpoint. */
#include "grpc.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "core/log.h"
#include "etcdserver.pb-c.h"
#include "core/util.h"

/* ---- framing ---- */

void etcd_grpc_frame_header(uint8_t hdr[ETCD_GRPC_FRAME_HDR], size_t len)
{
	hdr[0] = 0; /* not compressed */
	hdr[1] = (uint8_t)(len >> 24);
	hdr[2] = (uint8_t)(len >> 16);
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
}

int etcd_grpc_frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg,
			 size_t *msg_len, size_t *consumed)
{
	*msg = NULL;
	*msg_len = 0;
	*consumed = 0;
	if (len < ETCD_GRPC_FRAME_HDR)
		return 0;
	if (buf[0] != 0)
		return -EPROTO; /* compressed, or a flag we do not know */
	size_t n = (size_t)buf[1] << 24 | (size_t)buf[2] << 16 | (size_t)buf[3] << 8 | buf[4];
	*msg_len = n;
	if (n > max)
		return -EMSGSIZE;
	if (len - ETCD_GRPC_FRAME_HDR < n)
		return 0;
	*msg = buf + ETCD_GRPC_FRAME_HDR;
	*consumed = ETCD_GRPC_FRAME_HDR + n;
	return 1;
}

void etcd_grpc_percent_decode(const char *in, size_t len, char *out, size_t size)
{
	size_t o = 0;
	if (!size)
		return;
	for (size_t i = 0; i < len && o + 1 < size; i++) {
		int hi, lo;
		if (in[i] == '%' && i + 2 < len && (hi = util_hexval(in[i + 1])) >= 0 &&
		    (lo = util_hexval(in[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = 0;
}

void etcd_grpc_status_error(int code, const char *msg, struct etcd_error *e)
{
	memset(e, 0, sizeof(*e));
	e->grpc_code = code;
	snprintf(e->msg, sizeof(e->msg), "%s", msg && *msg ? msg : "no message");
	e->err = etcd_error_errno(msg, code, &e->retry_auth);
	/* etcd answers OUT_OF_RANGE for compacted and future revisions; both messages are
	 * matched above, anything else out of range is a compaction-like refusal. */
	if (e->err == -EIO && code == ETCD_GRPC_OUT_OF_RANGE)
		e->err = -ERANGE;
}

/* ---- an arena for protobuf-c's unpacking ----
 *
 * Unpacking a page of 10k keys makes ~30k small allocations that are all freed together
 * right after the copy into kv.h structs; bump allocation from a few large blocks makes both
 * nearly free. */

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	alignas(max_align_t) unsigned char data[];
};

struct arena {
	struct arena_block *head;
	size_t next_cap;
};

static void *arena_alloc(void *ud, size_t size)
{
	struct arena *a = ud;
	const size_t align = alignof(max_align_t);
	size = (size + align - 1) & ~(align - 1);
	struct arena_block *b = a->head;
	if (!b || b->cap - b->used < size) {
		size_t cap = a->next_cap > size ? a->next_cap : size;
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
		if (a->next_cap < ((size_t)16 << 20))
			a->next_cap *= 2;
	}
	void *p = b->data + b->used;
	b->used += size;
	return p;
}

static void arena_free(void *ud, void *p)
{
	(void)ud, (void)p; /* everything goes at once in arena_destroy() */
}

static void arena_init(struct arena *a, ProtobufCAllocator *pa, size_t first)
{
	a->head = NULL;
	a->next_cap = first < 4096 ? 4096 : first;
	pa->alloc = arena_alloc;
	pa->free = arena_free;
	pa->allocator_data = a;
}

static void arena_destroy(struct arena *a)
{
	while (a->head) {
		struct arena_block *n = a->head->next;
		free(a->head);
		a->head = n;
	}
}

/* ---- messages ---- */

static ProtobufCBinaryData bin(const void *p, size_t n)
{
	ProtobufCBinaryData b = {.len = n, .data = (uint8_t *)(n ? p : NULL)};
	return b;
}

/* Packs msg behind a frame header into a malloc'd buffer. */
static int pack_framed(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(ETCD_GRPC_FRAME_HDR + n);
	if (!buf)
		return -ENOMEM;
	etcd_grpc_frame_header(buf, n);
	protobuf_c_message_pack(msg, buf + ETCD_GRPC_FRAME_HDR);
	*out = buf;
	*out_len = ETCD_GRPC_FRAME_HDR + n;
	return 0;
}

int etcd_grpc_range_req(const struct kv_range_req *req, const void *key, size_t key_len,
			const void *range_end, size_t range_end_len, int64_t revision,
			int64_t limit, uint8_t **out, size_t *out_len)
{
	V3pb__RangeRequest r = V3PB__RANGE_REQUEST__INIT;
	r.key = bin(key, key_len);
	r.range_end = bin(range_end, range_end_len);
	r.limit = limit;
	r.revision = revision;
	r.sort_order = (int32_t)req->sort_order;
	r.sort_target = (int32_t)req->sort_target;
	r.serializable = req->serializable;
	r.keys_only = req->keys_only;
	r.count_only = req->count_only;
	return pack_framed(&r.base, out, out_len);
}

/* Copies one Kv into a kv_kv. A missing message (NULL) is an empty one. */
static int copy_kv(const V3pb__KeyValue *src, bool keys_only, struct kv_kv *out)
{
	static const V3pb__KeyValue empty = V3PB__KEY_VALUE__INIT;
	memset(out, 0, sizeof(*out));
	if (!src)
		src = &empty;
	if (!(out->key = util_memdup(src->key.data, src->key.len)))
		return -ENOMEM;
	out->key_len = src->key.len;
	if (!keys_only) {
		if (!(out->value = util_memdup(src->value.data, src->value.len))) {
			kv_kv_free(out);
			return -ENOMEM;
		}
		out->value_len = src->value.len;
	}
	out->create_revision = src->create_revision;
	out->mod_revision = src->mod_revision;
	out->version = src->version;
	out->lease = src->lease;
	return 0;
}

/* Appends the kvs of a decoded RangeResponse to res and sets more, count and revision. */
static int fill_range(const V3pb__RangeResponse *r, bool keys_only, struct kv_range_result *res)
{
	res->revision = r->header ? r->header->revision : 0;
	res->count = r->count;
	res->more = r->more;
	if (!r->n_kvs)
		return 0;
	struct kv_kv *kvs = realloc(res->kvs, (res->n_kvs + r->n_kvs) * sizeof(*kvs));
	if (!kvs)
		return -ENOMEM;
	res->kvs = kvs;
	for (size_t i = 0; i < r->n_kvs; i++) {
		int ret = copy_kv(r->kvs[i], keys_only, &kvs[res->n_kvs]);
		if (ret < 0)
			return ret;
		res->n_kvs++;
	}
	return 0;
}

int etcd_grpc_parse_range(const uint8_t *msg, size_t len, bool keys_only,
			  struct kv_range_result *res)
{
	struct arena a;
	ProtobufCAllocator pa;
	int ret;
	arena_init(&a, &pa, len + len / 4 + 4096);
	V3pb__RangeResponse *r = v3pb__range_response__unpack(&pa, len, msg);
	ret = r ? fill_range(r, keys_only, res) : -EINVAL;
	arena_destroy(&a);
	return ret;
}

/* ---- transactions ---- */

/* Room for one operation of a branch and the request it points to. */
struct op_slot {
	V3pb__RequestOp op;
	union {
		V3pb__RangeRequest range;
		V3pb__PutRequest put;
		V3pb__DeleteRangeRequest del;
	} u;
};

static int fill_cmp(const struct kv_compare *c, V3pb__Compare *m)
{
	*m = (V3pb__Compare)V3PB__COMPARE__INIT;
	m->result = (int32_t)c->result;
	m->target = (int32_t)c->target;
	m->key = bin(c->key, c->key_len);
	m->range_end = bin(c->range_end, c->range_end_len);
	/* Setting the oneof case is what makes protobuf-c send the operand when it is 0 or
	 * empty (see etcdserver.proto). */
	switch (c->target) {
	case KV_CMP_VERSION:
		m->target_union_case = V3PB__COMPARE__TARGET_UNION_VERSION;
		m->version = c->number;
		break;
	case KV_CMP_CREATE:
		m->target_union_case = V3PB__COMPARE__TARGET_UNION_CREATE_REVISION;
		m->create_revision = c->number;
		break;
	case KV_CMP_MOD:
		m->target_union_case = V3PB__COMPARE__TARGET_UNION_MOD_REVISION;
		m->mod_revision = c->number;
		break;
	case KV_CMP_VALUE:
		m->target_union_case = V3PB__COMPARE__TARGET_UNION_VALUE;
		m->value = bin(c->value, c->value_len);
		break;
	case KV_CMP_LEASE:
		m->target_union_case = V3PB__COMPARE__TARGET_UNION_LEASE;
		m->lease = c->number;
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

/* The same fields as the JSON path sends (etcd_json_txn_req). */
static int fill_op(const struct kv_op *op, struct op_slot *s)
{
	s->op = (V3pb__RequestOp)V3PB__REQUEST_OP__INIT;
	switch (op->type) {
	case KV_OP_RANGE:
		s->u.range = (V3pb__RangeRequest)V3PB__RANGE_REQUEST__INIT;
		s->u.range.key = bin(op->key, op->key_len);
		s->u.range.range_end = bin(op->range_end, op->range_end_len);
		s->u.range.keys_only = op->keys_only;
		s->op.request_case = V3PB__REQUEST_OP__REQUEST_REQUEST_RANGE;
		s->op.request_range = &s->u.range;
		break;
	case KV_OP_PUT:
		s->u.put = (V3pb__PutRequest)V3PB__PUT_REQUEST__INIT;
		s->u.put.key = bin(op->key, op->key_len);
		s->u.put.value = bin(op->value, op->value_len);
		s->u.put.lease = op->lease;
		s->u.put.prev_kv = op->prev_kv;
		s->u.put.ignore_lease = op->ignore_lease;
		s->op.request_case = V3PB__REQUEST_OP__REQUEST_REQUEST_PUT;
		s->op.request_put = &s->u.put;
		break;
	case KV_OP_DELETE:
		s->u.del = (V3pb__DeleteRangeRequest)V3PB__DELETE_RANGE_REQUEST__INIT;
		s->u.del.key = bin(op->key, op->key_len);
		s->u.del.range_end = bin(op->range_end, op->range_end_len);
		s->u.del.prev_kv = op->prev_kv;
		s->op.request_case = V3PB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
		s->op.request_delete_range = &s->u.del;
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

int etcd_grpc_txn_req(const struct kv_txn *txn, uint8_t **out, size_t *out_len)
{
	V3pb__TxnRequest t = V3PB__TXN_REQUEST__INIT;
	size_t n_ops = txn->n_success + txn->n_failure;
	/* One block each for the structs and the pointer arrays protobuf-c wants; +1 keeps
	 * calloc() from returning NULL for an empty txn. */
	V3pb__Compare *cmps = calloc(txn->n_compare + 1, sizeof(*cmps));
	V3pb__Compare **cmp_ptrs = calloc(txn->n_compare + 1, sizeof(*cmp_ptrs));
	struct op_slot *slots = calloc(n_ops + 1, sizeof(*slots));
	V3pb__RequestOp **op_ptrs = calloc(n_ops + 1, sizeof(*op_ptrs));
	int ret = -ENOMEM;
	*out = NULL;
	*out_len = 0;
	if (!cmps || !cmp_ptrs || !slots || !op_ptrs)
		goto out;
	for (size_t i = 0; i < txn->n_compare; i++) {
		if ((ret = fill_cmp(&txn->compare[i], &cmps[i])) < 0)
			goto out;
		cmp_ptrs[i] = &cmps[i];
	}
	for (size_t i = 0; i < n_ops; i++) {
		const struct kv_op *op =
			i < txn->n_success ? &txn->success[i] : &txn->failure[i - txn->n_success];
		if ((ret = fill_op(op, &slots[i])) < 0)
			goto out;
		op_ptrs[i] = &slots[i].op;
	}
	t.n_compare = txn->n_compare;
	t.compare = cmp_ptrs;
	t.n_success = txn->n_success;
	t.success = op_ptrs;
	t.n_failure = txn->n_failure;
	t.failure = op_ptrs + txn->n_success;
	ret = pack_framed(&t.base, out, out_len);
out:
	free(cmps);
	free(cmp_ptrs);
	free(slots);
	free(op_ptrs);
	return ret;
}

/* Appends copies of kvs to res (prev kvs: values always present). */
static int append_prev(V3pb__KeyValue *const *kvs, size_t n, struct kv_range_result *res)
{
	if (!n)
		return 0;
	struct kv_kv *p = realloc(res->kvs, (res->n_kvs + n) * sizeof(*p));
	if (!p)
		return -ENOMEM;
	res->kvs = p;
	for (size_t i = 0; i < n; i++) {
		int ret = copy_kv(kvs[i], false, &p[res->n_kvs]);
		if (ret < 0)
			return ret;
		res->n_kvs++;
	}
	return 0;
}

/* One ResponseOp, filled like the JSON path's parse_op_result(): every result carries the
 * txn's revision; prev kvs count as the range of a put or delete. */
static int fill_op_result(const V3pb__ResponseOp *o, bool keys_only, int64_t revision,
			  struct kv_op_result *r)
{
	int ret;
	switch (o->response_case) {
	case V3PB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
		r->type = KV_OP_RANGE;
		ret = fill_range(o->response_range, keys_only, &r->range);
		break;
	case V3PB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
		r->type = KV_OP_PUT;
		ret = o->response_put->prev_kv
			      ? append_prev(&o->response_put->prev_kv, 1, &r->range)
			      : 0;
		r->range.count = (int64_t)r->range.n_kvs;
		break;
	case V3PB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
		r->type = KV_OP_DELETE;
		r->deleted = o->response_delete_range->deleted;
		ret = append_prev(o->response_delete_range->prev_kvs,
				  o->response_delete_range->n_prev_kvs, &r->range);
		r->range.count = (int64_t)r->range.n_kvs;
		break;
	default:
		/* No result we know: a nested txn's (we never send one) or one from a
		 * future etcd. */
		return -EINVAL;
	}
	r->range.revision = revision;
	return ret;
}

int etcd_grpc_parse_txn(const uint8_t *msg, size_t len, const struct kv_txn *txn,
			struct kv_txn_result *res)
{
	struct arena a;
	ProtobufCAllocator pa;
	int ret = 0;
	arena_init(&a, &pa, len + len / 4 + 4096);
	V3pb__TxnResponse *t = v3pb__txn_response__unpack(&pa, len, msg);
	if (!t) {
		ret = -EINVAL;
		goto out;
	}
	res->revision = t->header ? t->header->revision : 0;
	res->succeeded = t->succeeded;
	if (!t->n_responses)
		goto out;
	const struct kv_op *ops = t->succeeded ? txn->success : txn->failure;
	size_t n_ops = t->succeeded ? txn->n_success : txn->n_failure;
	if (!(res->results = calloc(t->n_responses, sizeof(*res->results)))) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < t->n_responses; i++) {
		/* Count the entry first so that a partial decode is freed by the caller. */
		res->n_results++;
		bool keys_only = i < n_ops && ops[i].type == KV_OP_RANGE && ops[i].keys_only;
		ret = fill_op_result(t->responses[i], keys_only, res->revision, &res->results[i]);
		if (ret < 0)
			goto out;
	}
out:
	arena_destroy(&a);
	return ret;
}

/* ---- leases ---- */

const char *etcd_grpc_lease_path(enum etcd_lease_op op)
{
	static const char *const paths[] = {
		[ETCD_LEASE_GRANT] = "/etcdserverpb.Lease/LeaseGrant",
		[ETCD_LEASE_REVOKE] = "/etcdserverpb.Lease/LeaseRevoke",
		[ETCD_LEASE_KEEPALIVE] = "/etcdserverpb.Lease/LeaseKeepAlive",
		[ETCD_LEASE_TTL] = "/etcdserverpb.Lease/LeaseTimeToLive",
		[ETCD_LEASE_LIST] = "/etcdserverpb.Lease/LeaseLeases",
	};
	return paths[op];
}

void etcd_lease_reply_free(struct etcd_lease_reply *r)
{
	kv_range_result_free(&r->keys);
	free(r->ids);
	r->ids = NULL;
	r->n_ids = 0;
}

int etcd_grpc_lease_req(enum etcd_lease_op op, int64_t id, int64_t ttl, bool keys, uint8_t **out,
			size_t *out_len)
{
	V3pb__LeaseGrantRequest g = V3PB__LEASE_GRANT_REQUEST__INIT;
	/* LeaseRevokeRequest and LeaseKeepAliveRequest are the same on the wire (id = 1) */
	V3pb__LeaseRevokeRequest i = V3PB__LEASE_REVOKE_REQUEST__INIT;
	V3pb__LeaseTimeToLiveRequest t = V3PB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
	V3pb__LeaseLeasesRequest l = V3PB__LEASE_LEASES_REQUEST__INIT;
	switch (op) {
	case ETCD_LEASE_GRANT:
		g.id = id;
		g.ttl = ttl;
		return pack_framed(&g.base, out, out_len);
	case ETCD_LEASE_TTL:
		t.id = id;
		t.keys = keys;
		return pack_framed(&t.base, out, out_len);
	case ETCD_LEASE_LIST:
		return pack_framed(&l.base, out, out_len);
	default:
		i.id = id;
		return pack_framed(&i.base, out, out_len);
	}
}

static int fill_lease_ttl(const V3pb__LeaseTimeToLiveResponse *r, struct etcd_lease_reply *out)
{
	out->revision = r->header ? r->header->revision : 0;
	out->id = r->id;
	out->ttl = r->ttl;
	out->granted_ttl = r->granted_ttl;
	if (!r->n_keys)
		return 0;
	out->keys.kvs = calloc(r->n_keys, sizeof(*out->keys.kvs));
	if (!out->keys.kvs)
		return -ENOMEM;
	for (size_t k = 0; k < r->n_keys; k++) {
		struct kv_kv *kv = &out->keys.kvs[k];
		if (!(kv->key = util_memdup(r->keys[k].data, r->keys[k].len)))
			return -ENOMEM;
		kv->key_len = r->keys[k].len;
		out->keys.n_kvs = k + 1;
	}
	out->keys.count = (int64_t)r->n_keys;
	out->keys.revision = out->revision;
	return 0;
}

static int fill_lease_list(const V3pb__LeaseLeasesResponse *r, struct etcd_lease_reply *out)
{
	out->revision = r->header ? r->header->revision : 0;
	if (!r->n_leases)
		return 0;
	out->ids = calloc(r->n_leases, sizeof(*out->ids));
	if (!out->ids)
		return -ENOMEM;
	for (size_t k = 0; k < r->n_leases; k++)
		out->ids[k] = r->leases[k] ? r->leases[k]->id : 0;
	out->n_ids = r->n_leases;
	return 0;
}

int etcd_grpc_parse_lease(enum etcd_lease_op op, const uint8_t *msg, size_t len,
			  struct etcd_lease_reply *out)
{
	struct arena a;
	ProtobufCAllocator pa;
	int ret = -EINVAL;
	memset(out, 0, sizeof(*out));
	arena_init(&a, &pa, len + len / 4 + 4096);
	if (op == ETCD_LEASE_TTL) {
		V3pb__LeaseTimeToLiveResponse *r =
			v3pb__lease_time_to_live_response__unpack(&pa, len, msg);
		if (r)
			ret = fill_lease_ttl(r, out);
	} else if (op == ETCD_LEASE_LIST) {
		V3pb__LeaseLeasesResponse *r = v3pb__lease_leases_response__unpack(&pa, len, msg);
		if (r)
			ret = fill_lease_list(r, out);
	} else {
		/* Grant, Revoke (header alone) and KeepAlive (TTL 0: the lease is gone)
		 * responses share fields 1-3 on the wire */
		V3pb__LeaseGrantResponse *r = v3pb__lease_grant_response__unpack(&pa, len, msg);
		if (r) {
			out->revision = r->header ? r->header->revision : 0;
			out->id = r->id;
			out->ttl = r->ttl;
			ret = 0;
		}
	}
	arena_destroy(&a);
	if (ret < 0)
		etcd_lease_reply_free(out);
	return ret;
}

int etcd_grpc_watch_req(const struct kv_watch_req *req, int64_t start_revision, uint8_t **out,
			size_t *out_len)
{
	V3pb__WatchCreateRequest c = V3PB__WATCH_CREATE_REQUEST__INIT;
	V3pb__WatchRequest w = V3PB__WATCH_REQUEST__INIT;
	c.key = bin(req->key, req->key_len);
	c.range_end = bin(req->range_end, req->range_end_len);
	c.start_revision = start_revision;
	c.progress_notify = true;
	c.prev_kv = req->prev_kv;
	w.request_union_case = V3PB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
	w.create_request = &c;
	return pack_framed(&w.base, out, out_len);
}

int etcd_grpc_parse_watch(const uint8_t *msg, size_t len, struct etcd_watch_msg *m)
{
	struct arena a;
	ProtobufCAllocator pa;
	int ret = 0;
	memset(m, 0, sizeof(*m));
	arena_init(&a, &pa, len + len / 4 + 4096);
	V3pb__WatchResponse *r = v3pb__watch_response__unpack(&pa, len, msg);
	if (!r) {
		ret = -EINVAL;
		goto out;
	}
	m->revision = r->header ? r->header->revision : 0;
	m->created = r->created;
	m->canceled = r->canceled;
	m->compact_revision = r->compact_revision;
	if (m->canceled && r->cancel_reason && *r->cancel_reason) {
		m->error.grpc_code = -1;
		snprintf(m->error.msg, sizeof(m->error.msg), "%s", r->cancel_reason);
		m->error.err = etcd_error_errno(m->error.msg, -1, &m->error.retry_auth);
	}
	if (!r->n_events)
		goto out;
	if (!(m->events = calloc(r->n_events, sizeof(*m->events)))) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < r->n_events; i++) {
		const V3pb__Event *ev = r->events[i];
		if (ev->type != 0 && ev->type != 1) {
			ret = -EINVAL;
			goto out;
		}
		m->events[i].type = ev->type == 1 ? KV_EVENT_DELETE : KV_EVENT_PUT;
		/* A DELETE carries no value; report it as NULL like the JSON path. */
		ret = copy_kv(ev->kv, ev->type == 1, &m->events[i].kv);
		if (ret < 0)
			goto out;
		m->n_events++;
	}
out:
	arena_destroy(&a);
	return ret;
}

/* ---- one exchange with one endpoint ---- */

static size_t reply_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct etcd_body *b = &((struct etcd_grpc_reply *)ud)->body;
	size_t n = size * nmemb;
	size_t want = b->len + n;
	/* Once the first frame header is in, reserve the whole message at once: pages are
	 * megabytes and doubling would copy them several times. */
	if (b->len < ETCD_GRPC_FRAME_HDR && want >= ETCD_GRPC_FRAME_HDR) {
		uint8_t hdr[ETCD_GRPC_FRAME_HDR];
		if (b->len)
			memcpy(hdr, b->p, b->len);
		memcpy(hdr + b->len, ptr, ETCD_GRPC_FRAME_HDR - b->len);
		size_t announced =
			(size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 | hdr[4];
		if (announced > b->max - ETCD_GRPC_FRAME_HDR) {
			b->overflow = true;
			return 0;
		}
		if (want < ETCD_GRPC_FRAME_HDR + announced)
			want = ETCD_GRPC_FRAME_HDR + announced;
	}
	return etcd_body_add(b, ptr, n, want) < 0 ? 0 : n;
}

/* Trailers arrive through the header callback too, after the body. */
size_t etcd_grpc_header_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct etcd_grpc_reply *r = ud;
	size_t n = size * nmemb, len = n;
	while (len && (ptr[len - 1] == '\n' || ptr[len - 1] == '\r'))
		len--;
	static const char st[] = "grpc-status:", msg[] = "grpc-message:", ct[] = "content-type:";
	const char *v = NULL;
	size_t vlen = 0;
#define VALUE_OF(name)                                                                             \
	(len >= sizeof(name) - 1 && !strncasecmp(ptr, name, sizeof(name) - 1) &&                   \
	 (v = ptr + sizeof(name) - 1, vlen = len - (sizeof(name) - 1), true))
	if (VALUE_OF(st)) {
		while (vlen && *v == ' ')
			v++, vlen--;
		int code = 0;
		bool ok = vlen > 0 && vlen < 6;
		for (size_t i = 0; ok && i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				ok = false;
			else
				code = code * 10 + (v[i] - '0');
		}
		r->grpc_status = ok ? code : ETCD_GRPC_UNKNOWN;
	} else if (VALUE_OF(msg)) {
		while (vlen && *v == ' ')
			v++, vlen--;
		etcd_grpc_percent_decode(v, vlen, r->grpc_msg, sizeof(r->grpc_msg));
	} else if (VALUE_OF(ct)) {
		while (vlen && *v == ' ')
			v++, vlen--;
		r->grpc_ct = vlen >= 16 && !strncasecmp(v, "application/grpc", 16);
	}
#undef VALUE_OF
	return n;
}

struct curl_slist *etcd_grpc_headers(const char *token, long timeout_ms)
{
	struct curl_slist *l = NULL;
	char tmo[48] = "";
	if (timeout_ms > 0)
		/* Lets the server give up too once we no longer wait ("m" = milliseconds, at
		 * most 8 digits). */
		snprintf(tmo, sizeof(tmo), "%ldm", timeout_ms > 99999999 ? 99999999L : timeout_ms);
	if (etcd_header_add(&l, "Content-Type", "application/grpc") < 0 ||
	    etcd_header_add(&l, "TE", "trailers") < 0 || etcd_header_add(&l, "Expect", "") < 0 ||
	    (tmo[0] && etcd_header_add(&l, "grpc-timeout", tmo) < 0) ||
	    (token && etcd_header_add(&l, "token", token) < 0)) {
		curl_slist_free_all(l);
		return NULL;
	}
	return l;
}

static int xfer_abort(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	const int *abort_flag = ud;
	return abort_flag && __atomic_load_n(abort_flag, __ATOMIC_ACQUIRE) ? 1 : 0;
}

/* Transport failures that say "this endpoint did not speak gRPC over HTTP/2 with us" rather
 * than "this endpoint is unreachable": the JSON gateway may still work. */
bool etcd_grpc_protocol_failure(CURLcode rc)
{
	switch (rc) {
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_HTTP_RETURNED_ERROR:
		return true;
	default:
		return false;
	}
}

void etcd_grpc_reply_free(struct etcd_grpc_reply *r)
{
	free(r->body.p);
	r->body.p = NULL;
	r->body.len = r->body.cap = 0;
}

/* How an attempt may connect. */
enum conn_mode {
	CONN_TLS,	/* https://: h2 negotiated by ALPN; cached connections are reused */
	CONN_H2C_REUSE, /* http://: only over a cached h2c connection, never a new one */
	CONN_H2C_NEW,	/* http://: a new connection with prior knowledge */
};

/* Refuses to open sockets: in CONN_H2C_REUSE a transfer either rides a cached connection or
 * fails at once, before anything is sent. */
static curl_socket_t refuse_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
	(void)purpose, (void)addr;
	*(bool *)ud = true;
	return CURL_SOCKET_BAD;
}

/* One attempt. *refused is set when CONN_H2C_REUSE found no connection to ride. */
static int attempt(struct etcd_client *c, CURL *h, const char *url, enum conn_mode mode,
		   const uint8_t *body, size_t body_len, struct curl_slist *hdrs, long timeout_ms,
		   const int *abort_flag, struct etcd_grpc_reply *r, bool *refused)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	size_t max = r->body.max;
	etcd_grpc_reply_free(r);
	memset(r, 0, sizeof(*r));
	r->body.max = max;
	r->grpc_status = -1;
	*refused = false;

	curl_easy_reset(h);
	etcd_setup_handle(c, h, timeout_ms);
	switch (mode) {
	case CONN_TLS:
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		break;
	case CONN_H2C_REUSE:
		/* libcurl 7.88 (Debian 12) fails a transfer that asks for prior knowledge on a
		 * reused h2c connection ("Error in the HTTP2 framing layer": it stacks a second
		 * HTTP/2 layer; fixed upstream in 2023). Asked for "HTTP/2 over TLS, else 1.1",
		 * it multiplexes onto the cached h2c connection instead; the socket callback
		 * makes sure it never opens an HTTP/1.1 one. */
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, refuse_socket);
		curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, refused);
		break;
	case CONN_H2C_NEW:
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
				 (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
		/* Never prior knowledge on a cached connection (the bug above). */
		curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
		break;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, reply_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, etcd_grpc_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	/* Bigger reads: pages are megabytes. */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	if (abort_flag) {
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_abort);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)abort_flag);
	}
	CURLcode rc = curl_easy_perform(h);
	long connects = 0, version = 0;
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
	curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &version);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->http_status);
	r->connects = connects;
	int ret = 0;
	if (*refused) {
		r->unsent = true;
		ret = -ENOTCONN;
	} else if (rc != CURLE_OK) {
		if (r->body.overflow) {
			snprintf(r->why, sizeof(r->why), "reply larger than %zu bytes",
				 r->body.max);
			ret = -EMSGSIZE;
		} else {
			ret = etcd_curl_errno(h, rc, errbuf, &r->unsent);
			etcd_describe_curl_error(h, rc, errbuf, r->why, sizeof(r->why));
			r->proto_fail = ret == -EIO && etcd_grpc_protocol_failure(rc);
			/* A unary call runs only once its whole request message has arrived, so
			 * a request cut short cannot have been applied, whatever the error: e.g.
			 * etcd resets the stream of a message above its gRPC limit before reading
			 * it, and libcurl 7.88 reports only the reset, no grpc-status. */
			curl_off_t up = 0;
			if (curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &up) == CURLE_OK &&
			    up >= 0 && (size_t)up < body_len)
				r->unsent = true;
		}
	} else if (version != CURL_HTTP_VERSION_2_0) {
		snprintf(r->why, sizeof(r->why), "the server did not answer over HTTP/2");
		r->proto_fail = true;
		ret = -EPROTO;
	} else if (r->http_status != 200 || r->grpc_status < 0) {
		snprintf(r->why, sizeof(r->why), "not a gRPC reply (HTTP status %ld%s)",
			 r->http_status, r->grpc_status < 0 ? ", no grpc-status" : "");
		r->proto_fail = true;
		ret = -EPROTO;
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	return ret;
}

int etcd_grpc_exchange(struct etcd_client *c, size_t idx, const char *path, const uint8_t *body,
		       size_t body_len, const char *token, long timeout_ms, const int *abort_flag,
		       struct etcd_grpc_reply *r)
{
	char url[1024];
	size_t max = r->body.max ? r->body.max : ETCD_DEFAULT_MAX_REPLY_BYTES;
	memset(r, 0, sizeof(*r));
	r->body.max = max;
	r->grpc_status = -1;
	snprintf(url, sizeof(url), "%s%s", c->urls[idx], path);
	bool tls = !strncasecmp(url, "https:", 6);
	struct curl_slist *hdrs = etcd_grpc_headers(token, timeout_ms);
	CURL *h = etcd_pool_get(c, true);
	bool refused = false;
	int ret;
	if (!h || !hdrs) {
		r->unsent = true;
		ret = -ENOMEM;
		goto out;
	}
	ret = attempt(c, h, url, tls ? CONN_TLS : CONN_H2C_REUSE, body, body_len, hdrs, timeout_ms,
		      abort_flag, r, &refused);
	if (refused)
		ret = attempt(c, h, url, CONN_H2C_NEW, body, body_len, hdrs, timeout_ms, abort_flag,
			      r, &refused);
	__atomic_add_fetch(&c->stats.grpc_connects, (uint64_t)r->connects, __ATOMIC_RELAXED);
out:
	curl_slist_free_all(hdrs);
	if (h)
		etcd_pool_put(c, h, true);
	if (ret < 0)
		etcd_grpc_reply_free(r);
	return ret;
}
