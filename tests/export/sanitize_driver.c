/* The generated C under AddressSanitizer and UndefinedBehaviorSanitizer (a program: ctypes
 * cannot load a sanitized library). The state lives in a malloc of exactly its size, so any
 * overrun is caught; tokens out of range must return NULL and leave the state as it was.
 *
 *   driver TOKENS.bin OUT.bin   tokens: int32; out: per step the int8 logits, carried h and c
 * Exit status: 0 ok, 2 I/O, 3 a bad token touched the state, 4 a good token returned NULL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "char_lstm.h"

static int bad_tokens_leave_state(char_lstm_state *s) {
    const int32_t bad[] = {-1, CHAR_LSTM_VOCAB_SIZE, INT32_MIN, INT32_MAX};
    char_lstm_state *before = malloc(sizeof *before);
    if (before == NULL) return 0;
    memcpy(before, s, sizeof *s);
    int ok = char_lstm_step(NULL, 0) == NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok = ok && char_lstm_step(s, bad[i]) == NULL && memcmp(before, s, sizeof *s) == 0;
    free(before);
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) return 2;
    fseek(f, 0, SEEK_END);
    const size_t n = (size_t)ftell(f) / 4;
    fseek(f, 0, SEEK_SET);
    int32_t *tokens = malloc(n * 4 + 4);
    if (tokens == NULL || fread(tokens, 4, n, f) != n) return 2;
    fclose(f);
    char_lstm_state *s = malloc(sizeof *s);
    const size_t row = CHAR_LSTM_VOCAB_SIZE + sizeof s->h + sizeof s->c;
    int8_t *out = malloc(n * row);
    if (s == NULL || out == NULL) return 2;
    char_lstm_reset(s);
    if (!bad_tokens_leave_state(s)) return 3;
    for (size_t t = 0; t < n; t++) {
        const int8_t *q = char_lstm_step(s, tokens[t]);
        if (q == NULL) return 4;
        memcpy(out + t * row, q, CHAR_LSTM_VOCAB_SIZE);
        memcpy(out + t * row + CHAR_LSTM_VOCAB_SIZE, s->h, sizeof s->h);
        memcpy(out + t * row + CHAR_LSTM_VOCAB_SIZE + sizeof s->h, s->c, sizeof s->c);
        if (t == n / 2 && !bad_tokens_leave_state(s)) return 3;
    }
    f = fopen(argv[2], "wb");
    if (f == NULL || fwrite(out, row, n, f) != n) return 2;
    fclose(f);
    free(out);
    free(tokens);
    free(s);
    return 0;
}
