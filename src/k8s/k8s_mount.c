/* k8s_mount.c: Kubernetes decoding and encoding for the files of a mount (k8s_mount.h). */
#include "k8s_mount.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "k8s.h"
#include "k8s_crypt.h"

#define REGISTRY "/registry/"

static bool under_registry(const char *key, size_t len)
{
	return len > strlen(REGISTRY) && memcmp(key, REGISTRY, strlen(REGISTRY)) == 0;
}

bool k8s_mount_applies(void *arg, const char *key, size_t key_len)
{
	struct k8s_mount *m = arg;
	return m->format != K8S_MOUNT_RAW && under_registry(key, key_len);
}

/* The plaintext of an encrypted value in *plain (0), -ENOTSUP for values
 * shown raw (no configuration, KMS), -EIO when the key does not open it. */
static int decrypt(struct k8s_mount *m, const char *key, size_t key_len, const char *val,
		   size_t val_len, void **plain, size_t *plain_len, char **err)
{
	if (!m->crypt)
		return -ENOTSUP;
	int r = k8s_crypt_decrypt(m->crypt, key, key_len, val, val_len, plain, plain_len, err);
	return r == -ENOENT ? -ENOTSUP : r;
}

int k8s_mount_render(void *arg, const char *key, size_t key_len, const char *val, size_t val_len,
		     int64_t mod_revision, char **out, size_t *out_len)
{
	struct k8s_mount *m = arg;
	if (m->format == K8S_MOUNT_RAW || !under_registry(key, key_len))
		return -ENOTSUP;
	enum k8s_encoding enc = k8s_detect(val, val_len);
	void *plain = NULL;
	if (enc == K8S_ENC_ENCRYPTED) {
		char *err = NULL;
		size_t pl = 0;
		int r = decrypt(m, key, key_len, val, val_len, &plain, &pl, &err);
		if (r == -EIO)
			log_warn("%.*s: cannot decrypt: %s", (int)key_len, key, err ? err : "?");
		free(err);
		if (r < 0)
			return r;
		val = plain;
		val_len = pl;
		enc = k8s_detect(val, val_len);
	}
	int r = -ENOTSUP;
	if (enc == K8S_ENC_PROTOBUF || enc == K8S_ENC_JSON || enc == K8S_ENC_CBOR)
		r = k8s_decode(val, val_len,
			       m->format == K8S_MOUNT_JSON ? K8S_FMT_JSON : K8S_FMT_YAML,
			       mod_revision, out, out_len, NULL);
	free(plain);
	return r;
}

/* user.etcdfs.k8s.schema: "removed-in-1.N" for a kind only older releases
 * served (the value is what such a cluster stored, decoded by the union
 * schema), so the user knows why kubectl of today has never heard of it. */
static int schema_xattr(struct k8s_mount *m, const char *key, size_t key_len, const char *val,
			size_t val_len, char **out, size_t *out_len)
{
	void *plain = NULL;
	size_t pl = 0;
	if (k8s_detect(val, val_len) == K8S_ENC_ENCRYPTED) {
		if (decrypt(m, key, key_len, val, val_len, &plain, &pl, NULL) < 0)
			return -ENODATA;
		val = plain;
		val_len = pl;
	}
	const char *rel = k8s_removed_in(val, val_len);
	free(plain);
	if (!rel)
		return -ENODATA;
	if (asprintf(out, "removed-in-%s", rel) < 0)
		return -ENOMEM;
	*out_len = strlen(*out);
	return 0;
}

int k8s_mount_xattr(void *arg, const char *key, size_t key_len, const char *val, size_t val_len,
		    const char *name, char **out, size_t *out_len)
{
	static const char prefix[] = "k8s:enc:";
	if (!under_registry(key, key_len))
		return -ENODATA;
	if (strcmp(name, "user.etcdfs.k8s.schema") == 0)
		return schema_xattr(arg, key, key_len, val, val_len, out, out_len);
	if (strcmp(name, "user.etcdfs.k8s.encryption") || k8s_detect(val, val_len) != K8S_ENC_ENCRYPTED)
		return -ENODATA;
	/* "k8s:enc:PROVIDER:vN:NAME:" without "k8s:enc:" and the last colon */
	const char *p = val + strlen(prefix), *end = val + val_len;
	int colons = 0;
	const char *q = p;
	while (q < end && colons < 3)
		if (*q++ == ':')
			colons++;
	if (colons < 3)
		return -ENODATA;
	*out = strndup(p, q - 1 - p);
	*out_len = q - 1 - p;
	return *out ? 0 : -ENOMEM;
}

int64_t k8s_mount_value_time(void *arg, const char *key, size_t key_len, const char *val,
			     size_t val_len)
{
	struct k8s_mount *m = arg;
	int64_t ns;
	void *plain = NULL;
	size_t pl = 0;
	if (!under_registry(key, key_len))
		return 0;
	/* an encrypted value's times are inside it; failures are logged when
	 * the file is read */
	if (k8s_detect(val, val_len) == K8S_ENC_ENCRYPTED &&
	    decrypt(m, key, key_len, val, val_len, &plain, &pl, NULL) == 0) {
		val = plain;
		val_len = pl;
	}
	int r = k8s_object_time(val, val_len, &ns);
	free(plain);
	return r < 0 ? 0 : ns;
}

/* The segments of key after /registry/: resource path, namespace, name. */
static int split_key(const char *key, size_t len, char **name, char **ns_guess, int *depth)
{
	const char *end = key + len;
	const char *last = NULL, *prev = NULL;
	*depth = 0;
	for (const char *p = key; p < end; p++) {
		if (*p == '/') {
			prev = last;
			last = p;
			(*depth)++;
		}
	}
	if (!last || last + 1 >= end)
		return -EINVAL;
	*name = strndup(last + 1, end - last - 1);
	*ns_guess = prev ? strndup(prev + 1, last - prev - 1) : NULL;
	return *name ? 0 : -ENOMEM;
}

/* Cluster-scoped built-in resources: their keys are /registry/RES/NAME. */
static const char *const cluster_scoped[] = {
	"namespaces",
	"minions",
	"nodes",
	"persistentvolumes",
	"clusterroles",
	"clusterrolebindings",
	"storageclasses",
	"priorityclasses",
	"csidrivers",
	"csinodes",
	"volumeattachments",
	"mutatingwebhookconfigurations",
	"validatingwebhookconfigurations",
	"runtimeclasses",
	"certificatesigningrequests",
	"ingressclasses",
	"podsecuritypolicy",
	"apiextensions.k8s.io",
	"apiregistration.k8s.io",
	"flowschemas",
	"prioritylevelconfigurations",
	"validatingadmissionpolicies",
	"validatingadmissionpolicybindings",
	"ranges",
	NULL,
};

static bool resource_is_cluster_scoped(const char *key, size_t len)
{
	const char *res = key + strlen(REGISTRY);
	const char *slash = memchr(res, '/', len - strlen(REGISTRY));
	size_t rl = slash ? (size_t)(slash - res) : len - strlen(REGISTRY);
	for (int i = 0; cluster_scoped[i]; i++)
		if (strlen(cluster_scoped[i]) == rl && memcmp(cluster_scoped[i], res, rl) == 0)
			return true;
	return false;
}

/* The namespace of the original object, or NULL if it has none. */
static char *orig_namespace(const char *orig, size_t orig_len)
{
	char *js = NULL;
	size_t jl;
	if (k8s_decode(orig, orig_len, K8S_FMT_JSON, 0, &js, &jl, NULL) < 0)
		return NULL;
	json_t *root = json_loadb(js, jl, 0, NULL);
	free(js);
	if (!root)
		return NULL;
	const char *ns =
		json_string_value(json_object_get(json_object_get(root, "metadata"), "namespace"));
	char *r = ns && *ns ? strdup(ns) : NULL;
	json_decref(root);
	return r;
}

/* Refuses a save with a message; always -EPERM. */
static int refuse(char **err, const char *msg, const char *detail)
{
	if (err && asprintf(err, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "") < 0)
		*err = NULL;
	return -EPERM;
}

/* Checks that orig may be edited as text; it becomes the plaintext when it is
 * encrypted (*plain, freed by the caller). 0, -ENOTSUP (stored raw), -EPERM. */
static int editable_orig(struct k8s_mount *m, const char *key, size_t key_len, const char **orig,
			 size_t *orig_len, void **plain, char **err)
{
	enum k8s_encoding enc = k8s_detect(*orig, *orig_len);
	if (enc == K8S_ENC_ENCRYPTED) {
		char *why = NULL;
		size_t pl = 0;
		int r = decrypt(m, key, key_len, *orig, *orig_len, plain, &pl, &why);
		if (r == -ENOTSUP && !m->crypt)
			r = refuse(err,
				   "the value is encrypted (k8s:enc:); it is shown raw and "
				   "cannot be edited here without --encryption-config",
				   NULL);
		else if (r == -ENOTSUP)
			r = refuse(err,
				   "the value is encrypted with a KMS provider, which needs "
				   "the cluster's KMS plugin; it is read-only here",
				   why);
		else if (r < 0)
			r = refuse(err, "the value cannot be decrypted, so it cannot be saved",
				   why);
		free(why);
		if (r < 0)
			return r;
		*orig = *plain;
		*orig_len = pl;
		enc = k8s_detect(*orig, *orig_len);
	}
	if (enc == K8S_ENC_CBOR)
		return refuse(err,
			      "CBOR values are read-only: etcdfs has not yet proven that "
			      "their round trip through YAML/JSON is lossless",
			      NULL);
	if (enc != K8S_ENC_PROTOBUF && enc != K8S_ENC_JSON)
		return -ENOTSUP; /* shown raw, stored raw */
	/* A value shown decoded must have been rendered: re-check it decodes,
	 * else it was shown raw and is stored raw. */
	char *probe = NULL;
	size_t pl;
	if (k8s_decode(*orig, *orig_len, K8S_FMT_JSON, 0, &probe, &pl, NULL) < 0)
		return -ENOTSUP;
	free(probe);
	return 0;
}

int k8s_mount_encode(void *arg, const char *key, size_t key_len, const char *orig, size_t orig_len,
		     int64_t orig_rev, const char *text, size_t text_len, char **out,
		     size_t *out_len, char **err)
{
	struct k8s_mount *m = arg;
	if (m->format == K8S_MOUNT_RAW || !under_registry(key, key_len))
		return -ENOTSUP;
	void *plain = NULL;
	char *name = NULL, *ns_guess = NULL, *expect_ns = NULL;
	void *o = NULL;
	int depth;
	int ret = orig ? editable_orig(m, key, key_len, &orig, &orig_len, &plain, err) : 0;
	if (ret < 0)
		goto out;
	ret = split_key(key, key_len, &name, &ns_guess, &depth);
	if (ret < 0)
		goto out;
	if (orig) {
		expect_ns = orig_namespace(orig, orig_len);
	} else if (depth >= 4 && !resource_is_cluster_scoped(key, key_len)) {
		/* /registry/RES/NS/NAME (or deeper, for groups) */
		expect_ns = ns_guess ? strdup(ns_guess) : NULL;
	}
	ret = k8s_encode(orig, orig_len, text, text_len, name, expect_ns, orig ? orig_rev : 0, &o,
			 out_len, err);
	if (ret == 0 && m->crypt) {
		/* stored as the apiserver would: the resource's first provider */
		void *sealed = NULL;
		ret = k8s_crypt_encrypt(m->crypt, key, key_len, o, *out_len, &sealed, out_len, err);
		free(o);
		o = sealed;
	}
	if (ret == 0)
		*out = o;
out:
	free(plain);
	free(name);
	free(ns_guess);
	free(expect_ns);
	return ret;
}
