/* test_cluster.c: three store nodes (three processes) on loopback form one
 * Raft cluster.
 *
 * Each node is a forked child serving a line protocol on a socketpair
 * (PUT/GET/SGET/COUNT/STATUS/CHECK/QUIT), so the parent can drive it and kill
 * it with SIGKILL. Scenario: writes through every node (followers forward to
 * the leader); kill the leader while a writer thread keeps writing through a
 * follower; a new leader takes over and writes continue; the old leader comes
 * back and catches up; a follower is killed, falls far behind (past snapshots
 * and log truncation) and catches up after a restart. At the end every
 * acknowledged write is readable on every node and every node passes
 * store_check. Then leases (lease_phase): expiry by the leader, a leader
 * change that must not expire a kept-alive lease early, revoke through a
 * follower, every node agreeing on the lease table and revisions. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "storetest.h"

#define NODES 3

static char *base;
static char peers[512];
static pid_t pids[NODES + 1];
static int ctl[NODES + 1]; /* parent's end of each node's socketpair */
static pthread_mutex_t ctl_mu[NODES + 1];

/* ---- node process ---- */

static void node_reply(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void node_reply(FILE *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fflush(out);
}

static void node_main(int id, int fd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/node%d", base, id);
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.data_dir = dir;
	cfg.id = (unsigned)id;
	cfg.peers = peers;
	cfg.election_timeout_ms = 600;
	cfg.heartbeat_timeout_ms = 60;
	cfg.snapshot_threshold = 64;
	cfg.snapshot_trailing = 16;
	cfg.segment_size = 32 * 1024;
	cfg.open_timeout_ms = 3000;
	cfg.apply_timeout_ms = 3000;
	FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
	struct kv *kv;
	int ret = store_open(&cfg, &kv);
	if (ret < 0) {
		node_reply(out, "ERR %d", ret);
		_exit(2);
	}
	node_reply(out, "READY");
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, in) > 0) {
		char cmd[16], key[256], val[256];
		key[0] = val[0] = 0;
		if (sscanf(line, "%15s %255s %255s", cmd, key, val) < 1)
			continue;
		if (!strcmp(cmd, "PUT")) {
			int64_t rev = 0;
			ret = put_s(kv, key, val, &rev);
			node_reply(out, "R %d %lld", ret, (long long)rev);
		} else if (!strcmp(cmd, "GET") || !strcmp(cmd, "SGET")) {
			struct kv_range_req req = {
				.key = key, .key_len = strlen(key), .serializable = cmd[0] == 'S'};
			struct kv_range_result res;
			ret = kv_range(kv, &req, &res);
			if (ret == 0 && res.n_kvs)
				node_reply(out, "R 0 %.*s", (int)res.kvs[0].value_len,
					   res.kvs[0].value);
			else
				node_reply(out, "R %d", ret ? ret : -ENOENT);
			kv_range_result_free(&res);
		} else if (!strcmp(cmd, "COUNT") || !strcmp(cmd, "SCOUNT")) {
			char end[256];
			size_t end_len = kv_prefix_end(key, strlen(key), end);
			struct kv_range_req req = {.key = key,
						   .key_len = strlen(key),
						   .range_end = end,
						   .range_end_len = end_len,
						   .count_only = true,
						   .serializable = cmd[0] == 'S'};
			struct kv_range_result res;
			ret = kv_range(kv, &req, &res);
			node_reply(out, "R %d %lld", ret, (long long)res.count);
			kv_range_result_free(&res);
		} else if (!strcmp(cmd, "STATUS")) {
			struct store_status st;
			store_get_status(kv, &st);
			node_reply(out, "R 0 %u %d %lld %zu", st.leader_id, st.is_leader,
				   (long long)st.revision, st.leases);
		} else if (!strcmp(cmd, "GRANT")) { /* GRANT id ttl */
			struct kv_lease l = {0};
			ret = kv_lease_grant(kv, atoll(key), atoll(val), &l);
			node_reply(out, "R %d %lld %lld", ret, (long long)l.id, (long long)l.ttl);
		} else if (!strcmp(cmd, "KEEPALIVE") || !strcmp(cmd, "TTL")) {
			struct kv_lease l = {0};
			ret = cmd[0] == 'K' ? kv_lease_keepalive(kv, atoll(key), &l)
					    : kv_lease_ttl(kv, atoll(key), &l, NULL);
			node_reply(out, "R %d %lld %lld", ret, (long long)l.ttl,
				   (long long)l.granted_ttl);
		} else if (!strcmp(cmd, "TTLKEYS")) { /* the first key attached, and how many */
			struct kv_lease l = {0};
			struct kv_range_result keys;
			ret = kv_lease_ttl(kv, atoll(key), &l, &keys);
			if (ret == 0 && keys.n_kvs && !keys.kvs[0].value)
				node_reply(out, "R 0 %zu %s", keys.n_kvs, keys.kvs[0].key);
			else
				node_reply(out, "R %d", ret ? ret : -ENOENT);
			if (ret == 0)
				kv_range_result_free(&keys);
		} else if (!strcmp(cmd, "LEASES")) {
			int64_t *ids = NULL;
			size_t n = 0;
			ret = kv_lease_list(kv, &ids, &n);
			node_reply(out, "R %d %zu", ret, n);
			free(ids);
		} else if (!strcmp(cmd, "REVOKE")) {
			int64_t rev = 0;
			ret = kv_lease_revoke(kv, atoll(key), &rev);
			node_reply(out, "R %d %lld", ret, (long long)rev);
		} else if (!strcmp(cmd, "PUTL")) { /* PUTL key lease */
			struct kv_op op = {.type = KV_OP_PUT,
					   .key = key,
					   .key_len = strlen(key),
					   .value = "l",
					   .value_len = 1,
					   .lease = atoll(val)};
			struct kv_txn t = {.success = &op, .n_success = 1};
			struct kv_txn_result res;
			ret = kv_txn(kv, &t, &res);
			node_reply(out, "R %d %lld", ret, ret ? 0 : (long long)res.revision);
			if (ret == 0)
				kv_txn_result_free(&res);
		} else if (!strcmp(cmd, "SMOD")) { /* serializable: mod revision or -ENOENT */
			struct kv_range_req req = {
				.key = key, .key_len = strlen(key), .serializable = true};
			struct kv_range_result res;
			ret = kv_range(kv, &req, &res);
			if (ret == 0 && res.n_kvs)
				node_reply(out, "R 0 %lld", (long long)res.kvs[0].mod_revision);
			else
				node_reply(out, "R %d", ret ? ret : -ENOENT);
			kv_range_result_free(&res);
		} else if (!strcmp(cmd, "CHECKALL")) {
			/* key = a file of acknowledged keys, one per line: all must be
			 * in one linearizable range of /cl/ with value v-KEY */
			struct kv_range_req req = {.key = "/cl/",
						   .key_len = 4,
						   .range_end = "/cl0",
						   .range_end_len = 4};
			struct kv_range_result res;
			ret = kv_range(kv, &req, &res);
			FILE *f = ret == 0 ? fopen(key, "r") : NULL;
			char want[64];
			int checked = 0;
			while (f && fgets(want, sizeof(want), f)) {
				want[strcspn(want, "\n")] = 0;
				size_t lo = 0, hi = res.n_kvs;
				while (lo < hi) { /* results are in key order */
					size_t mid = (lo + hi) / 2;
					if (strcmp(res.kvs[mid].key, want) < 0)
						lo = mid + 1;
					else
						hi = mid;
				}
				if (lo == res.n_kvs || strcmp(res.kvs[lo].key, want) != 0 ||
				    strncmp(res.kvs[lo].value, "v-", 2) != 0 ||
				    strcmp(res.kvs[lo].value + 2, want) != 0) {
					fprintf(stderr, "acknowledged %s missing or wrong\n", want);
					ret = -ENOENT;
					break;
				}
				checked++;
			}
			if (f)
				fclose(f);
			else if (ret == 0)
				ret = -EIO;
			kv_range_result_free(&res);
			node_reply(out, "R %d %d", ret, checked);
		} else if (!strcmp(cmd, "CHECK")) {
			node_reply(out, "R %d", store_check(kv));
		} else if (!strcmp(cmd, "QUIT")) {
			kv_destroy(kv);
			node_reply(out, "R 0");
			_exit(0);
		}
	}
	_exit(0);
}

static void start_node(int id)
{
	int sv[2];
	REQUIRE_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	fflush(stderr);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		for (int i = 1; i <= NODES; i++)
			if (ctl[i] > 0)
				close(ctl[i]);
		node_main(id, sv[1]);
	}
	close(sv[1]);
	pids[id] = pid;
	ctl[id] = sv[0];
}

/* Sends a command to node id and reads one reply line (bounded wait). */
static int call(int id, char *reply, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int call(int id, char *reply, size_t len, const char *fmt, ...)
{
	char cmd[600];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
	va_end(ap);
	cmd[n++] = '\n';
	pthread_mutex_lock(&ctl_mu[id]);
	int fd = ctl[id];
	if (fd <= 0 || write(fd, cmd, (size_t)n) != n) {
		pthread_mutex_unlock(&ctl_mu[id]);
		return -EPIPE;
	}
	size_t got = 0;
	int64_t deadline = util_now_ms() + 15000;
	while (got < len - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - util_now_ms();
		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			pthread_mutex_unlock(&ctl_mu[id]);
			return -ETIMEDOUT;
		}
		ssize_t r = read(fd, reply + got, 1);
		if (r <= 0) {
			pthread_mutex_unlock(&ctl_mu[id]);
			return -EPIPE;
		}
		if (reply[got] == '\n')
			break;
		got++;
	}
	reply[got] = 0;
	pthread_mutex_unlock(&ctl_mu[id]);
	int ret;
	if (sscanf(reply, "R %d", &ret) == 1)
		return ret;
	return strcmp(reply, "READY") == 0 ? 0 : -EPROTO;
}

static void wait_ready(int id)
{
	char r[128];
	size_t got = 0;
	struct pollfd p = {.fd = ctl[id], .events = POLLIN};
	while (got < sizeof(r) - 1 && poll(&p, 1, 15000) > 0 && read(ctl[id], r + got, 1) == 1 &&
	       r[got] != '\n')
		got++;
	r[got] = 0;
	if (strcmp(r, "READY") != 0) {
		fprintf(stderr, "node %d did not start: \"%s\"\n", id, r);
		abort();
	}
}

static void kill_node(int id)
{
	REQUIRE_EQ(kill(pids[id], SIGKILL), 0);
	int st;
	REQUIRE_EQ(waitpid(pids[id], &st, 0), pids[id]);
	pthread_mutex_lock(&ctl_mu[id]);
	close(ctl[id]);
	ctl[id] = -1;
	pthread_mutex_unlock(&ctl_mu[id]);
	pids[id] = 0;
}

/* The leader all live nodes agree on, waiting up to timeout_ms; 0 if none. */
static int agreed_leader(int timeout_ms)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	while (util_now_ms() < deadline) {
		int leader = -1;
		bool ok = true;
		for (int i = 1; i <= NODES && ok; i++) {
			if (!pids[i])
				continue;
			char r[128];
			unsigned lid;
			int is_leader;
			if (call(i, r, sizeof(r), "STATUS") != 0 ||
			    sscanf(r, "R 0 %u %d", &lid, &is_leader) != 2 || lid == 0 ||
			    (leader >= 0 && (int)lid != leader) || !pids[lid]) {
				ok = false;
				break;
			}
			leader = (int)lid;
		}
		if (ok && leader > 0)
			return leader;
		usleep(100000);
	}
	return 0;
}

/* ---- acknowledged writes ---- */

#define MAX_KEYS 4000
static char acked[MAX_KEYS][40];
static int n_acked;
static pthread_mutex_t acked_mu = PTHREAD_MUTEX_INITIALIZER;

static int put_via(int id, const char *key)
{
	char r[128];
	int ret = call(id, r, sizeof(r), "PUT %s v-%s", key, key);
	if (ret == 0) {
		pthread_mutex_lock(&acked_mu);
		REQUIRE(n_acked < MAX_KEYS);
		snprintf(acked[n_acked++], 40, "%s", key);
		pthread_mutex_unlock(&acked_mu);
	}
	return ret;
}

/* ok, failed and stop are shared with the main thread: atomics. */
struct load {
	int node;
	bool stop;
	int ok, failed;
	char phase[16];
};

static void *load_main(void *arg)
{
	struct load *l = arg;
	for (int i = 0; !__atomic_load_n(&l->stop, __ATOMIC_RELAXED); i++) {
		char key[40];
		snprintf(key, sizeof(key), "/cl/%s/%05d", l->phase, i);
		if (put_via(l->node, key) == 0)
			__atomic_fetch_add(&l->ok, 1, __ATOMIC_RELAXED);
		else
			__atomic_fetch_add(&l->failed, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Every acknowledged key is readable (linearizably) through node id, and its
 * serializable count of /cl/ matches. */
static void verify_node(int id)
{
	char r[600];
	int64_t deadline = util_now_ms() + 10000;
	long long cnt = -1;
	/* a node that just restarted may still be catching up (serializable) */
	while (util_now_ms() < deadline) {
		if (call(id, r, sizeof(r), "SCOUNT /cl/") == 0 &&
		    sscanf(r, "R 0 %lld", &cnt) == 1 && cnt >= n_acked)
			break;
		usleep(100000);
	}
	REQUIRE(cnt >= n_acked);
	REQUIRE_EQ(call(id, r, sizeof(r), "COUNT /cl/"), 0);
	REQUIRE(sscanf(r, "R 0 %lld", &cnt) == 1 && cnt >= n_acked);
	/* every acknowledged key, through one linearizable range... */
	char list[600];
	snprintf(list, sizeof(list), "%s/acked.txt", base);
	FILE *f = fopen(list, "w");
	REQUIRE(f != NULL);
	for (int i = 0; i < n_acked; i++)
		fprintf(f, "%s\n", acked[i]);
	fclose(f);
	REQUIRE_EQ(call(id, r, sizeof(r), "CHECKALL %s", list), 0);
	int checked = -1;
	REQUIRE(sscanf(r, "R 0 %d", &checked) == 1);
	REQUIRE_EQ(checked, n_acked);
	/* ...and a sample through single-key linearizable gets */
	for (int i = 0; i < n_acked; i += n_acked / 25 + 1) {
		int ret = call(id, r, sizeof(r), "GET %s", acked[i]);
		if (ret != 0)
			fprintf(stderr, "node %d: acknowledged %s: %s\n", id, acked[i],
				strerror(-ret));
		REQUIRE_EQ(ret, 0);
		char want[64];
		snprintf(want, sizeof(want), "R 0 v-%s", acked[i]);
		REQUIRE(strcmp(r, want) == 0);
	}
	REQUIRE_EQ(call(id, r, sizeof(r), "CHECK"), 0);
}

/* ---- leases ---- */

/* Waits until every live node holds n_leases leases and the same revision, and returns it. */
static long long wait_agree(size_t n_leases, int timeout_ms)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	while (util_now_ms() < deadline) {
		long long rev = -1;
		bool ok = true;
		for (int i = 1; i <= NODES && ok; i++) {
			if (!pids[i])
				continue;
			char r[128];
			unsigned lid;
			int is_leader;
			long long nrev;
			size_t nl;
			ok = call(i, r, sizeof(r), "STATUS") == 0 &&
			     sscanf(r, "R 0 %u %d %lld %zu", &lid, &is_leader, &nrev, &nl) == 4 &&
			     nl == n_leases && (rev < 0 || nrev == rev);
			rev = nrev;
		}
		if (ok)
			return rev;
		usleep(100000);
	}
	fprintf(stderr, "nodes did not agree on %zu leases\n", n_leases);
	REQUIRE(false);
	return -1;
}

static long long grant_via(int id, long long lease, long long ttl)
{
	char r[128];
	long long got, got_ttl;
	REQUIRE_EQ(call(id, r, sizeof(r), "GRANT %lld %lld", lease, ttl), 0);
	REQUIRE(sscanf(r, "R 0 %lld %lld", &got, &got_ttl) == 2);
	CHECK_EQ(got_ttl, ttl);
	return got;
}

static bool gone_everywhere(const char *key)
{
	for (int i = 1; i <= NODES; i++) {
		char r[128];
		if (pids[i] && call(i, r, sizeof(r), "SMOD %s", key) != -ENOENT)
			return false;
	}
	return true;
}

/* Leases through every node: grants and puts through followers, the leader
 * expires a lease (its keys go in one revision on every node), a lease kept
 * alive through the leader survives the leader's death (the new leader gives
 * it its full TTL), the old leader comes back with the same table, and a
 * revoke through a follower removes the keys everywhere. */
static void lease_phase(void)
{
	char r[256];
	int leader = agreed_leader(15000);
	REQUIRE(leader > 0);
	int f1 = leader % NODES + 1, f2 = f1 % NODES + 1;
	long long base_rev = wait_agree(0, 10000);
	int64_t t_grant = util_now_ms();
	long long a = grant_via(f1, 0, 3);
	long long b = grant_via(f2, 0, 60);
	long long k = grant_via(leader, 0, 5);
	REQUIRE(a != b && b != k && a != k);
	REQUIRE_EQ(call(f2, r, sizeof(r), "PUTL /ls/a1 %lld", a), 0);
	REQUIRE_EQ(call(leader, r, sizeof(r), "PUTL /ls/a2 %lld", a), 0);
	REQUIRE_EQ(call(f1, r, sizeof(r), "PUTL /ls/b1 %lld", b), 0);
	REQUIRE_EQ(call(f1, r, sizeof(r), "PUTL /ls/k1 %lld", k), 0);
	CHECK_EQ(call(f1, r, sizeof(r), "PUTL /ls/x 999"), -ENOENT);
	CHECK_EQ(call(f2, r, sizeof(r), "GRANT %lld 10", b), -EEXIST);
	long long rev = wait_agree(3, 10000);
	CHECK_EQ(rev, base_rev + 4);
	/* time-to-live with keys and the list, answered by the leader through a follower */
	REQUIRE_EQ(call(f2, r, sizeof(r), "TTLKEYS %lld", b), 0);
	CHECK(strcmp(r, "R 0 1 /ls/b1") == 0);
	REQUIRE_EQ(call(f1, r, sizeof(r), "LEASES"), 0);
	CHECK(strcmp(r, "R 0 3") == 0);

	/* a expires (k is kept alive through a follower meanwhile) */
	int64_t t_gone = 0;
	while (util_now_ms() - t_grant < 15000) {
		REQUIRE_EQ(call(f2, r, sizeof(r), "KEEPALIVE %lld", k), 0);
		if (gone_everywhere("/ls/a1") && gone_everywhere("/ls/a2")) {
			t_gone = util_now_ms();
			break;
		}
		usleep(200000);
	}
	REQUIRE(t_gone > 0);
	CHECK(t_gone - t_grant >= 2900);
	long long rev_exp = wait_agree(2, 10000);
	CHECK_EQ(rev_exp, rev + 1); /* both keys in one revision, on every node */
	fprintf(stderr, "lease phase: a 3 s lease expired on every node %lld ms after its grant\n",
		(long long)(t_gone - t_grant));
	/* keep k (5 s) alive until it has lived well past its TTL */
	while (util_now_ms() - t_grant < 6000) {
		REQUIRE_EQ(call(f2, r, sizeof(r), "KEEPALIVE %lld", k), 0);
		usleep(200000);
	}
	/* k is past the deadline each follower set when it applied the grant, but
	 * followers expire nothing themselves: k1 is still on every node */
	for (int i = 1; i <= NODES; i++)
		CHECK_EQ(call(i, r, sizeof(r), "SMOD /ls/k1"), 0);

	/* k has lived > 5 s past its grant only through keep-alives the leader
	 * saw. Kill the leader: the new one must not expire k at once. */
	REQUIRE_EQ(call(leader, r, sizeof(r), "KEEPALIVE %lld", k), 0);
	kill_node(leader);
	int old_leader = leader;
	leader = agreed_leader(15000);
	REQUIRE(leader > 0 && leader != old_leader);
	long long ttl, granted;
	int ret = call(leader, r, sizeof(r), "TTL %lld", k);
	CHECK_EQ(ret, 0);
	if (ret == 0) {
		REQUIRE(sscanf(r, "R 0 %lld %lld", &ttl, &granted) == 2);
		CHECK_EQ(granted, 5);
		CHECK(ttl >= 0 && ttl <= 5);
	}
	CHECK_EQ(call(leader, r, sizeof(r), "KEEPALIVE %lld", k), 0);
	CHECK_EQ(call(leader, r, sizeof(r), "SMOD /ls/k1"), 0);
	fprintf(stderr, "lease phase: node %d leads; lease k (5 s) survived the change\n", leader);

	/* the old leader comes back with the same lease table */
	start_node(old_leader);
	wait_ready(old_leader);
	REQUIRE(agreed_leader(15000) > 0);
	for (int i = 0; i < 10; i++) { /* keep k alive while it catches up */
		call(leader, r, sizeof(r), "KEEPALIVE %lld", k);
		usleep(100000);
	}
	CHECK_EQ(wait_agree(2, 10000), rev_exp);

	/* revoke b through a follower */
	int fol = leader % NODES + 1;
	long long rrev = -1;
	REQUIRE_EQ(call(fol, r, sizeof(r), "REVOKE %lld", b), 0);
	REQUIRE(sscanf(r, "R 0 %lld", &rrev) == 1);
	CHECK_EQ(rrev, rev_exp + 1);
	CHECK_EQ(call(fol, r, sizeof(r), "REVOKE %lld", b), -ENOENT);
	CHECK_EQ(call(fol, r, sizeof(r), "TTL %lld", b), -ENOENT);
	/* k is no longer kept alive: it expires too */
	CHECK_EQ(wait_agree(0, 15000), rrev + 1);
	REQUIRE(gone_everywhere("/ls/b1") && gone_everywhere("/ls/k1"));
	for (int i = 1; i <= NODES; i++)
		REQUIRE_EQ(call(i, r, sizeof(r), "CHECK"), 0);
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	REQUIRE_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	socklen_t l = sizeof(sa);
	REQUIRE_EQ(getsockname(fd, (struct sockaddr *)&sa, &l), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	base = test_tmpdir("cluster");
	size_t off = 0;
	for (int i = 1; i <= NODES; i++) {
		pthread_mutex_init(&ctl_mu[i], NULL);
		off += (size_t)snprintf(peers + off, sizeof(peers) - off, "%s%d=127.0.0.1:%d:%d",
					i > 1 ? "," : "", i, free_port(), free_port());
	}
	fprintf(stderr, "peers: %s\n", peers);
	for (int i = 1; i <= NODES; i++)
		start_node(i);
	for (int i = 1; i <= NODES; i++)
		wait_ready(i);
	int leader = agreed_leader(15000);
	REQUIRE(leader > 0);
	fprintf(stderr, "leader: node %d\n", leader);

	/* 1. writes through every node */
	for (int i = 0; i < 30; i++) {
		char key[40];
		snprintf(key, sizeof(key), "/cl/a/%05d", i);
		REQUIRE_EQ(put_via(1 + i % NODES, key), 0);
	}
	for (int i = 1; i <= NODES; i++)
		verify_node(i);
	fprintf(stderr, "phase 1: 30 writes through all nodes visible everywhere\n");

	/* 2. kill the leader under write load through a follower */
	int follower = leader % NODES + 1;
	struct load l = {.node = follower};
	snprintf(l.phase, sizeof(l.phase), "b");
	pthread_t th;
	REQUIRE_EQ(pthread_create(&th, NULL, load_main, &l), 0);
	usleep(400000);
	int before_kill = __atomic_load_n(&l.ok, __ATOMIC_RELAXED);
	int64_t t_kill = util_now_ms();
	kill_node(leader);
	int old_leader = leader;
	leader = agreed_leader(15000);
	REQUIRE(leader > 0 && leader != old_leader);
	int64_t t_elect = util_now_ms();
	usleep(800000);
	__atomic_store_n(&l.stop, true, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	fprintf(stderr,
		"phase 2: killed leader %d after %d writes; node %d leads after %lld ms; "
		"%d writes acknowledged, %d failed during the election\n",
		old_leader, before_kill, leader, (long long)(t_elect - t_kill), l.ok, l.failed);
	REQUIRE(l.ok > before_kill); /* writes continued after the election */

	/* 3. the old leader comes back and catches up */
	start_node(old_leader);
	wait_ready(old_leader);
	REQUIRE(agreed_leader(15000) > 0);
	for (int i = 1; i <= NODES; i++)
		verify_node(i);
	fprintf(stderr, "phase 3: old leader %d restarted and caught up (%d keys)\n", old_leader,
		n_acked);

	/* 4. a follower falls far behind (beyond snapshots), then restarts */
	leader = agreed_leader(15000);
	int lagger = leader % NODES + 1;
	kill_node(lagger);
	int writer = 6 - leader - lagger; /* the remaining follower */
	for (int i = 0; i < 300; i++) {
		char key[40];
		snprintf(key, sizeof(key), "/cl/c/%05d", i);
		REQUIRE_EQ(put_via(i % 2 ? writer : leader, key), 0);
	}
	start_node(lagger);
	wait_ready(lagger);
	for (int i = 1; i <= NODES; i++)
		verify_node(i);
	fprintf(stderr, "phase 4: follower %d missed 300 writes, restarted, caught up\n", lagger);

	lease_phase();

	/* 5. a leader cut off from its quorum must not serve linearizable reads
	 * from its (possibly stale) state; serializable reads still work */
	leader = agreed_leader(15000);
	REQUIRE(leader > 0);
	for (int i = 1; i <= NODES; i++)
		if (i != leader)
			kill_node(i);
	char r5[600];
	int64_t t5 = util_now_ms();
	int ret5 = call(leader, r5, sizeof(r5), "GET %s", acked[0]);
	fprintf(stderr, "phase 5: linearizable read on an isolated leader: %s after %lld ms\n",
		strerror(-ret5), (long long)(util_now_ms() - t5));
	REQUIRE(ret5 < 0);
	REQUIRE_EQ(call(leader, r5, sizeof(r5), "SGET %s", acked[0]), 0);

	for (int i = 1; i <= NODES; i++) {
		char r[64];
		if (!pids[i])
			continue;
		REQUIRE_EQ(call(i, r, sizeof(r), "QUIT"), 0);
		int st;
		waitpid(pids[i], &st, 0);
		REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	test_rm_rf(base);
	free(base);
	fprintf(stderr, "test_cluster: %d acknowledged writes verified on %d nodes\n", n_acked,
		NODES);
	return test_summary();
}
