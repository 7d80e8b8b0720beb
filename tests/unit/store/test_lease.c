/* test_lease.c: leases in the embedded store (single node, through kv.h and a
 * real Raft log): grant rules, attach/detach by put and delete, revoke and
 * expiry deleting every attached key in one revision (seen by a watch),
 * keep-alive, restart (log replay and snapshot) keeping leases, and the MVCC
 * layer's lease table through a snapshot round trip and legacy entries. The
 * three-node case (leader change) is in test_cluster.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "mvcc.h"
#include "store.pb-c.h"
#include "storetest.h"
#include "watchrec.h"

static int put_l(struct kv *kv, const char *k, const char *v, int64_t lease, bool ignore,
		 int64_t *rev)
{
	struct kv_op op = {.type = KV_OP_PUT,
			   .key = k,
			   .key_len = strlen(k),
			   .value = v,
			   .value_len = strlen(v),
			   .lease = lease,
			   .ignore_lease = ignore};
	struct kv_txn t = {.success = &op, .n_success = 1};
	struct kv_txn_result r;
	int ret = kv_txn(kv, &t, &r);
	if (ret == 0 && rev)
		*rev = r.revision;
	if (ret == 0)
		kv_txn_result_free(&r);
	return ret;
}

static int64_t rev_now(struct kv *kv)
{
	int64_t rev = 0;
	REQUIRE_EQ(kv_status(kv, &rev), 0);
	return rev;
}

/* The keys attached to lease id, as "k1,k2,..." (key order). */
static void lease_keys(struct kv *kv, int64_t id, char *buf, size_t len)
{
	struct kv_lease l;
	struct kv_range_result keys;
	REQUIRE_EQ(kv_lease_ttl(kv, id, &l, &keys), 0);
	size_t off = 0;
	buf[0] = 0;
	for (size_t i = 0; i < keys.n_kvs; i++) {
		CHECK(keys.kvs[i].value == NULL);
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
					keys.kvs[i].key);
	}
	CHECK_EQ(keys.count, (int64_t)keys.n_kvs);
	kv_range_result_free(&keys);
}

static void test_grant_rules(void)
{
	char *dir = test_tmpdir("lease-grant");
	struct kv *kv = open_at(dir, NULL);
	struct kv_lease a, b, c;
	REQUIRE_EQ(kv_lease_grant(kv, 0, 30, &a), 0);
	CHECK(a.id > 0);
	CHECK_EQ(a.ttl, 30);
	CHECK_EQ(a.granted_ttl, 30);
	REQUIRE_EQ(kv_lease_grant(kv, 0, 30, &b), 0);
	CHECK(b.id > 0 && b.id != a.id);
	/* below the minimum (1.5 election timeouts, 2 s by default) the grant gets the minimum */
	REQUIRE_EQ(kv_lease_grant(kv, 0, 1, &c), 0);
	CHECK_EQ(c.ttl, 2);
	CHECK_EQ(c.granted_ttl, 2);
	REQUIRE_EQ(kv_lease_revoke(kv, c.id, NULL), 0);
	/* an explicit id, once */
	REQUIRE_EQ(kv_lease_grant(kv, 77, 10, &c), 0);
	CHECK_EQ(c.id, 77);
	CHECK_EQ(kv_lease_grant(kv, 77, 10, &c), -EEXIST);
	CHECK_EQ(kv_lease_grant(kv, a.id, 10, &c), -EEXIST);
	/* etcd's maximum TTL */
	CHECK_EQ(kv_lease_grant(kv, 0, 9000000001ll, &c), -EINVAL);
	/* time-to-live: seconds left (truncated) and the granted TTL */
	struct kv_lease t;
	REQUIRE_EQ(kv_lease_ttl(kv, 77, &t, NULL), 0);
	CHECK_EQ(t.id, 77);
	CHECK_EQ(t.granted_ttl, 10);
	CHECK(t.ttl >= 8 && t.ttl <= 10);
	/* list, ascending */
	int64_t *ids;
	size_t n;
	REQUIRE_EQ(kv_lease_list(kv, &ids, &n), 0);
	REQUIRE_EQ(n, 3);
	CHECK(ids[0] < ids[1] && ids[1] < ids[2]);
	CHECK_EQ(ids[0], 77);
	CHECK((ids[1] == a.id && ids[2] == b.id) || (ids[1] == b.id && ids[2] == a.id));
	free(ids);
	/* a grant is no write: the revision stays */
	CHECK_EQ(rev_now(kv), 1);
	/* unknown leases */
	CHECK_EQ(kv_lease_revoke(kv, 12345, NULL), -ENOENT);
	CHECK_EQ(kv_lease_keepalive(kv, 12345, &t), -ENOENT);
	CHECK_EQ(kv_lease_ttl(kv, 12345, &t, NULL), -ENOENT);
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

static void test_attach(void)
{
	char *dir = test_tmpdir("lease-attach");
	struct kv *kv = open_at(dir, NULL);
	struct kv_lease a, b;
	REQUIRE_EQ(kv_lease_grant(kv, 100, 60, &a), 0);
	REQUIRE_EQ(kv_lease_grant(kv, 200, 60, &b), 0);
	/* a put naming a lease nobody granted fails and changes nothing */
	int64_t rev0 = rev_now(kv);
	CHECK_EQ(put_l(kv, "/l/x", "v", 999, false, NULL), -ENOENT);
	CHECK_EQ(rev_now(kv), rev0);
	struct kv_kv got;
	CHECK_EQ(get_s(kv, "/l/x", &got), -ENOENT);
	/* ... also inside a txn with other writes; the branch not taken is not checked */
	struct kv_op ops[2] = {
		{.type = KV_OP_PUT, .key = "/l/y", .key_len = 4, .value = "1", .value_len = 1},
		{.type = KV_OP_PUT,
		 .key = "/l/z",
		 .key_len = 4,
		 .value = "1",
		 .value_len = 1,
		 .lease = 999},
	};
	struct kv_txn t = {.success = ops, .n_success = 2};
	struct kv_txn_result r;
	CHECK_EQ(kv_txn(kv, &t, &r), -ENOENT);
	CHECK_EQ(rev_now(kv), rev0);
	CHECK_EQ(get_s(kv, "/l/y", &got), -ENOENT);
	struct kv_compare never = {.target = KV_CMP_VERSION,
				   .result = KV_CMP_GREATER,
				   .key = "/l/none",
				   .key_len = 7,
				   .number = 5};
	struct kv_txn t2 = {.compare = &never, .n_compare = 1, .success = ops, .n_success = 2};
	REQUIRE_EQ(kv_txn(kv, &t2, &r), 0);
	CHECK(!r.succeeded);
	kv_txn_result_free(&r);

	REQUIRE_EQ(put_l(kv, "/l/k1", "1", 100, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/l/k3", "3", 100, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/l/k2", "2", 100, false, NULL), 0);
	char keys[256];
	lease_keys(kv, 100, keys, sizeof(keys));
	CHECK_STRN(keys, strlen(keys), "/l/k1,/l/k2,/l/k3");
	/* a put with another lease moves the key; ignore_lease keeps the current one;
	 * a put without a lease detaches; a delete detaches */
	REQUIRE_EQ(put_l(kv, "/l/k2", "2b", 200, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/l/k3", "3b", 0, true, NULL), 0);
	REQUIRE_EQ(get_s(kv, "/l/k3", &got), 0);
	CHECK_EQ(got.lease, 100);
	kv_kv_free(&got);
	lease_keys(kv, 100, keys, sizeof(keys));
	CHECK_STRN(keys, strlen(keys), "/l/k1,/l/k3");
	lease_keys(kv, 200, keys, sizeof(keys));
	CHECK_STRN(keys, strlen(keys), "/l/k2");
	REQUIRE_EQ(put_l(kv, "/l/k4", "4", 100, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/l/k4", "4b", 0, false, NULL), 0);
	int64_t deleted;
	REQUIRE_EQ(kv_delete_range(kv, "/l/k1", 5, NULL, 0, &deleted, NULL), 0);
	CHECK_EQ(deleted, 1);
	lease_keys(kv, 100, keys, sizeof(keys));
	CHECK_STRN(keys, strlen(keys), "/l/k3");
	REQUIRE_EQ(store_check(kv), 0);

	/* revoke: the keys still attached go in one revision, the others stay */
	REQUIRE_EQ(put_l(kv, "/l/k5", "5", 100, false, NULL), 0);
	int64_t before = rev_now(kv), revoked = 0;
	REQUIRE_EQ(kv_lease_revoke(kv, 100, &revoked), 0);
	CHECK_EQ(revoked, before + 1);
	CHECK_EQ(rev_now(kv), before + 1);
	CHECK_EQ(get_s(kv, "/l/k3", &got), -ENOENT);
	CHECK_EQ(get_s(kv, "/l/k5", &got), -ENOENT);
	REQUIRE_EQ(get_s(kv, "/l/k4", &got), 0);
	kv_kv_free(&got);
	REQUIRE_EQ(get_s(kv, "/l/k2", &got), 0);
	CHECK_EQ(got.lease, 200);
	kv_kv_free(&got);
	CHECK_EQ(kv_lease_revoke(kv, 100, NULL), -ENOENT);
	CHECK_EQ(put_l(kv, "/l/k6", "6", 100, false, NULL), -ENOENT);
	/* a lease with no keys: the revoke changes no revision */
	struct kv_lease e;
	REQUIRE_EQ(kv_lease_grant(kv, 300, 60, &e), 0);
	REQUIRE_EQ(kv_lease_revoke(kv, 300, &revoked), 0);
	CHECK_EQ(revoked, before + 1);
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

/* Waits until key is gone; returns the time it went (ms) or 0 after timeout_ms. */
static int64_t wait_gone(struct kv *kv, const char *key, long timeout_ms)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	while (util_now_ms() < deadline) {
		struct kv_kv got;
		int ret = get_s(kv, key, &got);
		if (ret == -ENOENT)
			return util_now_ms();
		REQUIRE_EQ(ret, 0);
		kv_kv_free(&got);
		usleep(20000);
	}
	return 0;
}

static struct watchrec wr;

static void test_expiry(void)
{
	char *dir = test_tmpdir("lease-expiry");
	struct kv *kv = open_at(dir, NULL);
	struct kv_lease l, k;
	REQUIRE_EQ(kv_lease_grant(kv, 0, 2, &l), 0);
	REQUIRE_EQ(put_s(kv, "/e/other", "x", NULL), 0);
	REQUIRE_EQ(put_l(kv, "/e/a", "1", l.id, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/e/b", "2", l.id, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/e/c", "3", l.id, false, NULL), 0);
	int64_t rev_before = rev_now(kv);
	watchrec_init(&wr);
	struct kv_watch_req wq = {.key = "/e/",
				  .key_len = 3,
				  .range_end = "/e0",
				  .range_end_len = 3,
				  .start_revision = rev_before + 1};
	struct kv_watch *w;
	REQUIRE_EQ(kv_watch(kv, &wq, watchrec_cb, &wr, &w), 0);
	/* keep it alive twice, 1 s apart: it outlives its 2 s TTL counted from the grant */
	int64_t t_ka = 0;
	for (int i = 0; i < 2; i++) {
		usleep(1000000);
		REQUIRE_EQ(kv_lease_keepalive(kv, l.id, &k), 0);
		t_ka = util_now_ms();
		CHECK_EQ(k.id, l.id);
		CHECK_EQ(k.ttl, 2);
	}
	struct kv_lease t;
	REQUIRE_EQ(kv_lease_ttl(kv, l.id, &t, NULL), 0);
	CHECK(t.ttl >= 0 && t.ttl <= 2); /* 1 unless this thread stalled */
	CHECK_EQ(t.granted_ttl, 2);
	int64_t t_gone = wait_gone(kv, "/e/a", 8000);
	REQUIRE(t_gone > 0);
	long after = (long)(t_gone - t_ka);
	fprintf(stderr, "expiry: keys gone %ld ms after the last keep-alive (TTL 2 s)\n", after);
	CHECK(after >= 1950); /* never early */
	CHECK(after <= 5000);
	/* every attached key in one revision, and nothing else */
	CHECK_EQ(rev_now(kv), rev_before + 1);
	struct kv_kv got;
	CHECK_EQ(get_s(kv, "/e/b", &got), -ENOENT);
	CHECK_EQ(get_s(kv, "/e/c", &got), -ENOENT);
	REQUIRE_EQ(get_s(kv, "/e/other", &got), 0);
	kv_kv_free(&got);
	CHECK_EQ(kv_lease_keepalive(kv, l.id, &k), -ENOENT);
	CHECK_EQ(kv_lease_ttl(kv, l.id, &t, NULL), -ENOENT);
	REQUIRE(watchrec_wait(&wr, -1, 3, 5000));
	pthread_mutex_lock(&wr.lock);
	REQUIRE_EQ(wr.n_evs, 3);
	const char *want[] = {"/e/a", "/e/b", "/e/c"};
	for (size_t i = 0; i < 3; i++) {
		CHECK_EQ(wr.evs[i].type, KV_EVENT_DELETE);
		CHECK_STRN(wr.evs[i].key, strlen(wr.evs[i].key), want[i]);
		CHECK_EQ(wr.evs[i].mod_revision, rev_before + 1);
		CHECK_EQ(wr.evs[i].batch, wr.evs[0].batch);
	}
	pthread_mutex_unlock(&wr.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&wr);
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

/* Leases survive close/reopen, through log replay and through a snapshot;
 * a restart gives each its full TTL again. */
static void test_restart(void)
{
	char *dir = test_tmpdir("lease-restart");
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.snapshot_threshold = 16;
	cfg.snapshot_trailing = 4;
	struct kv *kv = open_at(dir, &cfg);
	struct kv_lease a, b, gone;
	REQUIRE_EQ(kv_lease_grant(kv, 0, 60, &a), 0);
	REQUIRE_EQ(kv_lease_grant(kv, 4242, 120, &b), 0);
	REQUIRE_EQ(kv_lease_grant(kv, 0, 60, &gone), 0);
	REQUIRE_EQ(put_l(kv, "/r/a1", "1", a.id, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/r/a2", "2", a.id, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/r/b1", "3", b.id, false, NULL), 0);
	REQUIRE_EQ(put_l(kv, "/r/g1", "4", gone.id, false, NULL), 0);
	REQUIRE_EQ(kv_lease_revoke(kv, gone.id, NULL), 0);
	int64_t rev = rev_now(kv);
	kv_destroy(kv);

	for (int round = 0; round < 2; round++) {
		kv = open_at(dir, &cfg);
		CHECK_EQ(rev_now(kv), rev);
		int64_t *ids;
		size_t n;
		REQUIRE_EQ(kv_lease_list(kv, &ids, &n), 0);
		REQUIRE_EQ(n, 2);
		CHECK((ids[0] == a.id && ids[1] == b.id) || (ids[0] == b.id && ids[1] == a.id));
		free(ids);
		struct kv_lease t;
		REQUIRE_EQ(kv_lease_ttl(kv, b.id, &t, NULL), 0);
		CHECK_EQ(t.granted_ttl, 120);
		CHECK(t.ttl >= 118 && t.ttl <= 120); /* full TTL again */
		char keys[256];
		lease_keys(kv, a.id, keys, sizeof(keys));
		CHECK_STRN(keys, strlen(keys), "/r/a1,/r/a2");
		lease_keys(kv, b.id, keys, sizeof(keys));
		CHECK_STRN(keys, strlen(keys), "/r/b1");
		CHECK_EQ(kv_lease_ttl(kv, gone.id, &t, NULL), -ENOENT);
		CHECK_EQ(put_l(kv, "/r/g2", "x", gone.id, false, NULL), -ENOENT);
		REQUIRE_EQ(store_check(kv), 0);
		if (round == 0) {
			/* enough entries for snapshots, so the next open restores one */
			for (int i = 0; i < 40; i++) {
				char k[32];
				snprintf(k, sizeof(k), "/r/fill%02d", i);
				REQUIRE_EQ(put_s(kv, k, "f", NULL), 0);
			}
			rev = rev_now(kv);
		}
		kv_destroy(kv);
	}
	char **snaps;
	size_t n_snaps;
	char raft[1024];
	snprintf(raft, sizeof(raft), "%s/raft", dir);
	snaps = test_list_dir(raft, ".meta", false, &n_snaps);
	CHECK(n_snaps > 0);
	test_free_names(snaps);
	/* id 0 picks a fresh id after a restart too */
	kv = open_at(dir, &cfg);
	struct kv_lease c;
	REQUIRE_EQ(kv_lease_grant(kv, 0, 60, &c), 0);
	CHECK(c.id != a.id && c.id != b.id && c.id > 0);
	REQUIRE_EQ(kv_lease_revoke(kv, a.id, NULL), 0);
	struct kv_kv got;
	CHECK_EQ(get_s(kv, "/r/a1", &got), -ENOENT);
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

/* The MVCC layer alone: the lease table in a snapshot, and log entries from
 * before leases (their lease numbers are dropped, on replay and on restore). */
static void test_mvcc_leases(void)
{
	struct mvcc *m = mvcc_new();
	REQUIRE(m != NULL);
	int64_t id = 0;
	REQUIRE_EQ(mvcc_lease_grant(m, 0, 30, 7, 1000, &id), 0);
	int64_t id2 = 0;
	/* the id comes from the seed: the same seed on another node gives the same id */
	struct mvcc *m2 = mvcc_new();
	REQUIRE_EQ(mvcc_lease_grant(m2, 0, 30, 7, 5000, &id2), 0);
	CHECK_EQ(id, id2);
	mvcc_free(m2);
	struct kv_op put = {.type = KV_OP_PUT,
			    .key = "/m/a",
			    .key_len = 4,
			    .value = "v",
			    .value_len = 1,
			    .lease = id};
	struct kv_txn t = {.success = &put, .n_success = 1};
	REQUIRE_EQ(mvcc_txn(m, &t, NULL), 0);
	/* legacy entry: a lease nobody granted becomes 0 instead of failing */
	put.key = "/m/b";
	put.lease = 5555;
	CHECK_EQ(mvcc_txn(m, &t, NULL), -ENOENT);
	REQUIRE_EQ(mvcc_txn_legacy(m, &t, NULL), 0);
	struct kv_range_req rq = {.key = "/m/b", .key_len = 4};
	struct kv_range_result rr;
	REQUIRE_EQ(mvcc_range(m, &rq, &rr), 0);
	REQUIRE_EQ(rr.n_kvs, 1);
	CHECK_EQ(rr.kvs[0].lease, 0);
	kv_range_result_free(&rr);
	REQUIRE_EQ(mvcc_check(m), 0);

	void *buf;
	size_t len;
	REQUIRE_EQ(mvcc_snapshot(m, &buf, &len), 0);
	struct mvcc *r;
	REQUIRE_EQ(mvcc_restore(buf, len, &r), 0);
	free(buf);
	CHECK_EQ(mvcc_lease_count(r), 1);
	struct kv_lease l;
	struct kv_range_result keys;
	REQUIRE_EQ(mvcc_lease_get(r, id, util_now_ms(), &l, &keys), 0);
	CHECK_EQ(l.granted_ttl, 30);
	REQUIRE_EQ(keys.n_kvs, 1);
	CHECK_STRN(keys.kvs[0].key, keys.kvs[0].key_len, "/m/a");
	kv_range_result_free(&keys);
	REQUIRE_EQ(mvcc_check(r), 0);
	/* the same snapshot as format 1 (before leases): key leases are dropped, no table */
	Etcdfs__Store__Snapshot *sp = NULL;
	REQUIRE_EQ(mvcc_snapshot(m, &buf, &len), 0);
	sp = etcdfs__store__snapshot__unpack(NULL, len, buf);
	free(buf);
	REQUIRE(sp != NULL);
	sp->format = 1;
	size_t lease_versions = 0;
	for (size_t k = 0; k < sp->n_keys; k++)
		for (size_t v = 0; v < sp->keys[k]->n_versions; v++)
			lease_versions += sp->keys[k]->versions[v]->lease != 0;
	CHECK_EQ(lease_versions, 1);
	size_t n_leases = sp->n_leases;
	sp->n_leases = 0; /* a format 1 writer had none */
	len = etcdfs__store__snapshot__get_packed_size(sp);
	buf = malloc(len);
	REQUIRE(buf != NULL);
	etcdfs__store__snapshot__pack(sp, buf);
	sp->n_leases = n_leases;
	etcdfs__store__snapshot__free_unpacked(sp, NULL);
	struct mvcc *old;
	REQUIRE_EQ(mvcc_restore(buf, len, &old), 0);
	free(buf);
	CHECK_EQ(mvcc_lease_count(old), 0);
	rq.key = "/m/a";
	REQUIRE_EQ(mvcc_range(old, &rq, &rr), 0);
	REQUIRE_EQ(rr.n_kvs, 1);
	CHECK_EQ(rr.kvs[0].lease, 0);
	kv_range_result_free(&rr);
	REQUIRE_EQ(mvcc_check(old), 0);
	mvcc_free(old);

	/* revoke on the restored copy: one revision */
	int64_t rev = mvcc_revision(r), rrev = 0;
	REQUIRE_EQ(mvcc_lease_revoke(r, id, &rrev), 0);
	CHECK_EQ(rrev, rev + 1);
	REQUIRE_EQ(mvcc_check(r), 0);
	mvcc_free(r);

	/* expired: past the deadline, reported once per retry interval; promotion resets */
	int64_t ids[4];
	CHECK_EQ(mvcc_lease_expired(m, 1000 + 29000, 3000, ids, 4), 0);
	REQUIRE_EQ(mvcc_lease_expired(m, 1000 + 30000, 3000, ids, 4), 1);
	CHECK_EQ(ids[0], id);
	CHECK_EQ(mvcc_lease_expired(m, 1000 + 31000, 3000, ids, 4), 0);
	CHECK_EQ(mvcc_lease_expired(m, 1000 + 34000, 3000, ids, 4), 1);
	CHECK_EQ(mvcc_lease_renew(m, id, 1000 + 34000, &l), -ENOENT);
	mvcc_lease_promote(m, 100000);
	CHECK_EQ(mvcc_lease_expired(m, 100000 + 29999, 3000, ids, 4), 0);
	REQUIRE_EQ(mvcc_lease_renew(m, id, 120000, &l), 0);
	CHECK_EQ(mvcc_lease_expired(m, 100000 + 30000, 3000, ids, 4), 0);
	CHECK_EQ(mvcc_lease_expired(m, 150000, 3000, ids, 4), 1);
	/* the scan is skipped until the earliest known deadline, which a new short lease lowers */
	mvcc_lease_promote(m, 200000);
	CHECK_EQ(mvcc_lease_expired(m, 201000, 3000, ids, 4), 0); /* next check at 230000 */
	int64_t short_id;
	REQUIRE_EQ(mvcc_lease_grant(m, 0, 2, 99, 201000, &short_id), 0);
	CHECK_EQ(mvcc_lease_expired(m, 202999, 3000, ids, 4), 0);
	REQUIRE_EQ(mvcc_lease_expired(m, 203000, 3000, ids, 4), 1);
	CHECK_EQ(ids[0], short_id);
	/* more due than max: the rest come at the next call */
	for (int i = 0; i < 5; i++)
		REQUIRE_EQ(mvcc_lease_grant(m, 0, 2, 200 + (uint64_t)i, 201000, NULL), 0);
	CHECK_EQ(mvcc_lease_expired(m, 204000, 3000, ids, 4), 4);
	CHECK_EQ(mvcc_lease_expired(m, 204001, 3000, ids, 4), 1);
	CHECK_EQ(mvcc_lease_expired(m, 204002, 3000, ids, 4), 0);
	mvcc_free(m);
}

/* ---- randomized: the MVCC lease table against a model ---- */

enum { RK = 12, RL = 4 };

struct model {
	bool live[RK];
	int lease[RK]; /* index into ids + 1, 0 = none */
	bool granted[RL];
	int64_t ids[RL];
	int64_t rev;
};

static void rkey(int k, char *buf)
{
	sprintf(buf, "/rnd/%02d", k);
}

/* Every lease's keys and every key's lease agree with the model; the integrity check holds. */
static void compare_model(const struct mvcc *m, const struct model *md)
{
	REQUIRE_EQ(mvcc_check(m), 0);
	REQUIRE_EQ(mvcc_revision(m), md->rev);
	size_t n_granted = 0;
	for (int l = 0; l < RL; l++) {
		struct kv_lease info;
		struct kv_range_result keys;
		int ret = mvcc_lease_get(m, md->ids[l], 0, &info, &keys);
		if (!md->granted[l]) {
			REQUIRE_EQ(ret, -ENOENT);
			continue;
		}
		n_granted++;
		REQUIRE_EQ(ret, 0);
		size_t want = 0;
		for (int k = 0; k < RK; k++) {
			if (!md->live[k] || md->lease[k] != l + 1)
				continue;
			char kb[16];
			rkey(k, kb);
			REQUIRE(want < keys.n_kvs);
			REQUIRE_STRN(keys.kvs[want].key, keys.kvs[want].key_len, kb);
			want++;
		}
		REQUIRE_EQ(keys.n_kvs, want);
		kv_range_result_free(&keys);
	}
	REQUIRE_EQ(mvcc_lease_count(m), n_granted);
}

static void test_random(void)
{
	struct mvcc *m = mvcc_new();
	struct model md = {.rev = 1};
	uint64_t rnd = 12345;
	for (int l = 0; l < RL; l++)
		md.ids[l] = 1000 + l;
	int revokes = 0, moves = 0, refused = 0;
	for (int step = 0; step < 4000; step++) {
		rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
		unsigned r = (unsigned)(rnd >> 33);
		int k = (int)(r % RK), l = (int)((r / RK) % RL), what = (int)((r / 97) % 10);
		char kb[16];
		rkey(k, kb);
		if (what == 0) { /* grant */
			int64_t id;
			int ret = mvcc_lease_grant(m, md.ids[l], 60, (uint64_t)step, 0, &id);
			REQUIRE_EQ(ret, md.granted[l] ? -EEXIST : 0);
			md.granted[l] = true;
		} else if (what == 1) { /* revoke */
			int64_t rev;
			int ret = mvcc_lease_revoke(m, md.ids[l], &rev);
			REQUIRE_EQ(ret, md.granted[l] ? 0 : -ENOENT);
			if (ret == 0) {
				bool any = false;
				for (int i = 0; i < RK; i++)
					if (md.live[i] && md.lease[i] == l + 1)
						md.live[i] = false, md.lease[i] = 0, any = true;
				md.rev += any;
				REQUIRE_EQ(rev, md.rev);
				md.granted[l] = false;
				revokes++;
			}
		} else if (what <= 6) { /* put with a lease, none, or ignore_lease */
			bool ignore = what == 6, none = what == 5;
			struct kv_op op = {.type = KV_OP_PUT,
					   .key = kb,
					   .key_len = strlen(kb),
					   .value = "v",
					   .value_len = 1,
					   .lease = ignore || none ? 0 : md.ids[l],
					   .ignore_lease = ignore};
			struct kv_txn t = {.success = &op, .n_success = 1};
			int ret = mvcc_txn(m, &t, NULL);
			bool ok = ignore ? md.live[k] : (none || md.granted[l]);
			REQUIRE_EQ(ret, ok ? 0 : -ENOENT);
			if (!ok) {
				refused++;
				continue;
			}
			int nl = ignore ? md.lease[k] : none ? 0 : l + 1;
			moves += md.live[k] && md.lease[k] && md.lease[k] != nl;
			md.live[k] = true;
			md.lease[k] = nl;
			md.rev++;
		} else if (what <= 8) { /* delete one key or a range of three */
			char end[16];
			int k2 = k + 3 < RK ? k + 3 : RK;
			rkey(k2, end);
			struct kv_op op = {.type = KV_OP_DELETE,
					   .key = kb,
					   .key_len = strlen(kb),
					   .range_end = what == 8 ? end : NULL,
					   .range_end_len = what == 8 ? strlen(end) : 0};
			struct kv_txn t = {.success = &op, .n_success = 1};
			REQUIRE_EQ(mvcc_txn(m, &t, NULL), 0);
			bool any = false;
			for (int i = k; i < (what == 8 ? k2 : k + 1); i++)
				if (md.live[i])
					md.live[i] = false, md.lease[i] = 0, any = true;
			md.rev += any;
		} else if (r & 1) {
			/* compact everything but the current revision */
			int want = md.rev > mvcc_compact_revision(m) ? 0 : -ERANGE;
			REQUIRE_EQ(mvcc_compact(m, md.rev), want);
		} else { /* snapshot round trip */
			void *buf;
			size_t len;
			struct mvcc *m2;
			REQUIRE_EQ(mvcc_snapshot(m, &buf, &len), 0);
			REQUIRE_EQ(mvcc_restore(buf, len, &m2), 0);
			free(buf);
			mvcc_free(m);
			m = m2;
		}
		compare_model(m, &md);
	}
	fprintf(stderr,
		"random: 4000 steps, %d revokes, %d keys moved between leases, %d puts "
		"refused\n",
		revokes, moves, refused);
	CHECK(revokes > 50 && moves > 50 && refused > 50);
	mvcc_free(m);
}

int main(void)
{
	test_run("mvcc leases", test_mvcc_leases);
	test_run("mvcc leases against a model", test_random);
	test_run("grant rules", test_grant_rules);
	test_run("attach and revoke", test_attach);
	test_run("expiry", test_expiry);
	test_run("restart", test_restart);
	return test_summary();
}
