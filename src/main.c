/* main.c: etcdfs command line: options, backend choice, daemonizing, and
 * wiring the backend, cache and filesystem together. */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <fuse_opt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "etcd/etcd.h"
#include "fs/fs.h"
#include "k8s/k8s_crypt.h"
#include "k8s/k8s_mount.h"
#include "kv.h"
#include "core/log.h"
#include "snapshot/snapshot.h"
#include "store/store.h"

struct options {
	char *endpoints;
	char *cacert, *cert, *key;
	int insecure_skip_tls_verify;
	char *user, *password, *password_file;
	char *dial_timeout, *command_timeout;
	char *prefix;
	char *format;
	char *encryption_config;
	char *cache_size;
	char *data_dir;
	char *snapshot;
	char *revision_s;
	char *peers, *listen;
	char *node_id_s;
	unsigned node_id;
	char *consistency;
	char *transport;
	char *conflict_dir;
	char *log_file;
	char *shadow;
	char *kernel_timeout_s, *stale_timeout_s;
	double timeout_fresh, timeout_stale;
	char *sync_pace_s;
	double sync_pace; /* negative: auto */
	int show_help, show_version, foreground, debug, single_thread, read_only, read_write;
	int allow_other;
};

#define OPT(t, p)                                                                                  \
	{                                                                                          \
		t, offsetof(struct options, p), 1                                                  \
	}
enum { KEY_HELP, KEY_VERSION, KEY_FG, KEY_DEBUG, KEY_RO, KEY_RW, KEY_ALLOW_OTHER };

static const struct fuse_opt opt_spec[] = {
	OPT("--endpoints %s", endpoints),
	OPT("endpoints=%s", endpoints),
	OPT("cacert=%s", cacert),
	OPT("cert=%s", cert),
	OPT("key=%s", key),
	OPT("user=%s", user),
	OPT("password_file=%s", password_file),
	OPT("dial_timeout=%s", dial_timeout),
	OPT("command_timeout=%s", command_timeout),
	OPT("prefix=%s", prefix),
	OPT("format=%s", format),
	OPT("encryption_config=%s", encryption_config),
	OPT("cache_size=%s", cache_size),
	OPT("data_dir=%s", data_dir),
	OPT("snapshot=%s", snapshot),
	OPT("consistency=%s", consistency),
	OPT("insecure_skip_tls_verify", insecure_skip_tls_verify),
	OPT("--cacert %s", cacert),
	OPT("--cert %s", cert),
	OPT("--key %s", key),
	OPT("--insecure-skip-tls-verify", insecure_skip_tls_verify),
	OPT("--user %s", user),
	OPT("--password %s", password),
	OPT("--password-file %s", password_file),
	OPT("--dial-timeout %s", dial_timeout),
	OPT("--command-timeout %s", command_timeout),
	OPT("--prefix %s", prefix),
	OPT("--format %s", format),
	OPT("--encryption-config %s", encryption_config),
	OPT("--cache-size %s", cache_size),
	OPT("--data-dir %s", data_dir),
	OPT("--snapshot %s", snapshot),
	OPT("revision=%s", revision_s),
	OPT("--peers %s", peers),
	OPT("--listen %s", listen),
	OPT("--node-id %s", node_id_s),
	OPT("--consistency %s", consistency),
	OPT("--transport %s", transport),
	OPT("--conflict-dir %s", conflict_dir),
	OPT("--log-file %s", log_file),
	OPT("log_file=%s", log_file),
	OPT("--shadow %s", shadow),
	OPT("--kernel-timeout %s", kernel_timeout_s),
	OPT("--stale-timeout %s", stale_timeout_s),
	OPT("--sync-pace %s", sync_pace_s),
	OPT("sync_pace=%s", sync_pace_s),
	OPT("-s", single_thread),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("rw", KEY_RW),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_END,
};

static char *mountpoint;
static char *first_arg, *second_arg;

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;
	(void)outargs;
	switch (key) {
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	case KEY_FG:
		o->foreground = 1;
		return 0;
	case KEY_DEBUG:
		o->debug = 1;
		o->foreground = 1;
		return 0;
	case KEY_RO:
		o->read_only = 1;
		return 1; /* the kernel mount is read-only too */
	case KEY_RW:
		o->read_write = 1;
		return 0;
	case KEY_ALLOW_OTHER:
		o->allow_other = 1;
		return 1; /* passed on to the kernel */
	case FUSE_OPT_KEY_NONOPT:
		/* "etcdfs MOUNTPOINT", or "etcdfs SOURCE MOUNTPOINT" as
		 * mount(8) and fstab call it (docs/etcdfs.1, SOURCES). */
		if (!first_arg) {
			first_arg = strdup(arg);
			return first_arg ? 0 : -1;
		}
		if (!second_arg) {
			second_arg = strdup(arg);
			return second_arg ? 0 : -1;
		}
		fprintf(stderr, "etcdfs: unexpected argument '%s'\n", arg);
		return -1;
	default:
		return 1;
	}
}

static void usage(const char *prog)
{
	printf("usage: %s [options] [SOURCE] MOUNTPOINT\n"
	       "\n"
	       "Mounts the etcd v3 keyspace as files.\n"
	       "SOURCE (as mount(8) and fstab pass it): etcd endpoint URL(s), store:DIR,\n"
	       "snapshot:FILE, or etcd (use the options). Options may also be given as\n"
	       "-o endpoints=,cacert=,cert=,key=,user=,password_file=,prefix=,format=,\n"
	       "data_dir=,snapshot=,cache_size=,dial_timeout=,command_timeout=,consistency=,\n"
	       "encryption_config=,sync_pace=\n"
	       "\n"
	       "etcd connection (etcdctl-compatible; ETCDCTL_* variables are honoured):\n"
	       "    --endpoints=URL[,URL...]   etcd endpoints (default http://127.0.0.1:2379)\n"
	       "    --cacert=FILE              CA bundle to verify the server\n"
	       "    --cert=FILE                client certificate\n"
	       "    --key=FILE                 client private key\n"
	       "    --insecure-skip-tls-verify do not verify the server certificate\n"
	       "    --user=NAME[:PASSWORD]     authenticate as NAME\n"
	       "    --password=PASSWORD        password (prefer --password-file or "
	       "ETCDCTL_PASSWORD)\n"
	       "    --password-file=FILE       read the password from FILE\n"
	       "    --dial-timeout=DUR         connect timeout (default 2s)\n"
	       "    --command-timeout=DUR      per-request timeout (default 5s)\n"
	       "    --transport=auto|grpc|json ranges, saves, watches over gRPC (auto: falling\n"
	       "                               back to the JSON gateway), or JSON only\n"
	       "\n"
	       "Embedded store (no etcd server):\n"
	       "    --data-dir=DIR             keep the keyspace in DIR (Raft log + snapshots)\n"
	       "    --node-id=N                this node's Raft id (default 1)\n"
	       "    --peers=ID=IP:PORT,...     the Raft cluster, for several nodes\n"
	       "    --listen=IP:PORT           this node's Raft address (default: from --peers)\n"
	       "\n"
	       "Offline backups:\n"
	       "    --snapshot=FILE            mount an etcd backend file (etcdctl snapshot save,\n"
	       "                               member/snap/db) read-only, no etcd needed\n"
	       "\n"
	       "View:\n"
	       "    -o revision=N              read-only view of the keyspace at revision N\n"
	       "    --prefix=PREFIX            mount only the keys under PREFIX\n"
	       "    --format=yaml|json|raw     how Kubernetes objects under /registry/ are shown\n"
	       "                               (default yaml; raw bytes are always at NAME%%raw)\n"
	       "    --encryption-config=FILE   kube-apiserver's encryption config (mode 600):\n"
	       "                               show encrypted values decrypted, encrypt saves\n"
	       "    --cache-size=BYTES         value cache bound, suffix K/M/G (default 256M)\n"
	       "    --kernel-timeout=SEC       kernel cache lifetime while the watch is healthy "
	       "(default 3600)\n"
	       "    --stale-timeout=SEC        the same while it is not (default 1)\n"
	       "    --sync-pace=auto|N         a listing of the prefix (at mount, after a lost\n"
	       "                               watch) leaves etcd idle N times as long as it\n"
	       "                               took to serve each page, so etcd's other clients\n"
	       "                               keep their latency; 0: full speed. auto (the\n"
	       "                               default): 8 past 200000 keys, else 0; 0 for\n"
	       "                               a --snapshot mount\n"
	       "    --consistency=MODE         serializable (default: watch-fed cache) or\n"
	       "                               linearizable (every open does a quorum read)\n"
	       "\n"
	       "Writes:\n"
	       "    --conflict-dir=DIR         where rejected saves are kept (default "
	       "/tmp/etcdfs-conflicts-UID)\n"
	       "    --shadow=PATTERNS          ':'-separated globs of editor temp names kept "
	       "local\n"
	       "                               (default "
	       ".*.sw?:.*.sw??:4913:*~:*.bak:.#*:#*#:sed?\?\?\?\?\?:XX?\?\?\?\?\?:.*.?\?\?\?\?\?)\n"
	       "\n"
	       "FUSE:\n"
	       "    -f                         stay in the foreground (log to stderr)\n"
	       "    --log-file=PATH            also log to PATH (mode 0600, 8 MiB, one rotation\n"
	       "                               to PATH.1); daemonized without syslog the\n"
	       "                               default is $XDG_RUNTIME_DIR/etcdfs/MOUNT.log,\n"
	       "                               else /run/etcdfs/MOUNT.log (root)\n"
	       "    -d, -o debug               debug log, foreground\n"
	       "    -s                         single-threaded\n"
	       "    -o ro                      read-only mount\n"
	       "    -o rw                      allow writes into a Kubernetes keyspace "
	       "(/registry)\n"
	       "    -o allow_other             let other users in (the keyspace may hold Secrets)\n"
	       "    -o default_permissions     let the kernel check file modes\n"
	       "\n"
	       "    -h, --help                 this help\n"
	       "    -V, --version              version\n",
	       prog);
}

static int parse_double_opt(const char *name, const char *s, double *out)
{
	if (!s)
		return 0;
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || v < 0) {
		fprintf(stderr, "etcdfs: bad %s '%s'\n", name, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* --sync-pace: "auto" (negative) or a number from 0 to 100. */
static int parse_pace(const char *s, double *out)
{
	if (!s || strcmp(s, "auto") == 0)
		return 0;
	if (parse_double_opt("--sync-pace", s, out) < 0)
		return -EINVAL;
	if (*out > 100) {
		fprintf(stderr, "etcdfs: bad --sync-pace '%s': at most 100\n", s);
		return -EINVAL;
	}
	return 0;
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		v *= 1024;
		end++;
		break;
	case 'm':
	case 'M':
		v *= 1024 * 1024;
		end++;
		break;
	case 'g':
	case 'G':
		v *= 1024.0 * 1024 * 1024;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

/* Daemonizing: fork first, before any thread exists; the parent waits for
 * the child's verdict so that mount-time errors still give a non-zero exit
 * status and a message on the terminal. */
static int ready_fd = -1;

static void daemon_ready(void *arg)
{
	(void)arg;
	if (ready_fd < 0)
		return;
	char ok = 0;
	if (write(ready_fd, &ok, 1) != 1)
		log_warn("cannot signal the parent process");
	close(ready_fd);
	ready_fd = -1;
	if (chdir("/") < 0)
		log_warn("chdir /: %s", strerror(errno));
	/* From here on stderr is gone: the file or syslog (setup_log) has
	 * every message. */
	log_use_stderr(0);
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

#define LOG_FILE_MAX_MIB 8

/* The default log of a daemonized mount where no syslog listens: named
 * after the mount point, in the user's runtime dir, else root's
 * /run/etcdfs (another user's /tmp/etcdfs-UID). */
static char *default_log_path(const char *mnt)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	char dir[512];
	if (rt && *rt)
		snprintf(dir, sizeof(dir), "%s/etcdfs", rt);
	else
		snprintf(dir, sizeof(dir), geteuid() == 0 ? "/run/etcdfs" : "/tmp/etcdfs-%u",
			 (unsigned)geteuid());
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return NULL;
	char *abs = realpath(mnt, NULL);
	if (abs)
		mnt = abs;
	char name[256];
	size_t n = 0;
	for (const char *p = mnt; *p && n + 1 < sizeof(name); p++)
		if (*p != '/' || (n && name[n - 1] != '-'))
			name[n++] = *p == '/' ? '-' : *p;
	while (n && name[n - 1] == '-')
		n--;
	name[n] = 0;
	free(abs);
	char *path;
	if (asprintf(&path, "%s/%s.log", dir, n ? name : "root") < 0)
		return NULL;
	return path;
}

/* Where a mount's log goes (log.h): --log-file always; a daemonized mount
 * without --log-file uses syslog where /dev/log exists, else the default
 * file, and says so on the terminal before it detaches, so that no message
 * is ever silently lost. */
static int setup_log(const struct options *o, const char *mnt)
{
	struct stat st;
	char *path = NULL;
	if (o->log_file)
		path = strdup(o->log_file);
	else if (!o->foreground && !(stat("/dev/log", &st) == 0 && S_ISSOCK(st.st_mode)))
		path = default_log_path(mnt);
	else
		return 0;
	if (!path) {
		fprintf(stderr, "etcdfs: cannot make a log file name: %s\n", strerror(errno));
		return -1;
	}
	int r = log_use_file(path, (size_t)LOG_FILE_MAX_MIB << 20);
	if (r < 0)
		fprintf(stderr, "etcdfs: cannot open the log file %s: %s\n", path, strerror(-r));
	else if (!o->log_file)
		fprintf(stderr, "etcdfs: no syslog (/dev/log): logging to %s\n", path);
	free(path);
	return r < 0 ? -1 : 0;
}

static int daemonize(void)
{
	int p[2];
	if (pipe(p) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		char st = 1;
		ssize_t n = read(p[0], &st, 1);
		_exit(n == 1 && st == 0 ? 0 : 1);
	}
	close(p[0]);
	ready_fd = p[1];
	setsid();
	return 0;
}

static int make_etcd(struct options *o, struct kv **kv, char **describe)
{
	struct etcd_config cfg;
	int ret;
	etcd_config_init(&cfg);
	ret = etcd_config_from_env(&cfg);
	if (ret < 0)
		goto out;
	if (o->endpoints && (ret = etcd_config_set_endpoints(&cfg, o->endpoints)) < 0) {
		fprintf(stderr, "etcdfs: bad --endpoints '%s'\n", o->endpoints);
		goto out;
	}
#define SETS(field)                                                                                \
	if (o->field) {                                                                            \
		free(cfg.field);                                                                   \
		cfg.field = strdup(o->field);                                                      \
	}
	SETS(cacert);
	SETS(cert);
	SETS(key);
	SETS(user);
	SETS(password);
#undef SETS
	if (o->insecure_skip_tls_verify)
		cfg.insecure_skip_tls_verify = true;
	if (o->transport && (ret = etcd_parse_transport(o->transport, &cfg.transport)) < 0) {
		fprintf(stderr, "etcdfs: --transport must be auto, grpc or json\n");
		goto out;
	}
	if (o->password_file &&
	    (ret = etcd_config_read_password_file(&cfg, o->password_file)) < 0) {
		fprintf(stderr, "etcdfs: cannot read --password-file %s: %s\n", o->password_file,
			strerror(-ret));
		goto out;
	}
	if (o->dial_timeout &&
	    (ret = etcd_parse_duration_ms(o->dial_timeout, &cfg.dial_timeout_ms)) < 0) {
		fprintf(stderr, "etcdfs: bad --dial-timeout '%s'\n", o->dial_timeout);
		goto out;
	}
	if (o->command_timeout &&
	    (ret = etcd_parse_duration_ms(o->command_timeout, &cfg.command_timeout_ms)) < 0) {
		fprintf(stderr, "etcdfs: bad --command-timeout '%s'\n", o->command_timeout);
		goto out;
	}
	size_t len = 0;
	for (size_t i = 0; i < cfg.n_endpoints; i++)
		len += strlen(cfg.endpoints[i]) + 1;
	*describe = calloc(1, len + 1);
	for (size_t i = 0; *describe && i < cfg.n_endpoints; i++) {
		if (i)
			strcat(*describe, ",");
		strcat(*describe, cfg.endpoints[i]);
	}
	ret = etcd_client_new(&cfg, kv);
out:
	etcd_config_free(&cfg);
	return ret;
}

/* Passwords given on the command line are parsed into our own copies by
 * now; blank them in argv so ps(1) and /proc/PID/cmdline do not show them. */
static void hide_secrets(int argc, char *argv[])
{
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		char *val = NULL;
		bool user = false;
		if (strcmp(a, "--password") == 0 || strcmp(a, "--user") == 0) {
			user = a[2] == 'u';
			val = i + 1 < argc ? argv[i + 1] : NULL;
		} else if (strncmp(a, "--password=", 11) == 0) {
			val = a + 11;
		} else if (strncmp(a, "--user=", 7) == 0) {
			user = true;
			val = a + 7;
		}
		if (!val)
			continue;
		if (user) {
			val = strchr(val, ':');
			if (!val)
				continue;
			val++;
		}
		memset(val, 'x', strlen(val));
	}
}

/* The same for ETCDCTL_PASSWORD, once the client has its copy: the
 * environment block is what /proc/PID/environ shows. */
static void hide_env_password(void)
{
	char *p = getenv("ETCDCTL_PASSWORD");
	if (p)
		memset(p, 'x', strlen(p));
}

static bool keyspace_is_k8s(struct cache *c, const char *prefix)
{
	if (strncmp(prefix, "/registry", 9) == 0)
		return true;
	if (*prefix)
		return false;
	cache_rdlock(c);
	bool k8s = cache_child(c, c->root, 0, "registry", 8) != NULL;
	cache_unlock(c);
	return k8s;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {.timeout_fresh = 3600, .timeout_stale = 1, .sync_pace = -1};
	struct kv *kv = NULL;
	struct fs *fs = NULL;
	struct cache *cache = NULL;
	char *describe = NULL;
	char *prefix = NULL;
	struct k8s_crypt *crypt = NULL;
	int ret = 1;

	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) == -1)
		return 1;
	hide_secrets(argc, argv);
	/* Other users only get in with allow_other; then the kernel must check
	 * file modes (Secrets are 0600), which FUSE leaves to us otherwise. */
	if (o.allow_other && fuse_opt_add_arg(&args, "-odefault_permissions") < 0)
		return 1;
	/* "--opt value" and "--opt=value" both match "--opt %s"; the latter
	 * leaves the '='. */
	char **strs[] = {&o.endpoints,
			 &o.cacert,
			 &o.cert,
			 &o.key,
			 &o.user,
			 &o.password,
			 &o.password_file,
			 &o.dial_timeout,
			 &o.command_timeout,
			 &o.prefix,
			 &o.format,
			 &o.encryption_config,
			 &o.cache_size,
			 &o.data_dir,
			 &o.snapshot,
			 &o.peers,
			 &o.listen,
			 &o.consistency,
			 &o.conflict_dir,
			 &o.log_file,
			 &o.shadow,
			 &o.node_id_s,
			 &o.kernel_timeout_s,
			 &o.stale_timeout_s,
			 &o.sync_pace_s,
			 &o.transport};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (*strs[i] && (*strs[i])[0] == '=')
			memmove(*strs[i], *strs[i] + 1, strlen(*strs[i]));
	if (parse_double_opt("--kernel-timeout", o.kernel_timeout_s, &o.timeout_fresh) < 0 ||
	    parse_double_opt("--stale-timeout", o.stale_timeout_s, &o.timeout_stale) < 0 ||
	    parse_pace(o.sync_pace_s, &o.sync_pace) < 0)
		goto out_args;
	if (o.node_id_s) {
		char *end;
		unsigned long v = strtoul(o.node_id_s, &end, 10);
		if (*end || v == 0 || v > 65535) {
			fprintf(stderr, "etcdfs: bad --node-id '%s'\n", o.node_id_s);
			goto out_args;
		}
		o.node_id = (unsigned)v;
	}
	if (o.show_help) {
		usage(argv[0]);
		ret = 0;
		goto out_args;
	}
	if (o.show_version) {
		printf("etcdfs %s\n", ETCDFS_VERSION);
		printf("FUSE library version %s\n", fuse_pkgversion());
		ret = 0;
		goto out_args;
	}
	{
		/* One argument: the mount point. Two: a source, then it. */
		const char *mp = second_arg ? second_arg : first_arg;
		if (!mp) {
			fprintf(stderr, "etcdfs: no mount point given (see --help)\n");
			goto out_args;
		}
		mountpoint = realpath(mp, NULL);
		if (!mountpoint) {
			fprintf(stderr, "etcdfs: bad mount point '%s': %s\n", mp, strerror(errno));
			goto out_args;
		}
		const char *src = second_arg ? first_arg : NULL;
		if (src && strncmp(src, "store:", 6) == 0) {
			free(o.data_dir);
			o.data_dir = strdup(src + 6);
		} else if (src && strncmp(src, "snapshot:", 9) == 0) {
			free(o.snapshot);
			o.snapshot = strdup(src + 9);
		} else if (src && strcmp(src, "etcd") != 0 && strcmp(src, "etcdfs") != 0 &&
			   strcmp(src, "none") != 0 && !o.endpoints) {
			o.endpoints = strdup(src); /* URL[,URL...] */
		}
	}
	if (o.debug)
		log_set_level(LOG_DEBUG);
	if (o.consistency && strcmp(o.consistency, "linearizable") != 0 &&
	    strcmp(o.consistency, "serializable") != 0) {
		fprintf(stderr, "etcdfs: --consistency must be serializable or linearizable\n");
		goto out_args;
	}
	size_t cache_size = 256u << 20;
	if (o.cache_size && parse_size(o.cache_size, &cache_size) < 0) {
		fprintf(stderr, "etcdfs: bad --cache-size '%s'\n", o.cache_size);
		goto out_args;
	}
	struct k8s_mount k8s = {.format = K8S_MOUNT_YAML};
	if (o.format) {
		if (strcmp(o.format, "yaml") == 0)
			k8s.format = K8S_MOUNT_YAML;
		else if (strcmp(o.format, "json") == 0)
			k8s.format = K8S_MOUNT_JSON;
		else if (strcmp(o.format, "raw") == 0)
			k8s.format = K8S_MOUNT_RAW;
		else {
			fprintf(stderr, "etcdfs: --format must be yaml, json or raw\n");
			goto out_args;
		}
	}
	if (o.encryption_config) {
		char *err = NULL;
		int cr = k8s_crypt_load(o.encryption_config, &crypt, &err);
		if (cr < 0) {
			fprintf(stderr, "etcdfs: --encryption-config: %s\n",
				err ? err : strerror(-cr));
			free(err);
			goto out_args;
		}
		k8s.crypt = crypt;
	}
	/* Mount prefix: a non-empty prefix names a directory, so it is
	 * normalized to end with '/' (docs/naming.md). */
	const char *p = o.prefix ? o.prefix : "";
	size_t plen = strlen(p);
	prefix = malloc(plen + 2);
	if (!prefix)
		goto out_args;
	memcpy(prefix, p, plen + 1);
	if (plen && prefix[plen - 1] != '/') {
		prefix[plen++] = '/';
		prefix[plen] = 0;
	}

	if (setup_log(&o, mountpoint) < 0)
		goto out_args;
	/* A daemonizing mount prints only problems on the terminal; the file
	 * or syslog gets every message from the start. */
	if (!o.foreground) {
		log_set_stderr_level(LOG_WARNING);
		if (!log_file_path())
			log_use_syslog(1);
	}
	if (!o.foreground && daemonize() < 0) {
		fprintf(stderr, "etcdfs: cannot daemonize: %s\n", strerror(errno));
		goto out_args;
	}

	int r;
	long long at_rev = 0;
	if (o.revision_s) {
		char *end;
		at_rev = strtoll(o.revision_s, &end, 10);
		if (*end || at_rev <= 0) {
			fprintf(stderr, "etcdfs: bad -o revision=%s\n", o.revision_s);
			goto out;
		}
	}
	if (o.snapshot) {
		r = snapshot_open(o.snapshot, &kv);
		if (r < 0) {
			log_err("cannot open the snapshot %s: %s", o.snapshot, strerror(-r));
			goto out;
		}
		describe = strdup(o.snapshot);
	} else if (o.data_dir) {
		struct store_config scfg;
		store_config_init(&scfg);
		scfg.data_dir = o.data_dir;
		if (o.node_id)
			scfg.id = o.node_id;
		scfg.peers = o.peers;
		scfg.listen = o.listen;
		r = store_open(&scfg, &kv);
		if (r < 0) {
			log_err("cannot open the embedded store in %s: %s", o.data_dir,
				strerror(-r));
			goto out;
		}
		describe = strdup(o.data_dir);
	} else {
		r = make_etcd(&o, &kv, &describe);
		hide_env_password();
		if (r < 0) {
			fprintf(stderr, "etcdfs: cannot set up the etcd client: %s\n",
				strerror(-r));
			goto out;
		}
	}
	int64_t rev;
	r = kv_status(kv, &rev);
	if (r < 0) {
		log_err("cannot reach %s at %s: %s", o.data_dir ? "the store" : "etcd",
			describe ? describe : "?", strerror(-r));
		goto out;
	}
	log_info("connected to %s, revision %lld", describe ? describe : "?", (long long)rev);

	bool static_view = o.snapshot || at_rev;
	struct fs_config fcfg = {
		.kv = kv,
		.prefix = prefix,
		.prefix_len = plen,
		.read_only = o.read_only || static_view,
		.ro_reason = o.snapshot ? "a snapshot mount is read-only"
			     : at_rev	? "a mount at a past revision (-o revision) is read-only"
					: NULL,
		.linearizable = o.consistency && strcmp(o.consistency, "linearizable") == 0,
		.conflict_dir = o.conflict_dir,
		.shadow_patterns = o.shadow,
		.encode = k8s.format == K8S_MOUNT_RAW ? NULL : k8s_mount_encode,
		.encode_arg = &k8s,
		.encode_applies = k8s_mount_applies,
		.value_xattr = k8s_mount_xattr,
		.value_xattr_arg = &k8s,
		.timeout_fresh = o.timeout_fresh,
		.timeout_stale = o.timeout_stale,
		.secrets_match = "/secrets/",
	};
	r = fs_new(&fcfg, &fs);
	if (r < 0)
		goto out;
	struct cache_config ccfg = {
		.kv = kv,
		.prefix = prefix,
		.prefix_len = plen,
		.max_bytes = cache_size,
		.notify = fs_cache_notify,
		.notify_arg = fs,
		.render = k8s.format == K8S_MOUNT_RAW ? NULL : k8s_mount_render,
		.render_arg = &k8s,
		.value_time = k8s_mount_value_time,
		.value_time_arg = &k8s,
		.no_watch = static_view,
		.revision = at_rev,
		/* a backup file has no other client to keep etcd for */
		.sync_pace = o.snapshot && o.sync_pace < 0 ? 0 : o.sync_pace,
	};
	r = cache_new(&ccfg, &cache);
	if (r == -ERANGE) {
		log_err("revision %lld has been compacted: etcd no longer has the keyspace as it "
			"was then",
			at_rev);
		goto out;
	} else if (r == -ENOENT && at_rev) {
		log_err("revision %lld is in the future (the store is at revision %lld)", at_rev,
			(long long)rev);
		goto out;
	} else if (r < 0) {
		log_err("initial sync of prefix '%s' failed: %s", prefix, strerror(-r));
		goto out;
	}
	r = fs_set_cache(fs, cache);
	if (r < 0) {
		log_err("cannot set up the write path: %s", strerror(-r));
		goto out;
	}
	if (!o.read_only && !o.read_write && keyspace_is_k8s(cache, prefix)) {
		/* Writing behind the apiserver skips admission and validation:
		 * it must be asked for. */
		fs_set_read_only(fs, "this keyspace holds Kubernetes objects (/registry); writing "
				     "behind the apiserver skips admission and validation, so the "
				     "mount is read-only. Remount with -o rw to allow writes.");
	}
	r = fs_serve(fs, &args, mountpoint, o.single_thread, daemon_ready, NULL);
	ret = r < 0 ? 1 : 0;
out:
	cache_destroy(cache);
	fs_destroy(fs);
	kv_destroy(kv);
	free(describe);
out_args:
	free(o.endpoints);
	free(o.cacert);
	free(o.cert);
	free(o.key);
	free(o.user);
	free(o.password);
	free(o.password_file);
	free(o.dial_timeout);
	free(o.command_timeout);
	free(o.prefix);
	free(o.format);
	free(o.encryption_config);
	k8s_crypt_free(crypt);
	free(o.cache_size);
	free(o.data_dir);
	free(o.snapshot);
	free(o.revision_s);
	free(o.peers);
	free(o.listen);
	free(o.consistency);
	free(o.transport);
	free(o.conflict_dir);
	free(o.log_file);
	free(o.shadow);
	free(o.node_id_s);
	free(o.kernel_timeout_s);
	free(o.sync_pace_s);
	free(o.stale_timeout_s);
	free(prefix);
	free(mountpoint);
	free(first_arg);
	free(second_arg);
	fuse_opt_free_args(&args);
	return ret;
}
