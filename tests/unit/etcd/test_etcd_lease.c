/* test_etcd_lease.c: the same lease sequence through kv.h on a real etcd (the etcd client,
 * over the transport ETCDFS_ETCD_TRANSPORT names; meson runs it over each) and on the
 * embedded store (src/store/), with the two transcripts compared line by line. Lease ids are replaced by names (L1, L2, ...) and revisions are
 * written relative to the revision the sequence started at; a time-to-live is written as
 * "ok" when it lies between the granted TTL minus 2 and the granted TTL. Everything else
 * (errors, TTLs after the minimum, attached keys, revisions of revokes and expiries, the
 * watch events of an expiry) must be equal. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "kvtest.h"
#include "store/store.h"
#include "test.h"
#include "watchrec.h"

#define MAX_LINES 128

struct transcript {
	char lines[MAX_LINES][160];
	size_t n;
	int64_t ids[16]; /* lease ids seen, named L<index+1> */
	size_t n_ids;
	int64_t base; /* revision at the start */
};

static void say(struct transcript *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct transcript *t, const char *fmt, ...)
{
	REQUIRE(t->n < MAX_LINES);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->lines[t->n++], sizeof(t->lines[0]), fmt, ap);
	va_end(ap);
}

/* The name of lease id in this transcript ("L3"), naming it on first sight. */
static const char *name_of(struct transcript *t, int64_t id, char *buf)
{
	size_t i = 0;
	while (i < t->n_ids && t->ids[i] != id)
		i++;
	if (i == t->n_ids) {
		REQUIRE(t->n_ids < 16);
		t->ids[t->n_ids++] = id;
	}
	sprintf(buf, "L%zu", i + 1);
	return buf;
}

static const char *err_name(int ret)
{
	switch (ret) {
	case 0:
		return "ok";
	case -ENOENT:
		return "ENOENT";
	case -EEXIST:
		return "EEXIST";
	case -EINVAL:
		return "EINVAL";
	default:
		return strerror(-ret);
	}
}

static int64_t rev_of(struct kv *kv)
{
	int64_t rev = 0;
	REQUIRE_EQ(kv_status(kv, &rev), 0);
	return rev;
}

static void grant(struct kv *kv, struct transcript *t, int64_t id, int64_t ttl, int64_t *out)
{
	struct kv_lease l = {0};
	int ret = kv_lease_grant(kv, id, ttl, &l);
	char n[16];
	if (ret == 0) {
		say(t, "grant %lld: %s ttl=%lld granted=%lld", (long long)ttl, name_of(t, l.id, n),
		    (long long)l.ttl, (long long)l.granted_ttl);
		CHECK(l.id != 0);
	} else {
		say(t, "grant %lld: %s", (long long)ttl, err_name(ret));
	}
	if (out)
		*out = l.id;
}

static void put_lease(struct kv *kv, struct transcript *t, const char *key, int64_t lease,
		      bool ignore)
{
	struct kv_op op = {.type = KV_OP_PUT,
			   .key = key,
			   .key_len = strlen(key),
			   .value = "v",
			   .value_len = 1,
			   .lease = lease,
			   .ignore_lease = ignore};
	struct kv_txn txn = {.success = &op, .n_success = 1};
	struct kv_txn_result r;
	int ret = kv_txn(kv, &txn, &r);
	char n[16];
	const char *ln = lease ? name_of(t, lease, n) : "0";
	if (ret == 0) {
		say(t, "put %s lease=%s%s: rev +%lld", key, ln, ignore ? " (ignore)" : "",
		    (long long)(r.revision - t->base));
		kv_txn_result_free(&r);
	} else {
		say(t, "put %s lease=%s: %s, rev +%lld", key, ln, err_name(ret),
		    (long long)(rev_of(kv) - t->base));
	}
}

static void get_lease(struct kv *kv, struct transcript *t, const char *key)
{
	struct kv_kv k;
	int ret = kv_get(kv, key, strlen(key), &k);
	char n[16];
	if (ret == 0) {
		say(t, "get %s: lease=%s mod +%lld", key, k.lease ? name_of(t, k.lease, n) : "0",
		    (long long)(k.mod_revision - t->base));
		kv_kv_free(&k);
	} else {
		say(t, "get %s: %s", key, err_name(ret));
	}
}

static void ttl(struct kv *kv, struct transcript *t, int64_t id)
{
	struct kv_lease l;
	struct kv_range_result keys;
	char n[16];
	int ret = kv_lease_ttl(kv, id, &l, &keys);
	if (ret < 0) {
		say(t, "ttl %s: %s", name_of(t, id, n), err_name(ret));
		return;
	}
	char ks[128] = "";
	size_t off = 0;
	for (size_t i = 0; i < keys.n_kvs; i++)
		off += (size_t)snprintf(ks + off, sizeof(ks) - off, "%s%s", i ? "," : "",
					keys.kvs[i].key);
	bool left_ok = l.ttl <= l.granted_ttl && l.ttl >= l.granted_ttl - 2;
	say(t, "ttl %s: id=%s left=%s granted=%lld keys=[%s]", name_of(t, id, n),
	    l.id == id ? "same" : "other", left_ok ? "ok" : "WRONG", (long long)l.granted_ttl, ks);
	if (!left_ok)
		fprintf(stderr, "ttl left %lld of %lld\n", (long long)l.ttl,
			(long long)l.granted_ttl);
	kv_range_result_free(&keys);
}

static void keepalive(struct kv *kv, struct transcript *t, int64_t id)
{
	struct kv_lease l;
	char n[16];
	int ret = kv_lease_keepalive(kv, id, &l);
	if (ret == 0)
		say(t, "keepalive %s: ttl=%lld id=%s", name_of(t, id, n), (long long)l.ttl,
		    l.id == id ? "same" : "other");
	else
		say(t, "keepalive %s: %s", name_of(t, id, n), err_name(ret));
}

static void do_revoke(struct kv *kv, struct transcript *t, int64_t id)
{
	int64_t rev = 0;
	char n[16];
	int ret = kv_lease_revoke(kv, id, &rev);
	if (ret == 0)
		say(t, "revoke %s: rev +%lld", name_of(t, id, n), (long long)(rev - t->base));
	else
		say(t, "revoke %s: %s", name_of(t, id, n), err_name(ret));
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void do_list(struct kv *kv, struct transcript *t)
{
	int64_t *ids;
	size_t n;
	int ret = kv_lease_list(kv, &ids, &n);
	if (ret < 0) {
		say(t, "list: %s", err_name(ret));
		return;
	}
	/* by name, since ids are ordered differently on each side */
	char names[16][16], line[160] = "";
	size_t off = 0;
	for (size_t i = 0; i < n && i < 16; i++)
		name_of(t, ids[i], names[i]);
	qsort(names, n < 16 ? n : 16, sizeof(names[0]), cmp_name);
	for (size_t i = 0; i < n && i < 16; i++)
		off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%s", i ? "," : "",
					names[i]);
	say(t, "list: [%s]", line);
	free(ids);
}

static struct watchrec wr;

/* A 2 s lease with two keys expires; the keys go in one revision, which a watch sees. */
static void expiry(struct kv *kv, struct transcript *t, const char *p)
{
	int64_t l;
	char k5[64], k6[64], end[64];
	snprintf(k5, sizeof(k5), "%s/e5", p);
	snprintf(k6, sizeof(k6), "%s/e6", p);
	grant(kv, t, 0, 2, &l);
	put_lease(kv, t, k6, l, false);
	put_lease(kv, t, k5, l, false);
	watchrec_init(&wr);
	size_t end_len = kv_prefix_end(p, strlen(p), end);
	struct kv_watch_req wq = {.key = p,
				  .key_len = strlen(p),
				  .range_end = end,
				  .range_end_len = end_len,
				  .start_revision = rev_of(kv) + 1};
	struct kv_watch *w;
	REQUIRE_EQ(kv_watch(kv, &wq, watchrec_cb, &wr, &w), 0);
	int64_t t0 = util_now_ms();
	bool gone = false;
	while (!gone && util_now_ms() - t0 < 15000) {
		struct kv_kv k;
		int ret = kv_get(kv, k5, strlen(k5), &k);
		if (ret == 0)
			kv_kv_free(&k);
		gone = ret == -ENOENT;
		usleep(50000);
	}
	fprintf(stderr, "%s: the 2 s lease's keys went after %lld ms\n", kv->ops->name,
		(long long)(util_now_ms() - t0));
	say(t, "expired: %s", gone ? "yes" : "no");
	get_lease(kv, t, k6);
	bool got = watchrec_wait(&wr, -1, 2, 5000);
	pthread_mutex_lock(&wr.lock);
	say(t, "watch: %zu events", wr.n_evs);
	for (size_t i = 0; got && i < wr.n_evs; i++)
		say(t, "watch: %s %s +%lld batch %zu",
		    wr.evs[i].type == KV_EVENT_DELETE ? "DELETE" : "PUT", wr.evs[i].key,
		    (long long)(wr.evs[i].mod_revision - t->base),
		    wr.evs[i].batch - wr.evs[0].batch);
	pthread_mutex_unlock(&wr.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&wr);
	ttl(kv, t, l);
	keepalive(kv, t, l);
}

static void sequence(struct kv *kv, struct transcript *t)
{
	const char *p = "/lease-diff";
	char k1[64], k2[64], k3[64], k4[64];
	snprintf(k1, sizeof(k1), "%s/k1", p);
	snprintf(k2, sizeof(k2), "%s/k2", p);
	snprintf(k3, sizeof(k3), "%s/k3", p);
	snprintf(k4, sizeof(k4), "%s/k4", p);
	t->base = rev_of(kv);
	int64_t l1, l2, lmin;
	grant(kv, t, 0, 30, &l1);
	grant(kv, t, 0, -5, &lmin); /* below the minimum: gets the minimum */
	do_revoke(kv, t, lmin);	    /* no keys: no new revision */
	grant(kv, t, 0, 20, &l2);
	grant(kv, t, l1, 10, NULL);
	grant(kv, t, 0, 9000000001ll, NULL);
	put_lease(kv, t, k1, l1, false);
	put_lease(kv, t, k2, l1, false);
	put_lease(kv, t, k3, l2, false);
	put_lease(kv, t, k4, 424242, false); /* never granted */
	get_lease(kv, t, k4);
	ttl(kv, t, l1);
	ttl(kv, t, l2);
	put_lease(kv, t, k2, l2, false); /* moves to l2 */
	put_lease(kv, t, k1, 0, true);	 /* keeps l1 */
	get_lease(kv, t, k1);
	int64_t deleted = 0;
	int ret = kv_delete_range(kv, k3, strlen(k3), NULL, 0, &deleted, NULL);
	say(t, "delete %s: %s %lld", k3, err_name(ret), (long long)deleted);
	ttl(kv, t, l1);
	ttl(kv, t, l2);
	keepalive(kv, t, l1);
	do_list(kv, t);
	do_revoke(kv, t, l1);
	get_lease(kv, t, k1);
	get_lease(kv, t, k2);
	do_revoke(kv, t, l1);
	keepalive(kv, t, l1);
	ttl(kv, t, l1);
	put_lease(kv, t, k1, l1, false);
	do_list(kv, t);
	expiry(kv, t, p);
	do_revoke(kv, t, l2);
	get_lease(kv, t, k2);
	do_list(kv, t);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	static struct etcd_harness h;
	static struct transcript te, ts;
	if (etcd_harness_start(&h, NULL) < 0) {
		fprintf(stderr, "cannot start etcd\n");
		return 1;
	}
	struct etcd_config ecfg;
	etcd_config_init(&ecfg);
	etcd_config_set_endpoints(&ecfg, h.endpoint);
	etcd_harness_config_transport(&ecfg);
	struct kv *etcd = etcd_harness_client(&ecfg);
	REQUIRE(etcd != NULL);
	sequence(etcd, &te);
	kv_destroy(etcd);
	etcd_harness_destroy(&h);

	char *dir = test_tmpdir("lease-diff");
	struct store_config scfg;
	store_config_init(&scfg);
	scfg.data_dir = dir;
	/* the harness's etcd runs with these (--election-timeout=500); the minimum TTL
	 * derives from the election timeout on both sides (1 s here) */
	scfg.election_timeout_ms = 500;
	scfg.heartbeat_timeout_ms = 50;
	struct kv *store = NULL;
	REQUIRE_EQ(store_open(&scfg, &store), 0);
	sequence(store, &ts);
	kv_destroy(store);
	test_rm_rf(dir);
	free(dir);

	size_t n = te.n > ts.n ? te.n : ts.n;
	for (size_t i = 0; i < n; i++) {
		const char *a = i < te.n ? te.lines[i] : "(none)";
		const char *b = i < ts.n ? ts.lines[i] : "(none)";
		bool same = strcmp(a, b) == 0;
		fprintf(stderr, "%s %-58s | %s\n", same ? " " : "!", a, b);
		CHECK(same, "line %zu: etcd \"%s\", store \"%s\"", i + 1, a, b);
	}
	/* A few absolute facts, so that two equally wrong transcripts do not pass. */
	CHECK_EQ(te.n, 42);
	const char *facts[][2] = {
		{"1", "grant -5: L2 ttl=1 granted=1"},
		{"4", "grant 10: EEXIST"},
		{"9", "put /lease-diff/k4 lease=L4: ENOENT, rev +3"},
		{"21", "revoke L1: rev +7"},
		{"35", "watch: DELETE /lease-diff/e5 +10 batch 0"},
		{"36", "watch: DELETE /lease-diff/e6 +10 batch 0"},
	};
	for (size_t i = 0; i < sizeof(facts) / sizeof(facts[0]); i++) {
		size_t at = (size_t)atoi(facts[i][0]);
		CHECK(at < te.n && strcmp(te.lines[at], facts[i][1]) == 0, "line %zu: want \"%s\"",
		      at + 1, facts[i][1]);
	}
	return test_summary();
}
