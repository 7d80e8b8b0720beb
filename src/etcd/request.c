/* request.c: the one request loop (request.h) and the transport choice it applies: which
 * endpoints answered gRPC, when AUTO goes over JSON instead. */
#include "request.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "internal.h"

#define GRPC_OFF_MS 30000 /* AUTO: JSON only for this long after a gRPC protocol failure */

void etcd_secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* ---- transport choice ---- */

bool etcd_use_grpc(struct etcd_client *c)
{
	switch (__atomic_load_n(&c->transport, __ATOMIC_RELAXED)) {
	case ETCD_TRANSPORT_JSON:
		return false;
	case ETCD_TRANSPORT_GRPC:
		return true;
	default:
		/* Measured on etcd 3.4 (bench_grpc_vs_json): gRPC wins for single keys too
		 * (~0.4 vs ~0.9 ms per get over a kept-alive connection: the gateway adds a
		 * loopback gRPC hop), and by 8-30x for pages of many keys. */
		return util_now_ms() >= __atomic_load_n(&c->grpc_off_until_ms, __ATOMIC_RELAXED);
	}
}

bool etcd_fall_back(struct etcd_client *c)
{
	if (__atomic_load_n(&c->transport, __ATOMIC_RELAXED) == ETCD_TRANSPORT_GRPC)
		return false; /* no fallback wanted; the cause is logged */
	__atomic_add_fetch(&c->stats.grpc_fallbacks, 1, __ATOMIC_RELAXED);
	return true;
}

void etcd_grpc_answered(struct etcd_client *c, size_t idx)
{
	__atomic_store_n(&c->grpc_proven[idx % c->n_urls], 1, __ATOMIC_RELAXED);
}

/* A write that may have reached a server is never sent again, and a gRPC attempt that fails
 * like a protocol problem after sending is ambiguous: an HTTP/1.1-only server answering the
 * HTTP/2 preface with an error looks to libcurl exactly like an etcd that dropped the
 * connection after applying the write ("empty reply"). So in AUTO writes use gRPC only on an
 * endpoint that has answered a gRPC request since the last protocol failure (the mount's first
 * listing does that), and go through JSON before; a protocol failure there is then a broken
 * exchange, reported as such, never silently redone over JSON. */
bool etcd_grpc_write_ok(struct etcd_client *c, size_t idx)
{
	return __atomic_load_n(&c->transport, __ATOMIC_RELAXED) == ETCD_TRANSPORT_GRPC ||
	       __atomic_load_n(&c->grpc_proven[idx % c->n_urls], __ATOMIC_RELAXED);
}

void etcd_grpc_failed(struct etcd_client *c, const char *url, const char *why)
{
	__atomic_store_n(&c->grpc_off_until_ms, util_now_ms() + GRPC_OFF_MS, __ATOMIC_RELAXED);
	/* Whatever answered gRPC before may not any more (a proxy put in front?): writes wait
	 * until a read proves the endpoint again. */
	for (size_t i = 0; i < c->n_urls; i++)
		__atomic_store_n(&c->grpc_proven[i], 0, __ATOMIC_RELAXED);
	if (!__atomic_exchange_n(&c->grpc_fallback_logged, 1, __ATOMIC_RELAXED))
		log_info("etcd %s: gRPC request failed (%s); using the JSON gateway instead "
			 "(for %d s)",
			 url, why, GRPC_OFF_MS / 1000);
	else
		log_debug("etcd %s: gRPC request failed (%s); using the JSON gateway", url, why);
}

/* ---- the loop ---- */

/* Ranks transport errors: the one reported after every endpoint failed. */
static int worse(int a, int b)
{
	static const int order[] = {-ETIMEDOUT, -EACCES, -EIO, -ECONNREFUSED, -ENOMEM, 0};
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (a == order[i] || b == order[i])
			return order[i];
	return a ? a : b;
}

/* The endpoint does not speak gRPC: JSON may serve the request, unless it is a write that
 * may have been applied. */
static int foreign(struct etcd_client *c, struct etcd_request *rq, size_t idx,
		   const struct etcd_attempt *a)
{
	etcd_grpc_failed(c, c->urls[idx], a->why);
	if (rq->idempotent || a->unsent)
		return -EPROTONOSUPPORT;
	if (a->applied)
		log_err("etcd %s%s: %s; the request was applied, its result is unknown",
			c->urls[idx], rq->path, a->why);
	else
		log_err("etcd %s: %s may or may not have been applied (%s); not retrying it",
			c->urls[idx], rq->path, a->why);
	return -EIO;
}

/* The server refused: logs it (not for streams) and gives its errno. */
static int refused(struct etcd_request *rq, const char *url, const struct etcd_error *e)
{
	rq->refused = true;
	if (rq->stream)
		return e->err ? e->err : -EIO;
	if (e->err == -EIO && rq->ops->grpc)
		log_err("etcd %s%s: %s (gRPC status %d)", url, rq->path, e->msg, e->grpc_code);
	else if (e->err == -EIO)
		log_err("etcd %s%s: %s", url, rq->path, e->msg);
	else if (e->err != -EOPNOTSUPP)
		log_warn("etcd %s%s: %s", url, rq->path, e->msg);
	return e->err;
}

int etcd_request_run(struct etcd_client *c, struct etcd_request *rq)
{
	char *token = NULL;
	int ret;
	rq->token_failed = rq->refused = false;
again:;
	uint64_t gen = 0;
	etcd_secret_free(token);
	token = NULL;
	if (rq->use_auth && c->user) {
		ret = etcd_get_token(c, &token, &gen, rq->abort_flag);
		if (ret < 0) {
			rq->token_failed = true;
			goto out;
		}
	}
	size_t start = rq->stream ? rq->first
				  : __atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_urls;
	size_t n = rq->stream ? 1 : c->n_urls;
	int failure = 0;
	ret = -ECONNREFUSED;
	for (size_t i = 0; i < n; i++) {
		size_t idx = (start + i) % c->n_urls;
		if (rq->ops->grpc && !rq->idempotent && !etcd_grpc_write_ok(c, idx)) {
			/* Nothing was sent anywhere yet: earlier endpoints failed unsent. */
			ret = -EPROTONOSUPPORT;
			goto out;
		}
		struct etcd_attempt a = {0};
		enum etcd_outcome o =
			rq->ops->perform(c, rq->ctx, idx, token, c->command_timeout_ms, &a);
		if (a.token_worked)
			rq->auth_retried = false;
		switch (o) {
		case ETCD_DONE:
			if (!rq->stream)
				__atomic_store_n(&c->preferred, (unsigned)idx, __ATOMIC_RELAXED);
			ret = 0;
			goto out;
		case ETCD_STOP:
			ret = a.err;
			goto out;
		case ETCD_FOREIGN:
			ret = foreign(c, rq, idx, &a);
			goto out;
		case ETCD_LOST:
			ret = a.err;
			failure = worse(failure, ret);
			if (rq->stream)
				goto out;
			if (!rq->idempotent && !a.unsent) {
				log_err("etcd %s: %s may or may not have been applied; not "
					"retrying it "
					"elsewhere",
					c->urls[idx], rq->path);
				goto out;
			}
			continue; /* not sent, or idempotent: another endpoint may answer */
		case ETCD_REFUSED:
			break;
		}
		if (a.e.retry_auth && rq->use_auth && c->user && !rq->auth_retried) {
			log_info("etcd %s: %s%s; authenticating again", c->urls[idx],
				 rq->stream ? "watch: " : "", a.e.msg);
			etcd_invalidate_token(c, gen);
			rq->auth_retried = true;
			goto again;
		}
		if (a.e.grpc_code == ETCD_GRPC_UNAVAILABLE && rq->idempotent && !rq->stream) {
			/* No leader, shutting down: another member may serve. Not for writes. */
			log_warn("etcd %s: %s", c->urls[idx], a.e.msg);
			failure = worse(failure, -EIO);
			continue;
		}
		ret = refused(rq, c->urls[idx], &a.e);
		goto out;
	}
	ret = failure ? failure : -ECONNREFUSED;
	if (c->n_urls > 1)
		log_err("etcd: %s failed on all %zu endpoints", rq->path, c->n_urls);
	else
		log_err("etcd: %s failed: %s", rq->path, strerror(-ret));
out:
	etcd_secret_free(token);
	return ret;
}
