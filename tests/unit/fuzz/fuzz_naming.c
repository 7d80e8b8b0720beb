/* fuzz_naming.c: libFuzzer target for key segment <-> file name escaping.
 * Properties: any byte string encodes to a name that decodes back to it;
 * any name that decodes re-encodes to exactly itself (a bijection). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/naming.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[NAMING_NAME_MAX + 1], back[NAMING_NAME_MAX + 1];
	int ns = size ? data[0] & 1 : 0;
	const char *seg = (const char *)data + (size ? 1 : 0);
	size_t seg_len = size ? size - 1 : 0;
	/* segments never contain '/' */
	if (!memchr(seg, '/', seg_len)) {
		ssize_t n = naming_encode(seg, seg_len, ns, name, sizeof(name));
		if (n >= 0) {
			int bns;
			ssize_t m = naming_decode(name, back, sizeof(back), &bns);
			if (m != (ssize_t)seg_len || bns != ns || memcmp(back, seg, seg_len) != 0)
				abort();
		}
	}
	/* the input as a name */
	if (size && size <= NAMING_NAME_MAX && !memchr(data, 0, size) && !memchr(data, '/', size)) {
		char in[NAMING_NAME_MAX + 1];
		memcpy(in, data, size);
		in[size] = 0;
		int bns;
		ssize_t m = naming_decode(in, back, sizeof(back), &bns);
		if (m >= 0) {
			ssize_t n = naming_encode(back, m, bns, name, sizeof(name));
			if (n < 0 || strcmp(name, in) != 0)
				abort();
		}
	}
	return 0;
}
