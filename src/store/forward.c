/* forward.c: follower -> leader request forwarding for a multi-node store.
 *
 * Only the leader may propose Raft entries, and linearizable reads are served
 * by the leader too, so a follower sends such requests to the leader over a
 * tiny TCP protocol: each message is a 4-byte big-endian length followed by a
 * protobuf ForwardRequest (or ForwardResponse) from store.proto. One request
 * at a time per connection; the follower keeps idle connections for reuse.
 *
 * Retry rule: a request is resent only when it certainly was not executed
 * (connect failed, or the peer answered "not leader"); a connection lost
 * after sending gives -EIO, because the write may or may not have happened.
 */
#include "store_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define POOL_MAX 8

/* ---- framing ---- */

/* -ECONNRESET on EOF before the first byte too (peer closed). */
static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_frame(int fd, const void *buf, size_t len)
{
	uint32_t hdr = htonl((uint32_t)len);
	int ret = util_send_all(fd, &hdr, sizeof(hdr));
	return ret < 0 ? ret : util_send_all(fd, buf, len);
}

static int recv_frame(int fd, size_t max, void **buf, size_t *len)
{
	uint32_t hdr;
	int ret = read_all(fd, &hdr, sizeof(hdr));
	if (ret < 0)
		return ret;
	size_t n = ntohl(hdr);
	if (n > max)
		return -EFBIG;
	char *b = malloc(n ? n : 1);
	if (!b)
		return -ENOMEM;
	ret = read_all(fd, b, n);
	if (ret < 0) {
		free(b);
		return ret;
	}
	*buf = b;
	*len = n;
	return 0;
}

static void set_timeout(int fd, int64_t ms)
{
	if (ms < 1)
		ms = 1;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Requests are bounded by max_request_bytes (plus framing); responses by
 * what one range returns, which callers page, so they get a generous cap. */
static size_t request_limit(struct store *s)
{
	return 2 * s->cfg.max_request_bytes + 65536;
}

#define RESPONSE_LIMIT ((size_t)1 << 30)

/* ---- server (leader side; runs on every node) ---- */

struct fwd_conn {
	struct fwd_server *fs;
	int fd;
	pthread_t thread;
	bool finished; /* protected by fs->mu */
	struct fwd_conn *next;
};

struct fwd_server {
	struct store *s;
	int lfd;
	pthread_t thread;
	pthread_mutex_t mu;
	bool stopping;		/* protected by mu */
	struct fwd_conn *conns; /* protected by mu */
};

static void handle(struct store *s, const struct codec_fwd_req *req, struct codec_fwd_resp *resp,
		   struct kv_txn_result *tres, struct kv_range_result *rres)
{
	int ret;
	switch (req->kind) {
	case CODEC_FWD_TXN:
		ret = mvcc_txn_validate(&req->txn, s->cfg.max_txn_ops);
		if (ret == 0)
			ret = store_local_txn(s, &req->txn, tres);
		if (ret == 0)
			resp->txn = tres;
		break;
	case CODEC_FWD_RANGE:
		ret = mvcc_range_validate(&req->range);
		if (ret == 0)
			ret = store_linear_range(s, &req->range, rres);
		if (ret == 0 || ret == -ERANGE)
			resp->range = rres;
		break;
	case CODEC_FWD_COMPACT:
		ret = store_local_compact(s, req->compact);
		break;
	case CODEC_FWD_LEASE:
		resp->range = rres;
		ret = store_local_lease(s, &req->lease, resp);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	resp->err = ret;
}

static void *conn_main(void *arg)
{
	struct fwd_conn *c = arg;
	struct store *s = c->fs->s;
	for (;;) {
		void *buf;
		size_t len;
		int ret = recv_frame(c->fd, request_limit(s), &buf, &len);
		if (ret < 0)
			break;
		struct codec_fwd_req req;
		ret = codec_unpack_fwd_req(buf, len, &req);
		free(buf);
		struct codec_fwd_resp resp = {.err = ret};
		struct kv_txn_result tres = {0};
		struct kv_range_result rres = {0};
		if (ret == 0) {
			handle(s, &req, &resp, &tres, &rres);
			codec_fwd_req_free(&req);
		} else {
			log_warn("store: malformed forwarded request (%zu bytes)", len);
		}
		void *out;
		size_t out_len;
		ret = codec_pack_fwd_resp(&resp, &out, &out_len);
		kv_txn_result_free(&tres);
		kv_range_result_free(&rres);
		free(resp.lease_ids);
		if (ret < 0)
			break;
		ret = send_frame(c->fd, out, out_len);
		free(out);
		if (ret < 0)
			break;
	}
	pthread_mutex_lock(&c->fs->mu);
	c->finished = true;
	pthread_mutex_unlock(&c->fs->mu);
	return NULL;
}

/* Joins connection threads that have ended (all when all is set). */
static void reap(struct fwd_server *fs, bool all)
{
	for (;;) {
		struct fwd_conn *victim = NULL;
		pthread_mutex_lock(&fs->mu);
		for (struct fwd_conn **pp = &fs->conns; *pp; pp = &(*pp)->next)
			if ((*pp)->finished || all) {
				victim = *pp;
				*pp = victim->next;
				break;
			}
		pthread_mutex_unlock(&fs->mu);
		if (!victim)
			return;
		if (all)
			shutdown(victim->fd, SHUT_RDWR);
		pthread_join(victim->thread, NULL);
		close(victim->fd);
		free(victim);
	}
}

static void *accept_main(void *arg)
{
	struct fwd_server *fs = arg;
	for (;;) {
		int fd = accept4(fs->lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_mutex_lock(&fs->mu);
		bool stopping = fs->stopping;
		pthread_mutex_unlock(&fs->mu);
		if (stopping) {
			if (fd >= 0)
				close(fd);
			break;
		}
		if (fd < 0) {
			if (errno != EINTR && errno != ECONNABORTED)
				usleep(10000);
			continue;
		}
		reap(fs, false);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct fwd_conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fs = fs;
		c->fd = fd;
		pthread_mutex_lock(&fs->mu);
		if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
			pthread_mutex_unlock(&fs->mu);
			close(fd);
			free(c);
			continue;
		}
		c->next = fs->conns;
		fs->conns = c;
		pthread_mutex_unlock(&fs->mu);
	}
	return NULL;
}

int fwd_server_start(struct store *s, struct fwd_server **out)
{
	struct fwd_server *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->s = s;
	pthread_mutex_init(&fs->mu, NULL);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(s->self->fwd_port)};
	int ret;
	if (inet_pton(AF_INET, s->self->fwd_host, &sa.sin_addr) != 1) {
		log_err("store: forward address %s is not an IPv4 address", s->self->fwd_host);
		ret = -EINVAL;
		goto err;
	}
	fs->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fs->lfd < 0) {
		ret = -errno;
		goto err;
	}
	int one = 1;
	setsockopt(fs->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fs->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fs->lfd, 64) < 0) {
		ret = -errno;
		log_err("store: cannot listen for forwarded requests on %s:%u: %s",
			s->self->fwd_host, s->self->fwd_port, strerror(errno));
		close(fs->lfd);
		goto err;
	}
	ret = -pthread_create(&fs->thread, NULL, accept_main, fs);
	if (ret < 0) {
		close(fs->lfd);
		goto err;
	}
	*out = fs;
	return 0;
err:
	pthread_mutex_destroy(&fs->mu);
	free(fs);
	return ret;
}

void fwd_server_stop(struct fwd_server *fs)
{
	if (!fs)
		return;
	pthread_mutex_lock(&fs->mu);
	fs->stopping = true;
	pthread_mutex_unlock(&fs->mu);
	/* shutdown() wakes the blocked accept(). */
	shutdown(fs->lfd, SHUT_RDWR);
	pthread_join(fs->thread, NULL);
	close(fs->lfd);
	reap(fs, true);
	pthread_mutex_destroy(&fs->mu);
	free(fs);
}

/* ---- client (follower side) ---- */

struct pooled {
	unsigned peer;
	int fd;
};

struct fwd_pool {
	pthread_mutex_t mu;
	struct pooled idle[POOL_MAX]; /* protected by mu */
	unsigned n_idle;
};

struct fwd_pool *fwd_pool_new(void)
{
	struct fwd_pool *p = calloc(1, sizeof(*p));
	if (p)
		pthread_mutex_init(&p->mu, NULL);
	return p;
}

void fwd_pool_free(struct fwd_pool *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->n_idle; i++)
		close(p->idle[i].fd);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* An idle connection the peer has closed reads as EOF: drop it. */
static bool still_open(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	return poll(&pfd, 1, 0) == 0;
}

static int pool_get(struct fwd_pool *p, unsigned peer)
{
	pthread_mutex_lock(&p->mu);
	for (unsigned i = p->n_idle; i-- > 0;) {
		if (p->idle[i].peer != peer)
			continue;
		int fd = p->idle[i].fd;
		p->idle[i] = p->idle[--p->n_idle];
		if (still_open(fd)) {
			pthread_mutex_unlock(&p->mu);
			return fd;
		}
		close(fd);
	}
	pthread_mutex_unlock(&p->mu);
	return -1;
}

static void pool_put(struct fwd_pool *p, unsigned peer, int fd)
{
	pthread_mutex_lock(&p->mu);
	if (p->n_idle < POOL_MAX) {
		p->idle[p->n_idle++] = (struct pooled){peer, fd};
		fd = -1;
	}
	pthread_mutex_unlock(&p->mu);
	if (fd >= 0)
		close(fd);
}

static int connect_peer(const struct store_peer *peer, int64_t deadline)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(peer->fwd_port)};
	if (inet_pton(AF_INET, peer->fwd_host, &sa.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	set_timeout(fd, deadline - util_now_ms());
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return e == EINPROGRESS || e == EAGAIN ? -ETIMEDOUT : -e;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int fwd_call(struct store *s, const struct codec_fwd_req *req, struct codec_fwd_resp *resp,
	     int64_t deadline_ms)
{
	void *out;
	size_t out_len;
	int ret = codec_pack_fwd_req(req, &out, &out_len);
	if (ret < 0)
		return ret;
	/* Keep-alive, time-to-live and list only read (or re-set a deadline). */
	bool is_write = req->kind != CODEC_FWD_RANGE &&
			(req->kind != CODEC_FWD_LEASE || req->lease.op == CODEC_LEASE_GRANT ||
			 req->lease.op == CODEC_LEASE_REVOKE);
	struct kv_txn_result *txn_out = resp->txn;
	struct kv_range_result *range_out = resp->range;
	int last_err = -ETIMEDOUT;
	for (;;) {
		if (util_now_ms() >= deadline_ms) {
			ret = last_err;
			log_warn("store: node %u could not reach the raft leader in time (%s)",
				 s->cfg.id, strerror(-ret));
			break;
		}
		struct store_peer leader;
		if (!store_leader_peer(s, &leader)) {
			usleep(50000);
			continue;
		}
		if (leader.id == s->cfg.id) {
			/* We became leader meanwhile: execute here. */
			if (req->kind == CODEC_FWD_TXN)
				ret = store_local_txn(s, &req->txn, txn_out);
			else if (req->kind == CODEC_FWD_COMPACT)
				ret = store_local_compact(s, req->compact);
			else if (req->kind == CODEC_FWD_LEASE)
				ret = store_local_lease(s, &req->lease, resp);
			else
				ret = store_linear_range(s, &req->range, range_out);
			if (ret == -STORE_ENOTLEADER) {
				usleep(20000);
				continue;
			}
			resp->err = ret;
			ret = 0;
			break;
		}
		bool reused = true;
		int fd = pool_get(s->fwd_pool, leader.id);
		if (fd < 0) {
			reused = false;
			fd = connect_peer(&leader, deadline_ms);
			if (fd < 0) {
				last_err = fd == -ECONNREFUSED ? -ECONNREFUSED : fd;
				usleep(50000); /* leader info may be stale: retry */
				continue;
			}
		}
		/* The leader bounds its own wait by apply_timeout; allow a bit
		 * more for the answer to arrive. */
		set_timeout(fd, deadline_ms - util_now_ms() + 1000);
		ret = send_frame(fd, out, out_len);
		void *in = NULL;
		size_t in_len = 0;
		if (ret == 0)
			ret = recv_frame(fd, RESPONSE_LIMIT, &in, &in_len);
		if (ret < 0) {
			close(fd);
			if (!is_write || (reused && ret == -EPIPE)) {
				/* Reads are safe to repeat. */
				last_err = ret;
				continue;
			}
			log_err("store: connection to leader %u lost during a forwarded write "
				"(%s); its outcome is unknown",
				leader.id, strerror(-ret));
			ret = -EIO;
			break;
		}
		resp->txn = txn_out;
		resp->range = range_out;
		ret = codec_unpack_fwd_resp(in, in_len, resp);
		free(in);
		if (ret < 0) {
			close(fd);
			log_err("store: malformed response from leader %u", leader.id);
			ret = -EIO;
			break;
		}
		pool_put(s->fwd_pool, leader.id, fd);
		if (resp->err == -STORE_ENOTLEADER) {
			/* Not executed there: safe to retry once leadership settles. */
			if (txn_out)
				kv_txn_result_free(txn_out);
			if (range_out)
				kv_range_result_free(range_out);
			free(resp->lease_ids);
			resp->lease_ids = NULL;
			resp->n_lease_ids = 0;
			last_err = -ETIMEDOUT;
			usleep(50000);
			continue;
		}
		ret = 0;
		break;
	}
	free(out);
	return ret;
}
