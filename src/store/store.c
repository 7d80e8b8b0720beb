/* store.c: the embedded store: MVCC state machine replicated and persisted
 * through libraft (libuv I/O backend) and exposed through the kv.h vtable.
 *
 * Write path: caller thread validates and serializes the txn as a Command,
 * queues it for the loop thread (uv_async), which raft_apply()s it; the fsm
 * apply callback (loop thread) applies it to the MVCC state and hands the
 * result to the waiting caller, whose condition variable is then signalled.
 * So a write returns success only once its entry is committed, fsync'd by
 * libraft and applied. Reads run on the caller thread under a shared lock.
 */
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define POLL_MS 50
/* etcd's MaxLeaseTTL: a longer grant is refused. */
#define LEASE_MAX_TTL 9000000000ll
/* How long the leader waits for an expired lease's revoke before proposing it again. */
#define LEASE_RETRY_MS 3000
/* Expired leases revoked per poll tick at most (the rest follow 50 ms later). */
#define LEASE_EXPIRE_BATCH 64

/* ---- time ---- */

int64_t store_deadline_ms(long timeout_ms)
{
	return util_now_ms() + timeout_ms;
}

void store_ms_to_timespec(int64_t ms, struct timespec *ts)
{
	ts->tv_sec = ms / 1000;
	ts->tv_nsec = (ms % 1000) * 1000000;
}

static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/* ---- configuration ---- */

void store_config_init(struct store_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->id = 1;
	cfg->snapshot_threshold = 1024;
	cfg->snapshot_trailing = 128;
	cfg->apply_timeout_ms = 5000;
	cfg->open_timeout_ms = 10000;
	cfg->max_request_bytes = 3 * 1024 * 1024 / 2;
	cfg->max_txn_ops = 128;
	cfg->election_timeout_ms = 1000;
	cfg->heartbeat_timeout_ms = 100;
	cfg->segment_size = 8 * 1024 * 1024;
	cfg->auto_compact_retain = 10000;
}

static int parse_addr(const char *s, size_t len, struct store_peer *p)
{
	/* IP:PORT[:FWDPORT], IPv4 only (raft_uv_tcp's address format). */
	char buf[96];
	if (len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = 0;
	char *c1 = strchr(buf, ':');
	if (!c1 || c1 == buf)
		return -EINVAL;
	*c1 = 0;
	char *port = c1 + 1, *fwd = strchr(port, ':');
	if (fwd)
		*fwd++ = 0;
	char *end;
	unsigned long rp = strtoul(port, &end, 10);
	if (*end || !*port || rp == 0 || rp > 65535)
		return -EINVAL;
	unsigned long fp = rp + 1000;
	if (fwd) {
		fp = strtoul(fwd, &end, 10);
		if (*end || !*fwd || fp == 0)
			return -EINVAL;
	}
	if (fp > 65535)
		return -EINVAL;
	if (strlen(buf) >= sizeof(p->fwd_host))
		return -EINVAL;
	snprintf(p->raft_addr, sizeof(p->raft_addr), "%s:%lu", buf, rp);
	snprintf(p->fwd_host, sizeof(p->fwd_host), "%s", buf);
	p->fwd_port = (unsigned)fp;
	return 0;
}

static int parse_peers(struct store *s, const char *spec)
{
	const char *p = spec;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (!eq || s->n_peers == STORE_MAX_PEERS)
			goto bad;
		char *end;
		unsigned long id = strtoul(p, &end, 10);
		if (end != eq || id == 0 || id > UINT_MAX)
			goto bad;
		struct store_peer *peer = &s->peers[s->n_peers];
		peer->id = (unsigned)id;
		if (parse_addr(eq + 1, len - (size_t)(eq + 1 - p), peer) < 0)
			goto bad;
		for (unsigned i = 0; i < s->n_peers; i++)
			if (s->peers[i].id == peer->id) {
				log_err("store: --peers lists id %u twice", peer->id);
				return -EINVAL;
			}
		s->n_peers++;
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
bad:
	log_err("store: cannot parse --peers \"%s\": expected ID=IP:PORT[:FWDPORT],...", spec);
	return -EINVAL;
}

/* ---- raft error mapping ---- */

static int raft_errno(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case RAFT_NOMEM:
		return -ENOMEM;
	case RAFT_NOSPACE:
		return -ENOSPC;
	case RAFT_UNAUTHORIZED:
		return -EACCES;
	case RAFT_NOTLEADER:
		return -STORE_ENOTLEADER;
	case RAFT_TOOBIG:
		return -EFBIG;
	case RAFT_SHUTDOWN:
		return -ESHUTDOWN;
	case RAFT_CORRUPT:
	case RAFT_MALFORMED:
		return -EUCLEAN;
	default:
		return -EIO;
	}
}

/* ---- a transport for the single-node case ----
 *
 * A lone node never talks to anyone, so it opens no socket at all: libraft's
 * TCP transport has no authentication and would let any local user inject
 * Raft messages into a laptop's store. */

struct null_transport {
	uv_timer_t timer; /* only used to defer the close callback */
	raft_uv_transport_close_cb close_cb;
	struct raft_uv_transport *t;
};

static int nt_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
	(void)t, (void)id, (void)address;
	return 0;
}

static int nt_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
	(void)t, (void)cb;
	return 0;
}

static int nt_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
		      const char *address, raft_uv_connect_cb cb)
{
	(void)req, (void)id, (void)address, (void)cb;
	snprintf(t->errmsg, sizeof(t->errmsg), "single-node store has no peers");
	return RAFT_NOCONNECTION;
}

static void nt_closed(uv_handle_t *h)
{
	struct null_transport *nt = h->data;
	nt->close_cb(nt->t);
}

static void nt_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
	struct null_transport *nt = t->impl;
	nt->close_cb = cb;
	uv_close((uv_handle_t *)&nt->timer, nt_closed);
}

static int null_transport_init(struct raft_uv_transport *t, uv_loop_t *loop)
{
	struct null_transport *nt = calloc(1, sizeof(*nt));
	if (!nt)
		return RAFT_NOMEM;
	uv_timer_init(loop, &nt->timer);
	nt->timer.data = nt;
	nt->t = t;
	memset(t, 0, sizeof(*t));
	t->impl = nt;
	t->init = nt_init;
	t->listen = nt_listen;
	t->connect = nt_connect;
	t->close = nt_close;
	return 0;
}

static void transport_release(struct store *s)
{
	if (s->multi) {
		raft_uv_tcp_close(&s->transport);
	} else {
		free(s->transport.impl);
		s->transport.impl = NULL;
	}
}

/* ---- state machine (loop thread) ---- */

static void publish_revision(struct store *s)
{
	pthread_rwlock_rdlock(&s->state_lock);
	int64_t rev = mvcc_revision(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	pthread_mutex_lock(&s->wmu);
	s->published_rev = rev;
	pthread_cond_broadcast(&s->wcond);
	pthread_mutex_unlock(&s->wmu);
}

static struct preq *pending_find(struct store *s, uint64_t seq)
{
	for (struct preq *p = s->pending; p; p = p->pnext)
		if (p->seq == seq)
			return p;
	return NULL;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
	struct store *s = fsm->data;
	*result = NULL;
	/* libraft applies entries in index order and bumps last_applied right
	 * after this callback, so this entry's index is last_applied + 1. */
	uint64_t index = s->raft.last_applied + 1;
	if (index <= mvcc_applied_index(s->m))
		return 0; /* already in the state (raft restarted under us) */
	struct codec_cmd cmd;
	int ret = codec_unpack_cmd(buf->base, buf->len, &cmd);
	if (ret == -ENOMEM) {
		log_err("store: out of memory applying log entry %llu", (unsigned long long)index);
		abort(); /* diverging from the log is worse than stopping */
	}
	if (ret < 0) {
		/* Deterministic on every node, so skipping keeps them equal. */
		log_err("store: log entry %llu is not a valid command; skipped",
			(unsigned long long)index);
		pthread_rwlock_wrlock(&s->state_lock);
		mvcc_set_applied_index(s->m, index);
		pthread_rwlock_unlock(&s->state_lock);
		return 0;
	}
	struct preq *p = NULL;
	if (cmd.origin == s->cfg.id && cmd.boot == s->boot)
		p = pending_find(s, cmd.seq);
	struct kv_txn_result *res = p && p->want_result ? &p->res : NULL;
	pthread_rwlock_wrlock(&s->state_lock);
	switch (cmd.kind) {
	case CODEC_CMD_TXN:
		ret = cmd.leases_checked ? mvcc_txn(s->m, &cmd.txn, res)
					 : mvcc_txn_legacy(s->m, &cmd.txn, res);
		break;
	case CODEC_CMD_COMPACT:
		ret = mvcc_compact(s->m, cmd.compact);
		break;
	case CODEC_CMD_LEASE_GRANT:
		/* The raft index seeds the id: the same on every node. */
		ret = mvcc_lease_grant(s->m, cmd.lease_id, cmd.lease_ttl, index, util_now_ms(),
				       p ? &p->lease_id : NULL);
		break;
	case CODEC_CMD_LEASE_REVOKE:
		ret = mvcc_lease_revoke(s->m, cmd.lease_id, p ? &p->lease_revision : NULL);
		break;
	default:
		ret = 0;
		break;
	}
	mvcc_set_applied_index(s->m, index);
	pthread_rwlock_unlock(&s->state_lock);
	codec_cmd_free(&cmd);
	if (ret == -ENOMEM) {
		log_err("store: out of memory applying log entry %llu", (unsigned long long)index);
		abort();
	}
	if (p)
		p->err = ret;
	publish_revision(s);
	return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	struct store *s = fsm->data;
	void *data;
	size_t len;
	pthread_rwlock_wrlock(&s->state_lock);
	/* The snapshot stands for everything up to raft's last_applied, which
	 * may be a configuration or barrier entry the fsm never sees. */
	if (s->raft.last_applied > mvcc_applied_index(s->m))
		mvcc_set_applied_index(s->m, s->raft.last_applied);
	pthread_rwlock_unlock(&s->state_lock);
	/* Only this (loop) thread ever writes the state, so a shared lock is
	 * enough to serialize it while readers carry on. */
	pthread_rwlock_rdlock(&s->state_lock);
	int ret = mvcc_snapshot(s->m, &data, &len);
	pthread_rwlock_unlock(&s->state_lock);
	if (ret < 0)
		return RAFT_NOMEM;
	*bufs = raft_malloc(sizeof(**bufs));
	if (!*bufs) {
		free(data);
		return RAFT_NOMEM;
	}
	(*bufs)[0].base = data;
	(*bufs)[0].len = len;
	*n_bufs = 1;
	log_debug("store: snapshot at index %llu, %zu bytes",
		  (unsigned long long)s->raft.last_applied, len);
	return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	(void)fsm;
	if (*bufs) {
		for (unsigned i = 0; i < *n_bufs; i++)
			free((*bufs)[i].base);
		raft_free(*bufs);
	}
	*bufs = NULL;
	*n_bufs = 0;
	return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct store *s = fsm->data;
	struct mvcc *m;
	int ret = mvcc_restore(buf->base, buf->len, &m);
	raft_free(buf->base);
	if (ret < 0) {
		log_err("store: cannot restore snapshot: %s", strerror(-ret));
		return ret == -ENOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
	}
	pthread_rwlock_wrlock(&s->state_lock);
	if (mvcc_applied_index(m) <= mvcc_applied_index(s->m)) {
		/* Our state is already at least as new (raft restarted). */
		pthread_rwlock_unlock(&s->state_lock);
		mvcc_free(m);
		return 0;
	}
	struct mvcc *old = s->m;
	s->m = m;
	pthread_rwlock_unlock(&s->state_lock);
	mvcc_free(old);
	log_info("store: restored snapshot at revision %lld (raft index %llu)",
		 (long long)mvcc_revision(m), (unsigned long long)mvcc_applied_index(m));
	publish_revision(s);
	return 0;
}

/* ---- loop thread: proposals ---- */

static void preq_unref_locked(struct preq *p)
{
	if (--p->refs == 0) {
		kv_txn_result_free(&p->res);
		pthread_cond_destroy(&p->cond);
		free(p);
	}
}

static void preq_complete(struct store *s, struct preq *p, int err)
{
	pthread_mutex_lock(&s->mu);
	if (err)
		p->err = err;
	p->done = true;
	pthread_cond_signal(&p->cond);
	preq_unref_locked(p);
	pthread_mutex_unlock(&s->mu);
}

static void pending_remove(struct store *s, struct preq *p)
{
	if (p->pprev)
		p->pprev->pnext = p->pnext;
	else if (s->pending == p)
		s->pending = p->pnext;
	if (p->pnext)
		p->pnext->pprev = p->pprev;
	p->pprev = p->pnext = NULL;
}

static void schedule_restart(struct store *s);

static void apply_cb(struct raft_apply *req, int status, void *result)
{
	struct preq *p = req->data;
	struct store *s = p->s;
	(void)result;
	pending_remove(s, p);
	int err = 0;
	if (status != 0) {
		err = raft_errno(status);
		if (status == RAFT_NOSPACE || status == RAFT_IOERR) {
			log_err("store: writing the raft log failed: %s (%s); the write was not "
				"stored, restarting raft from disk",
				strerror(-err), raft_errmsg(&s->raft));
			pthread_mutex_lock(&s->mu);
			s->io_error = true;
			pthread_mutex_unlock(&s->mu);
			schedule_restart(s);
		} else if (status == RAFT_LEADERSHIPLOST) {
			/* The entry may still be committed by the next leader. */
			if (p->is_write)
				log_warn("store: leadership lost before a write committed; its "
					 "outcome is unknown");
			err = -EIO;
		} else {
			log_err("store: write failed in raft: %s", raft_strerror(status));
		}
	}
	preq_complete(s, p, err);
}

/* Completes a proposal that never reached raft with err, freeing its entry. */
static void preq_drop(struct store *s, struct preq *q, int err)
{
	raft_free(q->buf.base);
	q->buf.base = NULL;
	preq_complete(s, q, err);
}

static void submit(struct store *s, struct preq *p)
{
	if (raft_state(&s->raft) != RAFT_LEADER) {
		preq_drop(s, p, -STORE_ENOTLEADER);
		return;
	}
	p->apply.data = p;
	int rv = raft_apply(&s->raft, &p->apply, &p->buf, 1, apply_cb);
	if (rv != 0) {
		if (rv != RAFT_NOTLEADER)
			log_err("store: raft_apply failed: %s", raft_errmsg(&s->raft));
		preq_drop(s, p, raft_errno(rv));
		return;
	}
	p->buf.base = NULL; /* owned by raft now */
	p->pnext = s->pending;
	p->pprev = NULL;
	if (s->pending)
		s->pending->pprev = p;
	s->pending = p;
}

static void raft_closed(struct raft *r);
static int raft_boot(struct store *s, bool bootstrap, bool *inited);

/* Takes every queued proposal off the queue, to be submitted or failed without the lock. */
static struct preq *take_queue(struct store *s)
{
	pthread_mutex_lock(&s->mu);
	struct preq *q = s->qhead;
	s->qhead = s->qtail = NULL;
	pthread_mutex_unlock(&s->mu);
	return q;
}

static void drain_queue(struct store *s)
{
	for (struct preq *q = take_queue(s), *next; q; q = next) {
		next = q->qnext;
		q->qnext = NULL;
		pthread_mutex_lock(&s->mu);
		bool cancelled = q->cancelled;
		pthread_mutex_unlock(&s->mu);
		if (cancelled)
			preq_drop(s, q, -ETIMEDOUT);
		else
			submit(s, q);
	}
}

static void fail_queue(struct store *s, int err)
{
	for (struct preq *q = take_queue(s), *next; q; q = next) {
		next = q->qnext;
		preq_drop(s, q, err);
	}
}

static void handles_closed(uv_handle_t *h)
{
	(void)h;
}

/* Last step of shutdown: once these are closed, uv_run returns. */
static void close_handles(struct store *s)
{
	uv_handle_t *hs[] = {(uv_handle_t *)&s->async, (uv_handle_t *)&s->poll_timer,
			     (uv_handle_t *)&s->restart_timer};
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		if (!uv_is_closing(hs[i]))
			uv_close(hs[i], handles_closed);
}

static bool shutting_down(struct store *s)
{
	pthread_mutex_lock(&s->mu);
	bool closing = s->closing;
	pthread_mutex_unlock(&s->mu);
	return closing;
}

/* Starts closing the raft instance; raft_closed() continues (restart or
 * shutdown, depending on s->closing). */
static void raft_shutdown(struct store *s)
{
	s->rstate = RS_CLOSING;
	raft_close(&s->raft, raft_closed);
}

static void async_cb(uv_async_t *a)
{
	struct store *s = a->data;
	pthread_mutex_lock(&s->mu);
	bool closing = s->closing, restart = s->need_restart;
	s->need_restart = false;
	pthread_mutex_unlock(&s->mu);
	if (closing) {
		fail_queue(s, -ESHUTDOWN);
		uv_timer_stop(&s->poll_timer);
		if (s->rstate == RS_UP) {
			raft_shutdown(s);
		} else if (s->rstate == RS_DOWN) {
			uv_timer_stop(&s->restart_timer);
			close_handles(s);
		}
		/* RS_CLOSING: raft_closed() sees s->closing and finishes. */
		return;
	}
	if (restart && s->rstate == RS_UP) {
		raft_shutdown(s);
		return;
	}
	if (s->rstate == RS_UP)
		drain_queue(s);
}

static void schedule_restart(struct store *s)
{
	pthread_mutex_lock(&s->mu);
	s->need_restart = true;
	pthread_mutex_unlock(&s->mu);
	/* Not from inside libraft's callback: the loop picks it up next turn. */
	uv_async_send(&s->async);
}

static void restart_timer_cb(uv_timer_t *t)
{
	struct store *s = t->data;
	if (shutting_down(s)) {
		close_handles(s);
		return;
	}
	bool inited;
	int ret = raft_boot(s, false, &inited);
	if (ret < 0) {
		log_err("store: restarting raft failed (%s); retrying in 1s", strerror(-ret));
		s->restart_delay_ms = 1000;
		if (inited)
			raft_shutdown(s); /* raft_closed() re-arms the timer */
		else
			uv_timer_start(&s->restart_timer, restart_timer_cb, s->restart_delay_ms, 0);
		return;
	}
	s->rstate = RS_UP;
	s->restart_delay_ms = 0;
	pthread_mutex_lock(&s->mu);
	s->io_error = false;
	pthread_mutex_unlock(&s->mu);
	log_info("store: raft restarted from disk at index %llu",
		 (unsigned long long)s->raft.last_applied);
	drain_queue(s);
}

static void raft_closed(struct raft *r)
{
	struct store *s = r->data;
	raft_uv_close(&s->io);
	transport_release(s);
	s->rstate = RS_DOWN;
	bool closing = shutting_down(s);
	/* Fail whatever was proposed to the old instance and never called back
	 * (libraft 0.15 drops the callbacks of all but the first entry of a
	 * batch whose write failed). */
	while (s->pending) {
		struct preq *p = s->pending;
		pending_remove(s, p);
		preq_complete(s, p, closing ? -ESHUTDOWN : -EIO);
	}
	if (closing) {
		fail_queue(s, -ESHUTDOWN);
		close_handles(s);
		return;
	}
	uv_timer_start(&s->restart_timer, restart_timer_cb, s->restart_delay_ms, 0);
}

/* Submits a command with nobody waiting for it (loop thread). */
static void propose_internal(struct store *s, const struct codec_cmd *cmd)
{
	struct preq *p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->s = s;
	p->refs = 1;
	cond_init_mono(&p->cond);
	p->seq = cmd->seq;
	if (codec_pack_cmd(cmd, raft_malloc, &p->buf.base, &p->buf.len) < 0) {
		pthread_cond_destroy(&p->cond);
		free(p);
		return;
	}
	submit(s, p);
}

static void promote_leases(struct store *s);
static void expire_leases(struct store *s);

static void maybe_auto_compact(struct store *s)
{
	int64_t retain = s->cfg.auto_compact_retain;
	pthread_rwlock_rdlock(&s->state_lock);
	int64_t rev = mvcc_revision(s->m), comp = mvcc_compact_revision(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	if (rev - comp <= 2 * retain || rev - retain <= s->auto_compacted)
		return;
	s->auto_compacted = rev - retain;
	pthread_mutex_lock(&s->mu);
	uint64_t seq = ++s->next_seq;
	pthread_mutex_unlock(&s->mu);
	struct codec_cmd cmd = {.origin = s->cfg.id,
				.boot = s->boot,
				.seq = seq,
				.kind = CODEC_CMD_COMPACT,
				.compact = rev - retain};
	log_debug("store: auto-compacting history below revision %lld", (long long)(rev - retain));
	propose_internal(s, &cmd);
}

static void poll_cb(uv_timer_t *t)
{
	struct store *s = t->data;
	if (s->rstate != RS_UP)
		return;
	int role = raft_state(&s->raft);
	raft_id lid = 0;
	const char *laddr = NULL;
	raft_leader(&s->raft, &lid, &laddr);
	/* Before lease calls can see is_leader: they must never read the deadlines
	 * this node kept as a follower. */
	if (role == RAFT_LEADER && s->last_role != RAFT_LEADER)
		promote_leases(s);
	pthread_mutex_lock(&s->mu);
	bool changed = s->leader_id != (unsigned)lid || s->is_leader != (role == RAFT_LEADER);
	s->leader_id = (unsigned)lid;
	s->is_leader = role == RAFT_LEADER;
	uint64_t seq = ++s->next_seq;
	if (changed)
		pthread_cond_broadcast(&s->leader_cond);
	pthread_mutex_unlock(&s->mu);
	if (changed)
		log_info("store: node %u: %s, leader %llu", s->cfg.id,
			 role == RAFT_LEADER	 ? "leader"
			 : role == RAFT_FOLLOWER ? "follower"
						 : "candidate",
			 (unsigned long long)lid);
	if (role == RAFT_LEADER && s->last_role != RAFT_LEADER && s->multi) {
		/* Raft commits entries of earlier terms only together with one of
		 * the current term: propose an empty one right away so writes
		 * acknowledged by the old leader's quorum become visible here. */
		struct codec_cmd cmd = {
			.origin = s->cfg.id, .boot = s->boot, .seq = seq, .kind = CODEC_CMD_NOOP};
		propose_internal(s, &cmd);
	}
	s->last_role = role;
	if (role == RAFT_LEADER)
		expire_leases(s);
	if (role == RAFT_LEADER && s->cfg.auto_compact_retain > 0)
		maybe_auto_compact(s);
}

static void *loop_main(void *arg)
{
	struct store *s = arg;
	uv_run(&s->loop, UV_RUN_DEFAULT);
	return NULL;
}

/* ---- raft lifecycle ---- */

/* Sets up io, transport and raft and starts it. On failure, *inited tells
 * whether raft_init succeeded: then the caller must raft_close (which
 * completes asynchronously); otherwise everything was released here. Runs on
 * the opening thread before the loop thread exists, or on the loop thread
 * (restart). */
static int raft_boot(struct store *s, bool bootstrap, bool *inited)
{
	int rv, ret;
	*inited = false;
	const char *addr =
		s->multi ? s->self->raft_addr : (s->cfg.listen ? s->cfg.listen : "local");
	memset(&s->raft, 0, sizeof(s->raft));
	memset(&s->io, 0, sizeof(s->io));
	memset(&s->transport, 0, sizeof(s->transport));
	rv = s->multi ? raft_uv_tcp_init(&s->transport, &s->loop)
		      : null_transport_init(&s->transport, &s->loop);
	if (rv != 0) {
		log_err("store: cannot set up the raft transport: %s", raft_strerror(rv));
		return raft_errno(rv);
	}
	rv = raft_uv_init(&s->io, &s->loop, s->raft_dir, &s->transport);
	if (rv != 0) {
		log_err("store: cannot set up raft storage in %s: %s", s->raft_dir, s->io.errmsg);
		ret = raft_errno(rv);
		transport_release(s);
		return ret;
	}
	raft_uv_set_segment_size(&s->io, s->cfg.segment_size);
	/* libraft's "auto recovery" renames a segment it cannot parse out of the
	 * way and starts without it, silently dropping committed entries. We
	 * would rather refuse to start and say why. */
	raft_uv_set_auto_recovery(&s->io, false);
	rv = raft_init(&s->raft, &s->io, &s->fsm, s->cfg.id, addr);
	if (rv != 0) {
		log_err("store: cannot open raft storage in %s: %s", s->raft_dir,
			raft_errmsg(&s->raft));
		ret = raft_errno(rv);
		raft_uv_close(&s->io);
		transport_release(s);
		return ret;
	}
	s->raft.data = s;
	*inited = true;
	raft_set_election_timeout(&s->raft, s->cfg.election_timeout_ms);
	raft_set_heartbeat_timeout(&s->raft, s->cfg.heartbeat_timeout_ms);
	raft_set_snapshot_threshold(&s->raft, s->cfg.snapshot_threshold);
	raft_set_snapshot_trailing(&s->raft, s->cfg.snapshot_trailing);
	if (s->multi) {
		raft_set_pre_vote(&s->raft, true);
		/* libraft 0.15 keeps a follower in "snapshot" state until this
		 * timeout even when the InstallSnapshot went nowhere (follower
		 * down); the 30 s default would stall a restarted follower's
		 * catch-up for that long. Loopback/LAN snapshots take far less. */
		unsigned ist = 3 * s->cfg.election_timeout_ms;
		raft_set_install_snapshot_timeout(&s->raft, ist > 2000 ? ist : 2000);
	}
	if (bootstrap) {
		struct raft_configuration conf;
		raft_configuration_init(&conf);
		rv = 0;
		if (s->multi) {
			for (unsigned i = 0; i < s->n_peers && rv == 0; i++)
				rv = raft_configuration_add(&conf, s->peers[i].id,
							    s->peers[i].raft_addr, RAFT_VOTER);
		} else {
			rv = raft_configuration_add(&conf, s->cfg.id, addr, RAFT_VOTER);
		}
		if (rv == 0)
			rv = raft_bootstrap(&s->raft, &conf);
		raft_configuration_close(&conf);
		if (rv != 0) {
			log_err("store: cannot bootstrap raft in %s: %s", s->raft_dir,
				raft_errmsg(&s->raft));
			return raft_errno(rv);
		}
	}
	rv = raft_start(&s->raft);
	if (rv != 0) {
		log_err("store: cannot start raft from %s: %s", s->raft_dir, raft_errmsg(&s->raft));
		ret = raft_errno(rv);
		return ret == -EIO ? -EUCLEAN : ret;
	}
	return 0;
}

/* ---- proposals from caller threads ---- */

/* Proposes cmd and waits (bounded) for it to be applied. res receives the
 * txn result when non-NULL. Returns the apply error, -STORE_ENOTLEADER, or
 * -ETIMEDOUT. */
static int propose_out(struct store *s, struct codec_cmd *cmd, struct kv_txn_result *res,
		       int64_t *lease_id, int64_t *lease_revision)
{
	struct preq *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->refs = 2;
	p->want_result = res != NULL;
	p->is_write = cmd->kind != CODEC_CMD_NOOP;
	cond_init_mono(&p->cond);
	pthread_mutex_lock(&s->mu);
	p->seq = ++s->next_seq;
	pthread_mutex_unlock(&s->mu);
	cmd->origin = s->cfg.id;
	cmd->boot = s->boot;
	cmd->seq = p->seq;
	int ret = codec_pack_cmd(cmd, raft_malloc, &p->buf.base, &p->buf.len);
	if (ret < 0) {
		pthread_cond_destroy(&p->cond);
		free(p);
		return ret;
	}
	int64_t deadline = store_deadline_ms(s->cfg.apply_timeout_ms);
	pthread_mutex_lock(&s->mu);
	if (s->closing) {
		pthread_mutex_unlock(&s->mu);
		raft_free(p->buf.base);
		pthread_cond_destroy(&p->cond);
		free(p);
		return -ESHUTDOWN;
	}
	if (s->qtail)
		s->qtail->qnext = p;
	else
		s->qhead = p;
	s->qtail = p;
	pthread_mutex_unlock(&s->mu);
	uv_async_send(&s->async);

	struct timespec ts;
	store_ms_to_timespec(deadline, &ts);
	pthread_mutex_lock(&s->mu);
	while (!p->done) {
		if (pthread_cond_timedwait(&p->cond, &s->mu, &ts) == ETIMEDOUT)
			break;
	}
	if (p->done) {
		ret = p->err;
		if (ret == 0 && res) {
			*res = p->res;
			memset(&p->res, 0, sizeof(p->res));
		}
		if (ret == 0 && lease_id)
			*lease_id = p->lease_id;
		if (ret == 0 && lease_revision)
			*lease_revision = p->lease_revision;
	} else {
		p->cancelled = true;
		ret = -ETIMEDOUT;
		log_warn("store: write not committed within %ld ms", s->cfg.apply_timeout_ms);
	}
	preq_unref_locked(p);
	pthread_mutex_unlock(&s->mu);
	return ret;
}

static int propose(struct store *s, struct codec_cmd *cmd, struct kv_txn_result *res)
{
	return propose_out(s, cmd, res, NULL, NULL);
}

/* ---- local execution ---- */

static bool leader_known_here(struct store *s, bool *is_leader)
{
	pthread_mutex_lock(&s->mu);
	*is_leader = s->is_leader;
	bool known = s->leader_id != 0;
	pthread_mutex_unlock(&s->mu);
	return known;
}

bool store_leader_peer(struct store *s, struct store_peer *out)
{
	pthread_mutex_lock(&s->mu);
	unsigned id = s->leader_id;
	pthread_mutex_unlock(&s->mu);
	for (unsigned i = 0; i < s->n_peers; i++)
		if (s->peers[i].id == id) {
			*out = s->peers[i];
			return true;
		}
	return false;
}

int store_local_range(struct store *s, const struct kv_range_req *req, struct kv_range_result *res)
{
	pthread_rwlock_rdlock(&s->state_lock);
	int ret = mvcc_range(s->m, req, res);
	pthread_rwlock_unlock(&s->state_lock);
	return ret;
}

/* Makes the local state good for a linearizable read: afterwards, every
 * write that completed before the call is applied here, and this node was
 * still the leader after the call began. A lone node trivially is. In a
 * cluster the proof is an empty entry proposed after the call began and
 * committed by a quorum in our term (the ReadIndex idea, done through the
 * log because libraft 0.15 has no read-index API); concurrent readers share
 * one such entry. Returns -STORE_ENOTLEADER on a follower. */
static int read_barrier(struct store *s)
{
	if (!s->multi)
		return 0;
	int64_t deadline = store_deadline_ms(s->cfg.apply_timeout_ms);
	struct timespec ts;
	store_ms_to_timespec(deadline, &ts);
	int ret = 0;
	pthread_mutex_lock(&s->mu);
	/* Only a barrier started after this point proves anything. */
	uint64_t target = s->rb_started + 1;
	while (s->rb_done < target) {
		if (!s->is_leader) {
			ret = -STORE_ENOTLEADER;
			break;
		}
		if (!s->rb_inflight) {
			s->rb_inflight = true;
			uint64_t gen = ++s->rb_started;
			pthread_mutex_unlock(&s->mu);
			struct codec_cmd cmd = {.kind = CODEC_CMD_NOOP};
			ret = propose(s, &cmd, NULL);
			/* Leadership lost meanwhile: the caller asks the new leader
			 * (or times out if there is none). */
			if (ret == -EIO)
				ret = -STORE_ENOTLEADER;
			pthread_mutex_lock(&s->mu);
			s->rb_inflight = false;
			if (ret == 0 && gen > s->rb_done)
				s->rb_done = gen;
			pthread_cond_broadcast(&s->rb_cond);
			if (ret < 0)
				break;
			continue;
		}
		if (pthread_cond_timedwait(&s->rb_cond, &s->mu, &ts) == ETIMEDOUT) {
			ret = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return ret;
}

int store_linear_range(struct store *s, const struct kv_range_req *req, struct kv_range_result *res)
{
	memset(res, 0, sizeof(*res));
	int ret = read_barrier(s);
	if (ret < 0)
		return ret;
	return store_local_range(s, req, res);
}

int store_local_txn(struct store *s, const struct kv_txn *txn, struct kv_txn_result *res)
{
	memset(res, 0, sizeof(*res));
	if (mvcc_txn_readonly(txn)) {
		/* Read-only txns never enter the log; like ranges they are
		 * linearizable reads. */
		int ret = read_barrier(s);
		if (ret < 0)
			return ret;
		pthread_rwlock_rdlock(&s->state_lock);
		ret = mvcc_txn_readonly_eval(s->m, txn, res);
		pthread_rwlock_unlock(&s->state_lock);
		return ret;
	}
	struct codec_cmd cmd = {.kind = CODEC_CMD_TXN, .txn = *txn, .leases_checked = true};
	return propose(s, &cmd, res);
}

int store_local_compact(struct store *s, int64_t rev)
{
	struct codec_cmd cmd = {.kind = CODEC_CMD_COMPACT, .compact = rev};
	return propose(s, &cmd, NULL);
}

/* ---- leases ----
 *
 * Grant and revoke are log entries. Expiry is the leader's: its poll timer
 * proposes a revoke entry for every lease past its local deadline, as etcd's
 * lessor does; followers never expire anything. Keep-alive, like etcd's, only
 * moves the leader's local deadline and is not replicated: a node that
 * becomes leader first gives every lease its full TTL from that moment, so a
 * renewal the old leader saw can never make the new one expire a lease
 * early. All lease calls run on the leader (followers forward them). */

/* etcd's minimum TTL: 1.5 election timeouts, rounded up to whole seconds. */
static int64_t min_lease_ttl(const struct store *s)
{
	int64_t ms = 3 * (int64_t)s->cfg.election_timeout_ms / 2;
	return (ms + 999) / 1000;
}

static int lease_grant_here(struct store *s, int64_t id, int64_t ttl, struct kv_lease *out)
{
	if (ttl > LEASE_MAX_TTL)
		return -EINVAL;
	if (ttl < min_lease_ttl(s))
		ttl = min_lease_ttl(s);
	struct codec_cmd cmd = {.kind = CODEC_CMD_LEASE_GRANT, .lease_id = id, .lease_ttl = ttl};
	int ret = propose_out(s, &cmd, NULL, &out->id, NULL);
	if (ret == 0)
		out->ttl = out->granted_ttl = ttl;
	return ret;
}

/* Keep-alive, time-to-live and list read the local table: only the leader's
 * deadlines mean anything. */
static int lease_read_here(struct store *s, const struct codec_lease_req *req,
			   struct codec_fwd_resp *resp)
{
	int64_t now = util_now_ms();
	int ret;
	pthread_rwlock_rdlock(&s->state_lock);
	switch (req->op) {
	case CODEC_LEASE_KEEPALIVE:
		ret = mvcc_lease_renew(s->m, req->id, now, &resp->lease);
		break;
	case CODEC_LEASE_TTL:
		ret = mvcc_lease_get(s->m, req->id, now, &resp->lease,
				     req->keys ? resp->range : NULL);
		break;
	default:
		ret = mvcc_lease_list(s->m, &resp->lease_ids, &resp->n_lease_ids);
		break;
	}
	pthread_rwlock_unlock(&s->state_lock);
	return ret;
}

int store_local_lease(struct store *s, const struct codec_lease_req *req,
		      struct codec_fwd_resp *resp)
{
	bool leader;
	leader_known_here(s, &leader);
	if (!leader)
		return -STORE_ENOTLEADER;
	struct codec_cmd cmd = {.kind = CODEC_CMD_LEASE_REVOKE, .lease_id = req->id};
	switch (req->op) {
	case CODEC_LEASE_GRANT:
		return lease_grant_here(s, req->id, req->ttl, &resp->lease);
	case CODEC_LEASE_REVOKE:
		return propose_out(s, &cmd, NULL, NULL, &resp->revision);
	case CODEC_LEASE_KEEPALIVE:
	case CODEC_LEASE_TTL:
	case CODEC_LEASE_LIST:
		return lease_read_here(s, req, resp);
	default:
		return -EINVAL;
	}
}

/* Runs a lease call here when this node leads, else on the leader. */
static int lease_call(struct store *s, const struct codec_lease_req *req,
		      struct codec_fwd_resp *resp)
{
	int64_t deadline = store_deadline_ms(s->cfg.apply_timeout_ms);
	for (;;) {
		bool leader;
		leader_known_here(s, &leader);
		if (!s->multi || leader) {
			int ret = store_local_lease(s, req, resp);
			if (ret != -STORE_ENOTLEADER)
				return ret;
			if (util_now_ms() >= deadline)
				return -ETIMEDOUT;
			usleep(20000);
			if (!s->multi)
				continue; /* single node between raft restarts */
		}
		struct codec_fwd_req fr = {.kind = CODEC_FWD_LEASE, .lease = *req};
		int ret = fwd_call(s, &fr, resp, deadline);
		return ret < 0 ? ret : resp->err;
	}
}

static int st_lease_grant(struct kv *kv, int64_t id, int64_t ttl, struct kv_lease *out)
{
	struct codec_lease_req req = {.op = CODEC_LEASE_GRANT, .id = id, .ttl = ttl};
	struct codec_fwd_resp resp = {0};
	int ret = lease_call((struct store *)kv, &req, &resp);
	if (ret == 0)
		*out = resp.lease;
	return ret;
}

static int st_lease_revoke(struct kv *kv, int64_t id, int64_t *revision)
{
	struct codec_lease_req req = {.op = CODEC_LEASE_REVOKE, .id = id};
	struct codec_fwd_resp resp = {0};
	int ret = lease_call((struct store *)kv, &req, &resp);
	if (ret == 0 && revision)
		*revision = resp.revision;
	return ret;
}

static int st_lease_keepalive(struct kv *kv, int64_t id, struct kv_lease *out)
{
	struct codec_lease_req req = {.op = CODEC_LEASE_KEEPALIVE, .id = id};
	struct codec_fwd_resp resp = {0};
	int ret = lease_call((struct store *)kv, &req, &resp);
	if (ret == 0)
		*out = resp.lease;
	return ret;
}

static int st_lease_ttl(struct kv *kv, int64_t id, struct kv_lease *out,
			struct kv_range_result *keys)
{
	struct codec_lease_req req = {.op = CODEC_LEASE_TTL, .id = id, .keys = keys != NULL};
	struct kv_range_result scratch = {0};
	struct codec_fwd_resp resp = {.range = keys ? keys : &scratch};
	memset(resp.range, 0, sizeof(*resp.range));
	int ret = lease_call((struct store *)kv, &req, &resp);
	kv_range_result_free(&scratch);
	if (ret == 0)
		*out = resp.lease;
	else if (keys)
		kv_range_result_free(keys);
	return ret;
}

static int st_lease_list(struct kv *kv, int64_t **ids, size_t *n)
{
	struct codec_lease_req req = {.op = CODEC_LEASE_LIST};
	struct codec_fwd_resp resp = {0};
	int ret = lease_call((struct store *)kv, &req, &resp);
	if (ret < 0) {
		free(resp.lease_ids);
		return ret;
	}
	*ids = resp.lease_ids;
	*n = resp.n_lease_ids;
	return 0;
}

/* Loop thread, on becoming leader: every lease gets its full TTL from now. */
static void promote_leases(struct store *s)
{
	pthread_rwlock_rdlock(&s->state_lock);
	mvcc_lease_promote(s->m, util_now_ms());
	pthread_rwlock_unlock(&s->state_lock);
}

/* Loop thread, leader only: proposes a revoke for every lease past its
 * deadline (once per LEASE_RETRY_MS while it is in flight). */
static void expire_leases(struct store *s)
{
	int64_t ids[LEASE_EXPIRE_BATCH];
	int64_t now = util_now_ms();
	pthread_rwlock_rdlock(&s->state_lock);
	size_t n = mvcc_lease_expired(s->m, now, LEASE_RETRY_MS, ids, LEASE_EXPIRE_BATCH);
	pthread_rwlock_unlock(&s->state_lock);
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&s->mu);
		uint64_t seq = ++s->next_seq;
		pthread_mutex_unlock(&s->mu);
		struct codec_cmd cmd = {.origin = s->cfg.id,
					.boot = s->boot,
					.seq = seq,
					.kind = CODEC_CMD_LEASE_REVOKE,
					.lease_id = ids[i]};
		log_debug("store: lease %lld expired; revoking it", (long long)ids[i]);
		propose_internal(s, &cmd);
	}
}

/* ---- kv.h vtable ---- */

static struct store *to_store(struct kv *kv)
{
	return (struct store *)kv;
}

static int st_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
	struct store *s = to_store(kv);
	memset(res, 0, sizeof(*res));
	int ret = mvcc_range_validate(req);
	if (ret < 0)
		return ret;
	if (!s->multi || req->serializable)
		return store_local_range(s, req, res);
	bool leader;
	leader_known_here(s, &leader);
	if (leader) {
		ret = store_linear_range(s, req, res);
		if (ret != -STORE_ENOTLEADER)
			return ret;
	}
	/* Linearizable read on a follower: the leader answers. */
	struct codec_fwd_req fr = {.kind = CODEC_FWD_RANGE, .range = *req};
	struct codec_fwd_resp resp = {.range = res};
	ret = fwd_call(s, &fr, &resp, store_deadline_ms(s->cfg.apply_timeout_ms));
	if (ret < 0)
		return ret;
	return resp.err;
}

static int check_size(struct store *s, const struct codec_cmd *cmd)
{
	size_t sz = codec_cmd_size(cmd);
	if (sz > s->cfg.max_request_bytes) {
		log_warn("store: request of %zu bytes exceeds the %zu byte limit", sz,
			 s->cfg.max_request_bytes);
		return -EFBIG;
	}
	return 0;
}

static int st_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res)
{
	struct store *s = to_store(kv);
	memset(res, 0, sizeof(*res));
	int ret = mvcc_txn_validate(txn, s->cfg.max_txn_ops);
	if (ret < 0)
		return ret;
	struct codec_cmd cmd = {.kind = CODEC_CMD_TXN, .txn = *txn};
	ret = check_size(s, &cmd);
	if (ret < 0)
		return ret;
	int64_t deadline = store_deadline_ms(s->cfg.apply_timeout_ms);
	for (;;) {
		bool leader;
		leader_known_here(s, &leader);
		if (!s->multi || leader) {
			ret = store_local_txn(s, txn, res);
			if (ret != -STORE_ENOTLEADER)
				return ret;
			if (!s->multi) {
				/* Single node between raft restarts: wait for it. */
				if (util_now_ms() >= deadline)
					return -ETIMEDOUT;
				usleep(20000);
				continue;
			}
		}
		struct codec_fwd_req fr = {.kind = CODEC_FWD_TXN, .txn = *txn};
		struct codec_fwd_resp resp = {.txn = res};
		ret = fwd_call(s, &fr, &resp, deadline);
		if (ret < 0)
			return ret;
		return resp.err;
	}
}

static int st_compact(struct kv *kv, int64_t revision, bool physical)
{
	struct store *s = to_store(kv);
	(void)physical; /* compaction is always physical: memory is freed at once */
	pthread_rwlock_rdlock(&s->state_lock);
	int64_t cur = mvcc_revision(s->m), comp = mvcc_compact_revision(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	if (revision <= comp)
		return -ERANGE;
	if (revision > cur)
		return -ENOENT;
	int64_t deadline = store_deadline_ms(s->cfg.apply_timeout_ms);
	for (;;) {
		bool leader;
		leader_known_here(s, &leader);
		if (!s->multi || leader) {
			int ret = store_local_compact(s, revision);
			if (ret != -STORE_ENOTLEADER)
				return ret;
			if (util_now_ms() >= deadline)
				return -ETIMEDOUT;
			usleep(20000);
			if (!s->multi)
				continue;
		}
		struct codec_fwd_req fr = {.kind = CODEC_FWD_COMPACT, .compact = revision};
		struct codec_fwd_resp resp = {0};
		int ret = fwd_call(s, &fr, &resp, deadline);
		return ret < 0 ? ret : resp.err;
	}
}

static int st_status(struct kv *kv, int64_t *revision)
{
	struct store *s = to_store(kv);
	/* The local state machine answers even while a multi-node cluster has
	 * no quorum (writes then fail with -ETIMEDOUT): a daemon started before
	 * its peers must not give up. */
	pthread_rwlock_rdlock(&s->state_lock);
	*revision = mvcc_revision(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	return 0;
}

static size_t st_max_request_bytes(struct kv *kv)
{
	return to_store(kv)->cfg.max_request_bytes;
}

static size_t st_max_txn_ops(struct kv *kv)
{
	return to_store(kv)->cfg.max_txn_ops;
}

static void store_free(struct store *s)
{
	if (s->fwd_server)
		fwd_server_stop(s->fwd_server);
	if (s->fwd_pool)
		fwd_pool_free(s->fwd_pool);
	mvcc_free(s->m);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	pthread_rwlock_destroy(&s->state_lock);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->leader_cond);
	pthread_cond_destroy(&s->rb_cond);
	pthread_mutex_destroy(&s->wmu);
	pthread_cond_destroy(&s->wcond);
	free(s->data_dir);
	free(s->raft_dir);
	free(s);
}

static void st_destroy(struct kv *kv)
{
	struct store *s = to_store(kv);
	/* Watches left open are stopped here; their handles die with us. */
	for (;;) {
		pthread_mutex_lock(&s->wmu);
		struct kv_watch *w = s->watches;
		pthread_mutex_unlock(&s->wmu);
		if (!w)
			break;
		log_warn("store: closing with a watch still open; stopping it");
		store_watch_cancel(w);
	}
	if (s->fwd_server) {
		fwd_server_stop(s->fwd_server);
		s->fwd_server = NULL;
	}
	pthread_mutex_lock(&s->mu);
	s->closing = true;
	pthread_mutex_unlock(&s->mu);
	if (s->loop_started) {
		uv_async_send(&s->async);
		pthread_join(s->loop_thread, NULL);
	}
	int rv = uv_loop_close(&s->loop);
	if (rv != 0)
		log_warn("store: libuv loop did not close cleanly: %s", uv_strerror(rv));
	store_free(s);
}

static const struct kv_ops store_ops = {
	.name = "store",
	.range = st_range,
	.txn = st_txn,
	.watch = store_watch,
	.watch_cancel = store_watch_cancel,
	.compact = st_compact,
	.status = st_status,
	.max_request_bytes = st_max_request_bytes,
	.max_txn_ops = st_max_txn_ops,
	.lease_grant = st_lease_grant,
	.lease_revoke = st_lease_revoke,
	.lease_keepalive = st_lease_keepalive,
	.lease_ttl = st_lease_ttl,
	.lease_list = st_lease_list,
	.destroy = st_destroy,
};

static int config_check(struct store *s, const struct store_config *cfg)
{
	s->cfg = *cfg;
	s->cfg.data_dir = s->cfg.listen = s->cfg.peers = NULL; /* not kept */
	if (!cfg->data_dir || !*cfg->data_dir) {
		log_err("store: no data dir given");
		return -EINVAL;
	}
	if (!cfg->id || cfg->auto_compact_retain < 0 || !cfg->apply_timeout_ms ||
	    !cfg->max_request_bytes || !cfg->max_txn_ops || !cfg->heartbeat_timeout_ms ||
	    cfg->heartbeat_timeout_ms >= cfg->election_timeout_ms || !cfg->segment_size) {
		log_err("store: invalid configuration (id, timeouts or limits)");
		return -EINVAL;
	}
	if (cfg->peers && *cfg->peers) {
		int ret = parse_peers(s, cfg->peers);
		if (ret < 0)
			return ret;
		for (unsigned i = 0; i < s->n_peers; i++)
			if (s->peers[i].id == cfg->id)
				s->self = &s->peers[i];
		if (!s->self) {
			log_err("store: node id %u is not in --peers", cfg->id);
			return -EINVAL;
		}
		if (cfg->listen && strcmp(cfg->listen, s->self->raft_addr) != 0) {
			log_err("store: listen address %s differs from this node's peers entry %s",
				cfg->listen, s->self->raft_addr);
			return -EINVAL;
		}
		s->multi = s->n_peers > 1;
		if (!s->multi)
			s->self = NULL;
	}
	return 0;
}

int store_open(const struct store_config *cfg, struct kv **out)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->kv.ops = &store_ops;
	s->lock_fd = -1;
	pthread_rwlock_init(&s->state_lock, NULL);
	pthread_mutex_init(&s->mu, NULL);
	cond_init_mono(&s->leader_cond);
	cond_init_mono(&s->rb_cond);
	pthread_mutex_init(&s->wmu, NULL);
	cond_init_mono(&s->wcond);
	int ret = config_check(s, cfg);
	if (ret < 0)
		goto err_free;
	s->data_dir = strdup(cfg->data_dir);
	s->raft_dir = store_path_join(cfg->data_dir, "raft");
	s->m = mvcc_new();
	if (!s->data_dir || !s->raft_dir || !s->m) {
		ret = -ENOMEM;
		goto err_free;
	}
	if (getrandom(&s->boot, sizeof(s->boot), 0) != sizeof(s->boot))
		s->boot = (uint64_t)util_now_ms() ^ ((uint64_t)getpid() << 32);
	bool bootstrap;
	ret = store_setup_dirs(s, &bootstrap);
	if (ret < 0)
		goto err_free;

	s->fsm.version = 2;
	s->fsm.data = s;
	s->fsm.apply = fsm_apply;
	s->fsm.snapshot = fsm_snapshot;
	s->fsm.snapshot_finalize = fsm_snapshot_finalize;
	s->fsm.restore = fsm_restore;

	ret = uv_loop_init(&s->loop);
	if (ret != 0) {
		log_err("store: cannot create libuv loop: %s", uv_strerror(ret));
		ret = -EIO;
		goto err_free;
	}
	uv_async_init(&s->loop, &s->async, async_cb);
	s->async.data = s;
	uv_timer_init(&s->loop, &s->poll_timer);
	s->poll_timer.data = s;
	uv_timer_init(&s->loop, &s->restart_timer);
	s->restart_timer.data = s;

	/* Raft starts on this thread (the loop thread does not exist yet): a
	 * single node replays its log and becomes leader inside raft_start. */
	bool inited;
	ret = raft_boot(s, bootstrap, &inited);
	if (ret < 0) {
		if (inited)
			goto err_started;
		goto err_loop;
	}
	s->rstate = RS_UP;
	if (bootstrap) {
		ret = store_meta_write(s);
		if (ret < 0)
			goto err_started;
	}
	s->last_role = RAFT_UNAVAILABLE;
	publish_revision(s);
	uv_timer_start(&s->poll_timer, poll_cb, 0, POLL_MS);
	if (s->multi) {
		s->fwd_pool = fwd_pool_new();
		if (!s->fwd_pool) {
			ret = -ENOMEM;
			goto err_started;
		}
		ret = fwd_server_start(s, &s->fwd_server);
		if (ret < 0)
			goto err_started;
	}
	ret = pthread_create(&s->loop_thread, NULL, loop_main, s);
	if (ret != 0) {
		ret = -ret;
		goto err_started;
	}
	s->loop_started = true;

	/* Wait (bounded) until a leader is known. */
	int64_t deadline = store_deadline_ms(s->multi ? cfg->open_timeout_ms : 5000);
	struct timespec ts;
	store_ms_to_timespec(deadline, &ts);
	pthread_mutex_lock(&s->mu);
	while (!(s->multi ? s->leader_id != 0 : s->is_leader))
		if (pthread_cond_timedwait(&s->leader_cond, &s->mu, &ts) == ETIMEDOUT)
			break;
	bool have_leader = s->multi ? s->leader_id != 0 : s->is_leader;
	pthread_mutex_unlock(&s->mu);
	if (!have_leader) {
		if (!s->multi) {
			log_err("store: single node did not become leader");
			st_destroy(&s->kv);
			return -EIO;
		}
		log_warn("store: no raft leader yet after %ld ms; requests fail until a quorum "
			 "of --peers is up",
			 cfg->open_timeout_ms);
	}
	pthread_rwlock_rdlock(&s->state_lock);
	log_info("store: opened %s at revision %lld (%zu keys)%s", s->data_dir,
		 (long long)mvcc_revision(s->m), mvcc_key_count(s->m),
		 s->multi ? ", multi-node" : "");
	pthread_rwlock_unlock(&s->state_lock);
	*out = &s->kv;
	return 0;

err_started:
	/* Close raft and the handles on this thread (no loop thread yet):
	 * raft_closed() sees closing and closes the handles too. */
	pthread_mutex_lock(&s->mu);
	s->closing = true;
	pthread_mutex_unlock(&s->mu);
	uv_timer_stop(&s->poll_timer);
	raft_shutdown(s);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
	goto err_free;
err_loop:
	close_handles(s);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
err_free:
	store_free(s);
	return ret;
}

int store_check(struct kv *kv)
{
	struct store *s = to_store(kv);
	pthread_rwlock_rdlock(&s->state_lock);
	int ret = mvcc_check(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	return ret;
}

int store_get_status(struct kv *kv, struct store_status *st)
{
	struct store *s = to_store(kv);
	memset(st, 0, sizeof(*st));
	st->id = s->cfg.id;
	pthread_mutex_lock(&s->mu);
	st->leader_id = s->leader_id;
	st->is_leader = s->is_leader;
	st->io_error = s->io_error;
	pthread_mutex_unlock(&s->mu);
	pthread_rwlock_rdlock(&s->state_lock);
	st->revision = mvcc_revision(s->m);
	st->compact_revision = mvcc_compact_revision(s->m);
	st->applied_index = mvcc_applied_index(s->m);
	st->leases = mvcc_lease_count(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	return 0;
}
