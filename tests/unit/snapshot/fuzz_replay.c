/* fuzz_replay.c: runs the libFuzzer target over files given as arguments.
 *
 * Lets any compiler (gcc included) replay fuzzer findings and seeds as a
 * regression test, under ASan/UBSan when the build has them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "snaptest.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (skip_without(argv[i]))
			return 77;
	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		size_t len;
		char *data = slurp(argv[i], &len);
		/* Every prefix too: truncation at each 512-byte boundary. */
		for (size_t cut = 0; cut < len; cut += 512)
			LLVMFuzzerTestOneInput((const uint8_t *)data, cut);
		LLVMFuzzerTestOneInput((const uint8_t *)data, len);
		fprintf(stderr, "replayed %s (%zu bytes, %zu prefixes)\n", argv[i], len,
			(len + 511) / 512);
		free(data);
	}
	return 0;
}
