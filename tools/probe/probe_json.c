/*
 * tools/probe/probe_json.c: JSON <-> msgpack for `deepseekd-probe raw` (PROTOCOL.md §11
 * writes frames in JSON notation; this is that notation made executable). msgpack -> JSON
 * goes through ipc/'s bounded pre-scan first: the daemon's bytes are not trusted here either.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc_proto.h"
#include "ipc_scan.h"
#include "probe.h"

static int jerr(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int jerr(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int pack(const json_t *j, msgpack_packer *pk, int depth, char *err, size_t n)
{
    if (depth > DSD_IPC_SCAN_DEPTH_CEIL)
        return jerr(err, n, "JSON nested deeper than %d", DSD_IPC_SCAN_DEPTH_CEIL);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            size_t kl = strlen(k);
            msgpack_pack_str(pk, kl);
            msgpack_pack_str_body(pk, k, kl);
            if (pack(v, pk, depth + 1, err, n) < 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            if (pack(v, pk, depth + 1, err, n) < 0)
                return -1;
        }
        return 0;
    }
    case JSON_STRING: {
        size_t l = json_string_length(j);
        msgpack_pack_str(pk, l);
        msgpack_pack_str_body(pk, json_string_value(j), l);
        return 0;
    }
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        return v >= 0 ? msgpack_pack_uint64(pk, (uint64_t)v) : msgpack_pack_int64(pk, v);
    }
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(j));
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_NULL: return msgpack_pack_nil(pk);
    }
    return jerr(err, n, "unknown JSON type");
}

int probe_json_to_msgpack(const json_t *j, msgpack_sbuffer *out, char *err, size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    return pack(j, &pk, 1, err, n);
}

static json_t *hex(const char *p, uint32_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * (size_t)len + 1);
    if (!s)
        return NULL;
    for (uint32_t i = 0; i < len; i++) {
        s[2 * i] = digits[(uint8_t)p[i] >> 4];
        s[2 * i + 1] = digits[(uint8_t)p[i] & 15];
    }
    s[2 * (size_t)len] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *number(double d)
{
    if (isnan(d))
        return json_string("nan");
    if (isinf(d))
        return json_string(d > 0 ? "inf" : "-inf");
    return json_real(d);
}

static json_t *unpack(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* JSON integers are int64 in jansson; larger ids print as reals would lose digits,
         * so they become strings. */
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            char b[32];
            snprintf(b, sizeof b, "%llu", (unsigned long long)o->via.u64);
            return json_string(b);
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return number(o->via.f64);
    case MSGPACK_OBJECT_STR: {
        json_t *s = json_stringn(o->via.str.ptr, o->via.str.size);
        if (!s) {                       /* not UTF-8 (or NUL inside): show the bytes */
            s = json_object();
            json_object_set_new(s, "$badstr", hex(o->via.str.ptr, o->via.str.size));
        }
        return s;
    }
    case MSGPACK_OBJECT_BIN: {
        json_t *m = json_object();
        json_object_set_new(m, "$bin", hex(o->via.bin.ptr, o->via.bin.size));
        return m;
    }
    case MSGPACK_OBJECT_EXT: {
        json_t *m = json_object();
        json_object_set_new(m, "$ext", json_integer(o->via.ext.type));
        json_object_set_new(m, "hex", hex(o->via.ext.ptr, o->via.ext.size));
        return m;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, unpack(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            json_t *v = unpack(&o->via.map.ptr[i].val);
            if (k->type == MSGPACK_OBJECT_STR) {
                char *key = strndup(k->via.str.ptr, k->via.str.size);
                if (key)
                    json_object_set_new_nocheck(m, key, v);
                else
                    json_decref(v);
                free(key);
            } else {
                json_t *kj = unpack(k);
                char *key = json_dumps(kj, JSON_ENCODE_ANY | JSON_COMPACT);
                json_decref(kj);
                if (key)
                    json_object_set_new_nocheck(m, key, v);
                else
                    json_decref(v);
                free(key);
            }
        }
        return m;
    }
    }
    return json_null();
}

json_t *probe_msgpack_to_json(const uint8_t *body, size_t len, char *err, size_t n)
{
    struct dsd_ipc_fail fail;
    if (dsd_ipc_scan(body, len, DSD_IPC_SCAN_DEPTH_CEIL, DSD_IPC_MAX_OBJECTS, NULL, &fail) < 0) {
        jerr(err, n, "not a msgpack object: %s", fail.err.msg);
        return NULL;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    json_t *j = NULL;
    if (msgpack_unpack_next(&up, (const char *)body, len, &off) == MSGPACK_UNPACK_SUCCESS)
        j = unpack(&up.data);
    else
        jerr(err, n, "msgpack-c could not unpack the frame");
    msgpack_unpacked_destroy(&up);
    return j;
}
