/* server_main.c: etcdfs-server, the embedded store served over etcd's v3 API (gRPC and the
 * JSON gateway on one port).
 *
 * Opens the store in --data-dir (store.h) and serves it on --listen-client through
 * gateway.h until SIGTERM or SIGINT, then shuts down cleanly: the gateway closes every
 * connection and watch, then the store stops Raft and flushes nothing it has not already
 * made durable (every acknowledged write is on disk before it is acknowledged).
 * Any etcd v3 client works against it: etcdctl, client libraries, etcdfs --endpoints, curl.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "core/log.h"
#include "etcd/etcd.h" /* etcd_parse_duration_ms: etcd's duration syntax, written once */
#include "gateway/gateway.h"
#include "store/store.h"

#define DEFAULT_LISTEN "127.0.0.1:2379"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: etcdfs-server --data-dir DIR [options]\n"
		"\n"
		"Serves the etcdfs embedded store through etcd's v3 API: gRPC (KV, Watch, Lease,\n"
		"Maintenance, Cluster.MemberList) and the JSON gateway (/v3/kv/..., /v3/watch)\n"
		"on one port, so etcdctl, etcd client libraries, etcdfs --endpoints and curl can\n"
		"use it. TLS and client certificates use etcd's flags; etcd's users and\n"
		"passwords are not served. Cleartext is only served on a loopback address\n"
		"unless --insecure-plaintext.\n"
		"\n"
		"options:\n"
		"    --data-dir=DIR             keep the keyspace in DIR (created if missing)\n"
		"    --listen-client=IP:PORT    client (gRPC and HTTP) address, "
		"default " DEFAULT_LISTEN "\n"
		"                               (port 0 picks a free port and logs it)\n"
		"    --node-id=N                this node's Raft id (default 1)\n"
		"    --peers=ID=IP:PORT,...     the Raft cluster, for several nodes\n"
		"    --listen=IP:PORT           this node's Raft address (default: from --peers)\n"
		"    --auto-compact-retain=N    revisions of history kept (default 10000, 0 = "
		"all)\n"
		"    --snapshot-threshold=N     Raft entries between snapshots (default 1024)\n"
		"    --grpc-keepalive-interval=DURATION\n"
		"                               silence from a gRPC client after which the server\n"
		"                               pings it (default 2h, 0 = never)\n"
		"    --grpc-keepalive-timeout=DURATION\n"
		"                               wait for the answer to that ping before closing\n"
		"                               the connection (default 20s)\n"
		"    --cert-file=FILE           serve TLS with this PEM certificate (chain)\n"
		"    --key-file=FILE            and this PEM private key\n"
		"    --trusted-ca-file=FILE     PEM CA(s) that sign client certificates\n"
		"    --client-cert-auth         require a client certificate signed by\n"
		"                               --trusted-ca-file (refused without one)\n"
		"    --insecure-plaintext       serve cleartext on an address that is not\n"
		"                               loopback (refused otherwise: anyone who reaches\n"
		"                               the port could read and write every key)\n"
		"    -d, --debug                log debug messages\n"
		"    -h, --help                 this text\n"
		"    -V, --version              print the version\n");
}

/* What Status and HashKV report about this node, from the store. */
static int node_status(void *arg, struct gw_node *out)
{
	struct store_status st;
	int ret = store_get_status(arg, &st);
	if (ret < 0)
		return ret;
	out->leader = st.leader_id;
	out->raft_index = st.applied_index;
	out->compact_revision = st.compact_revision;
	return 0;
}

/* Tells the gateway every member of --peers ("ID=IP:PORT[:FWDPORT],..."), with its Raft
 * address as peer URL, for MemberList. */
static void add_peers(struct gw *gw, const char *peers)
{
	char *copy = peers ? strdup(peers) : NULL, *save = NULL;
	for (char *e = copy ? strtok_r(copy, ",", &save) : NULL; e;
	     e = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(e, '='), *addr, *last;
		if (!eq)
			continue;
		*eq = 0;
		addr = eq + 1;
		/* drop the forwarding port: IP:PORT:FWD has a colon after the port */
		char *close = strchr(addr, ']');
		char *port = strchr(close ? close : addr, ':');
		if (port && (last = strchr(port + 1, ':')))
			*last = 0;
		char url[300];
		snprintf(url, sizeof(url), "http://%s", addr);
		if (gw_add_peer(gw, strtoull(e, NULL, 10), url) < 0)
			log_warn("etcdfs-server: MemberList lists only the first 16 members");
	}
	free(copy);
}

static int parse_num(const char *opt, const char *s, long long min, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < min) {
		fprintf(stderr, "etcdfs-server: bad value '%s' for --%s\n", s, opt);
		return -1;
	}
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"data-dir", required_argument, NULL, 'D'},
		{"listen-client", required_argument, NULL, 'c'},
		{"node-id", required_argument, NULL, 'n'},
		{"peers", required_argument, NULL, 'p'},
		{"listen", required_argument, NULL, 'l'},
		{"auto-compact-retain", required_argument, NULL, 'r'},
		{"snapshot-threshold", required_argument, NULL, 's'},
		{"grpc-keepalive-interval", required_argument, NULL, 'k'},
		{"grpc-keepalive-timeout", required_argument, NULL, 'K'},
		{"cert-file", required_argument, NULL, 'C'},
		{"key-file", required_argument, NULL, 'Y'},
		{"trusted-ca-file", required_argument, NULL, 'T'},
		{"client-cert-auth", optional_argument, NULL, 'A'},
		{"insecure-plaintext", no_argument, NULL, 'I'},
		{"debug", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	struct store_config cfg;
	const char *listen_client = DEFAULT_LISTEN;
	long ka_interval = 7200000, ka_timeout = 20000;
	struct gw_tls_config tls = {0};
	bool insecure_plaintext = false;
	long long v;
	int c;
	store_config_init(&cfg);
	while ((c = getopt_long(argc, argv, "dhV", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			cfg.data_dir = optarg;
			break;
		case 'c':
			listen_client = optarg;
			break;
		case 'n':
			if (parse_num("node-id", optarg, 1, &v) < 0 || v > 0xffffffffLL)
				return 2;
			cfg.id = (unsigned)v;
			break;
		case 'p':
			cfg.peers = optarg;
			break;
		case 'l':
			cfg.listen = optarg;
			break;
		case 'r':
			if (parse_num("auto-compact-retain", optarg, 0, &v) < 0)
				return 2;
			cfg.auto_compact_retain = v;
			break;
		case 's':
			if (parse_num("snapshot-threshold", optarg, 1, &v) < 0 || v > 0xffffffffLL)
				return 2;
			cfg.snapshot_threshold = (unsigned)v;
			break;
		case 'k':
		case 'K':
			if (etcd_parse_duration_ms(optarg, c == 'k' ? &ka_interval : &ka_timeout) <
			    0) {
				fprintf(stderr, "etcdfs-server: bad duration '%s' for --%s\n",
					optarg,
					c == 'k' ? "grpc-keepalive-interval"
						 : "grpc-keepalive-timeout");
				return 2;
			}
			break;
		case 'C':
			tls.cert_file = optarg;
			break;
		case 'Y':
			tls.key_file = optarg;
			break;
		case 'T':
			tls.trusted_ca_file = optarg;
			break;
		case 'A':
			/* etcd's boolean flag: bare, =true or =false */
			if (optarg && strcmp(optarg, "true") && strcmp(optarg, "false")) {
				fprintf(stderr,
					"etcdfs-server: bad value '%s' for --client-cert-auth "
					"(true or false)\n",
					optarg);
				return 2;
			}
			tls.client_cert_auth = !optarg || !strcmp(optarg, "true");
			break;
		case 'I':
			insecure_plaintext = true;
			break;
		case 'd':
			log_set_level(LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("etcdfs-server %s\n", ETCDFS_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "etcdfs-server: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!cfg.data_dir || !*cfg.data_dir) {
		fprintf(stderr, "etcdfs-server: --data-dir is required\n");
		usage(stderr);
		return 2;
	}

	bool use_tls = tls.cert_file || tls.key_file;
	if (!use_tls && (tls.trusted_ca_file || tls.client_cert_auth)) {
		fprintf(stderr, "etcdfs-server: --trusted-ca-file and --client-cert-auth need "
				"--cert-file and --key-file (TLS)\n");
		return 2;
	}

	/* Every thread inherits this mask, so only sigwait() below sees the signals. */
	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct kv *kv = NULL;
	struct gw *gw = NULL;
	int ret = store_open(&cfg, &kv);
	if (ret < 0) {
		fprintf(stderr, "etcdfs-server: cannot open the store in %s: %s\n", cfg.data_dir,
			strerror(-ret));
		return 1;
	}
	ret = gw_start_tls(kv, listen_client, use_tls ? &tls : NULL, insecure_plaintext, &gw);
	if (ret < 0) {
		fprintf(stderr, "etcdfs-server: cannot serve clients on %s: %s\n", listen_client,
			strerror(-ret));
		kv_destroy(kv);
		return 1;
	}
	char name[64];
	snprintf(name, sizeof(name), "etcdfs-%u", cfg.id);
	/* Every member of one store cluster shares its cluster id; the member id is the node's
	 * Raft id, so the leader field of Status names a member of MemberList. */
	gw_set_keepalive(gw, ka_interval, ka_timeout);
	add_peers(gw, cfg.peers);
	gw_set_member(gw, 0x65746364667300ULL, cfg.id, name, NULL, node_status, kv);
	log_notice("etcdfs-server: store %s, clients on %s://%s (port %d)", cfg.data_dir,
		   use_tls ? "https" : "http", listen_client, gw_port(gw));

	int sig = 0;
	while (sigwait(&stop_set, &sig) != 0)
		;
	log_notice("etcdfs-server: %s received, shutting down", strsignal(sig));
	gw_stop(gw);
	kv_destroy(kv);
	log_notice("etcdfs-server: stopped");
	return 0;
}
