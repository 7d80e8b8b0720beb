/* test_etcd_auth_tls.c: the etcd backend against a real etcd with authentication enabled
 * (users, wrong password, permissions, token expiry and refresh, watch) and against a real
 * etcd serving TLS with client-certificate auth (right CA, wrong CA, no client cert). */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "kvtest.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "watchrec.h"

struct opts {
	const char *endpoints;
	const char *user, *password;
	const char *cacert, *cert, *key;
	bool insecure;
};

static struct kv *client(const struct opts *o)
{
	struct etcd_config cfg;
	etcd_config_init(&cfg);
	etcd_config_set_endpoints(&cfg, o->endpoints);
	etcd_config_set_string(&cfg.user, o->user);
	etcd_config_set_string(&cfg.password, o->password);
	etcd_config_set_string(&cfg.cacert, o->cacert);
	etcd_config_set_string(&cfg.cert, o->cert);
	etcd_config_set_string(&cfg.key, o->key);
	cfg.insecure_skip_tls_verify = o->insecure;
	cfg.command_timeout_ms = 3000;
	/* meson runs this file once per transport: token renewal over each, through the one
	 * request loop. */
	etcd_harness_config_transport(&cfg);
	return etcd_harness_client(&cfg);
}

static int get_s(struct kv *kv, const char *k, char *v, size_t size)
{
	struct kv_kv got;
	int ret = kv_get(kv, k, strlen(k), &got);
	if (ret == 0) {
		snprintf(v, size, "%s", got.value);
		kv_kv_free(&got);
	}
	return ret;
}

/* Watches prefix, writes one key through kv, and expects CONNECTED and the event. */
static void check_watch(struct kv *kv, const char *prefix)
{
	static struct watchrec r; /* large: not on the stack */
	watchrec_init(&r);
	char end[64], key[64];
	size_t end_len = kv_prefix_end(prefix, strlen(prefix), end);
	struct kv_watch_req req = {.key = prefix,
				   .key_len = strlen(prefix),
				   .range_end = end,
				   .range_end_len = end_len};
	struct kv_watch *w;
	CHECK_EQ(kv_watch(kv, &req, watchrec_cb, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	snprintf(key, sizeof(key), "%swatched", prefix);
	CHECK_EQ(put_s(kv, key, "1", NULL), 0);
	CHECK(watchrec_wait(&r, -1, 1, 5000));
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
}

/* ---- raw gateway access, to prove the server side of token expiry ---- */

static int raw_post(const char *url, const char *token, const char *body, char *out)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char auth[256];
	struct etcd_harness_text text = {out, 1024};
	out[0] = 0;
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: %s", token);
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, etcd_harness_curl_text);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &text);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
	CURLcode rc = curl_easy_perform(c);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return rc == CURLE_OK ? 0 : -EIO;
}

static void test_auth(void)
{
	struct etcd_harness h;
	if (etcd_harness_start_auth(&h, "readwrite") < 0) {
		CHECK(!"etcd with the auth users did not start");
		return;
	}
	/* A user on a server without auth: the client notices and goes on without a token. */
	struct opts o0 = {.endpoints = h.endpoint, .user = "root:pw"};
	struct kv *early = client(&o0);
	CHECK_EQ(put_s(early, "/a", "0", NULL), 0);
	kv_destroy(early);
	CHECK_EQ(etcd_harness_ctl(&h, NULL, "auth", "enable", NULL), 0);

	char v[64];
	/* name:password in --user. */
	struct opts o = {.endpoints = h.endpoint, .user = "root:pw"};
	struct kv *root = client(&o);
	CHECK(root != NULL);
	CHECK_EQ(put_s(root, "/a", "1", NULL), 0);
	CHECK_EQ(get_s(root, "/a", v, sizeof(v)), 0);
	CHECK(strcmp(v, "1") == 0);
	int64_t rev;
	CHECK_EQ(kv_status(root, &rev), 0);
	check_watch(root, "/aw/");

	/* Name and password given separately. */
	o = (struct opts){.endpoints = h.endpoint, .user = "root", .password = "pw"};
	struct kv *root2 = client(&o);
	CHECK_EQ(get_s(root2, "/a", v, sizeof(v)), 0);
	kv_destroy(root2);

	/* Wrong password: -EACCES for reads, writes, status and watches. */
	o = (struct opts){.endpoints = h.endpoint, .user = "root:wrong"};
	struct kv *bad = client(&o);
	CHECK_EQ(get_s(bad, "/a", v, sizeof(v)), -EACCES);
	CHECK_EQ(put_s(bad, "/a", "2", NULL), -EACCES);
	CHECK_EQ(kv_status(bad, &rev), -EACCES);
	static struct watchrec r; /* large: not on the stack */
	watchrec_init(&r);
	struct kv_watch_req wr = {.key = "/a", .key_len = 2};
	struct kv_watch *w;
	CHECK_EQ(kv_watch(bad, &wr, watchrec_cb, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CANCELED, 1, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.last_err[KV_WATCH_CANCELED], -EACCES);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(bad, w);
	watchrec_destroy(&r);
	kv_destroy(bad);

	/* No user at all on an auth-enabled server. */
	o = (struct opts){.endpoints = h.endpoint};
	struct kv *anon = client(&o);
	CHECK_EQ(get_s(anon, "/a", v, sizeof(v)), -EACCES);
	kv_destroy(anon);

	/* A user limited to /bob/. */
	o = (struct opts){.endpoints = h.endpoint, .user = "bob:bpw"};
	struct kv *bob = client(&o);
	CHECK_EQ(put_s(bob, "/bob/x", "1", NULL), 0);
	CHECK_EQ(put_s(bob, "/a", "2", NULL), -EACCES);
	CHECK_EQ(get_s(bob, "/a", v, sizeof(v)), -EACCES);
	kv_destroy(bob);
	CHECK_EQ(get_s(root, "/a", v, sizeof(v)), 0);
	CHECK(strcmp(v, "1") == 0); /* the refused writes wrote nothing */

	/* Token expiry: prove the server expires an idle token, then that the client renews
	 * its own expired token transparently. */
	char url[128], out[1024];
	snprintf(url, sizeof(url), "%s/v3/auth/authenticate", h.endpoint);
	CHECK_EQ(raw_post(url, NULL, "{\"name\":\"root\",\"password\":\"pw\"}", out), 0);
	char *t = strstr(out, "\"token\":\"");
	char token[128] = "";
	if (t)
		sscanf(t + 9, "%127[^\"]", token);
	CHECK(token[0] != 0);
	snprintf(url, sizeof(url), "%s/v3/kv/range", h.endpoint);
	CHECK_EQ(raw_post(url, token, "{\"key\":\"L2E=\"}", out), 0);
	CHECK(strstr(out, "\"kvs\"") != NULL);
	sleep(4);
	CHECK_EQ(raw_post(url, token, "{\"key\":\"L2E=\"}", out), 0);
	CHECK(strstr(out, "invalid auth token") != NULL);
	CHECK_EQ(get_s(root, "/a", v, sizeof(v)), 0); /* idle > TTL too: renewed */
	CHECK_EQ(put_s(root, "/a", "3", NULL), 0);

	/* A restart forgets every simple token: a live watch must re-authenticate when it
	 * reconnects instead of giving up, and deliver what was written meanwhile. */
	watchrec_init(&r);
	struct kv_watch_req rwr = {.key = "/rs", .key_len = 3};
	CHECK_EQ(kv_watch(root, &rwr, watchrec_cb, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	CHECK_EQ(etcd_harness_restart(&h), 0);
	int ret = -1;
	for (int i = 0; i < 50 && ret; i++)
		if ((ret = put_s(root, "/rs", "after", NULL)))
			usleep(100000);
	CHECK_EQ(ret, 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 2, 10000));
	CHECK(watchrec_wait(&r, -1, 1, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.n_state[KV_WATCH_CANCELED], 0);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(root, w);
	watchrec_destroy(&r);
	kv_destroy(root);
	etcd_harness_destroy(&h);
}

static void test_tls(void)
{
	struct etcd_harness h;
	if (etcd_harness_start_tls(&h) < 0) {
		CHECK(!"TLS etcd did not start");
		return;
	}
	char v[64];
	int64_t rev;
	struct opts o = {.endpoints = h.endpoint, .cacert = h.ca, .cert = h.cert, .key = h.key};
	struct kv *kv = client(&o);
	CHECK_EQ(put_s(kv, "/tls", "yes", NULL), 0);
	CHECK_EQ(get_s(kv, "/tls", v, sizeof(v)), 0);
	CHECK(strcmp(v, "yes") == 0);
	check_watch(kv, "/tw/");
	kv_destroy(kv);

	/* Bare host:port plus TLS files means https (etcdctl's rule). */
	char bare[64];
	snprintf(bare, sizeof(bare), "127.0.0.1:%d", h.client_port);
	o.endpoints = bare;
	kv = client(&o);
	CHECK_EQ(kv_status(kv, &rev), 0);
	kv_destroy(kv);

	/* A CA that did not sign the server: refused quickly with -EACCES. */
	CHECK_EQ(etcd_harness_make_certs(h.dir, "other"), 0);
	char other_ca[1200];
	snprintf(other_ca, sizeof(other_ca), "%s/other-ca.crt", h.dir);
	o = (struct opts){
		.endpoints = h.endpoint, .cacert = other_ca, .cert = h.cert, .key = h.key};
	kv = client(&o);
	long long t0 = util_now_ms();
	CHECK_EQ(kv_status(kv, &rev), -EACCES);
	CHECK_EQ(get_s(kv, "/tls", v, sizeof(v)), -EACCES);
	CHECK(util_now_ms() - t0 < 2000);
	kv_destroy(kv);

	/* The same with verification off works (the client certificate is still valid). */
	o.insecure = true;
	kv = client(&o);
	CHECK_EQ(get_s(kv, "/tls", v, sizeof(v)), 0);
	kv_destroy(kv);

	/* No client certificate: the server refuses the handshake. */
	o = (struct opts){.endpoints = h.endpoint, .cacert = h.ca};
	kv = client(&o);
	int ret = kv_status(kv, &rev);
	fprintf(stderr, "without a client certificate: %s\n", strerror(-ret));
	CHECK_EQ(ret, -EACCES);
	kv_destroy(kv);

	/* A client certificate from another CA: refused too. */
	char other_cert[1200], other_key[1200];
	snprintf(other_cert, sizeof(other_cert), "%s/other-client.crt", h.dir);
	snprintf(other_key, sizeof(other_key), "%s/other-client.key", h.dir);
	o = (struct opts){
		.endpoints = h.endpoint, .cacert = h.ca, .cert = other_cert, .key = other_key};
	kv = client(&o);
	ret = kv_status(kv, &rev);
	fprintf(stderr, "with a foreign client certificate: %s\n", strerror(-ret));
	CHECK_EQ(ret, -EACCES);
	kv_destroy(kv);

	/* Plain http against the TLS port fails cleanly. */
	char plain[64];
	snprintf(plain, sizeof(plain), "http://127.0.0.1:%d", h.client_port);
	o = (struct opts){.endpoints = plain};
	kv = client(&o);
	ret = kv_status(kv, &rev);
	fprintf(stderr, "plain http to the TLS port: %s\n", strerror(-ret));
	CHECK(ret < 0);
	kv_destroy(kv);
	etcd_harness_destroy(&h);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	test_auth();
	test_tls();
	curl_global_cleanup();
	return test_summary();
}
