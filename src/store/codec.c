/* codec.c: conversions between kv.h structs and store.proto messages. */
#include "codec.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.pb-c.h"
#include "core/util.h"

typedef Etcdfs__Store__Compare PbCompare;
typedef Etcdfs__Store__Op PbOp;
typedef Etcdfs__Store__Txn PbTxn;

static ProtobufCBinaryData bin(const void *p, size_t n)
{
	ProtobufCBinaryData b = {.len = n, .data = (uint8_t *)p};
	return b;
}

/* ---- kv_txn -> Txn (borrowing the caller's buffers) ---- */

struct pb_txn_store {
	PbTxn txn;
	Etcdfs__Store__LeaseGrant grant; /* a Command's lease_grant */
	PbCompare *cmps;
	PbCompare **cmpp;
	PbOp *ops;
	PbOp **opp;
};

static void pb_ops(const struct kv_op *src, size_t n, PbOp *ops, PbOp **opp)
{
	for (size_t i = 0; i < n; i++) {
		etcdfs__store__op__init(&ops[i]);
		ops[i].type = (int32_t)src[i].type;
		ops[i].key = bin(src[i].key, src[i].key_len);
		ops[i].range_end = bin(src[i].range_end, src[i].range_end_len);
		ops[i].value = bin(src[i].value, src[i].value_len);
		ops[i].lease = src[i].lease;
		ops[i].ignore_lease = src[i].ignore_lease;
		ops[i].prev_kv = src[i].prev_kv;
		ops[i].keys_only = src[i].keys_only;
		opp[i] = &ops[i];
	}
}

static int pb_txn_build(const struct kv_txn *t, struct pb_txn_store *s)
{
	memset(s, 0, sizeof(*s));
	etcdfs__store__txn__init(&s->txn);
	size_t nops = t->n_success + t->n_failure;
	s->cmps = calloc(t->n_compare + 1, sizeof(*s->cmps));
	s->cmpp = calloc(t->n_compare + 1, sizeof(*s->cmpp));
	s->ops = calloc(nops + 1, sizeof(*s->ops));
	s->opp = calloc(nops + 1, sizeof(*s->opp));
	if (!s->cmps || !s->cmpp || !s->ops || !s->opp)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_compare; i++) {
		const struct kv_compare *c = &t->compare[i];
		PbCompare *p = &s->cmps[i];
		etcdfs__store__compare__init(p);
		p->target = (int32_t)c->target;
		p->result = (int32_t)c->result;
		p->key = bin(c->key, c->key_len);
		p->range_end = bin(c->range_end, c->range_end_len);
		p->number = c->number;
		p->value = bin(c->value, c->value_len);
		s->cmpp[i] = p;
	}
	pb_ops(t->success, t->n_success, s->ops, s->opp);
	pb_ops(t->failure, t->n_failure, s->ops + t->n_success, s->opp + t->n_success);
	s->txn.n_compare = t->n_compare;
	s->txn.compare = s->cmpp;
	s->txn.n_success = t->n_success;
	s->txn.success = s->opp;
	s->txn.n_failure = t->n_failure;
	s->txn.failure = s->opp + t->n_success;
	return 0;
}

static void pb_txn_release(struct pb_txn_store *s)
{
	free(s->cmps);
	free(s->cmpp);
	free(s->ops);
	free(s->opp);
}

/* ---- Txn -> kv_txn view (pointing into the message) ---- */

struct txn_view {
	struct kv_compare *cmps;
	struct kv_op *ops;
};

static void view_ops(PbOp **src, size_t n, struct kv_op *ops)
{
	for (size_t i = 0; i < n; i++) {
		const PbOp *p = src[i];
		ops[i] = (struct kv_op){
			.type = (enum kv_op_type)p->type,
			.key = p->key.data,
			.key_len = p->key.len,
			.range_end = p->range_end.data,
			.range_end_len = p->range_end.len,
			.value = p->value.data,
			.value_len = p->value.len,
			.lease = p->lease,
			.ignore_lease = p->ignore_lease,
			.prev_kv = p->prev_kv,
			.keys_only = p->keys_only,
		};
	}
}

static int txn_view_build(const PbTxn *p, struct kv_txn *t, struct txn_view *v)
{
	memset(t, 0, sizeof(*t));
	size_t nops = p->n_success + p->n_failure;
	v->cmps = calloc(p->n_compare + 1, sizeof(*v->cmps));
	v->ops = calloc(nops + 1, sizeof(*v->ops));
	if (!v->cmps || !v->ops)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_compare; i++) {
		const PbCompare *c = p->compare[i];
		v->cmps[i] = (struct kv_compare){
			.target = (enum kv_cmp_target)c->target,
			.result = (enum kv_cmp_result)c->result,
			.key = c->key.data,
			.key_len = c->key.len,
			.range_end = c->range_end.data,
			.range_end_len = c->range_end.len,
			.number = c->number,
			.value = c->value.data,
			.value_len = c->value.len,
		};
	}
	view_ops(p->success, p->n_success, v->ops);
	view_ops(p->failure, p->n_failure, v->ops + p->n_success);
	t->compare = v->cmps;
	t->n_compare = p->n_compare;
	t->success = v->ops;
	t->n_success = p->n_success;
	t->failure = v->ops + p->n_success;
	t->n_failure = p->n_failure;
	return 0;
}

/* ---- decoded messages ---- */

/* What a decoded codec_cmd or codec_fwd_req points to (priv) until it is freed: the
 * message protobuf-c unpacked and the kv.h view over its txn. */
struct unpacked {
	ProtobufCMessage *msg;
	struct txn_view view;
};

/* Decodes len bytes of buf as a message of descriptor d into priv. */
static int unpack(const ProtobufCMessageDescriptor *d, const void *buf, size_t len, void **priv)
{
	struct unpacked *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->msg = protobuf_c_message_unpack(d, NULL, len, buf);
	if (!p->msg) {
		free(p);
		return -EINVAL;
	}
	*priv = p;
	return 0;
}

static void unpacked_free(void **priv)
{
	struct unpacked *p = *priv;
	if (!p)
		return;
	protobuf_c_message_free_unpacked(p->msg, NULL);
	free(p->view.cmps);
	free(p->view.ops);
	free(p);
	*priv = NULL;
}

/* ---- Command ---- */

static int cmd_msg(const struct codec_cmd *cmd, Etcdfs__Store__Command *m, struct pb_txn_store *s)
{
	etcdfs__store__command__init(m);
	memset(s, 0, sizeof(*s));
	etcdfs__store__lease_grant__init(&s->grant);
	m->origin = cmd->origin;
	m->boot = cmd->boot;
	m->seq = cmd->seq;
	switch (cmd->kind) {
	case CODEC_CMD_TXN:
		if (pb_txn_build(&cmd->txn, s) < 0)
			return -ENOMEM;
		m->body_case = ETCDFS__STORE__COMMAND__BODY_TXN;
		m->txn = &s->txn;
		break;
	case CODEC_CMD_COMPACT:
		m->body_case = ETCDFS__STORE__COMMAND__BODY_COMPACT;
		m->compact = cmd->compact;
		break;
	case CODEC_CMD_NOOP:
		m->body_case = ETCDFS__STORE__COMMAND__BODY_NOOP;
		m->noop = 1;
		break;
	case CODEC_CMD_LEASE_GRANT:
		m->body_case = ETCDFS__STORE__COMMAND__BODY_LEASE_GRANT;
		m->lease_grant = &s->grant;
		s->grant.id = cmd->lease_id;
		s->grant.ttl = cmd->lease_ttl;
		break;
	case CODEC_CMD_LEASE_REVOKE:
		m->body_case = ETCDFS__STORE__COMMAND__BODY_LEASE_REVOKE;
		m->lease_revoke = cmd->lease_id;
		break;
	default:
		return -EINVAL;
	}
	m->leases_checked = cmd->leases_checked;
	return 0;
}

size_t codec_cmd_size(const struct codec_cmd *cmd)
{
	Etcdfs__Store__Command m;
	struct pb_txn_store s;
	size_t sz = 0;
	if (cmd_msg(cmd, &m, &s) == 0)
		sz = etcdfs__store__command__get_packed_size(&m);
	pb_txn_release(&s);
	return sz;
}

/* Raft entries are framed as [magic][length][Command][zero pad to 8]:
 * libraft 0.15 writes entries padded to 8 bytes but its closed-segment loader
 * sums the unpadded lengths, so an entry whose length is not a multiple of 8
 * makes the log unreadable after a restart (upstream later made 8-byte
 * multiples a requirement). A protobuf message cannot carry trailing zeros,
 * hence the explicit length. */
#define CMD_MAGIC 0x31534645u /* "EFS1" little endian */
#define CMD_HDR 8

static void put32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int codec_pack_cmd(const struct codec_cmd *cmd, codec_alloc_fn alloc, void **buf, size_t *len)
{
	Etcdfs__Store__Command m;
	struct pb_txn_store s;
	int ret = cmd_msg(cmd, &m, &s);
	if (ret < 0)
		goto out;
	size_t sz = etcdfs__store__command__get_packed_size(&m);
	if (sz > UINT32_MAX - 16) {
		ret = -EFBIG;
		goto out;
	}
	size_t total = CMD_HDR + ((sz + 7) & ~(size_t)7);
	uint8_t *out = alloc(total);
	if (!out) {
		ret = -ENOMEM;
		goto out;
	}
	put32le(out, CMD_MAGIC);
	put32le(out + 4, (uint32_t)sz);
	etcdfs__store__command__pack(&m, out + CMD_HDR);
	memset(out + CMD_HDR + sz, 0, total - CMD_HDR - sz);
	*buf = out;
	*len = total;
out:
	pb_txn_release(&s);
	return ret;
}

int codec_unpack_cmd(const void *buf, size_t len, struct codec_cmd *out)
{
	memset(out, 0, sizeof(*out));
	const uint8_t *b = buf;
	if (len < CMD_HDR || get32le(b) != CMD_MAGIC || get32le(b + 4) > len - CMD_HDR)
		return -EINVAL;
	int ret = unpack(&etcdfs__store__command__descriptor, b + CMD_HDR, get32le(b + 4),
			 &out->priv);
	if (ret < 0)
		return ret;
	struct unpacked *p = out->priv;
	const Etcdfs__Store__Command *m = (const Etcdfs__Store__Command *)p->msg;
	out->origin = m->origin;
	out->boot = m->boot;
	out->seq = m->seq;
	out->leases_checked = m->leases_checked;
	switch (m->body_case) {
	case ETCDFS__STORE__COMMAND__BODY_TXN:
		out->kind = CODEC_CMD_TXN;
		if (txn_view_build(m->txn, &out->txn, &p->view) < 0) {
			codec_cmd_free(out);
			return -ENOMEM;
		}
		break;
	case ETCDFS__STORE__COMMAND__BODY_COMPACT:
		out->kind = CODEC_CMD_COMPACT;
		out->compact = m->compact;
		break;
	case ETCDFS__STORE__COMMAND__BODY_NOOP:
		out->kind = CODEC_CMD_NOOP;
		break;
	case ETCDFS__STORE__COMMAND__BODY_LEASE_GRANT:
		out->kind = CODEC_CMD_LEASE_GRANT;
		out->lease_id = m->lease_grant->id;
		out->lease_ttl = m->lease_grant->ttl;
		break;
	case ETCDFS__STORE__COMMAND__BODY_LEASE_REVOKE:
		out->kind = CODEC_CMD_LEASE_REVOKE;
		out->lease_id = m->lease_revoke;
		break;
	default:
		codec_cmd_free(out);
		return -EINVAL;
	}
	return 0;
}

void codec_cmd_free(struct codec_cmd *cmd)
{
	unpacked_free(&cmd->priv);
}

/* ---- forwarding requests ---- */

int codec_pack_fwd_req(const struct codec_fwd_req *req, void **buf, size_t *len)
{
	Etcdfs__Store__ForwardRequest m = ETCDFS__STORE__FORWARD_REQUEST__INIT;
	Etcdfs__Store__RangeRequest rr = ETCDFS__STORE__RANGE_REQUEST__INIT;
	Etcdfs__Store__LeaseRequest lr = ETCDFS__STORE__LEASE_REQUEST__INIT;
	struct pb_txn_store s;
	memset(&s, 0, sizeof(s));
	int ret = 0;
	switch (req->kind) {
	case CODEC_FWD_TXN:
		if (pb_txn_build(&req->txn, &s) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		m.body_case = ETCDFS__STORE__FORWARD_REQUEST__BODY_TXN;
		m.txn = &s.txn;
		break;
	case CODEC_FWD_RANGE:
		rr.key = bin(req->range.key, req->range.key_len);
		rr.range_end = bin(req->range.range_end, req->range.range_end_len);
		rr.revision = req->range.revision;
		rr.limit = req->range.limit;
		rr.keys_only = req->range.keys_only;
		rr.count_only = req->range.count_only;
		rr.sort_order = (int32_t)req->range.sort_order;
		rr.sort_target = (int32_t)req->range.sort_target;
		m.body_case = ETCDFS__STORE__FORWARD_REQUEST__BODY_RANGE;
		m.range = &rr;
		break;
	case CODEC_FWD_COMPACT:
		m.body_case = ETCDFS__STORE__FORWARD_REQUEST__BODY_COMPACT;
		m.compact = req->compact;
		break;
	case CODEC_FWD_LEASE:
		lr.op = (int32_t)req->lease.op;
		lr.id = req->lease.id;
		lr.ttl = req->lease.ttl;
		lr.keys = req->lease.keys;
		m.body_case = ETCDFS__STORE__FORWARD_REQUEST__BODY_LEASE;
		m.lease = &lr;
		break;
	default:
		ret = -EINVAL;
		goto out;
	}
	size_t sz = etcdfs__store__forward_request__get_packed_size(&m);
	void *o = malloc(sz ? sz : 1);
	if (!o) {
		ret = -ENOMEM;
		goto out;
	}
	etcdfs__store__forward_request__pack(&m, o);
	*buf = o;
	*len = sz;
out:
	pb_txn_release(&s);
	return ret;
}

int codec_unpack_fwd_req(const void *buf, size_t len, struct codec_fwd_req *out)
{
	memset(out, 0, sizeof(*out));
	int ret = unpack(&etcdfs__store__forward_request__descriptor, buf, len, &out->priv);
	if (ret < 0)
		return ret;
	struct unpacked *p = out->priv;
	const Etcdfs__Store__ForwardRequest *m = (const Etcdfs__Store__ForwardRequest *)p->msg;
	const Etcdfs__Store__RangeRequest *rr;
	switch (m->body_case) {
	case ETCDFS__STORE__FORWARD_REQUEST__BODY_TXN:
		out->kind = CODEC_FWD_TXN;
		if (txn_view_build(m->txn, &out->txn, &p->view) < 0) {
			codec_fwd_req_free(out);
			return -ENOMEM;
		}
		break;
	case ETCDFS__STORE__FORWARD_REQUEST__BODY_RANGE:
		out->kind = CODEC_FWD_RANGE;
		rr = m->range;
		out->range = (struct kv_range_req){
			.key = rr->key.data,
			.key_len = rr->key.len,
			.range_end = rr->range_end.data,
			.range_end_len = rr->range_end.len,
			.revision = rr->revision,
			.limit = rr->limit,
			.keys_only = rr->keys_only,
			.count_only = rr->count_only,
			.sort_order = (enum kv_sort_order)rr->sort_order,
			.sort_target = (enum kv_sort_target)rr->sort_target,
		};
		break;
	case ETCDFS__STORE__FORWARD_REQUEST__BODY_COMPACT:
		out->kind = CODEC_FWD_COMPACT;
		out->compact = m->compact;
		break;
	case ETCDFS__STORE__FORWARD_REQUEST__BODY_LEASE:
		out->kind = CODEC_FWD_LEASE;
		out->lease = (struct codec_lease_req){
			.op = (enum codec_lease_op)m->lease->op,
			.id = m->lease->id,
			.ttl = m->lease->ttl,
			.keys = m->lease->keys,
		};
		break;
	default:
		codec_fwd_req_free(out);
		return -EINVAL;
	}
	return 0;
}

void codec_fwd_req_free(struct codec_fwd_req *req)
{
	unpacked_free(&req->priv);
}

/* ---- forwarding responses ---- */

typedef Etcdfs__Store__KeyValue PbKv;
typedef Etcdfs__Store__RangeResult PbRange;

/* Arena of everything a response message borrows, released in one go. */
struct resp_arena {
	void **ptrs;
	size_t n, cap;
};

static void *arena_calloc(struct resp_arena *a, size_t n, size_t sz)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		void **np = realloc(a->ptrs, cap * sizeof(*np));
		if (!np)
			return NULL;
		a->ptrs = np;
		a->cap = cap;
	}
	void *p = calloc(n ? n : 1, sz);
	if (p)
		a->ptrs[a->n++] = p;
	return p;
}

static void arena_free(struct resp_arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->ptrs[i]);
	free(a->ptrs);
}

static PbRange *pb_range(struct resp_arena *a, const struct kv_range_result *r)
{
	PbRange *pr = arena_calloc(a, 1, sizeof(*pr));
	PbKv *kvs = arena_calloc(a, r->n_kvs, sizeof(*kvs));
	PbKv **kvp = arena_calloc(a, r->n_kvs, sizeof(*kvp));
	if (!pr || !kvs || !kvp)
		return NULL;
	etcdfs__store__range_result__init(pr);
	for (size_t i = 0; i < r->n_kvs; i++) {
		const struct kv_kv *k = &r->kvs[i];
		etcdfs__store__key_value__init(&kvs[i]);
		kvs[i].key = bin(k->key, k->key_len);
		kvs[i].value = bin(k->value, k->value ? k->value_len : 0);
		kvs[i].has_value = k->value != NULL;
		kvs[i].create_revision = k->create_revision;
		kvs[i].mod_revision = k->mod_revision;
		kvs[i].version = k->version;
		kvs[i].lease = k->lease;
		kvp[i] = &kvs[i];
	}
	pr->n_kvs = r->n_kvs;
	pr->kvs = kvp;
	pr->more = r->more;
	pr->count = r->count;
	pr->revision = r->revision;
	pr->compact_revision = r->compact_revision;
	return pr;
}

int codec_pack_fwd_resp(const struct codec_fwd_resp *resp, void **buf, size_t *len)
{
	Etcdfs__Store__ForwardResponse m = ETCDFS__STORE__FORWARD_RESPONSE__INIT;
	Etcdfs__Store__TxnResult tr = ETCDFS__STORE__TXN_RESULT__INIT;
	struct resp_arena a = {0};
	int ret = -ENOMEM;
	m.err = resp->err;
	m.revision = resp->revision;
	m.lease_id = resp->lease.id;
	m.lease_ttl = resp->lease.ttl;
	m.lease_granted_ttl = resp->lease.granted_ttl;
	m.lease_ids = resp->lease_ids;
	m.n_lease_ids = resp->n_lease_ids;
	if (resp->range) {
		m.range = pb_range(&a, resp->range);
		if (!m.range)
			goto out;
	}
	if (resp->txn) {
		const struct kv_txn_result *t = resp->txn;
		Etcdfs__Store__OpResult *ors = arena_calloc(&a, t->n_results, sizeof(*ors));
		Etcdfs__Store__OpResult **orp = arena_calloc(&a, t->n_results, sizeof(*orp));
		if (!ors || !orp)
			goto out;
		for (size_t i = 0; i < t->n_results; i++) {
			etcdfs__store__op_result__init(&ors[i]);
			ors[i].type = (int32_t)t->results[i].type;
			ors[i].deleted = t->results[i].deleted;
			ors[i].range = pb_range(&a, &t->results[i].range);
			if (!ors[i].range)
				goto out;
			orp[i] = &ors[i];
		}
		tr.succeeded = t->succeeded;
		tr.revision = t->revision;
		tr.n_results = t->n_results;
		tr.results = orp;
		m.txn = &tr;
	}
	size_t sz = etcdfs__store__forward_response__get_packed_size(&m);
	void *o = malloc(sz ? sz : 1);
	if (!o)
		goto out;
	etcdfs__store__forward_response__pack(&m, o);
	*buf = o;
	*len = sz;
	ret = 0;
out:
	arena_free(&a);
	return ret;
}

static int range_from_pb(const PbRange *pr, struct kv_range_result *r)
{
	memset(r, 0, sizeof(*r));
	if (!pr)
		return 0;
	r->more = pr->more;
	r->count = pr->count;
	r->revision = pr->revision;
	r->compact_revision = pr->compact_revision;
	if (!pr->n_kvs)
		return 0;
	r->kvs = calloc(pr->n_kvs, sizeof(*r->kvs));
	if (!r->kvs)
		return -ENOMEM;
	for (size_t i = 0; i < pr->n_kvs; i++) {
		const PbKv *p = pr->kvs[i];
		struct kv_kv *k = &r->kvs[i];
		r->n_kvs = i + 1;
		k->key = util_memdup(p->key.data, p->key.len);
		k->key_len = p->key.len;
		if (p->has_value) {
			k->value = util_memdup(p->value.data, p->value.len);
			k->value_len = p->value.len;
		}
		if (!k->key || (p->has_value && !k->value)) {
			kv_range_result_free(r);
			return -ENOMEM;
		}
		k->create_revision = p->create_revision;
		k->mod_revision = p->mod_revision;
		k->version = p->version;
		k->lease = p->lease;
	}
	return 0;
}

int codec_unpack_fwd_resp(const void *buf, size_t len, struct codec_fwd_resp *out)
{
	Etcdfs__Store__ForwardResponse *m = etcdfs__store__forward_response__unpack(NULL, len, buf);
	if (!m)
		return -EINVAL;
	int ret = 0;
	out->err = m->err;
	out->revision = m->revision;
	out->lease = (struct kv_lease){
		.id = m->lease_id, .ttl = m->lease_ttl, .granted_ttl = m->lease_granted_ttl};
	out->lease_ids = NULL;
	out->n_lease_ids = 0;
	if (m->n_lease_ids) {
		out->lease_ids =
			(int64_t *)util_memdup(m->lease_ids, m->n_lease_ids * sizeof(int64_t));
		if (!out->lease_ids) {
			ret = -ENOMEM;
			goto out;
		}
		out->n_lease_ids = m->n_lease_ids;
	}
	if (out->range) {
		ret = range_from_pb(m->range, out->range);
		if (ret < 0)
			goto out;
	}
	if (out->txn) {
		struct kv_txn_result *t = out->txn;
		memset(t, 0, sizeof(*t));
		if (m->txn) {
			t->succeeded = m->txn->succeeded;
			t->revision = m->txn->revision;
			if (m->txn->n_results) {
				t->results = calloc(m->txn->n_results, sizeof(*t->results));
				if (!t->results) {
					ret = -ENOMEM;
					goto out;
				}
			}
			for (size_t i = 0; i < m->txn->n_results; i++) {
				const Etcdfs__Store__OpResult *o = m->txn->results[i];
				t->n_results = i + 1;
				t->results[i].type = (enum kv_op_type)o->type;
				t->results[i].deleted = o->deleted;
				ret = range_from_pb(o->range, &t->results[i].range);
				if (ret < 0) {
					kv_txn_result_free(t);
					goto out;
				}
			}
		}
	}
out:
	if (ret < 0 && out->range)
		kv_range_result_free(out->range);
	if (ret < 0) {
		free(out->lease_ids);
		out->lease_ids = NULL;
		out->n_lease_ids = 0;
	}
	etcdfs__store__forward_response__free_unpacked(m, NULL);
	return ret;
}
