/* store_int.h: internals shared by store.c (Raft, state machine, watches) and
 * forward.c (follower -> leader request forwarding). Not a public header.
 *
 * Threads: the libuv loop thread owns everything Raft (raft, io, transport,
 * the pending list); caller threads talk to it only through the submission
 * queue + uv_async. The MVCC state is guarded by state_lock (written only on
 * the loop thread). Watch threads wait on wmu/wcond.
 */
#ifndef ETCDFS_STORE_INT_H
#define ETCDFS_STORE_INT_H

#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <uv.h>

#include "codec.h"
#include "mvcc.h"
#include "store.h"

#define STORE_MAX_PEERS 16

struct store_peer {
	unsigned id;
	char raft_addr[64]; /* "IP:PORT" */
	char fwd_host[48];
	unsigned fwd_port;
};

/* A proposal on its way through Raft. Shared by the proposing thread and the
 * loop thread: refs and done are protected by store->mu. */
struct preq {
	struct store *s;
	int refs;
	bool done;
	bool cancelled; /* caller gave up before submission: do not propose */
	struct raft_apply apply;
	struct raft_buffer buf; /* raft_malloc'd Command; owned by raft once proposed */
	uint64_t seq;
	bool want_result;
	bool is_write; /* not a read barrier: worth a warning if its fate is unknown */
	/* Filled on the loop thread before done is set. */
	int err;
	struct kv_txn_result res;
	int64_t lease_id;	/* lease grant: the id granted */
	int64_t lease_revision; /* lease revoke: the store revision after */
	pthread_cond_t cond;
	struct preq *qnext;	    /* submission queue, protected by mu */
	struct preq *pprev, *pnext; /* proposed and waiting, loop thread only */
};

struct fwd_server; /* forward.c */
struct fwd_pool;   /* forward.c */

struct store {
	struct kv kv; /* first: kv.h contract */
	struct store_config cfg;
	char *data_dir;
	char *raft_dir;
	int lock_fd;
	bool multi;
	struct store_peer peers[STORE_MAX_PEERS];
	unsigned n_peers;
	const struct store_peer *self;
	uint64_t boot; /* random per open: makes (boot, seq) unique forever */

	/* ---- state machine ---- */
	pthread_rwlock_t state_lock;
	struct mvcc *m; /* protected by state_lock */

	/* ---- loop thread ---- */
	uv_loop_t loop;
	uv_async_t async;
	uv_timer_t poll_timer;
	uv_timer_t restart_timer;
	pthread_t loop_thread;
	bool loop_started;
	struct raft raft;
	struct raft_io io;
	struct raft_fsm fsm;
	struct raft_uv_transport transport;
	enum { RS_DOWN = 0, RS_UP, RS_CLOSING } rstate; /* loop thread only */
	unsigned restart_delay_ms;			/* loop thread only */
	int last_role;					/* loop thread only */
	struct preq *pending;	/* proposed, awaiting callback; loop thread only */
	int64_t auto_compacted; /* last auto-compaction target; loop thread only */

	/* ---- shared with callers, protected by mu ---- */
	pthread_mutex_t mu;
	pthread_cond_t leader_cond;
	struct preq *qhead, *qtail; /* submission queue */
	uint64_t next_seq;
	bool closing;
	bool need_restart;
	unsigned leader_id; /* as last seen by the loop thread */
	bool is_leader;
	bool io_error;
	/* read barriers (multi-node linearizable reads), protected by mu */
	uint64_t rb_started, rb_done;
	bool rb_inflight;
	pthread_cond_t rb_cond;

	/* ---- watches ---- */
	pthread_mutex_t wmu;
	pthread_cond_t wcond;
	int64_t published_rev;	  /* protected by wmu */
	struct kv_watch *watches; /* protected by wmu */

	/* ---- forwarding (multi-node) ---- */
	struct fwd_server *fwd_server;
	struct fwd_pool *fwd_pool;
};

/* Internal error: this node is not the leader (never returned to callers). */
#define STORE_ENOTLEADER 10000

/* store.c: local execution, used by callers and by the forwarding server.
 * Return -STORE_ENOTLEADER when the request must go to the leader. */
int store_local_txn(struct store *s, const struct kv_txn *txn, struct kv_txn_result *res);
int store_local_range(struct store *s, const struct kv_range_req *req, struct kv_range_result *res);
int store_local_compact(struct store *s, int64_t rev);
/* A lease call on the leader; -STORE_ENOTLEADER elsewhere. Fills resp's lease,
 * revision, lease_ids and (TTL with keys) *resp->range. */
int store_local_lease(struct store *s, const struct codec_lease_req *req,
		      struct codec_fwd_resp *resp);
/* Linearizable read on this node: confirms leadership with a read barrier
 * (multi-node) and then reads the local state. -STORE_ENOTLEADER if this
 * node is not the leader. */
int store_linear_range(struct store *s, const struct kv_range_req *req,
		       struct kv_range_result *res);
bool store_leader_peer(struct store *s, struct store_peer *out);
int64_t store_deadline_ms(long timeout_ms);
/* A monotonic millisecond time as a timespec, for cond vars on CLOCK_MONOTONIC. */
void store_ms_to_timespec(int64_t ms, struct timespec *ts);

/* datadir.c */
/* a malloc'd "a/b", or NULL when out of memory */
char *store_path_join(const char *a, const char *b);
/* Creates, checks and locks the data dir and reads its meta file; *bootstrap
 * is true when no meta file exists yet (a first start). */
int store_setup_dirs(struct store *s, bool *bootstrap);
/* Records the cluster and this node in the meta file (after bootstrap). */
int store_meta_write(struct store *s);

/* watch.c: the kv.h watch calls of the store */
int store_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
		struct kv_watch **out);
void store_watch_cancel(struct kv_watch *w);

/* forward.c */
int fwd_server_start(struct store *s, struct fwd_server **out);
void fwd_server_stop(struct fwd_server *fs);
struct fwd_pool *fwd_pool_new(void);
void fwd_pool_free(struct fwd_pool *p);
/* Sends req to the current leader, retrying on "not leader" / connection
 * refused until the deadline. Fills resp (caller sets resp->txn/range). */
int fwd_call(struct store *s, const struct codec_fwd_req *req, struct codec_fwd_resp *resp,
	     int64_t deadline_ms);

#endif
