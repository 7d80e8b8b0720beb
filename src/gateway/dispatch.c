/* dispatch.c: routes a request to its handler (/v3beta/ and /v3alpha/ as aliases of /v3/),
 * answers GET /health and /version, and turns a handler's context into the reply or etcd's
 * error.
 */
#include "gateway_int.h"

#include <string.h>

#include "core/log.h"

typedef int (*handler_fn)(struct ctx *x, const json_t *body);

static const struct route {
	const char *path;
	handler_fn fn;
} routes[] = {
	{"/v3/kv/range", api_range},	     {"/v3/kv/put", api_put},
	{"/v3/kv/deleterange", api_delete},  {"/v3/kv/txn", api_txn},
	{"/v3/kv/compaction", api_compact},  {"/v3/maintenance/status", api_status},
	{"/v3/auth/authenticate", api_auth}, {"/v3/watch", NULL},
	{"/v3/lease/grant", api_lease_grant},
	{"/v3/lease/revoke", api_lease_revoke},	{"/v3/kv/lease/revoke", api_lease_revoke},
	{"/v3/lease/keepalive", api_lease_keepalive},
	{"/v3/lease/timetolive", api_lease_ttl}, {"/v3/kv/lease/timetolive", api_lease_ttl},
	{"/v3/lease/leases", api_lease_leases},	{"/v3/kv/lease/leases", api_lease_leases},
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

bool gw_dispatch(struct conn *c, struct request *rq)
{
	struct gw *gw = c->gw;
	normalize_path(rq->path);
	if (!strcmp(rq->method, "GET") && !strcmp(rq->path, "/health")) {
		int64_t rev;
		bool ok = kv_status(gw->kv, &rev) == 0;
		json_t *o = json_pack("{s:s}", "health", ok ? "true" : "false");
		int ret = http_send_json(c, ok ? 200 : 503, o, rq->keep_alive);
		json_decref(o);
		return !ret && rq->keep_alive;
	}
	if (!strcmp(rq->method, "GET") && !strcmp(rq->path, "/version")) {
		json_t *o = json_pack("{s:s, s:s}", "etcdserver", API_VERSION, "etcdcluster",
				      API_VERSION);
		int ret = http_send_json(c, 200, o, rq->keep_alive);
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
		int ret = http_send_typed(c, 404, "text/plain; charset=utf-8", nf, sizeof(nf) - 1,
					  rq->keep_alive);
		return !ret && rq->keep_alive;
	}
	if (strcmp(rq->method, "POST")) {
		json_t *o = json_pack("{s:s, s:s, s:i}", "error", "Method Not Allowed", "message",
				      "Method Not Allowed", "code", GRPC_UNIMPLEMENTED);
		int ret = http_send_json(c, 405, o, rq->keep_alive);
		json_decref(o);
		return !ret && rq->keep_alive;
	}
	if (!rt->fn) {
		gw_serve_watch(c, rq);
		return false;
	}
	struct ctx x = {.gw = gw};
	json_error_t jerr;
	json_t *body = NULL;
	size_t skip = strspn(rq->body, " \t\r\n");
	if (skip < rq->body_len) {
		body = json_loadb(rq->body, rq->body_len, 0, &jerr);
		if (!body)
			ctx_fail(&x, GRPC_INVALID_ARGUMENT, "invalid JSON: %s", jerr.text);
	} else {
		body = json_object(); /* an empty body is an empty request, as in grpc-gateway */
		if (!body)
			ctx_oom(&x);
	}
	if (body && !json_is_object(body))
		ctx_fail(&x, GRPC_INVALID_ARGUMENT, "the request must be a JSON object");
	else if (body)
		rt->fn(&x, body);
	json_decref(body);
	int ret;
	if (x.code == GRPC_OK && x.body) {
		ret = http_send_json(c, 200, x.body, rq->keep_alive);
	} else {
		if (x.code == GRPC_OK)
			ctx_fail(&x, GRPC_INTERNAL, "etcdfs gateway: no reply");
		log_debug("gateway: %s: %s (code %d)", rq->path, x.msg, x.code);
		ret = http_send_error(c, x.code, x.msg, rq->keep_alive);
	}
	ctx_free(&x);
	return !ret && rq->keep_alive;
}
