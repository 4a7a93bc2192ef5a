/*
 * replay.c - run a libFuzzer target without libFuzzer, for make check:
 * every file of the corpus directories given, then mutations of them
 * (byte flips, insertions, truncations, splices) from a fixed seed, so
 * a run is repeatable.  Exits non-zero only by the target's own abort.
 *
 *   replay [-n MUTATIONS] CORPUS_DIR...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
	uint8_t *data;
	size_t len;
};

static struct input *inputs;
static size_t ninputs;

static void
load_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL) {
		perror(dir);
		exit(2);
	}
	while ((e = readdir(d)) != NULL) {
		char path[4096];
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if ((f = fopen(path, "rb")) == NULL)
			continue;
		inputs = realloc(inputs, (ninputs + 1) * sizeof(*inputs));
		inputs[ninputs].data = malloc(1 << 16);
		inputs[ninputs].len = fread(inputs[ninputs].data, 1, 1 << 16, f);
		fclose(f);
		ninputs++;
	}
	closedir(d);
}

static uint64_t state = 0x9e3779b97f4a7c15ull;

static uint64_t
next(void)
{
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

int
main(int argc, char **argv)
{
	long mutations = 100000;
	uint8_t buf[1024];
	int i = 1;

	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		mutations = atol(argv[2]);
		i = 3;
	}
	for (; i < argc; i++)
		load_dir(argv[i]);
	if (ninputs == 0) {
		fprintf(stderr, "replay: no corpus files\n");
		return 2;
	}
	for (size_t k = 0; k < ninputs; k++)
		LLVMFuzzerTestOneInput(inputs[k].data, inputs[k].len);
	for (long m = 0; m < mutations; m++) {
		const struct input *a = &inputs[next() % ninputs], *b = &inputs[next() % ninputs];
		size_t len = a->len < sizeof(buf) ? a->len : sizeof(buf);
		memcpy(buf, a->data, len);
		for (int edits = 1 + (int)(next() % 4); edits > 0; edits--) {
			size_t at = len ? next() % len : 0;
			switch (next() % 5) {
			case 0: /* flip a byte */
				if (len)
					buf[at] ^= (uint8_t)(1u << (next() % 8));
				break;
			case 1: /* an interesting byte */
				if (len)
					buf[at] = (uint8_t) "\0.-+eE9%\"(),nNiI"[next() % 16];
				break;
			case 2: /* insert */
				if (len < sizeof(buf)) {
					memmove(buf + at + 1, buf + at, len - at);
					buf[at] = (uint8_t)next();
					len++;
				}
				break;
			case 3: /* truncate */
				len = at;
				break;
			default: { /* splice a piece of another input */
				size_t from = b->len ? next() % b->len : 0, n = b->len - from;
				if (n > sizeof(buf) - at)
					n = sizeof(buf) - at;
				memcpy(buf + at, b->data + from, n);
				if (at + n > len)
					len = at + n;
			}
			}
		}
		LLVMFuzzerTestOneInput(buf, len);
	}
	printf("replay: %zu corpus inputs and %ld mutations, no crash\n", ninputs, mutations);
	return 0;
}
