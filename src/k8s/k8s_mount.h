/* k8s_mount.h: the mount's Kubernetes policy: which values are shown decoded, and how
 * edited text goes back.
 *
 * Values under /registry/ that are Kubernetes objects (protobuf behind the
 * k8s\0 magic, or JSON) are shown as YAML (or JSON with --format=json), with
 * metadata.resourceVersion = the key's mod_revision like the apiserver.
 * Everything else is shown as its raw bytes. Saves of decoded files are
 * validated and encoded back to the original encoding (k8s.h).
 * With an encryption configuration (k8s_crypt.h), encrypted values are shown
 * decrypted and saves are encrypted as the apiserver would; CBOR values are
 * shown decoded and read-only.
 * No FUSE here; thread-safe; outputs are malloc'd and owned by the caller.
 */
#ifndef ETCDFS_K8S_MOUNT_H
#define ETCDFS_K8S_MOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum k8s_mount_format { K8S_MOUNT_RAW = 0, K8S_MOUNT_YAML, K8S_MOUNT_JSON };

struct k8s_crypt;

struct k8s_mount {
	enum k8s_mount_format format;
	struct k8s_crypt *crypt; /* NULL: encrypted values are shown raw */
};

/* cache_render_fn: 0 and the text, -ENOTSUP to show the raw bytes, or -EIO
 * (logged with the key name and resource) for an encrypted value that the
 * configuration cannot open. KMS values are shown raw. */
int k8s_mount_render(void *mount, const char *key, size_t key_len, const char *val, size_t val_len,
		     int64_t mod_revision, char **out, size_t *out_len);

/* cache_time_fn: the time a value under /registry/ records as its latest
 * write (k8s_object_time), in ns since the epoch; 0 for other keys and for
 * values that record none. Whatever the format: raw files have times too. */
int64_t k8s_mount_value_time(void *mount, const char *key, size_t key_len, const char *val,
			     size_t val_len);

/* The value of a Kubernetes xattr of a file: "user.etcdfs.k8s.encryption"
 * names the provider of an encrypted value ("aescbc:v1:KEYNAME",
 * "kms:v2:NAME"; KMS values stay raw and read-only). 0 and a malloc'd *out,
 * or -ENODATA. */
int k8s_mount_xattr(void *mount, const char *key, size_t key_len, const char *val, size_t val_len,
		    const char *name, char **out, size_t *out_len);

/* True if saves of key may need encoding (it is under /registry/). */
bool k8s_mount_applies(void *mount, const char *key, size_t key_len);

/* Turns saved text into the bytes to store under key. orig (may be NULL for
 * a new key) is the stored value the edit started from, at orig_rev.
 * Returns 0 with *out, -ENOTSUP when the text is stored as is (raw keys),
 * or -EINVAL / -EPERM with *err saying why the save is refused. */
int k8s_mount_encode(void *mount, const char *key, size_t key_len, const char *orig,
		     size_t orig_len, int64_t orig_rev, const char *text, size_t text_len,
		     char **out, size_t *out_len, char **err);

#endif
