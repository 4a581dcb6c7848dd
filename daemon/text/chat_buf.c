#include "chat_buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(struct dsd_chat_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return -ENOMEM;
    size_t need = b->len + extra + 1; /* + 1: the NUL that keeps data a C string */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int dsd_chat_buf_put(struct dsd_chat_buf *b, const void *bytes, size_t len)
{
    if (reserve(b, len) < 0)
        return -ENOMEM;
    if (len)
        memcpy(b->data + b->len, bytes, len);
    b->len += len;
    b->data[b->len] = 0;
    return 0;
}

int dsd_chat_buf_puts(struct dsd_chat_buf *b, const char *s)
{
    return dsd_chat_buf_put(b, s, strlen(s));
}

int dsd_chat_buf_printf(struct dsd_chat_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n) < 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void dsd_chat_buf_consume(struct dsd_chat_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = 0;
}

char *dsd_chat_buf_take(struct dsd_chat_buf *b, size_t *len)
{
    if (!b->data && reserve(b, 0) < 0)
        return NULL;
    b->data[b->len] = 0;
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void dsd_chat_buf_free(struct dsd_chat_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
