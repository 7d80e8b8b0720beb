/* jsonpb.c: etcd's JSON as grpc-gateway speaks it (jsonpb with original field names), and
 * the request context that carries a reply or an error.
 *
 * Replies: bytes as standard base64, int64 as decimal strings, zero values omitted, enums by
 * name, errors as {"error": msg, "code": grpc_code, "message": msg}. Requests are accepted
 * the way jsonpb accepts them: snake_case or lowerCamelCase names, int64 as strings or
 * numbers, enums as names or numbers, unknown fields ignored.
 */
#include "gateway_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "v3json/v3json.h"

/* ---- request context: reply and allocations freed after the reply is sent ---- */

void ctx_free(struct ctx *x)
{
	for (size_t i = 0; i < x->n_allocs; i++)
		free(x->allocs[i]);
	free(x->allocs);
	json_decref(x->body);
	x->allocs = NULL;
	x->body = NULL;
	x->n_allocs = x->cap_allocs = 0;
}

int ctx_fail(struct ctx *x, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->msg, sizeof(x->msg), fmt, ap);
	va_end(ap);
	x->code = code;
	return -1;
}

int ctx_oom(struct ctx *x)
{
	return ctx_fail(x, GRPC_RESOURCE_EXHAUSTED, "etcdfs gateway: out of memory");
}

/* Remembers p (freed with the context). On failure frees p and sets the error. */
static int keep(struct ctx *x, void *p)
{
	if (!p)
		return ctx_oom(x);
	if (x->n_allocs == x->cap_allocs) {
		size_t cap = x->cap_allocs ? x->cap_allocs * 2 : 16;
		void **a = realloc(x->allocs, cap * sizeof(*a));
		if (!a) {
			free(p);
			return ctx_oom(x);
		}
		x->allocs = a;
		x->cap_allocs = cap;
	}
	x->allocs[x->n_allocs++] = p;
	return 0;
}

void *ctx_calloc(struct ctx *x, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	return keep(x, p) < 0 ? NULL : p;
}

int ctx_kv_fail(struct ctx *x, int err, bool write)
{
	switch (err) {
	case -ERANGE:
		return ctx_fail(x, GRPC_OUT_OF_RANGE, ERR_COMPACTED);
	case -ENOENT:
		return write ? ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_KEY_NOT_FOUND)
			     : ctx_fail(x, GRPC_OUT_OF_RANGE, ERR_FUTURE_REV);
	case -EFBIG:
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
	case -E2BIG:
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, ERR_TOO_MANY_OPS);
	case -EINVAL:
		return ctx_fail(
			x, GRPC_INVALID_ARGUMENT,
			"etcdserver: invalid argument (refused by the store: duplicate key in "
			"txn, empty key or bad range)");
	case -ETIMEDOUT:
		return ctx_fail(x, GRPC_UNAVAILABLE, ERR_TIMEOUT);
	case -ENOSPC:
		return ctx_fail(x, GRPC_RESOURCE_EXHAUSTED, ERR_NO_SPACE);
	case -EACCES:
		return ctx_fail(x, GRPC_PERMISSION_DENIED, "etcdserver: permission denied");
	case -ECONNREFUSED:
		return ctx_fail(x, GRPC_UNAVAILABLE, "etcdfs gateway: the backend is unreachable");
	case -ENOMEM:
		return ctx_oom(x);
	default:
		return ctx_fail(x, GRPC_UNKNOWN, "etcdfs gateway: backend error: %s",
				strerror(-err));
	}
}

int ctx_current_rev(struct ctx *x, int64_t *rev)
{
	int ret = kv_status(x->gw->kv, rev);
	return ret < 0 ? ctx_kv_fail(x, ret, false) : 0;
}

/* ---- request field readers (jsonpb rules) ---- */

const json_t *jp_field(const json_t *o, const char *snake, const char *camel)
{
	const json_t *v = json_object_get(o, snake);
	if (!v && camel)
		v = json_object_get(o, camel);
	return v && !json_is_null(v) ? v : NULL;
}

int jp_get_i64(struct ctx *x, const json_t *o, const char *snake, const char *camel, int64_t *out)
{
	if (v3json_int64(jp_field(o, snake, camel), out) < 0)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "bad value for int64 field \"%s\"",
				snake);
	return 0;
}

int jp_get_bool(struct ctx *x, const json_t *o, const char *snake, const char *camel, bool *out)
{
	if (v3json_bool(jp_field(o, snake, camel), out) < 0)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "bad value for bool field \"%s\"", snake);
	return 0;
}

int jp_get_enum(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		const char *const *names, int n, int *out)
{
	if (v3json_enum(jp_field(o, snake, camel), names, n, out) < 0)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "bad value for enum field \"%s\"", snake);
	return 0;
}

/* As a server, lenient like etcd's own gateway: the URL-safe alphabet, missing padding and
 * non-canonical trailing bits are accepted. */
int jp_get_bytes(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		 const void **p, size_t *n)
{
	const json_t *v = jp_field(o, snake, camel);
	*p = "";
	*n = 0;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "bad value for bytes field \"%s\"",
				snake);
	char *buf;
	int ret = base64_decode(json_string_value(v), json_string_length(v),
				BASE64_URL_SAFE | BASE64_LAX, &buf, n);
	if (ret == -ENOMEM)
		return ctx_oom(x);
	if (ret < 0)
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "bad base64 in bytes field \"%s\"",
				snake);
	if (keep(x, buf) < 0)
		return -1;
	*p = buf;
	return 0;
}

int jp_check_object(struct ctx *x, const json_t *o, const char *what)
{
	if (o && !json_is_object(o))
		return ctx_fail(x, GRPC_INVALID_ARGUMENT, "%s must be a JSON object", what);
	return 0;
}

/* ---- response builders (any failure is ENOMEM; callers check the final result) ---- */

static json_t *i64_json(int64_t v)
{
	char b[24];
	snprintf(b, sizeof(b), "%lld", (long long)v);
	return json_string(b);
}

int jp_set_i64(json_t *o, const char *k, int64_t v)
{
	return v ? json_object_set_new(o, k, i64_json(v)) : 0;
}

json_t *jp_done(json_t *o, bool failed)
{
	if (!failed)
		return o;
	json_decref(o);
	return NULL;
}

json_t *jp_reply(int64_t revision)
{
	json_t *h = json_object(), *o = json_object();
	if (!h || !o || jp_set_i64(h, "revision", revision) < 0) {
		json_decref(h);
		json_decref(o);
		return NULL;
	}
	if (json_object_set_new(o, "header", h) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *jp_kv(const struct kv_kv *kv)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (v3json_set_b64(o, "key", kv->key, kv->key_len, false) < 0 ||
	    jp_set_i64(o, "create_revision", kv->create_revision) < 0 ||
	    jp_set_i64(o, "mod_revision", kv->mod_revision) < 0 ||
	    jp_set_i64(o, "version", kv->version) < 0 ||
	    (kv->value && v3json_set_b64(o, "value", kv->value, kv->value_len, false) < 0) ||
	    jp_set_i64(o, "lease", kv->lease) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int jp_set_kvs(json_t *o, const char *k, const struct kv_kv *kvs, size_t n)
{
	if (!n)
		return 0;
	json_t *a = json_array();
	if (!a || json_object_set_new(o, k, a) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(a, jp_kv(&kvs[i])) < 0)
			return -1;
	return 0;
}

int ctx_reply(struct ctx *x, json_t *body, int err)
{
	if (err < 0 || !body) {
		json_decref(body);
		return ctx_oom(x);
	}
	x->code = GRPC_OK;
	x->body = body;
	return 0;
}
