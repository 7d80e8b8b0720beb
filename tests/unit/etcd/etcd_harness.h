/* etcd_harness.h: starts a real, private etcd for tests (any module may link it).
 *
 * The harness forks /usr/bin/etcd (override with $ETCD_BIN) with a mkdtemp() directory that
 * holds the data dir, etcd's log (etcd.log) and any generated certificates; it listens on
 * 127.0.0.1 only, on free ports picked at start. The child gets PR_SET_PDEATHSIG(SIGKILL), so
 * a crashing test (or a test thread that exits: call the harness from the main thread) never
 * leaks an etcd.
 *
 * Typical use:
 *	struct etcd_harness h;
 *	if (etcd_harness_start(&h, NULL) < 0) exit(1);   // waits until /health says true
 *	... connect to h.endpoint ...
 *	etcd_harness_destroy(&h);                        // kills etcd, removes the directory
 *
 * All functions return 0 or a negative errno and print the reason (and the tail of etcd's
 * log when etcd fails to come up) on stderr. Strings in struct etcd_harness are inline
 * arrays owned by the struct; nothing needs freeing besides etcd_harness_destroy().
 */
#ifndef ETCDFS_ETCD_HARNESS_H
#define ETCDFS_ETCD_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct etcd_harness_opts {
	/* Serve clients over https with client-certificate auth. Certificates (a CA, a server
	 * certificate for IP:127.0.0.1 and a client certificate) are generated with the openssl
	 * command into the harness directory. */
	bool tls;
	/* NULL-terminated extra etcd flags, e.g. { "--max-txn-ops=4", NULL }; may be NULL. */
	const char *const *extra_args;
};

struct etcd_harness {
	pid_t pid;	/* running etcd, 0 when stopped */
	char dir[1024]; /* the mkdtemp() directory */
	char data_dir[PATH_MAX];
	char log_path[PATH_MAX];
	int client_port, peer_port;
	char endpoint[64]; /* "http://127.0.0.1:<port>" or "https://..." */
	bool tls;
	/* With tls: PEM files a client uses (CA that signed the server, client cert and key). */
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	char *const *extra_args; /* private copy */
};

/* Creates the directory, picks ports, starts etcd and waits up to 20 s until it is healthy.
 * opts may be NULL (plain http). On failure everything is cleaned up. */
int etcd_harness_start(struct etcd_harness *h, const struct etcd_harness_opts *opts);
/* Stops etcd with SIGTERM (SIGKILL after 5 s) and reaps it; data and ports are kept. */
int etcd_harness_stop(struct etcd_harness *h);
/* Starts etcd again on the same ports and data dir and waits until it is healthy. */
int etcd_harness_restart(struct etcd_harness *h);
/* Sends a signal to the running etcd (SIGSTOP / SIGCONT to simulate a hung server). For
 * SIGSTOP it returns once the process has stopped. */
int etcd_harness_signal(struct etcd_harness *h, int sig);
/* Waits up to timeout_ms until GET /health answers {"health":"true"}. */
int etcd_harness_wait_healthy(struct etcd_harness *h, long timeout_ms);
/* Runs etcdctl against this etcd (endpoint and TLS flags added). args is NULL-terminated;
 * user ("name:password") may be NULL. Captures stdout+stderr into out (NUL-terminated,
 * truncated) when out is not NULL. Returns etcdctl's exit status (0..255) or -errno. */
int etcd_harness_etcdctl(struct etcd_harness *h, const char *user, char *out, size_t out_size,
			 const char *const *args);
/* etcd_harness_etcdctl with the arguments as a NULL-terminated list (NULLs after the first
 * are ignored), its output printed on stderr when it fails. */
int etcd_harness_ctl(struct etcd_harness *h, const char *user, ...) __attribute__((sentinel));
/* Adds the users the auth tests share: root:pw (role root) and bob:bpw, whose role "bobs"
 * has bob_perm ("read", "readwrite") on the prefix /bob/. Auth stays disabled. -EIO when an
 * etcdctl call failed (its output is printed). */
int etcd_harness_add_users(struct etcd_harness *h, const char *bob_perm);
/* etcd_harness_start for the TLS tests: https with client certificates (opts.tls). */
int etcd_harness_start_tls(struct etcd_harness *h);
/* etcd_harness_start for the auth tests: tokens expire after 2 s (--auth-token-ttl=2), so
 * that a test sees its client renew one, and the shared users are added as
 * etcd_harness_add_users(h, bob_perm) does; auth stays disabled. On failure nothing is left
 * running. */
int etcd_harness_start_auth(struct etcd_harness *h, const char *bob_perm);
/* Kills etcd if running and removes the directory. Safe to call twice. */
void etcd_harness_destroy(struct etcd_harness *h);

/* Returns a currently free TCP port on 127.0.0.1 (or -errno). */
int etcd_harness_free_port(void);
/* Generates <dir>/<prefix>-ca.crt/.key, <prefix>-server.crt/.key (SAN IP:127.0.0.1,
 * DNS:localhost) and <prefix>-client.crt/.key, all signed by that CA, with openssl. */
int etcd_harness_make_certs(const char *dir, const char *prefix);
/* Removes a directory tree (like rm -rf). */
int etcd_harness_rmtree(const char *path);

/* A curl write callback that appends to a NUL-terminated buffer (WRITEDATA: this struct),
 * cutting what does not fit. buf starts as "". */
struct etcd_harness_text {
	char *buf;
	size_t cap;
};
size_t etcd_harness_curl_text(char *p, size_t size, size_t n, void *ud);

/* Sets cfg->transport from $ETCDFS_ETCD_TRANSPORT, as etcdfs does (meson runs some etcd
 * tests once per transport), and nothing else: the ETCDCTL_* variables of whoever runs the
 * tests must not leak in. Exits on a bad value. */
struct etcd_config;
struct kv;
void etcd_harness_config_transport(struct etcd_config *cfg);
/* The etcd client cfg describes, or NULL when it cannot be made (the client logs why);
 * frees cfg either way. */
struct kv *etcd_harness_client(struct etcd_config *cfg);

#endif
