/*
 * text.h - the checks every parser of outside text shares: well-formed
 * UTF-8 characters and hexadecimal digits.
 */
#ifndef TAILGATE_TEXT_H
#define TAILGATE_TEXT_H

#include <stddef.h>

/* The length (1-4) of the well-formed UTF-8 character at s[0..n), or 0
 * when it is not one (a stray continuation byte, an overlong form, a
 * surrogate, above U+10FFFF, or cut short by n).  For text that came from
 * a client: JSON replies must be valid UTF-8 whatever was asked. */
size_t utf8_char_len(const unsigned char *s, size_t n);
/* The same, and when it is not one, *bad = the length (>= 1) of its
 * maximal invalid subpart (Unicode 15, 3.9, "U+FFFD substitution of
 * maximal subparts"), for encoders that replace bad bytes. */
size_t utf8_seq_len(const unsigned char *s, size_t n, size_t *bad);

/* The value of one hexadecimal digit, or -1: for the parsers' escapes
 * (COPY's \xHH, the query string's %HH, JSON's \uHHHH). */
static inline int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#endif
