/* etcd_harness.c: starts and controls a private etcd for tests (see etcd_harness.h). */
#include "etcd_harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "etcd/etcd.h"

static const char *etcd_bin(void)
{
	const char *b = getenv("ETCD_BIN");
	return b && *b ? b : "/usr/bin/etcd";
}

static const char *etcdctl_bin(void)
{
	const char *b = getenv("ETCDCTL_BIN");
	return b && *b ? b : "/usr/bin/etcdctl";
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int etcd_harness_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ret;
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	close(fd);
	return ntohs(a.sin_port);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	if (remove(path) < 0 && errno != ENOENT)
		fprintf(stderr, "harness: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

int etcd_harness_rmtree(const char *path)
{
	if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int open_log(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* In a forked child: stdout and stderr to out_fd (left alone when it is < 0), stdin from
 * /dev/null, then argv. Never returns. */
static void exec_child(const char *const *argv, int out_fd)
{
	if (out_fd >= 0) {
		dup2(out_fd, 1);
		dup2(out_fd, 2);
	}
	int nul = open("/dev/null", O_RDONLY);
	if (nul >= 0)
		dup2(nul, 0);
	execv(argv[0], (char *const *)argv);
	_exit(127);
}

/* Runs argv (NULL-terminated) and waits; output goes to out (or the file log_path, or is
 * discarded). Returns the exit status or -errno. */
static int run(const char *const *argv, char *out, size_t out_size, const char *log_path)
{
	int pfd[2] = {-1, -1};
	if (out && pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = -errno;
		if (out) {
			close(pfd[0]);
			close(pfd[1]);
		}
		return e;
	}
	if (pid == 0) {
		exec_child(argv, out ? pfd[1] : open_log(log_path ? log_path : "/dev/null"));
	}
	size_t n = 0;
	if (out) {
		close(pfd[1]);
		for (;;) {
			char tmp[4096];
			ssize_t r = read(pfd[0], tmp, sizeof(tmp));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			size_t take = (size_t)r;
			if (out_size && n + take > out_size - 1)
				take = out_size - 1 - n;
			memcpy(out + n, tmp, take);
			n += take;
		}
		close(pfd[0]);
		if (out_size)
			out[n] = 0;
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int etcd_harness_make_certs(const char *dir, const char *prefix)
{
	char ca[PATH_MAX], cakey[PATH_MAX], ext[PATH_MAX];
	snprintf(ca, sizeof(ca), "%s/%s-ca.crt", dir, prefix);
	snprintf(cakey, sizeof(cakey), "%s/%s-ca.key", dir, prefix);
	snprintf(ext, sizeof(ext), "%s/%s-ext.cnf", dir, prefix);
	FILE *f = fopen(ext, "w");
	if (!f)
		return -errno;
	/* One extension file with a section per certificate kind. */
	fprintf(f, "[server]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
		   "extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,"
		   "keyEncipherment\n[client]\nextendedKeyUsage=clientAuth\n"
		   "keyUsage=digitalSignature,keyEncipherment\n");
	fclose(f);
	char subj[128];
	snprintf(subj, sizeof(subj), "/CN=etcdfs-test-%s-ca", prefix);
	const char *ca_argv[] = {"/usr/bin/openssl",
				 "req",
				 "-x509",
				 "-newkey",
				 "rsa:2048",
				 "-nodes",
				 "-keyout",
				 cakey,
				 "-out",
				 ca,
				 "-days",
				 "2",
				 "-subj",
				 subj,
				 NULL};
	if (run(ca_argv, NULL, 0, NULL) != 0) {
		fprintf(stderr, "harness: openssl could not make a CA in %s\n", dir);
		return -EIO;
	}
	const char *kinds[] = {"server", "client"};
	for (int i = 0; i < 2; i++) {
		char crt[PATH_MAX], key[PATH_MAX], csr[PATH_MAX], cn[128];
		snprintf(crt, sizeof(crt), "%s/%s-%s.crt", dir, prefix, kinds[i]);
		snprintf(key, sizeof(key), "%s/%s-%s.key", dir, prefix, kinds[i]);
		snprintf(csr, sizeof(csr), "%s/%s-%s.csr", dir, prefix, kinds[i]);
		snprintf(cn, sizeof(cn), "/CN=%s", i == 0 ? "127.0.0.1" : "etcdfs-test-client");
		const char *req_argv[] = {"/usr/bin/openssl",
					  "req",
					  "-newkey",
					  "rsa:2048",
					  "-nodes",
					  "-keyout",
					  key,
					  "-out",
					  csr,
					  "-subj",
					  cn,
					  NULL};
		const char *sign_argv[] = {"/usr/bin/openssl",
					   "x509",
					   "-req",
					   "-in",
					   csr,
					   "-CA",
					   ca,
					   "-CAkey",
					   cakey,
					   "-CAcreateserial",
					   "-out",
					   crt,
					   "-days",
					   "2",
					   "-extfile",
					   ext,
					   "-extensions",
					   kinds[i],
					   NULL};
		if (run(req_argv, NULL, 0, NULL) != 0 || run(sign_argv, NULL, 0, NULL) != 0) {
			fprintf(stderr, "harness: openssl could not make the %s certificate\n",
				kinds[i]);
			return -EIO;
		}
	}
	return 0;
}

size_t etcd_harness_curl_text(char *p, size_t size, size_t n, void *ud)
{
	struct etcd_harness_text *t = ud;
	size_t len = strlen(t->buf), take = size * n;
	if (len + take > t->cap - 1)
		take = t->cap - 1 - len;
	memcpy(t->buf + len, p, take);
	t->buf[len + take] = 0;
	return size * n;
}

int etcd_harness_wait_healthy(struct etcd_harness *h, long timeout_ms)
{
	long long deadline = util_now_ms() + timeout_ms;
	char url[128];
	snprintf(url, sizeof(url), "%s/health", h->endpoint);
	CURL *c = curl_easy_init();
	if (!c)
		return -ENOMEM;
	int ret = -ETIMEDOUT;
	while (util_now_ms() < deadline) {
		char body[256] = "";
		struct etcd_harness_text text = {body, sizeof(body)};
		int status;
		if (h->pid && waitpid(h->pid, &status, WNOHANG) == h->pid) {
			fprintf(stderr, "harness: etcd exited during start-up\n");
			h->pid = 0;
			ret = -ESRCH;
			break;
		}
		curl_easy_reset(c);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, etcd_harness_curl_text);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &text);
		if (h->tls) {
			curl_easy_setopt(c, CURLOPT_CAINFO, h->ca);
			curl_easy_setopt(c, CURLOPT_SSLCERT, h->cert);
			curl_easy_setopt(c, CURLOPT_SSLKEY, h->key);
		}
		if (curl_easy_perform(c) == CURLE_OK && strstr(body, "\"health\":\"true\"")) {
			ret = 0;
			break;
		}
		sleep_ms(50);
	}
	curl_easy_cleanup(c);
	return ret;
}

static void print_log_tail(struct etcd_harness *h)
{
	FILE *f = fopen(h->log_path, "r");
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, size > 3000 ? size - 3000 : 0, SEEK_SET);
	char buf[3001];
	size_t n = fread(buf, 1, 3000, f);
	buf[n] = 0;
	fclose(f);
	fprintf(stderr, "harness: tail of %s:\n%s\n", h->log_path, buf);
}

static int spawn(struct etcd_harness *h)
{
	char name[] = "--name=default";
	char data[PATH_MAX + 16], lcu[128], acu[128], lpu[128], ipu[128], ic[160];
	const char *scheme = h->tls ? "https" : "http";
	snprintf(data, sizeof(data), "--data-dir=%s", h->data_dir);
	snprintf(lcu, sizeof(lcu), "--listen-client-urls=%s://127.0.0.1:%d", scheme,
		 h->client_port);
	snprintf(acu, sizeof(acu), "--advertise-client-urls=%s://127.0.0.1:%d", scheme,
		 h->client_port);
	snprintf(lpu, sizeof(lpu), "--listen-peer-urls=http://127.0.0.1:%d", h->peer_port);
	snprintf(ipu, sizeof(ipu), "--initial-advertise-peer-urls=http://127.0.0.1:%d",
		 h->peer_port);
	snprintf(ic, sizeof(ic), "--initial-cluster=default=http://127.0.0.1:%d", h->peer_port);
	char certf[PATH_MAX + 16], keyf[PATH_MAX + 16], caf[PATH_MAX + 32];
	const char *argv[64];
	int n = 0;
	argv[n++] = etcd_bin();
	argv[n++] = name;
	argv[n++] = data;
	argv[n++] = lcu;
	argv[n++] = acu;
	argv[n++] = lpu;
	argv[n++] = ipu;
	argv[n++] = ic;
	argv[n++] = "--initial-cluster-state=new";
	/* A single member elects itself; short timers make start-up quick. */
	argv[n++] = "--heartbeat-interval=50";
	argv[n++] = "--election-timeout=500";
	if (h->tls) {
		snprintf(certf, sizeof(certf), "--cert-file=%s/h-server.crt", h->dir);
		snprintf(keyf, sizeof(keyf), "--key-file=%s/h-server.key", h->dir);
		snprintf(caf, sizeof(caf), "--trusted-ca-file=%s", h->ca);
		argv[n++] = certf;
		argv[n++] = keyf;
		argv[n++] = caf;
		argv[n++] = "--client-cert-auth";
	}
	for (char *const *a = h->extra_args; a && *a && n < 62; a++)
		argv[n++] = *a;
	argv[n] = NULL;

	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		exec_child(argv, open_log(h->log_path));
	}
	h->pid = pid;
	int ret = etcd_harness_wait_healthy(h, 20000);
	if (ret < 0) {
		fprintf(stderr, "harness: etcd on %s did not become healthy: %s\n", h->endpoint,
			strerror(-ret));
		print_log_tail(h);
		etcd_harness_stop(h);
	}
	return ret;
}

static void free_args(struct etcd_harness *h)
{
	for (char *const *a = h->extra_args; a && *a; a++)
		free(*a);
	free((void *)h->extra_args);
	h->extra_args = NULL;
}

int etcd_harness_start(struct etcd_harness *h, const struct etcd_harness_opts *opts)
{
	int ret;
	memset(h, 0, sizeof(*h));
	const char *tmp = getenv("TMPDIR");
	snprintf(h->dir, sizeof(h->dir), "%s/etcdfs-etcd-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(h->dir)) {
		ret = -errno;
		fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
		h->dir[0] = 0;
		return ret;
	}
	snprintf(h->data_dir, sizeof(h->data_dir), "%s/data", h->dir);
	snprintf(h->log_path, sizeof(h->log_path), "%s/etcd.log", h->dir);
	if (opts && opts->extra_args) {
		size_t n = 0;
		while (opts->extra_args[n])
			n++;
		char **copy = calloc(n + 1, sizeof(*copy));
		if (!copy) {
			ret = -ENOMEM;
			goto out_err;
		}
		for (size_t i = 0; i < n; i++)
			if (!(copy[i] = strdup(opts->extra_args[i]))) {
				h->extra_args = copy;
				ret = -ENOMEM;
				goto out_err;
			}
		h->extra_args = copy;
	}
	h->tls = opts && opts->tls;
	if (h->tls) {
		ret = etcd_harness_make_certs(h->dir, "h");
		if (ret < 0)
			goto out_err;
		snprintf(h->ca, sizeof(h->ca), "%s/h-ca.crt", h->dir);
		snprintf(h->cert, sizeof(h->cert), "%s/h-client.crt", h->dir);
		snprintf(h->key, sizeof(h->key), "%s/h-client.key", h->dir);
	}
	/* Ports can be taken between our probe and etcd's bind; retry a few times. */
	for (int attempt = 0; attempt < 3; attempt++) {
		h->client_port = etcd_harness_free_port();
		do
			h->peer_port = etcd_harness_free_port();
		while (h->peer_port == h->client_port);
		if (h->client_port < 0 || h->peer_port < 0) {
			ret = -EADDRNOTAVAIL;
			goto out_err;
		}
		snprintf(h->endpoint, sizeof(h->endpoint), "%s://127.0.0.1:%d",
			 h->tls ? "https" : "http", h->client_port);
		ret = spawn(h);
		if (ret == 0)
			return 0;
		etcd_harness_rmtree(h->data_dir);
	}
out_err:
	etcd_harness_destroy(h);
	return ret;
}

int etcd_harness_stop(struct etcd_harness *h)
{
	if (!h->pid)
		return 0;
	kill(h->pid, SIGCONT); /* a stopped etcd cannot handle SIGTERM */
	kill(h->pid, SIGTERM);
	long long deadline = util_now_ms() + 5000;
	int status;
	for (;;) {
		pid_t r = waitpid(h->pid, &status, WNOHANG);
		if (r == h->pid || (r < 0 && errno != EINTR))
			break;
		if (util_now_ms() > deadline) {
			kill(h->pid, SIGKILL);
			waitpid(h->pid, &status, 0);
			break;
		}
		sleep_ms(20);
	}
	h->pid = 0;
	return 0;
}

int etcd_harness_restart(struct etcd_harness *h)
{
	etcd_harness_stop(h);
	/* The old process has exited, but give the kernel a moment to release the ports. */
	for (int attempt = 0; attempt < 5; attempt++) {
		int ret = spawn(h);
		if (ret == 0)
			return 0;
		sleep_ms(500);
	}
	return -EIO;
}

int etcd_harness_signal(struct etcd_harness *h, int sig)
{
	if (!h->pid)
		return -ESRCH;
	if (kill(h->pid, sig) < 0)
		return -errno;
	if (sig == SIGSTOP) {
		/* kill() only queues the signal; wait until every thread has stopped so that
		 * the caller's next request surely meets a stopped server. */
		int status;
		while (waitpid(h->pid, &status, WUNTRACED) < 0)
			if (errno != EINTR)
				return -errno;
		if (!WIFSTOPPED(status))
			return -ESRCH;
	}
	return 0;
}

int etcd_harness_etcdctl(struct etcd_harness *h, const char *user, char *out, size_t out_size,
			 const char *const *args)
{
	char ep[128], cacert[PATH_MAX + 16], cert[PATH_MAX + 16], key[PATH_MAX + 16];
	char userarg[256];
	const char *argv[64];
	int n = 0;
	argv[n++] = etcdctl_bin();
	snprintf(ep, sizeof(ep), "--endpoints=%s", h->endpoint);
	argv[n++] = ep;
	argv[n++] = "--dial-timeout=5s";
	if (h->tls) {
		snprintf(cacert, sizeof(cacert), "--cacert=%s", h->ca);
		snprintf(cert, sizeof(cert), "--cert=%s", h->cert);
		snprintf(key, sizeof(key), "--key=%s", h->key);
		argv[n++] = cacert;
		argv[n++] = cert;
		argv[n++] = key;
	}
	if (user) {
		snprintf(userarg, sizeof(userarg), "--user=%s", user);
		argv[n++] = userarg;
	}
	for (const char *const *a = args; a && *a && n < 63; a++)
		argv[n++] = *a;
	argv[n] = NULL;
	return run(argv, out, out_size, out ? NULL : h->log_path);
}

void etcd_harness_destroy(struct etcd_harness *h)
{
	etcd_harness_stop(h);
	if (h->dir[0] && !getenv("ETCD_HARNESS_KEEP"))
		etcd_harness_rmtree(h->dir);
	else if (h->dir[0])
		fprintf(stderr, "harness: kept %s\n", h->dir);
	h->dir[0] = 0;
	free_args(h);
}

int etcd_harness_ctl(struct etcd_harness *h, const char *user, ...)
{
	const char *args[16];
	size_t n = 0;
	va_list ap;
	va_start(ap, user);
	for (const char *a; n < 15 && (a = va_arg(ap, const char *));)
		args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	char out[2048];
	int ret = etcd_harness_etcdctl(h, user, out, sizeof(out), args);
	if (ret != 0)
		fprintf(stderr, "etcdctl %s %s failed (%d): %s\n", n ? args[0] : "",
			n > 1 ? args[1] : "", ret, out);
	return ret;
}

int etcd_harness_add_users(struct etcd_harness *h, const char *bob_perm)
{
	int ret = 0;
	ret |= etcd_harness_ctl(h, NULL, "user", "add", "root:pw", NULL);
	ret |= etcd_harness_ctl(h, NULL, "user", "grant-role", "root", "root", NULL);
	ret |= etcd_harness_ctl(h, NULL, "role", "add", "bobs", NULL);
	ret |= etcd_harness_ctl(h, NULL, "role", "grant-permission", "bobs", "--prefix=true",
				bob_perm, "/bob/", NULL);
	ret |= etcd_harness_ctl(h, NULL, "user", "add", "bob:bpw", NULL);
	ret |= etcd_harness_ctl(h, NULL, "user", "grant-role", "bob", "bobs", NULL);
	return ret ? -EIO : 0;
}

int etcd_harness_start_tls(struct etcd_harness *h)
{
	struct etcd_harness_opts o = {.tls = true};
	return etcd_harness_start(h, &o);
}

int etcd_harness_start_auth(struct etcd_harness *h, const char *bob_perm)
{
	const char *args[] = {"--auth-token-ttl=2", NULL};
	struct etcd_harness_opts o = {.extra_args = args};
	int ret = etcd_harness_start(h, &o);
	if (ret < 0)
		return ret;
	ret = etcd_harness_add_users(h, bob_perm);
	if (ret < 0)
		etcd_harness_destroy(h);
	return ret;
}

struct kv *etcd_harness_client(struct etcd_config *cfg)
{
	struct kv *kv = NULL;
	if (etcd_client_new(cfg, &kv) < 0)
		kv = NULL;
	etcd_config_free(cfg);
	return kv;
}

void etcd_harness_config_transport(struct etcd_config *cfg)
{
	const char *t = getenv("ETCDFS_ETCD_TRANSPORT");
	if (t && *t && etcd_parse_transport(t, &cfg->transport) < 0) {
		fprintf(stderr, "ETCDFS_ETCD_TRANSPORT: expected auto, json or grpc\n");
		exit(1);
	}
}
