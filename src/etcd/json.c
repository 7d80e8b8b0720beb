/* json.c: encoding requests for and decoding replies of etcd's JSON gateway (see json.h). */
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "v3json/v3json.h"

/* ---- field readers ---- */

int etcd_json_int64(const json_t *obj, const char *field, int64_t *out)
{
	return v3json_int64(json_object_get(obj, field), out);
}

int etcd_json_bool(const json_t *obj, const char *field, bool *out)
{
	return v3json_bool(json_object_get(obj, field), out);
}

int etcd_json_enum(const json_t *obj, const char *field, const char *const *names, int n_names,
		   int *out)
{
	return v3json_enum(json_object_get(obj, field), names, n_names, out);
}

int etcd_json_bytes(const json_t *obj, const char *field, char **out, size_t *out_len)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v)) {
		*out = calloc(1, 1);
		*out_len = 0;
		return *out ? 0 : -ENOMEM;
	}
	if (!json_is_string(v))
		return -EINVAL;
	return base64_decode(json_string_value(v), json_string_length(v), 0, out, out_len);
}

/* ---- responses ---- */

int etcd_json_parse_kv(const json_t *o, bool keys_only, struct kv_kv *out)
{
	int ret;
	memset(out, 0, sizeof(*out));
	if (!json_is_object(o))
		return -EINVAL;
	ret = etcd_json_bytes(o, "key", &out->key, &out->key_len);
	if (ret < 0)
		goto out_err;
	if (!keys_only) {
		ret = etcd_json_bytes(o, "value", &out->value, &out->value_len);
		if (ret < 0)
			goto out_err;
	}
	if ((ret = etcd_json_int64(o, "create_revision", &out->create_revision)) < 0 ||
	    (ret = etcd_json_int64(o, "mod_revision", &out->mod_revision)) < 0 ||
	    (ret = etcd_json_int64(o, "version", &out->version)) < 0 ||
	    (ret = etcd_json_int64(o, "lease", &out->lease)) < 0)
		goto out_err;
	return 0;
out_err:
	kv_kv_free(out);
	return ret;
}

int etcd_json_header_revision(const json_t *o, int64_t *rev)
{
	json_t *h = json_object_get(o, "header");
	*rev = 0;
	if (!h)
		return 0;
	if (!json_is_object(h))
		return -EINVAL;
	return etcd_json_int64(h, "revision", rev);
}

/* Appends the kvs of a JSON array to res->kvs. */
static int append_kvs(const json_t *arr, bool keys_only, struct kv_range_result *res)
{
	size_t n;
	int ret = v3json_array(arr, &n);
	if (ret < 0 || n == 0)
		return ret;
	struct kv_kv *kvs = realloc(res->kvs, (res->n_kvs + n) * sizeof(*kvs));
	if (!kvs)
		return -ENOMEM;
	res->kvs = kvs;
	for (size_t i = 0; i < n; i++) {
		ret = etcd_json_parse_kv(json_array_get(arr, i), keys_only, &kvs[res->n_kvs]);
		if (ret < 0)
			return ret;
		res->n_kvs++;
	}
	return 0;
}

int etcd_json_parse_range(const json_t *o, bool keys_only, struct kv_range_result *res)
{
	int ret;
	if (!json_is_object(o))
		return -EINVAL;
	if ((ret = etcd_json_header_revision(o, &res->revision)) < 0 ||
	    (ret = etcd_json_int64(o, "count", &res->count)) < 0 ||
	    (ret = etcd_json_bool(o, "more", &res->more)) < 0)
		return ret;
	return append_kvs(json_object_get(o, "kvs"), keys_only, res);
}

static int parse_op_result(const json_t *o, bool keys_only, int64_t revision,
			   struct kv_op_result *r)
{
	json_t *v;
	int ret;
	if (!json_is_object(o))
		return -EINVAL;
	r->range.revision = revision;
	if ((v = json_object_get(o, "response_range"))) {
		r->type = KV_OP_RANGE;
		ret = etcd_json_parse_range(v, keys_only, &r->range);
		r->range.revision = revision;
		return ret;
	}
	if ((v = json_object_get(o, "response_put"))) {
		r->type = KV_OP_PUT;
		json_t *prev = json_object_get(v, "prev_kv");
		if (!prev)
			return 0;
		r->range.kvs = calloc(1, sizeof(*r->range.kvs));
		if (!r->range.kvs)
			return -ENOMEM;
		ret = etcd_json_parse_kv(prev, false, &r->range.kvs[0]);
		if (ret < 0)
			return ret;
		r->range.n_kvs = r->range.count = 1;
		return 0;
	}
	if ((v = json_object_get(o, "response_delete_range"))) {
		r->type = KV_OP_DELETE;
		ret = etcd_json_int64(v, "deleted", &r->deleted);
		if (ret < 0)
			return ret;
		ret = append_kvs(json_object_get(v, "prev_kvs"), false, &r->range);
		r->range.count = (int64_t)r->range.n_kvs;
		return ret;
	}
	/* We never send nested txns, so a response_txn is as unexpected as an unknown key. */
	return -EINVAL;
}

int etcd_json_parse_txn(const json_t *o, const bool *keys_only, size_t n_ops,
			struct kv_txn_result *res)
{
	int ret;
	if (!json_is_object(o))
		return -EINVAL;
	if ((ret = etcd_json_header_revision(o, &res->revision)) < 0 ||
	    (ret = etcd_json_bool(o, "succeeded", &res->succeeded)) < 0)
		return ret;
	json_t *arr = json_object_get(o, "responses");
	size_t n;
	if ((ret = v3json_array(arr, &n)) < 0 || n == 0)
		return ret;
	res->results = calloc(n, sizeof(*res->results));
	if (!res->results)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		/* Count the entry first so that a partial parse is freed by the caller. */
		res->n_results++;
		bool ko = keys_only && i < n_ops ? keys_only[i] : false;
		ret = parse_op_result(json_array_get(arr, i), ko, res->revision, &res->results[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- errors ---- */

int etcd_error_errno(const char *msg, int grpc_code, bool *retry_auth)
{
	static const struct {
		const char *needle;
		int err;
		bool retry_auth;
	} map[] = {
		{"request is too large", -EFBIG, false},
		{"larger than max", -EFBIG, false}, /* gRPC's own message size limit */
		{"required revision has been compacted", -ERANGE, false},
		{"future revision", -ENOENT, false},
		{"too many operations in txn request", -E2BIG, false},
		{"invalid auth token", -EACCES, true},
		{"revision of auth store is old", -EACCES, true},
		{"user name is empty", -EACCES, true},
		{"authentication failed", -EACCES, false},
		{"permission denied", -EACCES, false},
		{"user name not found", -EACCES, false},
		{"authentication is not enabled", -EOPNOTSUPP, false},
		{"request timed out", -ETIMEDOUT, false},
		{"requested lease not found", -ENOENT, false},
		{"lease already exists", -EEXIST, false},
		{"too large lease TTL", -EINVAL, false},
		{"context deadline exceeded", -ETIMEDOUT, false},
	};
	if (retry_auth)
		*retry_auth = false;
	for (size_t i = 0; msg && i < sizeof(map) / sizeof(map[0]); i++) {
		if (strstr(msg, map[i].needle)) {
			if (retry_auth)
				*retry_auth = map[i].retry_auth;
			return map[i].err;
		}
	}
	switch (grpc_code) {
	case 3: /* InvalidArgument */
		return -EINVAL;
	case 4: /* DeadlineExceeded */
		return -ETIMEDOUT;
	case 7: /* PermissionDenied */
		return -EACCES;
	case 8: /* ResourceExhausted */
		return -EFBIG;
	case 16: /* Unauthenticated */
		if (retry_auth)
			*retry_auth = true;
		return -EACCES;
	default:
		return -EIO;
	}
}

static void set_msg(struct etcd_error *e, const char *s)
{
	snprintf(e->msg, sizeof(e->msg), "%s", s);
}

void etcd_json_error_obj(const json_t *o, struct etcd_error *e)
{
	memset(e, 0, sizeof(*e));
	e->grpc_code = -1;
	json_t *m = json_object_get(o, "message");
	if (!json_is_string(m) || !*json_string_value(m))
		m = json_object_get(o, "error");
	if (json_is_string(m))
		set_msg(e, json_string_value(m));
	else
		set_msg(e, "malformed error reply");
	json_t *c = json_object_get(o, "code");
	if (!c)
		c = json_object_get(o, "grpc_code");
	if (json_is_integer(c))
		e->grpc_code = (int)json_integer_value(c);
	e->err = etcd_error_errno(e->msg, e->grpc_code, &e->retry_auth);
}

void etcd_json_error(const char *body, size_t len, long http_status, struct etcd_error *e)
{
	json_t *o = json_loadb(body, len, 0, NULL);
	json_t *inner = o ? json_object_get(o, "error") : NULL;
	if (json_is_object(inner)) {
		etcd_json_error_obj(inner, e);
	} else if (inner || json_object_get(o, "message")) {
		etcd_json_error_obj(o, e);
	} else {
		memset(e, 0, sizeof(*e));
		e->grpc_code = -1;
		e->err = -EIO;
		/* Quote a little of the body: proxies answer with HTML or plain text. */
		int n = (int)(len > 80 ? 80 : len);
		for (int i = 0; i < n; i++)
			if ((unsigned char)body[i] < 0x20 || (unsigned char)body[i] >= 0x7f)
				n = i;
		snprintf(e->msg, sizeof(e->msg), "HTTP status %ld, unexpected reply '%.*s'",
			 http_status, n, body);
	}
	json_decref(o);
}

/* ---- requests ---- */

static int set_int(json_t *o, const char *field, int64_t v)
{
	if (!v)
		return 0;
	return json_object_set_new(o, field, json_integer((json_int_t)v)) < 0 ? -ENOMEM : 0;
}

json_t *etcd_json_range_req(const struct kv_range_req *req, const void *key, size_t key_len,
			    const void *range_end, size_t range_end_len, int64_t revision,
			    int64_t limit)
{
	json_t *o = json_object();
	if (!o || v3json_set_b64(o, "key", key, key_len, true) < 0 ||
	    v3json_set_b64(o, "range_end", range_end, range_end_len, false) < 0 ||
	    set_int(o, "limit", limit) < 0 || set_int(o, "revision", revision) < 0 ||
	    set_int(o, "sort_order", req->sort_order) < 0 ||
	    set_int(o, "sort_target", req->sort_target) < 0 ||
	    v3json_set_true(o, "serializable", req->serializable) < 0 ||
	    v3json_set_true(o, "keys_only", req->keys_only) < 0 ||
	    v3json_set_true(o, "count_only", req->count_only) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *compare_json(const struct kv_compare *c)
{
	json_t *o = json_object();
	int ret = -ENOMEM;
	if (!o)
		return NULL;
	if (json_object_set_new(o, "result", json_integer(c->result)) < 0 ||
	    json_object_set_new(o, "target", json_integer(c->target)) < 0 ||
	    v3json_set_b64(o, "key", c->key, c->key_len, true) < 0 ||
	    v3json_set_b64(o, "range_end", c->range_end, c->range_end_len, false) < 0)
		goto out_err;
	/* The compared field is a oneof: it must be present even when 0 or empty, or etcd
	 * compares against nothing (e.g. "version = 0" means "the key does not exist"). */
	switch (c->target) {
	case KV_CMP_VALUE:
		ret = v3json_set_b64(o, "value", c->value, c->value_len, true);
		break;
	case KV_CMP_VERSION:
		ret = json_object_set_new(o, "version", json_integer(c->number));
		break;
	case KV_CMP_CREATE:
		ret = json_object_set_new(o, "create_revision", json_integer(c->number));
		break;
	case KV_CMP_MOD:
		ret = json_object_set_new(o, "mod_revision", json_integer(c->number));
		break;
	case KV_CMP_LEASE:
		ret = json_object_set_new(o, "lease", json_integer(c->number));
		break;
	default:
		goto out_err;
	}
	if (ret < 0)
		goto out_err;
	return o;
out_err:
	json_decref(o);
	return NULL;
}

static json_t *op_json(const struct kv_op *op)
{
	json_t *in = json_object();
	const char *name;
	if (!in)
		return NULL;
	if (v3json_set_b64(in, "key", op->key, op->key_len, true) < 0)
		goto out_err;
	switch (op->type) {
	case KV_OP_RANGE:
		name = "request_range";
		if (v3json_set_b64(in, "range_end", op->range_end, op->range_end_len, false) < 0 ||
		    v3json_set_true(in, "keys_only", op->keys_only) < 0)
			goto out_err;
		break;
	case KV_OP_PUT:
		name = "request_put";
		if (v3json_set_b64(in, "value", op->value, op->value_len, false) < 0 ||
		    set_int(in, "lease", op->lease) < 0 ||
		    v3json_set_true(in, "prev_kv", op->prev_kv) < 0 ||
		    v3json_set_true(in, "ignore_lease", op->ignore_lease) < 0)
			goto out_err;
		break;
	case KV_OP_DELETE:
		name = "request_delete_range";
		if (v3json_set_b64(in, "range_end", op->range_end, op->range_end_len, false) < 0 ||
		    v3json_set_true(in, "prev_kv", op->prev_kv) < 0)
			goto out_err;
		break;
	default:
		goto out_err;
	}
	return v3json_wrap(name, in);
out_err:
	json_decref(in);
	return NULL;
}

static int add_ops(json_t *o, const char *field, const struct kv_op *ops, size_t n)
{
	if (!n)
		return 0;
	json_t *arr = json_array();
	if (!arr || json_object_set_new(o, field, arr) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(arr, op_json(&ops[i])) < 0)
			return -ENOMEM;
	return 0;
}

json_t *etcd_json_txn_req(const struct kv_txn *txn)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (txn->n_compare) {
		json_t *arr = json_array();
		if (!arr || json_object_set_new(o, "compare", arr) < 0)
			goto out_err;
		for (size_t i = 0; i < txn->n_compare; i++)
			if (json_array_append_new(arr, compare_json(&txn->compare[i])) < 0)
				goto out_err;
	}
	if (add_ops(o, "success", txn->success, txn->n_success) < 0 ||
	    add_ops(o, "failure", txn->failure, txn->n_failure) < 0)
		goto out_err;
	return o;
out_err:
	json_decref(o);
	return NULL;
}

json_t *etcd_json_watch_req(const struct kv_watch_req *req, int64_t start_revision)
{
	json_t *c = json_object();
	if (!c || v3json_set_b64(c, "key", req->key, req->key_len, true) < 0 ||
	    v3json_set_b64(c, "range_end", req->range_end, req->range_end_len, false) < 0 ||
	    set_int(c, "start_revision", start_revision) < 0 ||
	    v3json_set_true(c, "progress_notify", true) < 0 ||
	    v3json_set_true(c, "prev_kv", req->prev_kv) < 0) {
		json_decref(c);
		return NULL;
	}
	return v3json_wrap("create_request", c);
}

size_t etcd_txn_size_estimate(const struct kv_txn *txn)
{
	/* Payload bytes plus a few bytes of tags and lengths per item: a lower bound of the
	 * protobuf size, so a request above the limit by this count is surely refused. */
	size_t n = 0;
	for (size_t i = 0; i < txn->n_compare; i++)
		n += txn->compare[i].key_len + txn->compare[i].range_end_len +
		     (txn->compare[i].target == KV_CMP_VALUE ? txn->compare[i].value_len : 0) + 8;
	const struct kv_op *branches[2] = {txn->success, txn->failure};
	size_t counts[2] = {txn->n_success, txn->n_failure};
	for (int b = 0; b < 2; b++)
		for (size_t i = 0; i < counts[b]; i++)
			n += branches[b][i].key_len + branches[b][i].range_end_len +
			     (branches[b][i].type == KV_OP_PUT ? branches[b][i].value_len : 0) + 8;
	return n;
}

/* ---- watch stream ---- */

static const char *const event_types[] = {"PUT", "DELETE"};

int etcd_json_parse_watch(const json_t *o, struct etcd_watch_msg *out)
{
	int ret;
	memset(out, 0, sizeof(*out));
	if (!json_is_object(o))
		return -EINVAL;
	json_t *err = json_object_get(o, "error");
	if (err) {
		out->is_error = true;
		if (json_is_object(err))
			etcd_json_error_obj(err, &out->error);
		else
			etcd_json_error_obj(o, &out->error);
		return 0;
	}
	json_t *r = json_object_get(o, "result");
	if (!json_is_object(r))
		return -EINVAL;
	if ((ret = etcd_json_header_revision(r, &out->revision)) < 0 ||
	    (ret = etcd_json_bool(r, "created", &out->created)) < 0 ||
	    (ret = etcd_json_bool(r, "canceled", &out->canceled)) < 0 ||
	    (ret = etcd_json_int64(r, "compact_revision", &out->compact_revision)) < 0)
		return ret;
	json_t *reason = json_object_get(r, "cancel_reason");
	if (out->canceled && json_is_string(reason) && *json_string_value(reason)) {
		out->error.grpc_code = -1;
		set_msg(&out->error, json_string_value(reason));
		out->error.err = etcd_error_errno(out->error.msg, -1, &out->error.retry_auth);
	}
	json_t *evs = json_object_get(r, "events");
	size_t n;
	if ((ret = v3json_array(evs, &n)) < 0 || n == 0)
		return ret;
	out->events = calloc(n, sizeof(*out->events));
	if (!out->events)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *ev = json_array_get(evs, i);
		int type;
		if (!json_is_object(ev))
			return -EINVAL;
		ret = etcd_json_enum(ev, "type", event_types, 2, &type);
		if (ret < 0)
			return ret;
		out->events[i].type = type == 1 ? KV_EVENT_DELETE : KV_EVENT_PUT;
		/* A DELETE carries no value; report it as NULL like keys_only results. */
		ret = etcd_json_parse_kv(json_object_get(ev, "kv"), type == 1, &out->events[i].kv);
		if (ret < 0)
			return ret;
		out->n_events++;
	}
	return 0;
}

void etcd_watch_msg_free(struct etcd_watch_msg *m)
{
	for (size_t i = 0; i < m->n_events; i++)
		kv_kv_free(&m->events[i].kv);
	free(m->events);
	m->events = NULL;
	m->n_events = 0;
}
