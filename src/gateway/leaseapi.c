/* leaseapi.c: etcd's Lease service on the JSON gateway, as etcd 3.4's grpc-gateway serves it
 * (/v3/lease/grant, /v3/lease/revoke, /v3/lease/keepalive, /v3/lease/timetolive,
 * /v3/lease/leases; /v3/kv/lease/... as aliases), over kv.h's lease calls. Field names are
 * the proto's own (ID, TTL, grantedTTL), as etcd's gateway writes them. The keep-alive
 * stream answers one request: {"result": {...}}, what etcd sends for a one-request body.
 */
#include "gateway_int.h"
#include "grpc_int.h"

#include <errno.h>
#include <stdlib.h>

#include "core/base64.h"
#include "v3json/v3json.h"

static json_t *lease_json(int64_t revision, int64_t id, int64_t ttl)
{
	json_t *o = jp_reply(revision);
	return jp_done(o, !o || jp_set_i64(o, "ID", id) < 0 || jp_set_i64(o, "TTL", ttl) < 0);
}

int api_lease_grant(struct ctx *x, const json_t *body)
{
	int64_t id, ttl, cur;
	struct kv_lease l;
	if (jp_get_i64(x, body, "ID", NULL, &id) < 0 || jp_get_i64(x, body, "TTL", NULL, &ttl) < 0)
		return -1;
	int ret = kv_lease_grant(x->gw->kv, id, ttl, &l);
	if (ret < 0)
		return grpc_kv_fail(x, ret, true, false);
	if (ctx_current_rev(x, &cur) < 0)
		return -1;
	return ctx_reply(x, lease_json(cur, l.id, l.granted_ttl ? l.granted_ttl : l.ttl), 0);
}

int api_lease_revoke(struct ctx *x, const json_t *body)
{
	int64_t id, rev = 0;
	if (jp_get_i64(x, body, "ID", NULL, &id) < 0)
		return -1;
	int ret = kv_lease_revoke(x->gw->kv, id, &rev);
	if (ret < 0)
		return grpc_kv_fail(x, ret, true, true);
	return ctx_reply(x, jp_reply(rev), 0);
}

int api_lease_keepalive(struct ctx *x, const json_t *body)
{
	int64_t id, cur;
	struct kv_lease l;
	if (jp_get_i64(x, body, "ID", NULL, &id) < 0)
		return -1;
	int ret = kv_lease_keepalive(x->gw->kv, id, &l);
	if (ret < 0 && ret != -ENOENT)
		return grpc_kv_fail(x, ret, false, true);
	if (ctx_current_rev(x, &cur) < 0)
		return -1;
	/* etcd answers a lease that is gone with TTL 0, not an error */
	json_t *o = lease_json(cur, id, ret == -ENOENT ? 0 : l.ttl);
	return ctx_reply(x, o ? v3json_wrap("result", o) : NULL, 0);
}

/* The keys as base64 strings, the form of a repeated bytes field. */
static int set_keys(json_t *o, const struct kv_range_result *keys)
{
	if (!keys->n_kvs)
		return 0;
	json_t *a = json_array();
	if (!a || json_object_set_new(o, "keys", a) < 0)
		return -1;
	for (size_t i = 0; i < keys->n_kvs; i++) {
		char *s = base64_encode(keys->kvs[i].key, keys->kvs[i].key_len, NULL);
		int ret = s ? json_array_append_new(a, json_string(s)) : -1;
		free(s);
		if (ret < 0)
			return -1;
	}
	return 0;
}

int api_lease_ttl(struct ctx *x, const json_t *body)
{
	int64_t id, cur;
	bool want_keys;
	struct kv_lease l = {0};
	struct kv_range_result keys = {0};
	if (jp_get_i64(x, body, "ID", NULL, &id) < 0 ||
	    jp_get_bool(x, body, "keys", NULL, &want_keys) < 0 || ctx_current_rev(x, &cur) < 0)
		return -1;
	int ret = kv_lease_ttl(x->gw->kv, id, &l, want_keys ? &keys : NULL);
	if (ret < 0 && ret != -ENOENT)
		return grpc_kv_fail(x, ret, false, false);
	/* etcd's answer for a lease that is gone: TTL -1, not an error */
	json_t *o = lease_json(cur, id, ret == -ENOENT ? -1 : l.ttl);
	o = jp_done(o, !o || jp_set_i64(o, "grantedTTL", l.granted_ttl) < 0 ||
			       set_keys(o, &keys) < 0);
	kv_range_result_free(&keys);
	return ctx_reply(x, o, 0);
}

int api_lease_leases(struct ctx *x, const json_t *body)
{
	int64_t *ids = NULL, cur;
	size_t n = 0;
	(void)body;
	int ret = kv_lease_list(x->gw->kv, &ids, &n);
	if (ret < 0)
		return grpc_kv_fail(x, ret, false, false);
	if (ctx_current_rev(x, &cur) < 0) {
		free(ids);
		return -1;
	}
	json_t *o = jp_reply(cur), *a = n ? json_array() : NULL;
	bool failed = !o || (n && (!a || json_object_set(o, "leases", a) < 0));
	for (size_t i = 0; i < n && !failed; i++) {
		json_t *l = json_object();
		failed = !l || jp_set_i64(l, "ID", ids[i]) < 0 || json_array_append_new(a, l) < 0;
	}
	json_decref(a);
	free(ids);
	return ctx_reply(x, jp_done(o, failed), 0);
}
