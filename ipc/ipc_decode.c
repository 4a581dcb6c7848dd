/*
 * The message decoder: bounded pre-scan, msgpack-c, then a walk that checks every known key
 * of every message against PROTOCOL.md and copies what it keeps into the message's arena.
 *
 * Every helper returns 0 or -EPROTO/-ENOMEM with d->fail filled; callers just propagate.
 * Messages name the message type and the key path: `generate: "messages[2].role" must be ...`.
 */
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ipc_arena.h"
#include "ipc_msg.h"
#include "ipc_scan.h"

struct dec {
    struct dsd_ipc_arena *arena;
    struct dsd_ipc_fail *fail;
    const char *type;       /* message type name, the first word of every error */
    char path[128];         /* key path of the map being walked ("" at top level) */
};

/* ---- errors ----------------------------------------------------------------------------- */

static int fail_key(struct dec *d, uint32_t code, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_key(struct dec *d, uint32_t code, const char *key, const char *fmt, ...)
{
    char what[DSD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return dsd_ipc_failf(d->fail, -EPROTO, code, "%s: \"%s%s%s\" %s", d->type, d->path,
                         d->path[0] && key[0] ? "." : "", key, what);
}

static int fail_oom(struct dec *d)
{
    return dsd_ipc_failf(d->fail, -ENOMEM, DSD_IPC_E_INTERNAL, "%s: out of memory decoding",
                         d->type);
}

static const char *type_desc(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "a bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "an integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "a map";
    case MSGPACK_OBJECT_BIN: return "binary";
    case MSGPACK_OBJECT_EXT: return "an ext object";
    }
    return "an unknown object";
}

/* Path handling for nested maps: push returns the old length to restore. */
static size_t path_push(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(struct dec *d, const char *fmt, ...)
{
    size_t old = strlen(d->path);
    char part[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(part, sizeof part, fmt, ap);
    va_end(ap);
    snprintf(d->path + old, sizeof d->path - old, "%s%s", old ? "." : "", part);
    return old;
}

static void path_pop(struct dec *d, size_t old)
{
    d->path[old] = 0;
}

/* ---- scalar fields ---------------------------------------------------------------------- */

static int want_uint(struct dec *d, const msgpack_object *o, const char *key, uint64_t lo,
                     uint64_t hi, uint64_t *out)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be in [%llu, %llu], got %lld",
                        (unsigned long long)lo, (unsigned long long)hi, (long long)o->via.i64);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be an unsigned integer, got %s",
                        type_desc(o));
    uint64_t v = o->via.u64;
    if (v < lo || v > hi)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be in [%llu, %llu], got %llu",
                        (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)v);
    *out = v;
    return 0;
}

static int want_u32(struct dec *d, const msgpack_object *o, const char *key, uint32_t lo,
                    uint32_t hi, uint32_t *out)
{
    uint64_t v = 0;
    int rc = want_uint(d, o, key, lo, hi, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

static int want_int(struct dec *d, const msgpack_object *o, const char *key, int64_t lo,
                    int64_t hi, int64_t *out)
{
    int64_t v;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = o->via.i64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be in [%lld, %lld], got %llu",
                        (long long)lo, (long long)hi, (unsigned long long)o->via.u64);
    else
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be an integer, got %s",
                        type_desc(o));
    if (v < lo || v > hi)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be in [%lld, %lld], got %lld",
                        (long long)lo, (long long)hi, (long long)v);
    *out = v;
    return 0;
}

/* A number in [lo, hi], or (lo, hi] when lo_open. Integers are accepted (JSON tools write 1
 * for 1.0); NaN and infinities never are. */
static int want_num(struct dec *d, const msgpack_object *o, const char *key, double lo,
                    double hi, bool lo_open, double *out)
{
    double v;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: v = (double)o->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: v = (double)o->via.i64; break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: v = o->via.f64; break;
    default:
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be a number, got %s",
                        type_desc(o));
    }
    if (!isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be a finite number in %c%g, %g], got %g",
                        lo_open ? '(' : '[', lo, hi, v);
    *out = v;
    return 0;
}

static int want_finite(struct dec *d, const msgpack_object *o, const char *key, double *out)
{
    return want_num(d, o, key, -HUGE_VAL, HUGE_VAL, false, out);
}

static int want_bool(struct dec *d, const msgpack_object *o, const char *key, bool *out)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be a bool, got %s", type_desc(o));
    *out = o->via.boolean;
    return 0;
}

/* Copies bytes into the arena with a terminating NUL. */
static int copy_str(struct dec *d, const char *p, size_t n, struct dsd_ipc_str *out)
{
    char *s = dsd_ipc_arena_alloc(&d->arena, n + 1);
    if (!s)
        return fail_oom(d);
    if (n)
        memcpy(s, p, n);
    s[n] = 0;
    out->ptr = s;
    out->len = (uint32_t)n;
    return 0;
}

static int want_str(struct dec *d, const msgpack_object *o, const char *key, uint32_t minlen,
                    uint32_t maxlen, struct dsd_ipc_str *out)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be a string, got %s", type_desc(o));
    uint32_t n = o->via.str.size;
    if (n < minlen || n > maxlen)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key,
                        "must be a string of %u to %u bytes, got %u bytes", minlen, maxlen, n);
    if (!dsd_ipc_utf8_valid(o->via.str.ptr, n))
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "is not valid UTF-8");
    return copy_str(d, o->via.str.ptr, n, out);
}

/* One of names[0..n); the index in *out. */
static int want_enum(struct dec *d, const msgpack_object *o, const char *key,
                     const char *(*name_of)(int), int first, int count, int *out)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be a string, got %s", type_desc(o));
    char allowed[256] = "";
    for (int i = first; i < count; i++) {
        const char *nm = name_of(i);
        if (strlen(nm) == o->via.str.size && memcmp(nm, o->via.str.ptr, o->via.str.size) == 0) {
            *out = i;
            return 0;
        }
        size_t l = strlen(allowed);
        snprintf(allowed + l, sizeof allowed - l, "%s%s", i > first ? ", " : "", nm);
    }
    return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be one of %s, got \"%.*s\"", allowed,
                    (int)(o->via.str.size > 40 ? 40 : o->via.str.size), o->via.str.ptr);
}

static int want_array(struct dec *d, const msgpack_object *o, const char *key, uint32_t minn,
                      uint32_t maxn)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be an array, got %s", type_desc(o));
    if (o->via.array.size < minn || o->via.array.size > maxn)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must have %u to %u entries, got %u", minn,
                        maxn, o->via.array.size);
    return 0;
}

static int want_map(struct dec *d, const msgpack_object *o, const char *key)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be a map, got %s", type_desc(o));
    return 0;
}

static int want_u32_array(struct dec *d, const msgpack_object *o, const char *key,
                          uint32_t minn, uint32_t maxn, const uint32_t **out, uint32_t *n)
{
    int rc = want_array(d, o, key, minn, maxn);
    if (rc)
        return rc;
    uint32_t cnt = o->via.array.size;
    uint32_t *v = dsd_ipc_arena_alloc(&d->arena, (size_t)cnt * sizeof *v);
    if (!v)
        return fail_oom(d);
    for (uint32_t i = 0; i < cnt; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > UINT32_MAX) {
            /* an integer out of range is named by its value, anything else by its type */
            char got[32];
            if (e->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                snprintf(got, sizeof got, "%llu", (unsigned long long)e->via.u64);
            else if (e->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                snprintf(got, sizeof got, "%lld", (long long)e->via.i64);
            else
                snprintf(got, sizeof got, "%s", type_desc(e));
            return fail_key(d, e->type == MSGPACK_OBJECT_POSITIVE_INTEGER || e->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                                   ? DSD_IPC_E_BAD_VALUE
                                   : DSD_IPC_E_WRONG_TYPE,
                            key, "entry %u must be an integer in [0, 4294967295], got %s", i, got);
        }
        v[i] = (uint32_t)e->via.u64;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* ---- maps ------------------------------------------------------------------------------- */

typedef int (*field_fn)(struct dec *d, int idx, const char *key, const msgpack_object *val,
                        void *ctx);

static int key_index(const msgpack_object *k, const char *const *names, int n)
{
    if (k->type != MSGPACK_OBJECT_STR)
        return -1;
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == k->via.str.size && memcmp(names[i], k->via.str.ptr, k->via.str.size) == 0)
            return i;
    return -1;
}

static bool is_key(const msgpack_object *k, const char *name)
{
    return k->type == MSGPACK_OBJECT_STR && strlen(name) == k->via.str.size &&
           memcmp(name, k->via.str.ptr, k->via.str.size) == 0;
}

/* Calls fn for each known key of map (unknown keys are skipped: forward compatibility); a
 * known key given twice is bad_value. top: also skip "t" and "id" (the dispatcher's). */
static int walk_map(struct dec *d, const msgpack_object *map, const char *const *names, int n,
                    bool top, uint64_t *seen, field_fn fn, void *ctx)
{
    *seen = 0;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (top && (is_key(&kv->key, "t") || is_key(&kv->key, "id")))
            continue;
        int idx = key_index(&kv->key, names, n);
        if (idx < 0)
            continue;
        if (*seen & (1ull << idx))
            return fail_key(d, DSD_IPC_E_BAD_VALUE, names[idx], "is given twice");
        *seen |= 1ull << idx;
        int rc = fn(d, idx, names[idx], &kv->val, ctx);
        if (rc)
            return rc;
    }
    return 0;
}

static int need(struct dec *d, uint64_t seen, const char *const *names, int idx)
{
    if (seen & (1ull << idx))
        return 0;
    return fail_key(d, DSD_IPC_E_MISSING_FIELD, names[idx], "is required");
}

/* Walks a nested map under key, with the key appended to the path for error messages. */
static int walk_sub(struct dec *d, const msgpack_object *o, const char *key,
                    const char *const *names, int n, uint64_t *seen, field_fn fn, void *ctx)
{
    int rc = want_map(d, o, key);
    if (rc)
        return rc;
    size_t old = path_push(d, "%s", key);
    rc = walk_map(d, o, names, n, false, seen, fn, ctx);
    path_pop(d, old);
    return rc;
}

static int need_sub(struct dec *d, uint64_t seen, const char *key, const char *const *names,
                    int idx)
{
    size_t old = path_push(d, "%s", key);
    int rc = need(d, seen, names, idx);
    path_pop(d, old);
    return rc;
}

#define NKEYS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- enum name tables ------------------------------------------------------------------- */

static const char *finish_name_i(int i) { return dsd_ipc_finish_name((enum dsd_ipc_finish)i); }
static const char *role_name_i(int i) { return dsd_ipc_role_name((enum dsd_ipc_role)i); }
static const char *health_name_i(int i) { return dsd_ipc_health_name((enum dsd_ipc_health)i); }

/* ---- chat messages ---------------------------------------------------------------------- */

static const char *const call_keys[] = {"id", "type", "function"};
enum { C_ID, C_TYPE, C_FUNCTION };
static const char *const fn_keys[] = {"name", "arguments"};
enum { F_NAME, F_ARGUMENTS };

static int fn_field(struct dec *d, int idx, const char *key, const msgpack_object *v, void *ctx)
{
    struct dsd_ipc_tool_call *c = ctx;
    if (idx == F_NAME)
        return want_str(d, v, key, 1, DSD_IPC_MAX_NAME, &c->name);
    return want_str(d, v, key, 0, UINT32_MAX, &c->arguments);
}

static int call_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                      void *ctx)
{
    struct dsd_ipc_tool_call *c = ctx;
    switch (idx) {
    case C_ID:
        return want_str(d, v, key, 0, DSD_IPC_MAX_NAME, &c->id);
    case C_TYPE:
        if (!(v->type == MSGPACK_OBJECT_STR && is_key(v, "function")))
            return v->type == MSGPACK_OBJECT_STR
                       ? fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be \"function\"")
                       : fail_key(d, DSD_IPC_E_WRONG_TYPE, key, "must be a string, got %s",
                                  type_desc(v));
        return 0;
    default: {
        uint64_t seen;
        int rc = walk_sub(d, v, key, fn_keys, NKEYS(fn_keys), &seen, fn_field, c);
        if (rc == 0)
            rc = need_sub(d, seen, key, fn_keys, F_NAME);
        if (rc == 0)
            rc = need_sub(d, seen, key, fn_keys, F_ARGUMENTS);
        return rc;
    }
    }
}

static const char *const part_keys[] = {"type", "text"};

/* OpenAI content: a string, nil, or an array of {"type": "text", "text": str} joined. */
static int want_content(struct dec *d, const msgpack_object *v, const char *key,
                        struct dsd_ipc_str *out)
{
    if (v->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (v->type == MSGPACK_OBJECT_STR)
        return want_str(d, v, key, 0, UINT32_MAX, out);
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, key,
                        "must be a string, nil or an array of text parts, got %s", type_desc(v));
    uint64_t total = 0;
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *p = &v->via.array.ptr[i];
        size_t old = path_push(d, "%s[%u]", key, i);
        int rc = want_map(d, p, "");
        const msgpack_object *type = NULL, *text = NULL;
        for (uint32_t k = 0; rc == 0 && k < p->via.map.size; k++) {
            int idx = key_index(&p->via.map.ptr[k].key, part_keys, 2);
            const msgpack_object **slot = idx == 0 ? &type : idx == 1 ? &text : NULL;
            if (!slot)
                continue;
            if (*slot)
                rc = fail_key(d, DSD_IPC_E_BAD_VALUE, part_keys[idx], "is given twice");
            *slot = &p->via.map.ptr[k].val;
        }
        if (rc == 0 && !type)
            rc = fail_key(d, DSD_IPC_E_MISSING_FIELD, "type", "is required");
        if (rc == 0 && type->type != MSGPACK_OBJECT_STR)
            rc = fail_key(d, DSD_IPC_E_WRONG_TYPE, "type", "must be a string, got %s",
                          type_desc(type));
        if (rc == 0 && !is_key(type, "text"))
            rc = fail_key(d, DSD_IPC_E_BAD_VALUE, "type",
                          "\"%.*s\" is not supported (only \"text\" parts)",
                          (int)(type->via.str.size > 40 ? 40 : type->via.str.size),
                          type->via.str.ptr);
        if (rc == 0 && !text)
            rc = fail_key(d, DSD_IPC_E_MISSING_FIELD, "text", "is required");
        if (rc == 0 && text->type != MSGPACK_OBJECT_STR)
            rc = fail_key(d, DSD_IPC_E_WRONG_TYPE, "text", "must be a string, got %s",
                          type_desc(text));
        if (rc == 0 && !dsd_ipc_utf8_valid(text->via.str.ptr, text->via.str.size))
            rc = fail_key(d, DSD_IPC_E_BAD_VALUE, "text", "is not valid UTF-8");
        path_pop(d, old);
        if (rc)
            return rc;
        total += text->via.str.size;
    }
    if (total > UINT32_MAX)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "is longer than 4 GiB");
    char *s = dsd_ipc_arena_alloc(&d->arena, (size_t)total + 1);
    if (!s)
        return fail_oom(d);
    size_t at = 0;
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *p = &v->via.array.ptr[i];
        for (uint32_t k = 0; k < p->via.map.size; k++)
            if (is_key(&p->via.map.ptr[k].key, "text")) {
                const msgpack_object *t = &p->via.map.ptr[k].val;
                memcpy(s + at, t->via.str.ptr, t->via.str.size);
                at += t->via.str.size;
            }
    }
    s[at] = 0;
    out->ptr = s;
    out->len = (uint32_t)at;
    return 0;
}

static const char *const chat_keys[] = {"role", "content", "reasoning_content", "tool_calls",
                                        "tool_call_id", "name"};
enum { M_ROLE, M_CONTENT, M_REASONING, M_TOOL_CALLS, M_TOOL_CALL_ID, M_NAME };

static int chat_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                      void *ctx)
{
    struct dsd_ipc_chat_msg *m = ctx;
    switch (idx) {
    case M_ROLE: {
        int r = 0;
        int rc = want_enum(d, v, key, role_name_i, 0, DSD_IPC_ROLE_COUNT, &r);
        m->role = (enum dsd_ipc_role)r;
        return rc;
    }
    case M_CONTENT:
        return want_content(d, v, key, &m->content);
    case M_REASONING:
        return want_str(d, v, key, 0, UINT32_MAX, &m->reasoning);
    case M_TOOL_CALL_ID:
        return want_str(d, v, key, 0, DSD_IPC_MAX_NAME, &m->tool_call_id);
    case M_NAME:
        return want_str(d, v, key, 0, DSD_IPC_MAX_NAME, &m->name);
    default: {
        int rc = want_array(d, v, key, 0, DSD_IPC_MAX_TOOL_CALLS);
        if (rc)
            return rc;
        uint32_t n = v->via.array.size;
        struct dsd_ipc_tool_call *calls = dsd_ipc_arena_alloc(&d->arena, n * sizeof *calls);
        if (!calls)
            return fail_oom(d);
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            size_t old = path_push(d, "%s[%u]", key, i);
            uint64_t seen;
            rc = want_map(d, &v->via.array.ptr[i], "");
            if (rc == 0)
                rc = walk_map(d, &v->via.array.ptr[i], call_keys, NKEYS(call_keys), false,
                              &seen, call_field, &calls[i]);
            if (rc == 0)
                rc = need(d, seen, call_keys, C_FUNCTION);
            path_pop(d, old);
        }
        m->tool_calls = calls;
        m->n_tool_calls = n;
        return rc;
    }
    }
}

static int want_messages(struct dec *d, const msgpack_object *v, const char *key,
                         struct dsd_ipc_prompt *p)
{
    int rc = want_array(d, v, key, 1, DSD_IPC_MAX_MESSAGES);
    if (rc)
        return rc;
    uint32_t n = v->via.array.size;
    struct dsd_ipc_chat_msg *msgs = dsd_ipc_arena_alloc(&d->arena, (size_t)n * sizeof *msgs);
    if (!msgs)
        return fail_oom(d);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        size_t old = path_push(d, "%s[%u]", key, i);
        uint64_t seen;
        rc = want_map(d, &v->via.array.ptr[i], "");
        if (rc == 0)
            rc = walk_map(d, &v->via.array.ptr[i], chat_keys, NKEYS(chat_keys), false, &seen,
                          chat_field, &msgs[i]);
        if (rc == 0)
            rc = need(d, seen, chat_keys, M_ROLE);
        path_pop(d, old);
    }
    p->messages = msgs;
    p->n_messages = n;
    return rc;
}

/* ---- prompt (generate, tokenize) -------------------------------------------------------- */

enum { P_TOKENS, P_SPAN, P_TEXT, P_ADD_SPECIAL, P_MESSAGES, P_TOOLS, P_THINKING, P_COUNT };
static const char *const span_keys[] = {"offset", "count"};

static int span_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                      void *ctx)
{
    struct dsd_ipc_prompt *p = ctx;
    if (idx == 0)
        return want_uint(d, v, key, 0, UINT64_MAX, &p->span_offset);
    return want_u32(d, v, key, 1, UINT32_MAX, &p->span_count);
}

static int prompt_field(struct dec *d, int pidx, const char *key, const msgpack_object *v,
                        struct dsd_ipc_prompt *p)
{
    switch (pidx) {
    case P_TOKENS:
        return want_u32_array(d, v, key, 1, DSD_IPC_MAX_TOKENS, &p->tokens, &p->n_tokens);
    case P_SPAN: {
        uint64_t seen;
        int rc = walk_sub(d, v, key, span_keys, 2, &seen, span_field, p);
        if (rc == 0)
            rc = need_sub(d, seen, key, span_keys, 0);
        if (rc == 0)
            rc = need_sub(d, seen, key, span_keys, 1);
        return rc;
    }
    case P_TEXT:
        return want_str(d, v, key, 0, UINT32_MAX, &p->text);
    case P_ADD_SPECIAL:
        return want_bool(d, v, key, &p->add_special);
    case P_MESSAGES:
        return want_messages(d, v, key, p);
    case P_TOOLS:
        return want_str(d, v, key, 0, UINT32_MAX, &p->tools);
    default:
        return want_bool(d, v, key, &p->thinking);
    }
}

/* pseen: bit P_* per prompt key given. allow_tokens: generate (tokens/prompt_span allowed). */
static int prompt_finish(struct dec *d, uint32_t pseen, bool allow_tokens,
                         struct dsd_ipc_prompt *p)
{
    int sources = !!(pseen & 1u << P_TOKENS) + !!(pseen & 1u << P_SPAN) +
                  !!(pseen & 1u << P_TEXT) + !!(pseen & 1u << P_MESSAGES);
    const char *which = allow_tokens ? "exactly one of \"tokens\", \"prompt_span\", \"text\", "
                                       "\"messages\""
                                     : "exactly one of \"text\", \"messages\"";
    if (sources == 0)
        return dsd_ipc_failf(d->fail, -EPROTO, DSD_IPC_E_MISSING_FIELD, "%s: the prompt needs %s",
                             d->type, which);
    if (sources > 1)
        return dsd_ipc_failf(d->fail, -EPROTO, DSD_IPC_E_BAD_VALUE,
                             "%s: give %s, not several", d->type, which);
    if (pseen & 1u << P_TOKENS)
        p->kind = DSD_IPC_PROMPT_TOKENS;
    else if (pseen & 1u << P_SPAN)
        p->kind = DSD_IPC_PROMPT_SPAN;
    else if (pseen & 1u << P_TEXT)
        p->kind = DSD_IPC_PROMPT_TEXT;
    else
        p->kind = DSD_IPC_PROMPT_CHAT;
    if (p->kind != DSD_IPC_PROMPT_CHAT && (pseen & (1u << P_TOOLS | 1u << P_THINKING)))
        return dsd_ipc_failf(d->fail, -EPROTO, DSD_IPC_E_BAD_VALUE,
                             "%s: \"tools\" and \"thinking\" go with \"messages\" only", d->type);
    if (p->kind != DSD_IPC_PROMPT_TEXT && (pseen & 1u << P_ADD_SPECIAL))
        return dsd_ipc_failf(d->fail, -EPROTO, DSD_IPC_E_BAD_VALUE,
                             "%s: \"add_special\" goes with \"text\" only", d->type);
    return 0;
}

/* ---- generate --------------------------------------------------------------------------- */

static const char *const gen_keys[] = {
    "tokens", "prompt_span", "text", "add_special", "messages", "tools", "thinking",
    "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty",
    "presence_penalty", "seed", "max_tokens", "ignore_eos", "stop", "stop_token_ids",
    "logprobs", "top_logprobs", "priority", "ring", "notify", "detokenize"};
enum {
    G_TEMPERATURE = P_COUNT, G_TOP_P, G_TOP_K, G_MIN_P, G_REPETITION, G_FREQUENCY, G_PRESENCE,
    G_SEED, G_MAX_TOKENS, G_IGNORE_EOS, G_STOP, G_STOP_IDS, G_LOGPROBS, G_TOP_LOGPROBS,
    G_PRIORITY, G_RING, G_NOTIFY, G_DETOKENIZE
};

struct gen_ctx {
    struct dsd_ipc_generate *g;
    uint32_t pseen;
};

static int want_stop(struct dec *d, const msgpack_object *v, const char *key,
                     struct dsd_ipc_sampling *s)
{
    int rc = want_array(d, v, key, 0, DSD_IPC_MAX_STOP);
    if (rc)
        return rc;
    uint32_t n = v->via.array.size;
    struct dsd_ipc_str *stop = dsd_ipc_arena_alloc(&d->arena, n * sizeof *stop);
    if (!stop)
        return fail_oom(d);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s[%u]", key, i);
        rc = want_str(d, &v->via.array.ptr[i], k, 1, DSD_IPC_MAX_STOP_LEN, &stop[i]);
        /* a stop string is matched against the output text, which the engine keeps as C
         * strings: a NUL inside would cut it short ("a\0b" would stop at "a") */
        if (!rc && memchr(stop[i].ptr, 0, stop[i].len))
            rc = fail_key(d, DSD_IPC_E_BAD_VALUE, k, "must not contain a NUL byte");
    }
    s->stop = stop;
    s->n_stop = n;
    return rc;
}

static int gen_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                     void *ctxp)
{
    struct gen_ctx *ctx = ctxp;
    struct dsd_ipc_generate *g = ctx->g;
    struct dsd_ipc_sampling *s = &g->sampling;
    if (idx < P_COUNT) {
        ctx->pseen |= 1u << idx;
        return prompt_field(d, idx, key, v, &g->prompt);
    }
    int64_t i64;
    int rc;
    switch (idx) {
    case G_TEMPERATURE: return want_num(d, v, key, 0, 100, false, &s->temperature);
    case G_TOP_P: return want_num(d, v, key, 0, 1, true, &s->top_p);
    case G_TOP_K: return want_u32(d, v, key, 0, 1u << 31, &s->top_k);
    case G_MIN_P: return want_num(d, v, key, 0, 1, false, &s->min_p);
    case G_REPETITION: return want_num(d, v, key, 0, 10, true, &s->repetition_penalty);
    case G_FREQUENCY: return want_num(d, v, key, -2, 2, false, &s->frequency_penalty);
    case G_PRESENCE: return want_num(d, v, key, -2, 2, false, &s->presence_penalty);
    case G_SEED:
        s->has_seed = true;
        return want_uint(d, v, key, 0, UINT64_MAX, &s->seed);
    case G_MAX_TOKENS: return want_u32(d, v, key, 0, 1u << 31, &s->max_tokens);
    case G_IGNORE_EOS: return want_bool(d, v, key, &s->ignore_eos);
    case G_STOP: return want_stop(d, v, key, s);
    case G_STOP_IDS:
        return want_u32_array(d, v, key, 0, DSD_IPC_MAX_STOP_IDS, &s->stop_ids, &s->n_stop_ids);
    case G_LOGPROBS: return want_bool(d, v, key, &s->logprobs);
    case G_TOP_LOGPROBS:
        return want_u32(d, v, key, 0, DSD_IPC_MAX_TOP_LOGPROBS, &s->top_logprobs);
    case G_PRIORITY:
        rc = want_int(d, v, key, -DSD_IPC_MAX_PRIORITY, DSD_IPC_MAX_PRIORITY, &i64);
        s->priority = (int32_t)i64;
        return rc;
    case G_RING:
        g->use_ring = true;
        return want_u32(d, v, key, 0, UINT32_MAX, &g->ring);
    case G_NOTIFY: return want_bool(d, v, key, &g->notify);
    default: return want_bool(d, v, key, &g->detokenize);
    }
}

static int decode_generate(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    struct dsd_ipc_generate *g = &m->generate;
    dsd_ipc_generate_default(g);
    struct gen_ctx ctx = {.g = g};
    uint64_t seen;
    int rc = walk_map(d, root, gen_keys, NKEYS(gen_keys), true, &seen, gen_field, &ctx);
    if (rc == 0)
        rc = prompt_finish(d, ctx.pseen, true, &g->prompt);
    if (rc)
        return rc;
    if (!(seen & 1ull << G_DETOKENIZE))
        g->detokenize = g->prompt.kind == DSD_IPC_PROMPT_TEXT ||
                        g->prompt.kind == DSD_IPC_PROMPT_CHAT;
    if (g->sampling.top_logprobs && !g->sampling.logprobs)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, "top_logprobs", "needs \"logprobs\": true");
    return 0;
}

/* ---- tokenize, detokenize, hello ------------------------------------------------------- */

static const char *const tok_keys[] = {"text", "add_special", "messages", "tools", "thinking"};

struct tok_ctx {
    struct dsd_ipc_prompt *p;
    uint32_t pseen;
};

static int tok_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                     void *ctxp)
{
    struct tok_ctx *ctx = ctxp;
    int pidx = idx + P_TEXT;
    ctx->pseen |= 1u << pidx;
    return prompt_field(d, pidx, key, v, ctx->p);
}

static int decode_tokenize(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    struct dsd_ipc_prompt *p = &m->tokenize.prompt;
    p->add_special = true;
    struct tok_ctx ctx = {.p = p};
    uint64_t seen;
    int rc = walk_map(d, root, tok_keys, NKEYS(tok_keys), true, &seen, tok_field, &ctx);
    if (rc == 0)
        rc = prompt_finish(d, ctx.pseen, false, p);
    return rc;
}

static const char *const detok_keys[] = {"tokens", "skip_special"};

static int detok_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_detokenize *t = ctx;
    if (idx == 0)
        return want_u32_array(d, v, key, 0, DSD_IPC_MAX_TOKENS, &t->tokens, &t->n_tokens);
    return want_bool(d, v, key, &t->skip_special);
}

static int decode_detokenize(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    uint64_t seen;
    int rc = walk_map(d, root, detok_keys, 2, true, &seen, detok_field, &m->detokenize);
    return rc ? rc : need(d, seen, detok_keys, 0);
}

static const char *const hello_keys[] = {"min_version", "max_version", "client", "max_frame"};

static int hello_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_hello *h = ctx;
    switch (idx) {
    case 0: return want_u32(d, v, key, 1, UINT32_MAX, &h->min_version);
    case 1: return want_u32(d, v, key, 1, UINT32_MAX, &h->max_version);
    case 2: return want_str(d, v, key, 0, DSD_IPC_MAX_CLIENT, &h->client);
    default: {
        int rc = want_u32(d, v, key, 0, DSD_IPC_FRAME_CEIL, &h->max_frame);
        if (rc == 0 && h->max_frame != 0 && h->max_frame < DSD_IPC_HELLO_FRAME)
            return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must be 0 or at least %u, got %u",
                            DSD_IPC_HELLO_FRAME, h->max_frame);
        return rc;
    }
    }
}

static int decode_hello(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    uint64_t seen;
    struct dsd_ipc_hello *h = &m->hello;
    int rc = walk_map(d, root, hello_keys, NKEYS(hello_keys), true, &seen, hello_field, h);
    if (rc == 0)
        rc = need(d, seen, hello_keys, 0);
    if (rc == 0)
        rc = need(d, seen, hello_keys, 1);
    if (rc == 0 && h->max_version < h->min_version)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, "max_version", "(%u) is below min_version (%u)",
                        h->max_version, h->min_version);
    return rc;
}

/* ---- hello_ok, info_ok ----------------------------------------------------------------- */

static const char *const model_keys[] = {"name", "vocab_size", "max_context", "eos_ids",
                                         "bos_id", "kv_dtype", "backend"};
enum { MF_NAME, MF_VOCAB, MF_CONTEXT, MF_EOS, MF_BOS, MF_KV, MF_BACKEND };

static int model_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_model_facts *f = ctx;
    switch (idx) {
    case MF_NAME: return want_str(d, v, key, 0, DSD_IPC_MAX_NAME, &f->name);
    case MF_VOCAB: return want_u32(d, v, key, 1, UINT32_MAX, &f->vocab_size);
    case MF_CONTEXT: return want_u32(d, v, key, 1, UINT32_MAX, &f->max_context);
    case MF_EOS: {
        const uint32_t *ids = NULL;
        int rc = want_u32_array(d, v, key, 1, DSD_IPC_MAX_EOS, &ids, &f->n_eos);
        if (rc == 0)
            memcpy(f->eos_ids, ids, f->n_eos * sizeof *ids);
        return rc;
    }
    case MF_BOS:
        f->has_bos = true;
        return want_u32(d, v, key, 0, UINT32_MAX, &f->bos_id);
    case MF_KV: return want_str(d, v, key, 0, DSD_IPC_MAX_SHORT, &f->kv_dtype);
    default: return want_str(d, v, key, 0, DSD_IPC_MAX_SHORT, &f->backend);
    }
}

static const char *const limit_keys[] = {"max_frame", "max_prompt_tokens", "max_tokens",
                                         "max_inflight", "max_top_logprobs", "max_shm_bytes"};

static int limit_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_limits *l = ctx;
    switch (idx) {
    case 0: return want_u32(d, v, key, DSD_IPC_HELLO_FRAME, DSD_IPC_FRAME_CEIL, &l->max_frame);
    case 1: return want_u32(d, v, key, 0, UINT32_MAX, &l->max_prompt_tokens);
    case 2: return want_u32(d, v, key, 0, UINT32_MAX, &l->max_tokens);
    case 3: return want_u32(d, v, key, 0, UINT32_MAX, &l->max_inflight);
    case 4: return want_u32(d, v, key, 0, UINT32_MAX, &l->max_top_logprobs);
    default: return want_uint(d, v, key, 0, UINT64_MAX, &l->max_shm_bytes);
    }
}

/* A flat name -> scalar map (info_ok.server, stats_ok.stats). */
static int want_kv(struct dec *d, const msgpack_object *v, const char *key,
                   const struct dsd_ipc_kv **out, uint32_t *n_out)
{
    int rc = want_map(d, v, key);
    if (rc)
        return rc;
    uint32_t n = v->via.map.size;
    if (n > DSD_IPC_MAX_KV)
        return fail_key(d, DSD_IPC_E_BAD_VALUE, key, "must have at most %u entries, got %u",
                        DSD_IPC_MAX_KV, n);
    struct dsd_ipc_kv *kv = dsd_ipc_arena_alloc(&d->arena, n * sizeof *kv);
    if (!kv)
        return fail_oom(d);
    size_t old = path_push(d, "%s", key);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const msgpack_object *k = &v->via.map.ptr[i].key, *val = &v->via.map.ptr[i].val;
        char kname[16];
        snprintf(kname, sizeof kname, "key %u", i);
        rc = want_str(d, k, kname, 1, DSD_IPC_MAX_KV_KEY, &kv[i].key);
        for (uint32_t j = 0; j < i && rc == 0; j++)
            if (kv[j].key.len == kv[i].key.len &&
                memcmp(kv[j].key.ptr, kv[i].key.ptr, kv[i].key.len) == 0)
                rc = fail_key(d, DSD_IPC_E_BAD_VALUE, kv[i].key.ptr, "is given twice");
        if (rc)
            break;
        const char *nm = kv[i].key.ptr;
        switch (val->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            kv[i].kind = DSD_IPC_KV_INT;
            rc = want_int(d, val, nm, INT64_MIN, INT64_MAX, &kv[i].i);
            break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            kv[i].kind = DSD_IPC_KV_FLOAT;
            rc = want_finite(d, val, nm, &kv[i].f);
            break;
        case MSGPACK_OBJECT_BOOLEAN:
            kv[i].kind = DSD_IPC_KV_BOOL;
            kv[i].b = val->via.boolean;
            break;
        case MSGPACK_OBJECT_STR:
            kv[i].kind = DSD_IPC_KV_STR;
            rc = want_str(d, val, nm, 0, DSD_IPC_MAX_MSG, &kv[i].s);
            break;
        default:
            rc = fail_key(d, DSD_IPC_E_WRONG_TYPE, nm,
                          "must be an integer, a float, a bool or a string, got %s",
                          type_desc(val));
        }
    }
    path_pop(d, old);
    *out = kv;
    *n_out = n;
    return rc;
}

static const char *const facts_keys[] = {"version", "daemon", "model", "limits", "server"};
enum { H_VERSION, H_DAEMON, H_MODEL, H_LIMITS, H_SERVER };

static int facts_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_msg *m = ctx;
    struct dsd_ipc_hello_ok *h = m->type == DSD_IPC_INFO_OK ? &m->info_ok.facts : &m->hello_ok;
    uint64_t seen;
    int rc;
    switch (idx) {
    case H_VERSION: return want_u32(d, v, key, 1, UINT32_MAX, &h->version);
    case H_DAEMON: return want_str(d, v, key, 0, DSD_IPC_MAX_CLIENT, &h->daemon);
    case H_MODEL:
        rc = walk_sub(d, v, key, model_keys, NKEYS(model_keys), &seen, model_field, &h->model);
        for (int i = MF_VOCAB; rc == 0 && i <= MF_EOS; i++)
            rc = need_sub(d, seen, key, model_keys, i);
        return rc;
    case H_LIMITS:
        rc = walk_sub(d, v, key, limit_keys, NKEYS(limit_keys), &seen, limit_field, &h->limits);
        return rc ? rc : need_sub(d, seen, key, limit_keys, 0);
    default:
        if (m->type != DSD_IPC_INFO_OK)
            return 0;   /* not a key of hello_ok: ignored like any unknown key */
        return want_kv(d, v, key, &m->info_ok.server, &m->info_ok.n_server);
    }
}

static int decode_facts(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    uint64_t seen;
    int rc = walk_map(d, root, facts_keys, NKEYS(facts_keys), true, &seen, facts_field, m);
    for (int i = H_VERSION; rc == 0 && i <= H_LIMITS; i++)
        if (i != H_DAEMON)
            rc = need(d, seen, facts_keys, i);
    return rc;
}

/* ---- small replies ---------------------------------------------------------------------- */

static const char *const shm_ok_keys[] = {"size", "prompt_capacity", "ring_count",
                                          "ring_capacity"};

static int shm_ok_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                        void *ctx)
{
    struct dsd_ipc_shm_ok *s = ctx;
    switch (idx) {
    case 0: return want_uint(d, v, key, 0, UINT64_MAX, &s->size);
    case 1: return want_uint(d, v, key, 0, UINT64_MAX, &s->prompt_capacity);
    case 2: return want_u32(d, v, key, 0, UINT32_MAX, &s->ring_count);
    default: return want_u32(d, v, key, 0, UINT32_MAX, &s->ring_capacity);
    }
}

static const char *const accepted_keys[] = {"prompt_tokens", "ring_start"};

static int accepted_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                          void *ctx)
{
    struct dsd_ipc_accepted *a = ctx;
    if (idx == 0)
        return want_u32(d, v, key, 0, UINT32_MAX, &a->prompt_tokens);
    a->has_ring_start = true;
    return want_uint(d, v, key, 0, UINT64_MAX, &a->ring_start);
}

static const char *const tokenize_ok_keys[] = {"tokens"};
static const char *const detokenize_ok_keys[] = {"text"};

static int tokenize_ok_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                             void *ctx)
{
    struct dsd_ipc_tokenize_ok *t = ctx;
    return want_u32_array(d, v, key, 0, DSD_IPC_MAX_TOKENS, &t->tokens, &t->n_tokens);
}

static int detokenize_ok_field(struct dec *d, int idx, const char *key,
                               const msgpack_object *v, void *ctx)
{
    struct dsd_ipc_detokenize_ok *t = ctx;
    return want_str(d, v, key, 0, UINT32_MAX, &t->text);
}

static const char *const stats_keys[] = {"stats"};

static int stats_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_stats_ok *s = ctx;
    return want_kv(d, v, key, &s->stats, &s->n_stats);
}

static const char *const health_keys[] = {"status", "detail"};

static int health_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                        void *ctx)
{
    struct dsd_ipc_health_ok *h = ctx;
    if (idx == 1)
        return want_str(d, v, key, 0, DSD_IPC_MAX_MSG, &h->detail);
    int s = 0;
    int rc = want_enum(d, v, key, health_name_i, 0, DSD_IPC_STATUS_COUNT, &s);
    h->status = (enum dsd_ipc_health)s;
    return rc;
}

static const char *const error_keys[] = {"code", "name", "msg", "fatal"};

static int error_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_error *e = ctx;
    struct dsd_ipc_str ignored;
    switch (idx) {
    case 0: return want_u32(d, v, key, 0, UINT32_MAX, &e->code);
    case 1: return want_str(d, v, key, 0, 64, &ignored);
    case 2: return want_str(d, v, key, 0, DSD_IPC_MAX_MSG, &e->msg);
    default: return want_bool(d, v, key, &e->fatal);
    }
}

/* ---- tokens ----------------------------------------------------------------------------- */

static const char *const tokens_keys[] = {"ids", "pos", "text", "reasoning", "tool_calls",
                                          "logprobs", "stalled", "tool_call_error"};
enum { T_IDS, T_POS, T_TEXT, T_REASONING, T_TOOL_CALLS, T_LOGPROBS, T_STALLED, T_TOOL_CALL_ERROR };
static const char *const delta_keys[] = {"index", "id", "name", "arguments"};
static const char *const lp_keys[] = {"token", "logprob", "top"};

static int delta_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_tool_delta *t = ctx;
    switch (idx) {
    case 0: return want_u32(d, v, key, 0, DSD_IPC_MAX_TOOL_CALLS - 1, &t->index);
    case 1: return want_str(d, v, key, 0, DSD_IPC_MAX_NAME, &t->id);
    case 2: return want_str(d, v, key, 0, DSD_IPC_MAX_NAME, &t->name);
    default: return want_str(d, v, key, 0, UINT32_MAX, &t->arguments);
    }
}

static int lp_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                    void *ctx)
{
    struct dsd_ipc_logprob *lp = ctx;
    if (idx == 0)
        return want_u32(d, v, key, 0, UINT32_MAX, &lp->token);
    if (idx == 1)
        return want_finite(d, v, key, &lp->logprob);
    int rc = want_array(d, v, key, 0, DSD_IPC_MAX_TOP_LOGPROBS);
    if (rc)
        return rc;
    uint32_t n = v->via.array.size;
    struct dsd_ipc_top_logprob *top = dsd_ipc_arena_alloc(&d->arena, n * sizeof *top);
    if (!top)
        return fail_oom(d);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s[%u]", key, i);
        const msgpack_object *pair = &v->via.array.ptr[i];
        rc = want_array(d, pair, k, 2, 2);
        if (rc == 0)
            rc = want_u32(d, &pair->via.array.ptr[0], k, 0, UINT32_MAX, &top[i].token);
        if (rc == 0)
            rc = want_finite(d, &pair->via.array.ptr[1], k, &top[i].logprob);
    }
    lp->top = top;
    lp->n_top = n;
    return rc;
}

/* An array of maps, each walked with keys/fn into elem-sized slots; required: key index. */
static int want_map_array(struct dec *d, const msgpack_object *v, const char *key,
                          uint32_t maxn, const char *const *keys, int nkeys, int required,
                          size_t elem, field_fn fn, void **out, uint32_t *n_out)
{
    int rc = want_array(d, v, key, 0, maxn);
    if (rc)
        return rc;
    uint32_t n = v->via.array.size;
    char *arr = dsd_ipc_arena_alloc(&d->arena, (size_t)n * elem);
    if (!arr)
        return fail_oom(d);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        size_t old = path_push(d, "%s[%u]", key, i);
        uint64_t seen;
        rc = want_map(d, &v->via.array.ptr[i], "");
        if (rc == 0)
            rc = walk_map(d, &v->via.array.ptr[i], keys, nkeys, false, &seen, fn,
                          arr + (size_t)i * elem);
        for (int r = 0; rc == 0 && r < nkeys; r++)
            if (required & (1 << r))
                rc = need(d, seen, keys, r);
        path_pop(d, old);
    }
    *out = arr;
    *n_out = n;
    return rc;
}

static int tokens_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                        void *ctx)
{
    struct dsd_ipc_tokens *t = ctx;
    void *arr = NULL;
    int rc;
    switch (idx) {
    case T_IDS: return want_u32_array(d, v, key, 0, DSD_IPC_MAX_TOKENS, &t->ids, &t->n_ids);
    case T_POS:
        t->has_pos = true;
        return want_uint(d, v, key, 0, UINT64_MAX, &t->pos);
    case T_TEXT: return want_str(d, v, key, 0, UINT32_MAX, &t->text);
    case T_REASONING: return want_str(d, v, key, 0, UINT32_MAX, &t->reasoning);
    case T_TOOL_CALL_ERROR: return want_str(d, v, key, 0, UINT32_MAX, &t->tool_call_error);
    case T_TOOL_CALLS:
        rc = want_map_array(d, v, key, DSD_IPC_MAX_TOOL_CALLS, delta_keys, NKEYS(delta_keys),
                            1 << 0, sizeof(struct dsd_ipc_tool_delta), delta_field, &arr,
                            &t->n_tool_calls);
        t->tool_calls = arr;
        return rc;
    case T_LOGPROBS:
        rc = want_map_array(d, v, key, DSD_IPC_MAX_TOKENS, lp_keys, NKEYS(lp_keys),
                            1 << 0 | 1 << 1, sizeof(struct dsd_ipc_logprob), lp_field, &arr,
                            &t->n_logprobs);
        t->logprobs = arr;
        return rc;
    default: return want_bool(d, v, key, &t->stalled);
    }
}

/* ---- done ------------------------------------------------------------------------------- */

static const char *const done_keys[] = {"finish", "stop_token", "stop_string", "usage",
                                        "timings", "ring_end", "error"};
enum { D_FINISH, D_STOP_TOKEN, D_STOP_STRING, D_USAGE, D_TIMINGS, D_RING_END, D_ERROR };
/* the first three are required; the per-tier counts are optional */
static const char *const usage_keys[] = {"prompt", "cached", "completion", "cached_device", "cached_host",
                                         "cached_disk"};
static const char *const timing_keys[] = {"queue_us", "first_token_us", "total_us",
                                          "per_token_us"};
static const char *const derr_keys[] = {"code", "msg"};

static int usage_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                       void *ctx)
{
    struct dsd_ipc_usage *u = ctx;
    uint32_t *f[] = {&u->prompt, &u->cached, &u->completion, &u->cached_device, &u->cached_host, &u->cached_disk};
    if (idx >= 3)
        u->has_tiers = true;
    return want_u32(d, v, key, 0, UINT32_MAX, f[idx]);
}

static int timing_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                        void *ctx)
{
    struct dsd_ipc_timings *t = ctx;
    uint64_t *f[] = {&t->queue_us, &t->first_token_us, &t->total_us};
    if (idx == 3)
        return want_num(d, v, key, 0, HUGE_VAL, false, &t->per_token_us);
    return want_uint(d, v, key, 0, UINT64_MAX, f[idx]);
}

static int derr_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                      void *ctx)
{
    struct dsd_ipc_done *dn = ctx;
    if (idx == 0)
        return want_u32(d, v, key, 0, UINT32_MAX, &dn->error_code);
    return want_str(d, v, key, 0, DSD_IPC_MAX_MSG, &dn->error_msg);
}

static int need_all(struct dec *d, uint64_t seen, const char *key, const char *const *names,
                    int n)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        rc = need_sub(d, seen, key, names, i);
    return rc;
}

static int done_field(struct dec *d, int idx, const char *key, const msgpack_object *v,
                      void *ctx)
{
    struct dsd_ipc_done *dn = ctx;
    uint64_t seen;
    int rc, f = 0;
    switch (idx) {
    case D_FINISH:
        rc = want_enum(d, v, key, finish_name_i, DSD_IPC_FINISH_STOP, DSD_IPC_FINISH_COUNT, &f);
        dn->finish = (enum dsd_ipc_finish)f;
        return rc;
    case D_STOP_TOKEN:
        dn->has_stop_token = true;
        return want_u32(d, v, key, 0, UINT32_MAX, &dn->stop_token);
    case D_STOP_STRING: return want_str(d, v, key, 0, DSD_IPC_MAX_STOP_LEN, &dn->stop_string);
    case D_USAGE:
        rc = walk_sub(d, v, key, usage_keys, NKEYS(usage_keys), &seen, usage_field, &dn->usage);
        return rc ? rc : need_all(d, seen, key, usage_keys, 3);
    case D_TIMINGS:
        rc = walk_sub(d, v, key, timing_keys, NKEYS(timing_keys), &seen, timing_field,
                      &dn->timings);
        return rc ? rc : need_all(d, seen, key, timing_keys, NKEYS(timing_keys));
    case D_RING_END:
        dn->has_ring_end = true;
        return want_uint(d, v, key, 0, UINT64_MAX, &dn->ring_end);
    default:
        dn->has_error = true;
        rc = walk_sub(d, v, key, derr_keys, NKEYS(derr_keys), &seen, derr_field, dn);
        return rc ? rc : need_all(d, seen, key, derr_keys, NKEYS(derr_keys));
    }
}

static int decode_done(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    struct dsd_ipc_done *dn = &m->done;
    uint64_t seen;
    int rc = walk_map(d, root, done_keys, NKEYS(done_keys), true, &seen, done_field, dn);
    if (rc == 0)
        rc = need(d, seen, done_keys, D_FINISH);
    if (rc == 0)
        rc = need(d, seen, done_keys, D_USAGE);
    if (rc == 0)
        rc = need(d, seen, done_keys, D_TIMINGS);
    if (rc == 0 && dn->finish == DSD_IPC_FINISH_ERROR && !dn->has_error)
        rc = fail_key(d, DSD_IPC_E_MISSING_FIELD, "error", "is required with finish \"error\"");
    if (rc == 0 && dn->finish != DSD_IPC_FINISH_ERROR && dn->has_error)
        rc = fail_key(d, DSD_IPC_E_BAD_VALUE, "error", "is only allowed with finish \"error\"");
    return rc;
}

/* ---- dispatch --------------------------------------------------------------------------- */

/* Walks a flat message: its keys, a field function, and which indices are required. */
static int decode_flat(struct dec *d, const msgpack_object *root, const char *const *keys,
                       int nkeys, int required, field_fn fn, void *dst)
{
    uint64_t seen;
    int rc = walk_map(d, root, keys, nkeys, true, &seen, fn, dst);
    for (int i = 0; rc == 0 && i < nkeys; i++)
        if (required & (1 << i))
            rc = need(d, seen, keys, i);
    return rc;
}

static int decode_body(struct dec *d, const msgpack_object *root, struct dsd_ipc_msg *m)
{
    switch (m->type) {
    case DSD_IPC_HELLO: return decode_hello(d, root, m);
    case DSD_IPC_GENERATE: return decode_generate(d, root, m);
    case DSD_IPC_TOKENIZE: return decode_tokenize(d, root, m);
    case DSD_IPC_DETOKENIZE: return decode_detokenize(d, root, m);
    case DSD_IPC_SHM_ATTACH:
    case DSD_IPC_CANCEL:
    case DSD_IPC_RESUME:
    case DSD_IPC_INFO:
    case DSD_IPC_STATS:
    case DSD_IPC_HEALTH:
        return 0;
    case DSD_IPC_HELLO_OK:
    case DSD_IPC_INFO_OK:
        return decode_facts(d, root, m);
    case DSD_IPC_SHM_OK:
        return decode_flat(d, root, shm_ok_keys, 4, 0xf, shm_ok_field, &m->shm_ok);
    case DSD_IPC_ACCEPTED:
        return decode_flat(d, root, accepted_keys, 2, 1, accepted_field, &m->accepted);
    case DSD_IPC_TOKENS:
        return decode_flat(d, root, tokens_keys, NKEYS(tokens_keys), 0, tokens_field,
                           &m->tokens);
    case DSD_IPC_DONE: return decode_done(d, root, m);
    case DSD_IPC_TOKENIZE_OK:
        return decode_flat(d, root, tokenize_ok_keys, 1, 1, tokenize_ok_field, &m->tokenize_ok);
    case DSD_IPC_DETOKENIZE_OK:
        return decode_flat(d, root, detokenize_ok_keys, 1, 1, detokenize_ok_field,
                           &m->detokenize_ok);
    case DSD_IPC_STATS_OK:
        return decode_flat(d, root, stats_keys, 1, 1, stats_field, &m->stats_ok);
    case DSD_IPC_HEALTH_OK:
        return decode_flat(d, root, health_keys, 2, 1, health_field, &m->health_ok);
    case DSD_IPC_ERROR:
        return decode_flat(d, root, error_keys, 4, 1 << 0 | 1 << 2, error_field, &m->error);
    default:
        return dsd_ipc_failf(d->fail, -EPROTO, DSD_IPC_E_UNKNOWN_TYPE, "unhandled type");
    }
}

/* Reads "t" and "id" from the top-level map. */
static int decode_header(struct dec *d, const msgpack_object *root, enum dsd_ipc_dir dir,
                         struct dsd_ipc_msg *m)
{
    const msgpack_object *t = NULL, *id = NULL;
    d->type = "frame";
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        const msgpack_object **slot = is_key(&kv->key, "t") ? &t : is_key(&kv->key, "id") ? &id : NULL;
        if (!slot)
            continue;
        if (*slot)
            return fail_key(d, DSD_IPC_E_BAD_VALUE, slot == &t ? "t" : "id", "is given twice");
        *slot = &kv->val;
    }
    if (!id)
        return fail_key(d, DSD_IPC_E_MISSING_FIELD, "id", "is required in every frame");
    int rc = want_uint(d, id, "id", 0, UINT64_MAX, &m->id);
    if (rc)
        return rc;
    if (!t) {
        d->fail->id = m->id;
        return fail_key(d, DSD_IPC_E_MISSING_FIELD, "t", "(message type) is required");
    }
    if (t->type != MSGPACK_OBJECT_STR) {
        d->fail->id = m->id;
        return fail_key(d, DSD_IPC_E_WRONG_TYPE, "t", "must be a string, got %s", type_desc(t));
    }
    enum dsd_ipc_type type = dsd_ipc_type_from_name(t->via.str.ptr, t->via.str.size);
    if (type == DSD_IPC_NONE || dsd_ipc_type_dir(type) != dir) {
        d->fail->id = m->id;
        char shown[41];
        uint32_t n = t->via.str.size > 40 ? 40 : t->via.str.size;
        for (uint32_t i = 0; i < n; i++) {
            char c = t->via.str.ptr[i];
            shown[i] = c >= 0x20 && c < 0x7f ? c : '?';
        }
        shown[n] = 0;
        return dsd_ipc_failf(d->fail, -EPROTO, DSD_IPC_E_UNKNOWN_TYPE,
                             "unknown message type \"%s\"%s", shown,
                             type != DSD_IPC_NONE ? (dir == DSD_IPC_TO_DAEMON
                                                         ? " (that is a daemon-to-client type)"
                                                         : " (that is a client-to-daemon type)")
                                                  : "");
    }
    m->type = type;
    d->type = dsd_ipc_type_name(type);
    if (m->id == 0 && !(type == DSD_IPC_ERROR)) {
        d->fail->id = 0;
        return fail_key(d, DSD_IPC_E_BAD_VALUE, "id", "must be at least 1 (0 is reserved)");
    }
    d->fail->id = m->id;
    return 0;
}

int dsd_ipc_decode(const void *body, size_t len, enum dsd_ipc_dir dir, struct dsd_ipc_msg *out,
                   struct dsd_ipc_fail *fail)
{
    struct dsd_ipc_fail spare;
    if (!fail)
        fail = &spare;
    memset(out, 0, sizeof *out);
    fail->code = 0;
    fail->id = 0;
    fail->err.msg[0] = 0;
    if (len > DSD_IPC_FRAME_CEIL)
        return dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_FRAME_TOO_LARGE,
                             "frame of %zu bytes is above the ceiling of %u bytes", len,
                             DSD_IPC_FRAME_CEIL);
    int rc = dsd_ipc_scan(body, len, DSD_IPC_MAX_DEPTH, DSD_IPC_MAX_OBJECTS, NULL, fail);
    if (rc)
        return rc;

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, body, len, &off);
    struct dec d = {.fail = fail, .type = "frame"};
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = dsd_ipc_failf(fail, -ENOMEM, DSD_IPC_E_INTERNAL, "out of memory unpacking a frame");
    } else if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        /* The pre-scan accepts only what msgpack-c parses whole; this is defence in depth. */
        rc = dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_BAD_MSGPACK,
                           "msgpack could not be parsed (code %d)", (int)ur);
    } else if (up.data.type != MSGPACK_OBJECT_MAP) {
        rc = dsd_ipc_failf(fail, -EPROTO, DSD_IPC_E_NOT_A_MAP,
                           "a frame must hold a msgpack map, got %s", type_desc(&up.data));
    } else {
        rc = decode_header(&d, &up.data, dir, out);
        if (rc == 0)
            rc = decode_body(&d, &up.data, out);
    }
    msgpack_unpacked_destroy(&up);
    if (rc) {
        dsd_ipc_arena_free(d.arena);
        uint64_t id = fail->id;
        memset(out, 0, sizeof *out);
        fail->id = id;
        return rc;
    }
    out->arena = d.arena;
    return 0;
}

void dsd_ipc_msg_free(struct dsd_ipc_msg *m)
{
    if (!m)
        return;
    dsd_ipc_arena_free(m->arena);
    memset(m, 0, sizeof *m);
}
