/* test_etcd_request.c: the request loop (src/etcd/request.h) with a scripted transport and no
 * server: endpoint rotation, the one token renewal, UNAVAILABLE, the may-have-been-applied
 * rule, gRPC's proven endpoints and the stream mode the watch uses. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "request.h"
#include "test.h"

#define MAX_STEPS 8

/* One scripted attempt: what the fake transport answers. */
struct step {
	enum etcd_outcome o;
	int err;
	bool unsent, applied, retry_auth;
	int grpc_code;
};

struct script {
	struct step steps[MAX_STEPS];
	size_t n, next;
	size_t idx[MAX_STEPS];		/* endpoint of each attempt */
	char token[MAX_STEPS][32];	/* token each attempt was given ("" = none) */
	bool token_borrowed[MAX_STEPS]; /* a copy, not the client's own string */
	bool renew_first;		/* before a refusal, renew the client's token as another
					   thread would (no server needed to authenticate) */
};

static enum etcd_outcome fake_perform(struct etcd_client *c, void *ctx, size_t idx,
				      const char *token, long timeout_ms, struct etcd_attempt *a)
{
	struct script *s = ctx;
	CHECK_EQ(timeout_ms, c->command_timeout_ms);
	REQUIRE(s->next < s->n, "attempt %zu not scripted", s->next);
	size_t i = s->next++;
	const struct step *st = &s->steps[i];
	s->idx[i] = idx;
	snprintf(s->token[i], sizeof(s->token[i]), "%s", token ? token : "");
	s->token_borrowed[i] = !token || token != c->token;
	a->err = st->err;
	a->unsent = st->unsent;
	a->applied = st->applied;
	snprintf(a->why, sizeof(a->why), "scripted");
	if (st->o == ETCD_REFUSED) {
		a->e.err = st->err;
		a->e.grpc_code = st->grpc_code ? st->grpc_code : -1;
		a->e.retry_auth = st->retry_auth;
		snprintf(a->e.msg, sizeof(a->e.msg), "scripted refusal");
		if (st->retry_auth && s->renew_first) {
			pthread_mutex_lock(&c->auth_lock);
			etcd_secret_free(c->token);
			c->token = strdup("token-2");
			c->token_gen++;
			pthread_mutex_unlock(&c->auth_lock);
		}
	}
	return st->o;
}

static const struct etcd_request_ops json_like = {.grpc = false, .perform = fake_perform};
static const struct etcd_request_ops grpc_like = {.grpc = true, .perform = fake_perform};

static struct etcd_client *client(const char *user, enum etcd_transport t)
{
	struct etcd_config cfg;
	struct kv *kv = NULL;
	etcd_config_init(&cfg);
	etcd_config_set_endpoints(&cfg, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3");
	etcd_config_set_string(&cfg.user, user);
	cfg.transport = t;
	REQUIRE_EQ(etcd_client_new(&cfg, &kv), 0);
	etcd_config_free(&cfg);
	struct etcd_client *c = to_client(kv);
	if (user)
		c->token = strdup("token-1"); /* as if authenticated: no server is asked */
	return c;
}

static int run(struct etcd_client *c, const struct etcd_request_ops *ops, struct script *s,
	       bool idempotent, struct etcd_request *out)
{
	struct etcd_request rq = {
		.ops = ops, .ctx = s, .path = "/test", .idempotent = idempotent, .use_auth = true};
	int ret = etcd_request_run(c, &rq);
	if (out)
		*out = rq;
	return ret;
}

static void test_rotation(void)
{
	struct etcd_client *c = client(NULL, ETCD_TRANSPORT_AUTO);
	c->preferred = 1;
	/* A read goes on past lost attempts and UNAVAILABLE, from the preferred endpoint. */
	struct script s = {.n = 3,
			   .steps = {{ETCD_LOST, -ECONNREFUSED, .unsent = true},
				     {ETCD_REFUSED, -EIO, .grpc_code = ETCD_GRPC_UNAVAILABLE},
				     {ETCD_DONE}}};
	CHECK_EQ(run(c, &json_like, &s, true, NULL), 0);
	CHECK_EQ(s.next, 3);
	CHECK_EQ(s.idx[0], 1);
	CHECK_EQ(s.idx[1], 2);
	CHECK_EQ(s.idx[2], 0);
	CHECK_EQ(c->preferred, 0);			/* the one that answered */
	CHECK_STRN(s.token[0], strlen(s.token[0]), ""); /* no user: no token */

	/* Every endpoint lost: the worst error. */
	s = (struct script){.n = 3,
			    .steps = {{ETCD_LOST, -ECONNREFUSED, .unsent = true},
				      {ETCD_LOST, -ETIMEDOUT},
				      {ETCD_LOST, -EIO}}};
	CHECK_EQ(run(c, &json_like, &s, true, NULL), -ETIMEDOUT);
	CHECK_EQ(s.next, 3);

	/* A server's refusal ends the loop with its errno. */
	s = (struct script){.n = 1, .steps = {{ETCD_REFUSED, -EACCES}}};
	struct etcd_request rq;
	CHECK_EQ(run(c, &json_like, &s, true, &rq), -EACCES);
	CHECK(rq.refused);
	s = (struct script){.n = 1, .steps = {{ETCD_STOP, -ECANCELED}}};
	CHECK_EQ(run(c, &json_like, &s, true, &rq), -ECANCELED);
	CHECK(!rq.refused);
	kv_destroy(&c->kv);
}

static void test_writes(void)
{
	struct etcd_client *c = client(NULL, ETCD_TRANSPORT_AUTO);
	/* Unsent: tried elsewhere. Sent and lost: never again. */
	struct script s = {.n = 3,
			   .steps = {{ETCD_LOST, -ECONNREFUSED, .unsent = true},
				     {ETCD_LOST, -ETIMEDOUT},
				     {ETCD_DONE}}};
	CHECK_EQ(run(c, &json_like, &s, false, NULL), -ETIMEDOUT);
	CHECK_EQ(s.next, 2);
	/* UNAVAILABLE is not redone for a write. */
	s = (struct script){
		.n = 2,
		.steps = {{ETCD_REFUSED, -EIO, .grpc_code = ETCD_GRPC_UNAVAILABLE}, {ETCD_DONE}}};
	CHECK_EQ(run(c, &json_like, &s, false, NULL), -EIO);
	CHECK_EQ(s.next, 1);
	kv_destroy(&c->kv);
}

static void test_grpc_foreign(void)
{
	struct etcd_client *c = client(NULL, ETCD_TRANSPORT_AUTO);
	/* A write to an endpoint that never answered gRPC is not sent: use JSON. */
	struct script s = {.n = 1, .steps = {{ETCD_DONE}}};
	CHECK_EQ(run(c, &grpc_like, &s, false, NULL), -EPROTONOSUPPORT);
	CHECK_EQ(s.next, 0);
	/* Reads may always go to JSON after FOREIGN. */
	s = (struct script){.n = 1, .steps = {{ETCD_FOREIGN}}};
	CHECK_EQ(run(c, &grpc_like, &s, true, NULL), -EPROTONOSUPPORT);
	CHECK(!etcd_use_grpc(c)); /* AUTO: JSON for a while */
	/* Writes only when surely unapplied. */
	for (int applied = 0; applied < 3; applied++) {
		c->grpc_off_until_ms = 0;
		for (size_t i = 0; i < c->n_urls; i++)
			etcd_grpc_answered(c, i);
		CHECK(etcd_grpc_write_ok(c, 0));
		s = (struct script){
			.n = 1,
			.steps = {{ETCD_FOREIGN, .unsent = applied == 0, .applied = applied == 2}}};
		CHECK_EQ(run(c, &grpc_like, &s, false, NULL),
			 applied == 0 ? -EPROTONOSUPPORT : -EIO);
		CHECK(!etcd_grpc_write_ok(c, 0)); /* the endpoint must prove itself again */
	}
	uint64_t before = c->stats.grpc_fallbacks;
	CHECK(etcd_fall_back(c));
	CHECK_EQ(c->stats.grpc_fallbacks, before + 1);
	etcd_client_set_transport(&c->kv, ETCD_TRANSPORT_GRPC);
	CHECK(!etcd_fall_back(c));
	CHECK_EQ(c->stats.grpc_fallbacks, before + 1);
	CHECK(etcd_grpc_write_ok(c, 0)); /* GRPC alone: every endpoint */
	kv_destroy(&c->kv);
}

/* The token is renewed once, on either transport; each attempt borrows a copy. */
static void test_auth_retry(void)
{
	const struct etcd_request_ops *ops[] = {&json_like, &grpc_like};
	for (int t = 0; t < 2; t++) {
		struct etcd_client *c = client("u:p", ETCD_TRANSPORT_AUTO);
		struct script s = {.n = 3,
				   .renew_first = true,
				   .steps = {{ETCD_REFUSED, -EACCES, .retry_auth = true},
					     {ETCD_REFUSED, -EACCES, .retry_auth = true},
					     {ETCD_DONE}}};
		struct etcd_request rq;
		CHECK_EQ(run(c, ops[t], &s, true, &rq), -EACCES);
		CHECK_EQ(s.next, 2); /* renewed once, not twice */
		CHECK(rq.auth_retried && rq.refused && !rq.token_failed);
		CHECK_STRN(s.token[0], strlen(s.token[0]), "token-1");
		CHECK_STRN(s.token[1], strlen(s.token[1]), "token-2");
		CHECK(s.token_borrowed[0] && s.token_borrowed[1]);
		CHECK_EQ(s.idx[0], s.idx[1]);
		kv_destroy(&c->kv);
	}
}

/* The watch's stream mode: one endpoint, errors as the server said them, renewal again once
 * a stream was established. */
static void test_stream(void)
{
	struct etcd_client *c = client("u:p", ETCD_TRANSPORT_AUTO);
	struct script s = {
		.n = 2,
		.steps = {{ETCD_REFUSED, -EIO, .grpc_code = ETCD_GRPC_UNAVAILABLE}, {ETCD_DONE}}};
	struct etcd_request rq = {.ops = &json_like,
				  .ctx = &s,
				  .path = "/w",
				  .idempotent = true,
				  .use_auth = true,
				  .stream = true,
				  .first = 2};
	CHECK_EQ(etcd_request_run(c, &rq), -EIO);
	CHECK_EQ(s.next, 1);
	CHECK_EQ(s.idx[0], 2);
	CHECK(rq.refused);
	s = (struct script){.n = 1, .steps = {{ETCD_LOST, -ECONNRESET}}};
	CHECK_EQ(etcd_request_run(c, &rq), -ECONNRESET);
	s = (struct script){.n = 1, .steps = {{ETCD_STOP, 2}}};
	CHECK_EQ(etcd_request_run(c, &rq), 2); /* the caller's own code */
	CHECK_EQ(c->preferred, 0);	       /* streams do not move it */
	/* Renewed once already: a refusal is final until a stream is established. */
	rq.auth_retried = true;
	s = (struct script){.n = 1, .steps = {{ETCD_REFUSED, -EACCES, .retry_auth = true}}};
	CHECK_EQ(etcd_request_run(c, &rq), -EACCES);
	CHECK_EQ(s.next, 1);
	kv_destroy(&c->kv);
}

int main(void)
{
	TEST_RUN(test_rotation);
	TEST_RUN(test_writes);
	TEST_RUN(test_grpc_foreign);
	TEST_RUN(test_auth_retry);
	TEST_RUN(test_stream);
	return test_summary();
}
