/*
 * daemon/text/chat_buf.h: a growable byte buffer for building prompts and JSON text.
 *
 *   struct dsd_chat_buf b = {0};
 *   if (dsd_chat_buf_puts(&b, "<｜User｜>") < 0 || dsd_chat_buf_put(&b, text, len) < 0)
 *       goto oom;
 *   use(b.data, b.len);          // b.data is always NUL-terminated once anything was added
 *   dsd_chat_buf_free(&b);
 *
 * Appends return 0, or -ENOMEM (the buffer keeps what it had). The text layer's strings may
 * hold NUL bytes (JSON "\u0000" is legal), so lengths are explicit everywhere.
 */
#ifndef DSD_TEXT_CHAT_BUF_H
#define DSD_TEXT_CHAT_BUF_H

#include <stddef.h>

struct dsd_chat_buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Appends len bytes; 0 or -ENOMEM. */
int dsd_chat_buf_put(struct dsd_chat_buf *b, const void *bytes, size_t len);
/* Appends a NUL-terminated string; 0 or -ENOMEM. */
int dsd_chat_buf_puts(struct dsd_chat_buf *b, const char *s);
/* Appends printf-formatted text; 0 or -ENOMEM. */
int dsd_chat_buf_printf(struct dsd_chat_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (n <= len), keeping the rest. */
void dsd_chat_buf_consume(struct dsd_chat_buf *b, size_t n);
/* Hands the bytes to the caller (NUL-terminated, malloc'd; free() them) and empties b.
 * Returns NULL only on -ENOMEM for an empty buffer. */
char *dsd_chat_buf_take(struct dsd_chat_buf *b, size_t *len);
void dsd_chat_buf_free(struct dsd_chat_buf *b);

#endif
