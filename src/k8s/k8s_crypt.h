/* k8s_crypt.h: Kubernetes encryption at rest, read from the apiserver's own
 * EncryptionConfiguration file (kube-apiserver --encryption-provider-config).
 *
 * Stored values written through an encrypting provider start with
 * "k8s:enc:PROVIDER:v1:KEYNAME:" followed by the provider's bytes:
 *   aescbc     16-byte IV, AES-CBC ciphertext with PKCS#7 padding
 *   aesgcm     12-byte nonce, AES-GCM ciphertext and 16-byte tag; the
 *              authenticated data is the etcd key ("/registry/secrets/NS/NAME")
 *   secretbox  24-byte nonce, XSalsa20-Poly1305 (NaCl secretbox: tag, ciphertext)
 *   kms        "k8s:enc:kms:v1:NAME:" or "k8s:enc:kms:v2:NAME:": needs the
 *              cluster's KMS plugin, so never decrypted here
 * The identity provider stores the plain value. Which providers apply to a
 * value follows from its etcd key: the first `resources` entry of the file
 * that names the key's resource (or a wildcard covering it). Writes use the
 * first provider of that entry (and its first key), as the apiserver does.
 *
 * Thread-safe once loaded (read-only); outputs are malloc'd and owned by the
 * caller; errors are negative errno values, with *err (optional) saying why.
 * Key material never appears in an error message.
 */
#ifndef ETCDFS_K8S_CRYPT_H
#define ETCDFS_K8S_CRYPT_H

#include <stddef.h>

struct k8s_crypt;

/* Reads and checks the configuration at path. Refuses (-EPERM) a file that
 * group or others may read, as ssh refuses a private key: it holds the
 * cluster's keys. -EINVAL for a file that is not an EncryptionConfiguration
 * (apiserver.config.k8s.io/v1) or EncryptionConfig (v1), or has a key of the
 * wrong size or bad base64. */
int k8s_crypt_load(const char *path, struct k8s_crypt **out, char **err);
void k8s_crypt_free(struct k8s_crypt *c);

/* The plain stored value of val, stored under etcd key key.
 *   0        *out holds the plaintext (a protobuf, JSON or CBOR value)
 *   -ENOENT  val is not encrypted (no "k8s:enc:" prefix): use it as is
 *   -ENOTSUP a KMS value; *err names the provider ("kms:v2:NAME")
 *   -EIO     no key for it, a wrong key, or damaged ciphertext; *err names
 *            the key name and the resource. Nothing is returned that did
 *            not authenticate (aescbc has no tag: its plaintext must at
 *            least pad correctly and look like a Kubernetes value). */
int k8s_crypt_decrypt(const struct k8s_crypt *c, const char *key, size_t key_len, const void *val,
		      size_t len, void **out, size_t *out_len, char **err);

/* Encrypts plain for storage under key with the first provider the
 * configuration lists for key's resource (identity, or no entry for the
 * resource: a copy of plain). -EPERM when that provider is KMS. */
int k8s_crypt_encrypt(const struct k8s_crypt *c, const char *key, size_t key_len, const void *plain,
		      size_t len, void **out, size_t *out_len, char **err);

/* The KMS provider a value names ("kms:v1:NAME" / "kms:v2:NAME", malloc'd),
 * or NULL when val is not a KMS value. Needs no configuration. */
char *k8s_crypt_kms_provider(const void *val, size_t len);

/* The resource an etcd key belongs to, as the configuration names it
 * ("secrets", "deployments.apps", "widgets.example.com"), malloc'd; NULL for
 * a key outside /registry/ or out of memory. */
char *k8s_crypt_resource(const char *key, size_t key_len);

#endif
