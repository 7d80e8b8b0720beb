/* k8s_crypt.c: encryption at rest as the apiserver does it (k8s_crypt.h). */
#include "k8s_crypt.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "core/base64.h"
#include "core/util.h"
#include "k8s.h"

#define ENC_PREFIX "k8s:enc:"
#define REGISTRY "/registry/"
#define CBC_IV 16
#define GCM_NONCE 12
#define GCM_TAG 16

enum ptype { P_IDENTITY, P_AESCBC, P_AESGCM, P_SECRETBOX, P_KMS };

static const char *const ptype_names[] = {"identity", "aescbc", "aesgcm", "secretbox", "kms"};

struct ckey {
	char *name;
	unsigned char secret[32];
	size_t len;
};

struct provider {
	enum ptype type;
	struct ckey *keys;
	size_t n_keys;
	char *kms_name; /* P_KMS */
	int kms_version;
};

struct rentry {
	char **res;
	size_t n_res;
	struct provider *prov;
	size_t n_prov;
};

struct k8s_crypt {
	struct rentry *e;
	size_t n;
};

static void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char **err, const char *fmt, ...)
{
	if (!err)
		return;
	va_list ap;
	va_start(ap, fmt);
	free(*err);
	if (vasprintf(err, fmt, ap) < 0)
		*err = NULL;
	va_end(ap);
}

/* ---- the configuration file ---- */

static void free_provider(struct provider *p)
{
	for (size_t i = 0; i < p->n_keys; i++) {
		sodium_memzero(p->keys[i].secret, sizeof(p->keys[i].secret));
		free(p->keys[i].name);
	}
	free(p->keys);
	free(p->kms_name);
}

void k8s_crypt_free(struct k8s_crypt *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		struct rentry *e = &c->e[i];
		for (size_t j = 0; j < e->n_res; j++)
			free(e->res[j]);
		free(e->res);
		for (size_t j = 0; j < e->n_prov; j++)
			free_provider(&e->prov[j]);
		free(e->prov);
	}
	free(c->e);
	free(c);
}

static const char *scalar(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The value of key k in mapping m, or NULL. */
static yaml_node_t *map_get(yaml_document_t *d, yaml_node_t *m, const char *k)
{
	if (!m || m->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
	     p++) {
		const char *s = scalar(yaml_document_get_node(d, p->key));
		if (s && !strcmp(s, k))
			return yaml_document_get_node(d, p->value);
	}
	return NULL;
}

static size_t seq_len(yaml_node_t *s)
{
	return s && s->type == YAML_SEQUENCE_NODE
		       ? (size_t)(s->data.sequence.items.top - s->data.sequence.items.start)
		       : 0;
}

static yaml_node_t *seq_at(yaml_document_t *d, yaml_node_t *s, size_t i)
{
	return yaml_document_get_node(d, s->data.sequence.items.start[i]);
}

static int parse_keys(yaml_document_t *d, yaml_node_t *cfg, struct provider *p, char **err)
{
	yaml_node_t *keys = map_get(d, cfg, "keys");
	size_t n = seq_len(keys);
	if (!n) {
		set_err(err, "%s provider without keys", ptype_names[p->type]);
		return -EINVAL;
	}
	p->keys = calloc(n, sizeof(*p->keys));
	if (!p->keys)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *k = seq_at(d, keys, i);
		const char *name = scalar(map_get(d, k, "name"));
		const char *secret = scalar(map_get(d, k, "secret"));
		if (!name || !*name || !secret) {
			set_err(err, "%s key %zu without name or secret", ptype_names[p->type], i);
			return -EINVAL;
		}
		struct ckey *ck = &p->keys[p->n_keys++];
		ck->name = strdup(name);
		if (!ck->name)
			return -ENOMEM;
		char *raw = NULL;
		size_t rl = 0;
		int ret = base64_decode(secret, strlen(secret), BASE64_LAX, &raw, &rl);
		if (ret < 0 && ret != -EINVAL)
			return ret;
		bool ok = ret == 0 &&
			  (p->type == P_SECRETBOX ? rl == 32 : rl == 16 || rl == 24 || rl == 32);
		if (ok)
			memcpy(ck->secret, raw, rl);
		ck->len = rl;
		if (raw) {
			sodium_memzero(raw, rl);
			free(raw);
		}
		if (!ok) {
			set_err(err, "%s key %s: the secret must be base64 of %s bytes",
				ptype_names[p->type], name,
				p->type == P_SECRETBOX ? "32" : "16, 24 or 32");
			return -EINVAL;
		}
	}
	return 0;
}

/* One item of a providers list: a mapping with one provider name. */
static int parse_provider(yaml_document_t *d, yaml_node_t *item, struct provider *p, char **err)
{
	if (!item || item->type != YAML_MAPPING_NODE ||
	    item->data.mapping.pairs.top - item->data.mapping.pairs.start != 1) {
		set_err(err, "each provider must be a mapping with one provider name");
		return -EINVAL;
	}
	yaml_node_pair_t *pair = item->data.mapping.pairs.start;
	const char *name = scalar(yaml_document_get_node(d, pair->key));
	yaml_node_t *cfg = yaml_document_get_node(d, pair->value);
	for (int t = P_IDENTITY; t <= P_KMS; t++) {
		if (!name || strcmp(name, ptype_names[t]))
			continue;
		p->type = (enum ptype)t;
		if (t == P_IDENTITY)
			return 0;
		if (t != P_KMS)
			return parse_keys(d, cfg, p, err);
		const char *kn = scalar(map_get(d, cfg, "name"));
		const char *ver = scalar(map_get(d, cfg, "apiVersion"));
		if (!kn || !*kn) {
			set_err(err, "kms provider without a name");
			return -EINVAL;
		}
		p->kms_name = strdup(kn);
		p->kms_version = ver && !strcmp(ver, "v2") ? 2 : 1;
		return p->kms_name ? 0 : -ENOMEM;
	}
	set_err(err, "unknown provider %s", name ? name : "(not a name)");
	return -EINVAL;
}

static int parse_entry(yaml_document_t *d, yaml_node_t *item, struct rentry *e, char **err)
{
	yaml_node_t *res = map_get(d, item, "resources");
	yaml_node_t *prov = map_get(d, item, "providers");
	size_t nr = seq_len(res), np = seq_len(prov);
	if (!nr || !np) {
		set_err(err, "each resources entry needs resources and providers");
		return -EINVAL;
	}
	e->res = calloc(nr, sizeof(*e->res));
	e->prov = calloc(np, sizeof(*e->prov));
	if (!e->res || !e->prov)
		return -ENOMEM;
	for (size_t i = 0; i < nr; i++) {
		const char *s = scalar(seq_at(d, res, i));
		if (!s || !*s) {
			set_err(err, "a resource must be a non-empty string");
			return -EINVAL;
		}
		if (!(e->res[e->n_res++] = strdup(s)))
			return -ENOMEM;
	}
	for (size_t i = 0; i < np; i++) {
		int ret = parse_provider(d, seq_at(d, prov, i), &e->prov[e->n_prov++], err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int parse_doc(yaml_document_t *d, struct k8s_crypt *c, char **err)
{
	yaml_node_t *root = yaml_document_get_root_node(d);
	const char *av = scalar(map_get(d, root, "apiVersion"));
	const char *kind = scalar(map_get(d, root, "kind"));
	bool current = av && kind && !strcmp(av, "apiserver.config.k8s.io/v1") &&
		       !strcmp(kind, "EncryptionConfiguration");
	bool old = av && kind && !strcmp(av, "v1") && !strcmp(kind, "EncryptionConfig");
	if (!current && !old) {
		set_err(err, "not an EncryptionConfiguration (apiserver.config.k8s.io/v1) or "
			     "EncryptionConfig (v1)");
		return -EINVAL;
	}
	yaml_node_t *res = map_get(d, root, "resources");
	size_t n = seq_len(res);
	if (!n) {
		set_err(err, "no resources listed");
		return -EINVAL;
	}
	c->e = calloc(n, sizeof(*c->e));
	if (!c->e)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int ret = parse_entry(d, seq_at(d, res, i), &c->e[c->n++], err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int k8s_crypt_load(const char *path, struct k8s_crypt **out, char **err)
{
	if (sodium_init() < 0) {
		set_err(err, "libsodium failed to initialize");
		return -EIO;
	}
	FILE *f = fopen(path, "rb");
	if (!f) {
		int e = errno;
		set_err(err, "%s: %s", path, strerror(e));
		return -e;
	}
	struct stat st;
	if (fstat(fileno(f), &st) < 0 || (st.st_mode & (S_IRWXG | S_IRWXO))) {
		set_err(err,
			"%s: the encryption configuration holds the cluster's keys; it must "
			"not be accessible by group or others (chmod 600)",
			path);
		fclose(f);
		return -EPERM;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	struct k8s_crypt *c = calloc(1, sizeof(*c));
	int ret = -ENOMEM;
	if (!c || !yaml_parser_initialize(&parser)) {
		fclose(f);
		free(c);
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		set_err(err, "%s: invalid YAML at line %zu: %s", path, parser.problem_mark.line + 1,
			parser.problem ? parser.problem : "?");
		ret = -EINVAL;
		goto out_parser;
	}
	char *why = NULL;
	ret = parse_doc(&doc, c, &why);
	if (ret < 0)
		set_err(err, "%s: %s", path, why ? why : strerror(-ret));
	free(why);
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	fclose(f);
	if (ret < 0) {
		k8s_crypt_free(c);
		return ret;
	}
	*out = c;
	return 0;
}

/* ---- which entry applies to a key ---- */

/* Storage directories under /registry/ that are not named like their resource
 * or whose group the key does not say (built-in resources store without it). */
static const struct {
	const char *dir, *sub, *resource, *group;
} dirs[] = {
	{"services", "endpoints", "endpoints", ""},
	{"services", NULL, "services", ""},
	{"minions", NULL, "nodes", ""},
	{"controllers", NULL, "replicationcontrollers", ""},
	{"controllerrevisions", NULL, NULL, "apps"},
	{"daemonsets", NULL, NULL, "apps"},
	{"deployments", NULL, NULL, "apps"},
	{"replicasets", NULL, NULL, "apps"},
	{"statefulsets", NULL, NULL, "apps"},
	{"jobs", NULL, NULL, "batch"},
	{"cronjobs", NULL, NULL, "batch"},
	{"horizontalpodautoscalers", NULL, NULL, "autoscaling"},
	{"poddisruptionbudgets", NULL, NULL, "policy"},
	{"podsecuritypolicy", NULL, "podsecuritypolicies", "policy"},
	{"roles", NULL, NULL, "rbac.authorization.k8s.io"},
	{"rolebindings", NULL, NULL, "rbac.authorization.k8s.io"},
	{"clusterroles", NULL, NULL, "rbac.authorization.k8s.io"},
	{"clusterrolebindings", NULL, NULL, "rbac.authorization.k8s.io"},
	{"networkpolicies", NULL, NULL, "networking.k8s.io"},
	{"ingress", NULL, "ingresses", "networking.k8s.io"},
	{"ingressclasses", NULL, NULL, "networking.k8s.io"},
	{"ipaddresses", NULL, NULL, "networking.k8s.io"},
	{"servicecidrs", NULL, NULL, "networking.k8s.io"},
	{"storageclasses", NULL, NULL, "storage.k8s.io"},
	{"volumeattachments", NULL, NULL, "storage.k8s.io"},
	{"csinodes", NULL, NULL, "storage.k8s.io"},
	{"csidrivers", NULL, NULL, "storage.k8s.io"},
	{"csistoragecapacities", NULL, NULL, "storage.k8s.io"},
	{"volumeattributesclasses", NULL, NULL, "storage.k8s.io"},
	{"mutatingwebhookconfigurations", NULL, NULL, "admissionregistration.k8s.io"},
	{"validatingwebhookconfigurations", NULL, NULL, "admissionregistration.k8s.io"},
	{"validatingadmissionpolicies", NULL, NULL, "admissionregistration.k8s.io"},
	{"validatingadmissionpolicybindings", NULL, NULL, "admissionregistration.k8s.io"},
	{"leases", NULL, NULL, "coordination.k8s.io"},
	{"endpointslices", NULL, NULL, "discovery.k8s.io"},
	{"priorityclasses", NULL, NULL, "scheduling.k8s.io"},
	{"runtimeclasses", NULL, NULL, "node.k8s.io"},
	{"certificatesigningrequests", NULL, NULL, "certificates.k8s.io"},
	{"flowschemas", NULL, NULL, "flowcontrol.apiserver.k8s.io"},
	{"prioritylevelconfigurations", NULL, NULL, "flowcontrol.apiserver.k8s.io"},
};

/* Splits key into resource and group (both malloc'd). */
static int key_resource(const char *key, size_t len, char **res, char **group)
{
	size_t pl = strlen(REGISTRY);
	*res = *group = NULL;
	if (len <= pl || memcmp(key, REGISTRY, pl))
		return -EINVAL;
	const char *s1 = key + pl, *end = key + len;
	const char *e1 = memchr(s1, '/', end - s1);
	if (!e1)
		e1 = end;
	const char *s2 = e1 < end ? e1 + 1 : end;
	const char *e2 = memchr(s2, '/', end - s2);
	if (!e2)
		e2 = end;
	size_t l1 = e1 - s1, l2 = e2 - s2;
	if (memchr(s1, '.', l1)) {
		/* custom and aggregated resources: /registry/GROUP/RESOURCE/... */
		*group = strndup(s1, l1);
		*res = strndup(s2, l2);
	} else {
		const char *r = NULL, *g = "";
		for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
			if (strlen(dirs[i].dir) != l1 || memcmp(dirs[i].dir, s1, l1))
				continue;
			if (dirs[i].sub &&
			    (strlen(dirs[i].sub) != l2 || memcmp(dirs[i].sub, s2, l2)))
				continue;
			r = dirs[i].resource;
			g = dirs[i].group;
			break;
		}
		*res = r ? strdup(r) : strndup(s1, l1);
		*group = strdup(g);
	}
	if (!*res || !*group) {
		free(*res);
		free(*group);
		return -ENOMEM;
	}
	return 0;
}

char *k8s_crypt_resource(const char *key, size_t key_len)
{
	char *res, *group, *out = NULL;
	if (key_resource(key, key_len, &res, &group) < 0)
		return NULL;
	if (*group) {
		if (asprintf(&out, "%s.%s", res, group) < 0)
			out = NULL;
	} else {
		out = strdup(res);
	}
	free(res);
	free(group);
	return out;
}

/* Does a configured resource name ("secrets", "deployments.apps", "*.apps",
 * "*.", "*.*") cover res in group? */
static bool covers(const char *pat, const char *res, const char *group)
{
	const char *dot = strchr(pat, '.');
	size_t rl = dot ? (size_t)(dot - pat) : strlen(pat);
	const char *pg = dot ? dot + 1 : "";
	bool res_ok = (rl == 1 && pat[0] == '*') || (strlen(res) == rl && !memcmp(pat, res, rl));
	bool group_ok = !strcmp(pg, "*") || !strcmp(pg, group);
	return res_ok && group_ok;
}

static const struct rentry *find_entry(const struct k8s_crypt *c, const char *key, size_t len,
				       char **resname)
{
	char *res, *group;
	*resname = NULL;
	if (key_resource(key, len, &res, &group) < 0)
		return NULL;
	const struct rentry *found = NULL;
	for (size_t i = 0; i < c->n && !found; i++)
		for (size_t j = 0; j < c->e[i].n_res && !found; j++)
			if (covers(c->e[i].res[j], res, group))
				found = &c->e[i];
	if (*group) {
		if (asprintf(resname, "%s.%s", res, group) < 0)
			*resname = NULL;
	} else {
		*resname = strdup(res);
	}
	free(res);
	free(group);
	return found;
}

/* ---- the ciphers ---- */

static const EVP_CIPHER *aes_cipher(bool gcm, size_t keylen)
{
	if (gcm)
		return keylen == 16   ? EVP_aes_128_gcm()
		       : keylen == 24 ? EVP_aes_192_gcm()
				      : EVP_aes_256_gcm();
	return keylen == 16   ? EVP_aes_128_cbc()
	       : keylen == 24 ? EVP_aes_192_cbc()
			      : EVP_aes_256_cbc();
}

/* AES-CBC with PKCS#7 padding, as Go's crypto/cipher does it. */
static int cbc(const struct ckey *k, bool enc, const unsigned char *iv, const unsigned char *in,
	       size_t len, unsigned char *out, size_t *out_len)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0, ok;
	if (!ctx)
		return -ENOMEM;
	ok = EVP_CipherInit_ex(ctx, aes_cipher(false, k->len), NULL, k->secret, iv, enc) &&
	     EVP_CipherUpdate(ctx, out, &l1, in, (int)len) &&
	     EVP_CipherFinal_ex(ctx, out + l1, &l2);
	EVP_CIPHER_CTX_free(ctx);
	*out_len = (size_t)l1 + (size_t)l2;
	return ok ? 0 : -EIO;
}

/* AES-GCM with a 12-byte nonce and a 16-byte tag after the ciphertext. */
static int gcm(const struct ckey *k, bool enc, const unsigned char *nonce, const char *aad,
	       size_t aad_len, const unsigned char *in, size_t len, unsigned char *out,
	       unsigned char *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int l = 0, ok;
	if (!ctx)
		return -ENOMEM;
	ok = EVP_CipherInit_ex(ctx, aes_cipher(true, k->len), NULL, NULL, NULL, enc) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE, NULL) &&
	     EVP_CipherInit_ex(ctx, NULL, NULL, k->secret, nonce, enc) &&
	     EVP_CipherUpdate(ctx, NULL, &l, (const unsigned char *)aad, (int)aad_len) &&
	     EVP_CipherUpdate(ctx, out, &l, in, (int)len) &&
	     (enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG, tag)) &&
	     EVP_CipherFinal_ex(ctx, out + l, &l) &&
	     (!enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG, tag));
	EVP_CIPHER_CTX_free(ctx);
	return ok ? 0 : -EIO;
}

/* Decrypts body (after the prefix) with one key; 0 and *out, or -EIO. */
static int open_with(enum ptype t, const struct ckey *k, const char *key, size_t key_len,
		     const unsigned char *body, size_t len, unsigned char **out, size_t *out_len)
{
	size_t hdr = t == P_AESCBC   ? CBC_IV
		     : t == P_AESGCM ? GCM_NONCE
				     : crypto_secretbox_NONCEBYTES;
	size_t tail = t == P_AESGCM ? GCM_TAG : t == P_SECRETBOX ? crypto_secretbox_MACBYTES : 0;
	if (len < hdr + tail || (t == P_AESCBC && ((len - hdr) % 16 || len == hdr)))
		return -EIO; /* truncated */
	size_t clen = len - hdr - tail;
	unsigned char *p = malloc(clen + 16);
	if (!p)
		return -ENOMEM;
	int ret;
	if (t == P_AESCBC) {
		ret = cbc(k, false, body, body + hdr, len - hdr, p, out_len);
	} else if (t == P_AESGCM) {
		unsigned char tag[GCM_TAG];
		memcpy(tag, body + len - GCM_TAG, GCM_TAG);
		ret = gcm(k, false, body, key, key_len, body + hdr, clen, p, tag);
		*out_len = clen;
	} else {
		ret = crypto_secretbox_open_easy(p, body + hdr, len - hdr, body, k->secret) ? -EIO
											    : 0;
		*out_len = clen;
	}
	/* aescbc authenticates nothing: a wrong key pads correctly about once
	 * in 256 tries, so the plaintext must also look like a stored value. */
	if (ret == 0) {
		enum k8s_encoding e = k8s_detect(p, *out_len);
		if (e != K8S_ENC_PROTOBUF && e != K8S_ENC_JSON && e != K8S_ENC_CBOR)
			ret = -EIO;
	}
	if (ret < 0) {
		sodium_memzero(p, clen + 16);
		free(p);
		return ret;
	}
	*out = p;
	return 0;
}

/* The provider type and key name a value's prefix names, or -ENOENT. */
static int parse_prefix(const char *val, size_t len, enum ptype *t, const char **kn, size_t *kl,
			size_t *body_off)
{
	size_t pl = strlen(ENC_PREFIX);
	if (len < pl || memcmp(val, ENC_PREFIX, pl))
		return -ENOENT;
	const char *p = val + pl, *end = val + len;
	for (int i = P_AESCBC; i <= P_KMS; i++) {
		size_t nl = strlen(ptype_names[i]);
		if ((size_t)(end - p) < nl + 5 || memcmp(p, ptype_names[i], nl) || p[nl] != ':' ||
		    p[nl + 1] != 'v' || p[nl + 3] != ':')
			continue;
		*t = (enum ptype)i;
		*kn = p + nl + 4;
		const char *colon = memchr(*kn, ':', end - *kn);
		if (!colon)
			return -EINVAL;
		*kl = colon - *kn;
		*body_off = colon + 1 - val;
		return 0;
	}
	return -EINVAL;
}

char *k8s_crypt_kms_provider(const void *val, size_t len)
{
	enum ptype t;
	const char *kn;
	size_t kl, off;
	char *out = NULL;
	if (parse_prefix(val, len, &t, &kn, &kl, &off) < 0 || t != P_KMS)
		return NULL;
	/* "k8s:enc:kms:v2:NAME:": the version digit is at a fixed place */
	if (asprintf(&out, "kms:v%c:%.*s", ((const char *)val)[strlen(ENC_PREFIX) + 5], (int)kl,
		     kn) < 0)
		return NULL;
	return out;
}

int k8s_crypt_decrypt(const struct k8s_crypt *c, const char *key, size_t key_len, const void *val,
		      size_t len, void **out, size_t *out_len, char **err)
{
	enum ptype t;
	const char *kn;
	size_t kl, off;
	int ret = parse_prefix(val, len, &t, &kn, &kl, &off);
	char *resname = NULL;
	if (ret == -ENOENT)
		return -ENOENT;
	if (ret < 0) {
		set_err(err, "unknown encryption prefix");
		return -EIO;
	}
	if (t == P_KMS) {
		char *p = k8s_crypt_kms_provider(val, len);
		set_err(err, "%s (a KMS plugin is needed to decrypt)", p ? p : "kms");
		free(p);
		return -ENOTSUP;
	}
	const struct rentry *e = find_entry(c, key, key_len, &resname);
	bool known = false;
	ret = -EIO;
	for (size_t i = 0; e && i < e->n_prov && ret == -EIO; i++) {
		const struct provider *p = &e->prov[i];
		if (p->type != t)
			continue;
		for (size_t j = 0; j < p->n_keys && ret == -EIO; j++) {
			/* the whole "k8s:enc:TYPE:v1:NAME:" prefix, as the apiserver
			 * matches it (so a key name may hold a colon) */
			size_t nl = strlen(p->keys[j].name), at = kn - (const char *)val;
			if (len < at + nl + 1 || memcmp(kn, p->keys[j].name, nl) || kn[nl] != ':')
				continue;
			known = true;
			unsigned char *pl = NULL;
			ret = open_with(t, &p->keys[j], key, key_len,
					(const unsigned char *)val + at + nl + 1, len - at - nl - 1,
					&pl, out_len);
			if (ret == 0)
				*out = pl;
		}
	}
	if (ret == -EIO)
		set_err(err, "%s key %.*s for resource %s: %s", ptype_names[t], (int)kl, kn,
			resname ? resname : "?",
			!e	 ? "the configuration has no entry for this resource"
			: !known ? "no such key in the configuration"
				 : "the key does not decrypt the value (wrong key or damaged "
				   "value)");
	free(resname);
	return ret;
}

static int seal(const struct provider *p, const char *key, size_t key_len, const void *plain,
		size_t len, void **out, size_t *out_len)
{
	const struct ckey *k = &p->keys[0];
	char prefix[300];
	int pl = snprintf(prefix, sizeof(prefix), ENC_PREFIX "%s:v1:%s:", ptype_names[p->type],
			  k->name);
	if (pl < 0 || (size_t)pl >= sizeof(prefix))
		return -EINVAL;
	size_t max = (size_t)pl + 24 + len + 32;
	unsigned char *o = malloc(max), *b = o + pl;
	if (!o)
		return -ENOMEM;
	memcpy(o, prefix, pl);
	int ret;
	size_t bl = 0;
	if (p->type == P_AESCBC) {
		ret = RAND_bytes(b, CBC_IV) == 1 ? cbc(k, true, b, plain, len, b + CBC_IV, &bl)
						 : -EIO;
		bl += CBC_IV;
	} else if (p->type == P_AESGCM) {
		ret = RAND_bytes(b, GCM_NONCE) == 1 ? gcm(k, true, b, key, key_len, plain, len,
							  b + GCM_NONCE, b + GCM_NONCE + len)
						    : -EIO;
		bl = GCM_NONCE + len + GCM_TAG;
	} else {
		randombytes_buf(b, crypto_secretbox_NONCEBYTES);
		ret = crypto_secretbox_easy(b + crypto_secretbox_NONCEBYTES, plain, len, b,
					    k->secret)
			      ? -EIO
			      : 0;
		bl = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + len;
	}
	if (ret < 0) {
		free(o);
		return ret;
	}
	*out = o;
	*out_len = (size_t)pl + bl;
	return 0;
}

int k8s_crypt_encrypt(const struct k8s_crypt *c, const char *key, size_t key_len, const void *plain,
		      size_t len, void **out, size_t *out_len, char **err)
{
	char *resname = NULL;
	const struct rentry *e = find_entry(c, key, key_len, &resname);
	const struct provider *p = e ? &e->prov[0] : NULL;
	int ret;
	if (!p || p->type == P_IDENTITY) {
		*out = util_memdup(plain, len);
		*out_len = len;
		ret = *out ? 0 : -ENOMEM;
	} else if (p->type == P_KMS) {
		set_err(err,
			"resource %s is written with KMS provider %s; that needs the "
			"cluster's KMS plugin, so etcdfs cannot save it",
			resname ? resname : "?", p->kms_name);
		ret = -EPERM;
	} else {
		ret = seal(p, key, key_len, plain, len, out, out_len);
		if (ret < 0)
			set_err(err, "encrypting for %s failed", resname ? resname : "?");
	}
	free(resname);
	return ret;
}
