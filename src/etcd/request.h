/* request.h: internal to src/etcd: the one request loop shared by the JSON transport, the
 * gRPC transport (client.c) and the watch reconnect (watch.c).
 *
 * The loop owns what every request to etcd has in common: which endpoint to try (starting
 * with the one that last answered, then the others in turn), fetching the auth token and
 * renewing it once when the server calls it invalid, wiping every token copy, trying another
 * member when one is UNAVAILABLE, and the "may have been applied" rule: a write that may have
 * reached a server is never sent again, neither to another endpoint nor through JSON. A
 * transport supplies one callback that sends the request to one endpoint and classifies what
 * came back.
 */
#ifndef ETCDFS_ETCD_REQUEST_H
#define ETCDFS_ETCD_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"

struct etcd_client;

/* What one attempt came to, as the transport classifies it. */
enum etcd_outcome {
	ETCD_DONE,    /* a usable reply: the loop ends with 0 */
	ETCD_STOP,    /* end at once with err (nothing is tried again) */
	ETCD_LOST,    /* transport failure (err, unsent): another endpoint may answer */
	ETCD_REFUSED, /* the server answered with an error (e) */
	ETCD_FOREIGN, /* the endpoint does not speak this transport (why, unsent, applied) */
};

struct etcd_attempt {
	int err;	     /* STOP: negative errno or a caller's positive code; LOST: errno */
	bool unsent;	     /* LOST, FOREIGN: the request surely did not reach the server */
	bool applied;	     /* FOREIGN: the server ran it, but its reply is unreadable */
	bool token_worked;   /* a stream was established: a later refusal may renew again */
	struct etcd_error e; /* REFUSED */
	char why[320];	     /* FOREIGN: cause, for etcd_grpc_failed() and the log */
};

struct etcd_request_ops {
	bool grpc; /* gRPC: writes go only to proven endpoints; FOREIGN means "use JSON" */
	/* Sends the request once to endpoint idx with token (NULL = none), timeout_ms being the
	 * command timeout, and classifies the outcome into *a. The token is only borrowed. */
	enum etcd_outcome (*perform)(struct etcd_client *c, void *ctx, size_t idx,
				     const char *token, long timeout_ms, struct etcd_attempt *a);
};

struct etcd_request {
	const struct etcd_request_ops *ops;
	void *ctx;	  /* the transport's, given to perform */
	const char *path; /* for the log */
	bool idempotent;  /* safe to send again after it may have arrived (a read) */
	bool use_auth;
	const int *abort_flag; /* polled while authenticating (may be NULL) */
	/* A stream: one attempt on endpoint first, nothing logged that the stream's owner
	 * reports itself, errors given back as the server said them. */
	bool stream;
	size_t first;
	bool auth_retried; /* in/out: the token was renewed once already */
	bool token_failed; /* out: the loop ended because no token could be had */
	bool refused;	   /* out: the loop ended with the server's refusal (e.err) */
};

/* Runs rq (see the header comment). Returns 0 (DONE), a STOP code, the server's or the
 * transport's errno, or -EPROTONOSUPPORT when this gRPC request should go through JSON
 * instead (FOREIGN or an unproven endpoint, nothing applied; see etcd_fall_back()). */
int etcd_request_run(struct etcd_client *c, struct etcd_request *rq);

/* After -EPROTONOSUPPORT: whether the request may go through JSON (not when the transport is
 * GRPC alone); counts the fallback when it may. */
bool etcd_fall_back(struct etcd_client *c);

/* Wipes and frees a secret string (token, password); NULL is fine. */
void etcd_secret_free(char *s);

#endif
