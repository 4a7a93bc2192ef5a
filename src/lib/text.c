/*
 * text.c - UTF-8 checks for text that came from outside (text.h).
 */
#include "text.h"

size_t
utf8_seq_len(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c, lo = 0x80, hi = 0xbf;
	size_t need;

	*bad = 1;
	if (n == 0)
		return 0;
	c = s[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return 0; /* continuation byte, C0, C1, F5..FF */
	}
	for (size_t i = 1; i <= need; i++) {
		unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xbf;
		if (i >= n || s[i] < min || s[i] > max) {
			*bad = i;
			return 0;
		}
	}
	return need + 1;
}

size_t
utf8_char_len(const unsigned char *s, size_t n)
{
	size_t bad;

	return utf8_seq_len(s, n, &bad);
}
