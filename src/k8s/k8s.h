/* k8s.h: the Kubernetes value codec: storage bytes <-> YAML/JSON text.
 *
 * Recognizes the encodings the apiserver writes to etcd (protobuf with the
 * "k8s\0" magic and a runtime.Unknown envelope; JSON ending in a newline; CBOR;
 * "k8s:enc:" encrypted values) and turns protobuf and JSON values into the text
 * kubectl shows (YAML like `kubectl get -o yaml`, JSON in Go struct order).
 * Encoding goes back to the original encoding losslessly: fields unknown to the
 * schema, explicit zero values and field order of the original survive, and
 * re-encoding unedited text yields the original bytes exactly.
 *
 * Memory: every char ** / void ** output is malloc'd and owned by the caller,
 * who frees it with free(). *err outputs (optional, may be NULL) are set only
 * on failure. All functions are thread-safe (no global mutable state).
 * Errors are negative errno values:
 *   -EINVAL   undecodable bytes, invalid YAML/JSON, unknown field, wrong type,
 *             validation failure (*err names the line or field)
 *   -ENOTSUP  CBOR, encrypted values, kinds missing from the schema,
 *             embedded CBOR; the caller shows such values raw and read-only
 *   -ENOMEM   out of memory
 */
#ifndef ETCDFS_K8S_H
#define ETCDFS_K8S_H

#include <stddef.h>
#include <stdint.h>

enum k8s_encoding { K8S_ENC_RAW, K8S_ENC_PROTOBUF, K8S_ENC_JSON, K8S_ENC_CBOR, K8S_ENC_ENCRYPTED };
enum k8s_format { K8S_FMT_YAML, K8S_FMT_JSON };

/* Classify a stored value by its first bytes (cheap; does not parse it all). */
enum k8s_encoding k8s_detect(const void *val, size_t len);

/* The latest write time a stored object records, in ns since the epoch:
 * the maximum of metadata.creationTimestamp and metadata.managedFields[].time,
 * and for Events (core v1, events.k8s.io v1 and v1beta1) also lastTimestamp
 * (deprecatedLastTimestamp), eventTime and series.lastObservedTime. Reads
 * protobuf and JSON values in place, without decoding or allocating (about
 * as cheap as one pass over the metadata). Returns 0 and *ns, -ENOENT when
 * the object records no time, -EINVAL when it is malformed, -ENOTSUP when it
 * is not a Kubernetes protobuf or JSON value (or has a contentEncoding). */
int k8s_object_time(const void *val, size_t len, int64_t *ns);

/* Decode a stored value to text. resource_version > 0 is shown as
 * metadata.resourceVersion (the apiserver shows the key's mod_revision).
 * YAML is kubectl's `-o yaml`; JSON is indented by 4 like `-o json`, in Go
 * struct field order, with a final newline. out may be NULL when only the
 * text's length is wanted (*out_len): the text is then measured as it is
 * written, never held whole. */
int k8s_decode(const void *val, size_t len, enum k8s_format fmt, int64_t resource_version,
	       char **out, size_t *out_len, char **err);

/* As k8s_decode, but with the type to use when the protobuf envelope carries
 * no apiVersion/kind (some kinds, e.g. WatchEvent, are written that way).
 * api_version/kind may be NULL. */
int k8s_decode_typed(const void *val, size_t len, enum k8s_format fmt, int64_t resource_version,
		     const char *api_version, const char *kind, char **out, size_t *out_len,
		     char **err);

/* Encode edited text (YAML or JSON) back to storage bytes in the encoding of
 * orig (protobuf for built-in kinds, JSON + "\n" for JSON-stored objects),
 * losslessly relative to orig. orig may be NULL for a new object: then the
 * encoding is protobuf if the kind is in the schema (JSON for the apiextensions
 * and apiregistration groups, which the apiserver stores as JSON), else JSON.
 * Validation: apiVersion and kind unchanged vs orig; metadata.name and
 * metadata.namespace equal expect_name / expect_namespace when those are
 * non-NULL (a missing one is filled in); a resourceVersion in the text must
 * equal resource_version when that is > 0, and is then cleared in the stored
 * bytes (with resource_version == 0 the text's value is stored as is). Invalid
 * YAML/JSON, an unknown field on a known kind or a value of the wrong type fail
 * with -EINVAL and *err naming the line or field. */
int k8s_encode(const void *orig, size_t orig_len, const char *text, size_t text_len,
	       const char *expect_name, const char *expect_namespace, int64_t resource_version,
	       void **out, size_t *out_len, char **err);

/* As k8s_encode, with the type to use when the text has no apiVersion/kind
 * (may be NULL), and, for a new object (orig NULL), the encoding to write:
 * K8S_ENC_PROTOBUF or K8S_ENC_JSON, or K8S_ENC_RAW to choose as k8s_encode does. */
int k8s_encode_typed(const void *orig, size_t orig_len, const char *text, size_t text_len,
		     const char *expect_name, const char *expect_namespace,
		     int64_t resource_version, const char *api_version, const char *kind,
		     enum k8s_encoding new_encoding, void **out, size_t *out_len, char **err);

/* As k8s_encode_typed, but a new protobuf object (orig NULL) is written as
 * Kubernetes release `release` ("1.15") wrote it: fields that release did not
 * define are written only when the text has them, and fields only older
 * releases define are written as they were then. Edits (orig set) are the same
 * as with k8s_encode_typed. -EINVAL when release is not "1.N". */
int k8s_encode_release(const char *release, const void *orig, size_t orig_len, const char *text,
		       size_t text_len, const char *expect_name, const char *expect_namespace,
		       int64_t resource_version, const char *api_version, const char *kind,
		       enum k8s_encoding new_encoding, void **out, size_t *out_len, char **err);

/* For a protobuf or JSON value whose kind only older Kubernetes releases serve:
 * the first release that no longer does ("1.25"), e.g. for an xattr
 * user.etcdfs.k8s.schema=removed-in-1.25. NULL for current kinds, unknown kinds
 * and other encodings. The string is static. */
const char *k8s_removed_in(const void *val, size_t len);

#endif
