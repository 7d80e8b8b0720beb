/* k8s_tool.c: etcdfs-k8s, the codec on the command line (like auger).
 *
 *   etcdfs-k8s decode [-o yaml|json] [--rv N] [--type APIVERSION/KIND]  < value > text
 *   etcdfs-k8s encode [--orig FILE] [--name N] [--namespace NS] [--rv N]
 *                     [--type APIVERSION/KIND] [--encoding protobuf|json] < text > value
 *   etcdfs-k8s detect                                                   < value
 *   decode and encode also take --encryption-config FILE --key ETCDKEY: the
 *   apiserver's EncryptionConfiguration, and the etcd key the value is stored
 *   under (it selects the resource's providers and is aesgcm's authenticated
 *   data). decode decrypts; encode decrypts --orig and encrypts the result with
 *   the resource's first provider.
 *
 * encode with --orig FILE (the stored bytes the text was decoded from) keeps
 * everything the text does not show: unknown fields, explicit zero values,
 * field order; unedited text then gives back FILE byte for byte. Without it the
 * object is encoded as new (--encoding picks protobuf or JSON; the default is
 * protobuf for kinds in the schema, JSON otherwise and for CRDs/APIServices). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/k8s.h"
#include "k8s/k8s_crypt.h"
#include "core/log.h"

static int read_all(FILE *f, char **out, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap);

	if (!b)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
		size_t r = fread(b + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f)) {
		free(b);
		return -EIO;
	}
	*out = b;
	*len = n;
	return 0;
}

static int read_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	int r;

	if (!f)
		return -errno;
	r = read_all(f, out, len);
	fclose(f);
	return r;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: etcdfs-k8s decode [-o yaml|json] [--rv N] [--type APIVERSION/KIND]\n"
		"       etcdfs-k8s encode [--orig FILE] [--name NAME] [--namespace NS] [--rv N]\n"
		"                         [--type APIVERSION/KIND] [--encoding protobuf|json]\n"
		"                         [--release 1.N]\n"
		"       etcdfs-k8s detect\n"
		"decode and encode also take --encryption-config FILE --key ETCDKEY to\n"
		"decrypt (and, for encode, encrypt) as the apiserver does for that key.\n"
		"Reads stdin, writes stdout. decode turns a stored etcd value (protobuf or\n"
		"JSON) into YAML (default) or JSON; encode turns YAML or JSON back into the\n"
		"stored form. With --orig, encode is lossless against the original bytes;\n"
		"with --release, a new object is written as that Kubernetes release did.\n");
}

/* Replaces *buf by its plaintext when it is encrypted; plain values stay. */
static int decrypt(const struct k8s_crypt *c, const char *key, char **buf, size_t *len, char **err)
{
	void *plain = NULL;
	size_t pl = 0;
	int r = k8s_crypt_decrypt(c, key, strlen(key), *buf, *len, &plain, &pl, err);
	if (r == -ENOENT)
		return 0;
	if (r)
		return r;
	free(*buf);
	*buf = plain;
	*len = pl;
	return 0;
}

/* 0 when arg is a, 1 when b; -1 after saying what opt takes */
static int pick(const char *opt, const char *arg, const char *a, const char *b)
{
	if (!strcmp(arg, a))
		return 0;
	if (!strcmp(arg, b))
		return 1;
	fprintf(stderr, "etcdfs-k8s: %s takes %s or %s\n", opt, a, b);
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"output", required_argument, NULL, 'o'},
		{"orig", required_argument, NULL, 'O'},
		{"name", required_argument, NULL, 'n'},
		{"namespace", required_argument, NULL, 'N'},
		{"rv", required_argument, NULL, 'r'},
		{"type", required_argument, NULL, 't'},
		{"encoding", required_argument, NULL, 'e'},
		{"release", required_argument, NULL, 'R'},
		{"encryption-config", required_argument, NULL, 'C'},
		{"key", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	enum k8s_format fmt = K8S_FMT_YAML;
	enum k8s_encoding new_enc = K8S_ENC_RAW;
	const char *orig_path = NULL, *name = NULL, *ns = NULL, *release = NULL;
	const char *crypt_path = NULL, *key = NULL;
	struct k8s_crypt *crypt = NULL;
	char *type_av = NULL, *type_kind = NULL;
	long long rv = 0;
	char *in = NULL, *orig = NULL, *err = NULL;
	size_t in_len = 0, orig_len = 0;
	int c, i, r, ret = 1;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if ((i = pick("-o", optarg, "yaml", "json")) < 0)
				return 2;
			fmt = i ? K8S_FMT_JSON : K8S_FMT_YAML;
			break;
		case 'O':
			orig_path = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'N':
			ns = optarg;
			break;
		case 'r':
			rv = strtoll(optarg, NULL, 10);
			break;
		case 't': {
			char *slash = strrchr(optarg, '/');
			if (!slash) {
				fprintf(stderr, "etcdfs-k8s: --type wants APIVERSION/KIND\n");
				return 2;
			}
			type_av = strndup(optarg, (size_t)(slash - optarg));
			type_kind = strdup(slash + 1);
			break;
		}
		case 'e':
			if ((i = pick("--encoding", optarg, "protobuf", "json")) < 0)
				return 2;
			new_enc = i ? K8S_ENC_JSON : K8S_ENC_PROTOBUF;
			break;
		case 'R':
			release = optarg;
			break;
		case 'C':
			crypt_path = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (crypt_path && !key) {
		fprintf(stderr,
			"etcdfs-k8s: --encryption-config needs --key, the etcd key of the "
			"value (it selects the providers and is aesgcm's authenticated data)\n");
		return 2;
	}
	if (crypt_path && (r = k8s_crypt_load(crypt_path, &crypt, &err))) {
		fprintf(stderr, "etcdfs-k8s: %s\n", err ? err : strerror(-r));
		goto out;
	}
	r = read_all(stdin, &in, &in_len);
	if (r) {
		fprintf(stderr, "etcdfs-k8s: reading stdin: %s\n", strerror(-r));
		goto out;
	}
	if (!strcmp(cmd, "detect")) {
		static const char *const names[] = {"raw", "protobuf", "json", "cbor", "encrypted"};
		printf("%s\n", names[k8s_detect(in, in_len)]);
		ret = 0;
	} else if (!strcmp(cmd, "decode")) {
		char *text = NULL;
		size_t tlen = 0;
		if (crypt && (r = decrypt(crypt, key, &in, &in_len, &err))) {
			fprintf(stderr, "etcdfs-k8s: decode: %s\n", err ? err : strerror(-r));
			goto out;
		}
		r = k8s_decode_typed(in, in_len, fmt, rv, type_av, type_kind, &text, &tlen, &err);
		if (r) {
			fprintf(stderr, "etcdfs-k8s: decode: %s\n", err ? err : strerror(-r));
			goto out;
		}
		ret = fwrite(text, 1, tlen, stdout) == tlen && fflush(stdout) == 0 ? 0 : 1;
		free(text);
	} else if (!strcmp(cmd, "encode")) {
		void *val = NULL;
		size_t vlen = 0;
		if (orig_path && (r = read_file(orig_path, &orig, &orig_len))) {
			fprintf(stderr, "etcdfs-k8s: %s: %s\n", orig_path, strerror(-r));
			goto out;
		}
		if (orig && crypt && (r = decrypt(crypt, key, &orig, &orig_len, &err))) {
			fprintf(stderr, "etcdfs-k8s: encode: --orig: %s\n",
				err ? err : strerror(-r));
			goto out;
		}
		if (release)
			r = k8s_encode_release(release, orig, orig_len, in, in_len, name, ns, rv,
					       type_av, type_kind, new_enc, &val, &vlen, &err);
		else
			r = k8s_encode_typed(orig, orig_len, in, in_len, name, ns, rv, type_av,
					     type_kind, new_enc, &val, &vlen, &err);
		if (!r && crypt) {
			void *sealed = NULL;
			r = k8s_crypt_encrypt(crypt, key, strlen(key), val, vlen, &sealed, &vlen,
					      &err);
			free(val);
			val = sealed;
		}
		if (r) {
			fprintf(stderr, "etcdfs-k8s: encode: %s\n", err ? err : strerror(-r));
			goto out;
		}
		ret = fwrite(val, 1, vlen, stdout) == vlen && fflush(stdout) == 0 ? 0 : 1;
		free(val);
	} else {
		usage(stderr);
		ret = 2;
	}
out:
	k8s_crypt_free(crypt);
	free(in);
	free(orig);
	free(err);
	free(type_av);
	free(type_kind);
	return ret;
}
