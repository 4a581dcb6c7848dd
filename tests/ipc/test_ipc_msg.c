/*
 * Message codec tests: every message type round-trips with every field; the reader gives the
 * same frames whatever the chunking; every kind of bad input gets its own error code (and the
 * key in the message); random bytes never crash and never allocate without bound.
 *
 * Bad frames are built with msgpack-c's packer or as raw bytes, never with our encoder, so a
 * bug shared by encoder and decoder cannot hide here.
 */
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "ipc_fixtures.h"
#include "ipc_frame.h"
#include "ipc_msg.h"
#include "ipc_scan.h"
#include "test.h"

#define MAX_FX 32
#define DUMP_CAP 8192

static char dump_a[DUMP_CAP], dump_b[DUMP_CAP];

static enum dsd_ipc_dir dir_of(const struct dsd_ipc_msg *m)
{
    return dsd_ipc_type_dir(m->type);
}

/* Decodes frame bytes (prefix included) and checks the prefix is the body length. */
static int decode_frame(const uint8_t *frame, size_t len, enum dsd_ipc_dir dir,
                        struct dsd_ipc_msg *m, struct dsd_ipc_fail *fail)
{
    uint32_t n = (uint32_t)frame[0] | (uint32_t)frame[1] << 8 | (uint32_t)frame[2] << 16 |
                 (uint32_t)frame[3] << 24;
    ASSERT_EQ_INT(n, len - 4);
    return dsd_ipc_decode(frame + 4, len - 4, dir, m, fail);
}

TEST(roundtrip_every_type)
{
    struct dsd_ipc_msg fx[MAX_FX];
    int n = fx_all(fx);
    bool seen[DSD_IPC_TYPE_COUNT] = {0};
    for (int i = 0; i < n; i++) {
        struct dsd_ipc_buf b1 = {0}, b2 = {0};
        struct dsd_err err = {{0}};
        struct dsd_ipc_fail fail;
        struct dsd_ipc_msg got;
        seen[fx[i].type] = true;
        ASSERT_EQ_INT(dsd_ipc_encode(&b1, &fx[i], DSD_IPC_FRAME_CEIL, &err), 0);
        int rc = decode_frame(b1.data, b1.len, dir_of(&fx[i]), &got, &fail);
        if (rc != 0)
            TEST_FAIL_AT("fixture %d (%s): decode failed: %u %s", i,
                         dsd_ipc_type_name(fx[i].type), fail.code, fail.err.msg);
        ASSERT_EQ_STR(dump_msg(&got, dump_a, DUMP_CAP), dump_msg(&fx[i], dump_b, DUMP_CAP));
        /* Encoding what was decoded gives the same bytes (nothing lost, nothing invented). */
        ASSERT_EQ_INT(dsd_ipc_encode(&b2, &got, DSD_IPC_FRAME_CEIL, &err), 0);
        ASSERT_EQ_INT(b2.len, b1.len);
        ASSERT_TRUE(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
        /* The decoded message owns its memory: scribbling over the frame changes nothing. */
        memset(b1.data, 0xa5, b1.len);
        ASSERT_EQ_STR(dump_msg(&got, dump_a, DUMP_CAP), dump_msg(&fx[i], dump_b, DUMP_CAP));
        dsd_ipc_msg_free(&got);
        dsd_ipc_buf_free(&b1);
        dsd_ipc_buf_free(&b2);
    }
    for (int t = DSD_IPC_NONE + 1; t < DSD_IPC_TYPE_COUNT; t++)
        if (!seen[t])
            TEST_FAIL_AT("no fixture for type %s", dsd_ipc_type_name(t));
}

/* Pushes a stream through a reader in chunks of the given sizes (cycled) and decodes every
 * frame; checks the dumps against the fixtures of that direction in order. */
static void check_stream(const uint8_t *stream, size_t len, const size_t *chunks, int nchunks,
                         const struct dsd_ipc_msg *fx, const int *idx, int nframes)
{
    struct dsd_ipc_reader r;
    dsd_ipc_reader_init(&r, DSD_IPC_FRAME_CEIL);
    size_t off = 0;
    int frames = 0, ci = 0;
    while (off < len) {
        size_t want = chunks[ci++ % nchunks];
        size_t n = want < len - off ? want : len - off;
        /* Copy each chunk into a scratch buffer that is wiped after use, like a provided
         * buffer going back to the kernel: a frame must not point into it afterwards. */
        uint8_t *chunk = malloc(n);
        memcpy(chunk, stream + off, n);
        size_t at = 0;
        while (at < n) {
            size_t used;
            struct dsd_ipc_frame f;
            struct dsd_ipc_fail fail;
            int rc = dsd_ipc_reader_push(&r, chunk + at, n - at, &used, &f, &fail);
            ASSERT_TRUE(rc >= 0);
            if (rc < 0)
                break;
            at += used;
            if (rc == 1) {
                struct dsd_ipc_msg got;
                ASSERT_TRUE(frames < nframes);
                if (frames >= nframes)
                    break;
                const struct dsd_ipc_msg *want_m = &fx[idx[frames]];
                rc = dsd_ipc_decode(f.body, f.len, dir_of(want_m), &got, &fail);
                ASSERT_EQ_INT(rc, 0);
                ASSERT_EQ_STR(dump_msg(&got, dump_a, DUMP_CAP),
                              dump_msg(want_m, dump_b, DUMP_CAP));
                dsd_ipc_msg_free(&got);
                frames++;
            } else {
                ASSERT_EQ_INT(used, n - (at - used));
            }
        }
        memset(chunk, 0x5a, n);
        free(chunk);
        off += n;
    }
    ASSERT_EQ_INT(frames, nframes);
    ASSERT_TRUE(dsd_ipc_reader_idle(&r));
    dsd_ipc_reader_free(&r);
}

TEST(reader_any_chunking)
{
    struct dsd_ipc_msg fx[MAX_FX];
    int n = fx_all(fx);
    struct dsd_ipc_buf stream = {0};
    int idx[MAX_FX];
    for (int i = 0; i < n; i++) {
        ASSERT_EQ_INT(dsd_ipc_encode(&stream, &fx[i], DSD_IPC_FRAME_CEIL, NULL), 0);
        idx[i] = i;
    }
    static const size_t one[] = {1};
    static const size_t odd[] = {3, 1, 7, 2, 64, 5, 1000, 4};
    static const size_t whole[] = {1u << 30};
    check_stream(stream.data, stream.len, one, 1, fx, idx, n);
    check_stream(stream.data, stream.len, odd, 8, fx, idx, n);
    check_stream(stream.data, stream.len, whole, 1, fx, idx, n);
    srand(7);
    size_t rnd[97];
    for (int i = 0; i < 97; i++)
        rnd[i] = 1 + (size_t)(rand() % 300);
    check_stream(stream.data, stream.len, rnd, 97, fx, idx, n);
    dsd_ipc_buf_free(&stream);
}

TEST(reader_offsets_and_zero_copy)
{
    uint8_t s[] = {2, 0, 0, 0, 0x80, 0xc0, 0, 0, 0, 0, 1, 0, 0, 0, 0x90};
    struct dsd_ipc_reader r;
    dsd_ipc_reader_init(&r, 100);
    size_t used;
    struct dsd_ipc_frame f;
    int rc = dsd_ipc_reader_push(&r, s, sizeof s, &used, &f, NULL);
    ASSERT_EQ_INT(rc, 1);
    ASSERT_EQ_INT(used, 6);
    ASSERT_EQ_INT(f.len, 2);
    ASSERT_EQ_INT(f.offset, 0);
    ASSERT_TRUE(f.body == s + 4);   /* whole frame inside the chunk: no copy */
    rc = dsd_ipc_reader_push(&r, s + 6, sizeof s - 6, &used, &f, NULL);
    ASSERT_EQ_INT(rc, 1);
    ASSERT_EQ_INT(f.len, 0);        /* empty body: handed out, the decoder rejects it */
    ASSERT_EQ_INT(f.offset, 6);
    ASSERT_EQ_INT(used, 4);
    struct dsd_ipc_fail fail;
    struct dsd_ipc_msg m;
    ASSERT_EQ_INT(dsd_ipc_decode(f.body, f.len, DSD_IPC_TO_DAEMON, &m, &fail), -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_BAD_MSGPACK);
    ASSERT_TRUE(dsd_ipc_reader_idle(&r));
    rc = dsd_ipc_reader_push(&r, s + 10, 4, &used, &f, NULL);   /* prefix of the third */
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(used, 4);
    ASSERT_TRUE(!dsd_ipc_reader_idle(&r));
    rc = dsd_ipc_reader_push(&r, s + 14, 1, &used, &f, NULL);
    ASSERT_EQ_INT(rc, 1);
    ASSERT_EQ_INT(f.offset, 10);
    ASSERT_EQ_INT(f.len, 1);
    ASSERT_EQ_INT(f.body[0], 0x90);
    ASSERT_TRUE(f.body != s + 14);  /* body after the prefix call: gathered in the buffer */
    /* Prefix split, then its last byte with the whole body: handed out from the chunk. */
    rc = dsd_ipc_reader_push(&r, s, 3, &used, &f, NULL);
    ASSERT_EQ_INT(rc, 0);
    rc = dsd_ipc_reader_push(&r, s + 3, 3, &used, &f, NULL);
    ASSERT_EQ_INT(rc, 1);
    ASSERT_EQ_INT(f.offset, 15);
    ASSERT_TRUE(f.body == s + 4);
    rc = dsd_ipc_reader_push(&r, s, 0, &used, &f, NULL);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_TRUE(dsd_ipc_reader_idle(&r));
    dsd_ipc_reader_free(&r);
}

TEST(reader_rejects_oversized_prefix_before_buffering)
{
    struct dsd_ipc_reader r;
    dsd_ipc_reader_init(&r, 1u << 20);
    uint8_t ok[4] = {0x00, 0x00, 0x10, 0x00};       /* exactly 1 MiB: accepted */
    uint8_t big[4] = {0x01, 0x00, 0x10, 0x00};      /* 1 MiB + 1 */
    size_t used;
    struct dsd_ipc_frame f;
    struct dsd_ipc_fail fail;
    ASSERT_EQ_INT(dsd_ipc_reader_push(&r, ok, 4, &used, &f, &fail), 0);
    dsd_ipc_reader_free(&r);
    dsd_ipc_reader_init(&r, 1u << 20);
    ASSERT_EQ_INT(dsd_ipc_reader_push(&r, big, 4, &used, &f, &fail), -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_FRAME_TOO_LARGE);
    ASSERT_EQ_INT(fail.id, 0);
    ASSERT_TRUE(dsd_ipc_code_fatal(fail.code));
    ASSERT_TRUE(strstr(fail.err.msg, "1048577") != NULL);
    ASSERT_TRUE(r.buf == NULL);     /* nothing was allocated for it */
    /* Dead for good: the stream cannot be resynchronized. */
    fail.code = 0;
    ASSERT_EQ_INT(dsd_ipc_reader_push(&r, ok, 4, &used, &f, &fail), -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_FRAME_TOO_LARGE);
    ASSERT_EQ_INT(used, 0);
    dsd_ipc_reader_free(&r);

    /* 0xffffffff with the pre-hello limit, fed one byte at a time. */
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    dsd_ipc_reader_init(&r, DSD_IPC_HELLO_FRAME);
    int rc = 0;
    for (int i = 0; i < 4; i++)
        rc = dsd_ipc_reader_push(&r, huge + i, 1, &used, &f, &fail);
    ASSERT_EQ_INT(rc, -EPROTO);
    ASSERT_EQ_INT(fail.code, DSD_IPC_E_FRAME_TOO_LARGE);
    dsd_ipc_reader_free(&r);

    /* set_max raises the limit after hello. */
    dsd_ipc_reader_init(&r, DSD_IPC_HELLO_FRAME);
    dsd_ipc_reader_set_max(&r, 1u << 21);
    ASSERT_EQ_INT(dsd_ipc_reader_push(&r, big, 4, &used, &f, &fail), 0);
    dsd_ipc_reader_free(&r);
}

TEST(buffer_append_consume)
{
    struct dsd_ipc_buf b = {0};
    char big[1000];
    for (int i = 0; i < 1000; i++)
        big[i] = (char)i;
    ASSERT_EQ_INT(dsd_ipc_buf_append(&b, big, 1000), 0);
    ASSERT_EQ_INT(dsd_ipc_buf_append(&b, "xy", 2), 0);
    ASSERT_EQ_INT(b.len, 1002);
    dsd_ipc_buf_consume(&b, 999);      /* a partial send */
    ASSERT_EQ_INT(b.len, 3);
    ASSERT_EQ_INT((unsigned char)b.data[0], (unsigned char)(char)999);
    ASSERT_EQ_INT(b.data[1], 'x');
    dsd_ipc_buf_consume(&b, 10);
    ASSERT_EQ_INT(b.len, 0);
    ASSERT_EQ_INT(dsd_ipc_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    dsd_ipc_buf_free(&b);
    dsd_ipc_buf_free(&b);
    ASSERT_TRUE(b.data == NULL && b.cap == 0);
}

/* ---- bad input ------------------------------------------------------------------------- */

struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static void mp_init(struct mp *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_s(struct mp *m, const char *s)
{
    msgpack_pack_str(&m->pk, strlen(s));
    msgpack_pack_str_body(&m->pk, s, strlen(s));
}

/* {"t": type, "id": id, ...} header for a map of n entries in total. */
static void mp_head(struct mp *m, size_t n, const char *type, uint64_t id)
{
    msgpack_pack_map(&m->pk, n);
    mp_s(m, "t");
    mp_s(m, type);
    mp_s(m, "id");
    msgpack_pack_uint64(&m->pk, id);
}

static void mp_raw(struct mp *m, const void *p, size_t n)
{
    msgpack_sbuffer_write(&m->sb, p, n);
}

/* Decodes and checks code, id and that the message mentions `needle`. */
static void expect_fail_at(const char *file, int line, const void *body, size_t len,
                           enum dsd_ipc_dir dir, uint32_t code, uint64_t id, const char *needle)
{
    struct dsd_ipc_msg m;
    struct dsd_ipc_fail fail;
    int rc = dsd_ipc_decode(body, len, dir, &m, &fail);
    test_checks_total++;
    if (rc != -EPROTO || fail.code != code || fail.id != id ||
        (needle && !strstr(fail.err.msg, needle))) {
        fprintf(stderr, "%s:%d: [%s] expected code %u id %llu \"%s\", got rc %d code %u id %llu: %s\n",
                file, line, test_current_name, code, (unsigned long long)id,
                needle ? needle : "", rc, fail.code, (unsigned long long)fail.id, fail.err.msg);
        test_current_failed = 1;
        test_failures_total++;
    }
    /* A failed decode leaves an empty message that holds no memory. */
    ASSERT_EQ_INT(m.type, DSD_IPC_NONE);
    ASSERT_TRUE(m.arena == NULL);
    dsd_ipc_msg_free(&m);
}
#define EXPECT_FAIL(body, len, dir, code, id, needle) \
    expect_fail_at(__FILE__, __LINE__, body, len, dir, code, id, needle)
#define EXPECT_FAIL_MP(mp, dir, code, id, needle) \
    EXPECT_FAIL((mp)->sb.data, (mp)->sb.size, dir, code, id, needle)

TEST(bad_msgpack_structure)
{
    static const uint8_t empty[1] = {0};
    EXPECT_FAIL(empty, 0, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "empty");
    static const uint8_t c1[] = {0xc1};
    EXPECT_FAIL(c1, 1, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "0xc1");
    /* The 5 bytes that make msgpack-c allocate 384 MiB. */
    static const uint8_t arr32[] = {0xdd, 0x01, 0x00, 0x00, 0x00};
    EXPECT_FAIL(arr32, 5, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "16777216 elements");
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    EXPECT_FAIL(map32, 5, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "4294967295 elements");
    static const uint8_t arr16[] = {0xdc, 0xff, 0xff, 0x01, 0x02};
    EXPECT_FAIL(arr16, 5, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "65535 elements");
    static const uint8_t fixarr[] = {0x9f, 0x01};
    EXPECT_FAIL(fixarr, 2, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "15 elements");
    static const uint8_t str32[] = {0x81, 0xa1, 't', 0xdb, 0xff, 0xff, 0xff, 0xf0, 'a'};
    EXPECT_FAIL(str32, sizeof str32, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0,
                "4294967280 bytes");
    static const uint8_t bin32[] = {0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00};
    EXPECT_FAIL(bin32, sizeof bin32, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "declares");
    static const uint8_t ext32[] = {0xc9, 0x00, 0x00, 0x10, 0x00, 0x01};
    EXPECT_FAIL(ext32, sizeof ext32, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "declares");
    static const uint8_t len_cut[] = {0xda, 0x00};
    EXPECT_FAIL(len_cut, 2, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "length field");
    static const uint8_t hdr_cut[] = {0xde, 0x00};
    EXPECT_FAIL(hdr_cut, 2, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "container header");
    static const uint8_t f64_cut[] = {0x81, 0xa1, 't', 0xcb, 0, 0};
    EXPECT_FAIL(f64_cut, sizeof f64_cut, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0,
                "declares 8 bytes");
    static const uint8_t trailing[] = {0x80, 0x00};
    EXPECT_FAIL(trailing, 2, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "after the end");

    /* A valid frame cut short at every position: always bad_msgpack, never a crash. */
    struct dsd_ipc_msg fx[MAX_FX];
    int n = fx_all(fx);
    struct dsd_ipc_buf b = {0};
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &fx[4], DSD_IPC_FRAME_CEIL, NULL), 0); /* chat generate */
    for (size_t cut = 0; cut < b.len - 4; cut++)
        EXPECT_FAIL(b.data + 4, cut, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, NULL);
    dsd_ipc_buf_free(&b);
    (void)n;

    /* A huge declared array inside an otherwise valid generate: caught before msgpack-c. */
    struct mp m;
    mp_init(&m);
    mp_head(&m, 3, "generate", 9);
    mp_s(&m, "tokens");
    mp_raw(&m, arr32, 5);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_MSGPACK, 0, "16777216 elements");
    msgpack_sbuffer_destroy(&m.sb);
}

TEST(too_complex)
{
    /* Depth: the top map is 1; 7 nested arrays inside reach 8 (allowed), 8 reach 9. */
    for (int extra = 7; extra <= 8; extra++) {
        struct mp m;
        mp_init(&m);
        mp_head(&m, 3, "info", 3);
        mp_s(&m, "x");
        for (int i = 0; i < extra; i++)
            msgpack_pack_array(&m.pk, 1);
        msgpack_pack_nil(&m.pk);
        if (extra == 7) {
            struct dsd_ipc_msg msg;
            struct dsd_ipc_fail fail;
            ASSERT_EQ_INT(dsd_ipc_decode(m.sb.data, m.sb.size, DSD_IPC_TO_DAEMON, &msg, &fail), 0);
            dsd_ipc_msg_free(&msg);
        } else {
            EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_TOO_COMPLEX, 0, "deeper than 8");
        }
        msgpack_sbuffer_destroy(&m.sb);
    }
    /* 100000 nested fixarrays (msgpack-c alone would fail with NOMEM at 33). */
    size_t n = 100000;
    uint8_t *deep = malloc(n + 1);
    memset(deep, 0x91, n);
    deep[n] = 0xc0;
    EXPECT_FAIL(deep, n + 1, DSD_IPC_TO_DAEMON, DSD_IPC_E_TOO_COMPLEX, 0, "deeper");
    free(deep);
    /* More objects than DSD_IPC_MAX_OBJECTS in a legal-looking token array. */
    uint32_t cnt = DSD_IPC_MAX_OBJECTS;
    struct mp m;
    mp_init(&m);
    mp_head(&m, 3, "generate", 4);
    mp_s(&m, "tokens");
    msgpack_pack_array(&m.pk, cnt);
    for (uint32_t i = 0; i < cnt; i++)
        msgpack_pack_uint32(&m.pk, 1);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_TOO_COMPLEX, 0, "more than 1048576");
    msgpack_sbuffer_destroy(&m.sb);
}

TEST(not_a_map_and_header_fields)
{
    static const uint8_t arr[] = {0x92, 0x01, 0x02};
    EXPECT_FAIL(arr, 3, DSD_IPC_TO_DAEMON, DSD_IPC_E_NOT_A_MAP, 0, "an array");
    static const uint8_t num[] = {0x05};
    EXPECT_FAIL(num, 1, DSD_IPC_TO_DAEMON, DSD_IPC_E_NOT_A_MAP, 0, "an integer");
    static const uint8_t s[] = {0xa2, 'h', 'i'};
    EXPECT_FAIL(s, 3, DSD_IPC_TO_CLIENT, DSD_IPC_E_NOT_A_MAP, 0, "a string");

    struct mp m;
    mp_init(&m);  /* no "id" */
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "t");
    mp_s(&m, "health");
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_MISSING_FIELD, 0, "\"id\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* no "t": the id is known and reported */
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "id");
    msgpack_pack_uint64(&m.pk, 42);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_MISSING_FIELD, 42, "\"t\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* "t" as an integer (the design choice is strings) */
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "t");
    msgpack_pack_int(&m.pk, 3);
    mp_s(&m, "id");
    msgpack_pack_uint64(&m.pk, 5);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_WRONG_TYPE, 5, "\"t\" must be a string");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* "id" as a string */
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "t");
    mp_s(&m, "health");
    mp_s(&m, "id");
    mp_s(&m, "7");
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_WRONG_TYPE, 0, "\"id\" must be an unsigned");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* negative id */
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "t");
    mp_s(&m, "health");
    mp_s(&m, "id");
    msgpack_pack_int(&m.pk, -1);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 0, "\"id\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* id 0 is reserved */
    mp_head(&m, 2, "health", 0);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 0, "reserved");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* "t" twice */
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "t");
    mp_s(&m, "health");
    mp_s(&m, "t");
    mp_s(&m, "info");
    mp_s(&m, "id");
    msgpack_pack_uint64(&m.pk, 5);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 0, "twice");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 2, "launch_missiles", 8);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_UNKNOWN_TYPE, 8, "launch_missiles");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* a reply type sent to the daemon */
    mp_head(&m, 2, "tokens", 8);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_UNKNOWN_TYPE, 8, "daemon-to-client");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* a request type sent to a client */
    mp_head(&m, 2, "generate", 8);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_UNKNOWN_TYPE, 8, "client-to-daemon");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* control bytes in the type name are not echoed raw */
    mp_head(&m, 2, "bad\x1b[2Jtype", 8);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_UNKNOWN_TYPE, 8, "bad?[2Jtype");
    msgpack_sbuffer_destroy(&m.sb);
}

/* A generate frame with one extra key built by fn; checks the outcome. */
typedef void (*val_fn)(struct mp *m);

static void gen_with(const char *file, int line, const char *key, val_fn fn, bool with_tokens,
                     uint32_t code, const char *needle)
{
    struct mp m;
    mp_init(&m);
    mp_head(&m, 2 + (key ? 1 : 0) + (with_tokens ? 1 : 0), "generate", 31);
    if (with_tokens) {
        mp_s(&m, "tokens");
        msgpack_pack_array(&m.pk, 1);
        msgpack_pack_uint32(&m.pk, 3);
    }
    if (key) {
        mp_s(&m, key);
        fn(&m);
    }
    expect_fail_at(file, line, m.sb.data, m.sb.size, DSD_IPC_TO_DAEMON, code, 31, needle);
    msgpack_sbuffer_destroy(&m.sb);
}
#define GEN_FAIL(key, fn, code, needle) gen_with(__FILE__, __LINE__, key, fn, true, code, needle)

static void v_str_hot(struct mp *m) { mp_s(m, "hot"); }
static void v_1_5(struct mp *m) { msgpack_pack_double(&m->pk, 1.5); }
static void v_zero(struct mp *m) { msgpack_pack_double(&m->pk, 0.0); }
static void v_nan(struct mp *m) { msgpack_pack_double(&m->pk, NAN); }
static void v_inf(struct mp *m) { msgpack_pack_float(&m->pk, INFINITY); }
static void v_neg(struct mp *m) { msgpack_pack_int(&m->pk, -3); }
static void v_5000(struct mp *m) { msgpack_pack_int(&m->pk, 5000); }
static void v_true(struct mp *m) { msgpack_pack_true(&m->pk); }
static void v_big(struct mp *m) { msgpack_pack_uint64(&m->pk, 1ull << 32); }
static void v_tok_neg(struct mp *m)
{
    msgpack_pack_array(&m->pk, 2);
    msgpack_pack_uint32(&m->pk, 1);
    msgpack_pack_int(&m->pk, -1);
}
static void v_tok_str(struct mp *m)
{
    msgpack_pack_array(&m->pk, 2);
    msgpack_pack_uint32(&m->pk, 1);
    mp_s(m, "x");
}
static void v_tok_big(struct mp *m)
{
    msgpack_pack_array(&m->pk, 1);
    msgpack_pack_uint64(&m->pk, 1ull << 32);
}
static void v_empty_arr(struct mp *m) { msgpack_pack_array(&m->pk, 0); }
static void v_stop17(struct mp *m)
{
    msgpack_pack_array(&m->pk, 17);
    for (int i = 0; i < 17; i++)
        mp_s(m, "x");
}
static void v_stop_empty(struct mp *m)
{
    msgpack_pack_array(&m->pk, 1);
    mp_s(m, "");
}
static void v_stop_nul(struct mp *m)
{
    msgpack_pack_array(&m->pk, 2);
    mp_s(m, "x");
    msgpack_pack_str(&m->pk, 3);
    msgpack_pack_str_body(&m->pk, "a\0b", 3);    /* valid UTF-8, but it would match as "a" */
}
static void v_stop_long(struct mp *m)
{
    char s[300];
    memset(s, 'a', 257);
    s[257] = 0;
    msgpack_pack_array(&m->pk, 1);
    mp_s(m, s);
}
static void v_bad_utf8(struct mp *m)
{
    msgpack_pack_str(&m->pk, 3);
    msgpack_pack_str_body(&m->pk, "a\xc0\x80", 3);     /* overlong NUL */
}
static void v_bin(struct mp *m)
{
    msgpack_pack_bin(&m->pk, 2);
    msgpack_pack_bin_body(&m->pk, "hi", 2);
}
static void v_span_no_count(struct mp *m)
{
    msgpack_pack_map(&m->pk, 1);
    mp_s(m, "offset");
    msgpack_pack_uint32(&m->pk, 0);
}
static void v_span_zero(struct mp *m)
{
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "offset");
    msgpack_pack_uint32(&m->pk, 0);
    mp_s(m, "count");
    msgpack_pack_uint32(&m->pk, 0);
}
static void msgs_one(struct mp *m, const char *role, void (*content)(struct mp *))
{
    msgpack_pack_array(&m->pk, 1);
    msgpack_pack_map(&m->pk, content ? 2 : 1);
    mp_s(m, "role");
    mp_s(m, role);
    if (content) {
        mp_s(m, "content");
        content(m);
    }
}
static void v_msg_role(struct mp *m) { msgs_one(m, "wizard", NULL); }
static void c_image(struct mp *m)
{
    msgpack_pack_array(&m->pk, 2);
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "type");
    mp_s(m, "text");
    mp_s(m, "text");
    mp_s(m, "look:");
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "type");
    mp_s(m, "image_url");
    mp_s(m, "image_url");
    mp_s(m, "http://x");
}
static void v_msg_image(struct mp *m) { msgs_one(m, "user", c_image); }
static void c_int(struct mp *m) { msgpack_pack_int(&m->pk, 4); }
static void v_msg_content_int(struct mp *m) { msgs_one(m, "user", c_int); }
static void v_msg_norole(struct mp *m)
{
    msgpack_pack_array(&m->pk, 1);
    msgpack_pack_map(&m->pk, 1);
    mp_s(m, "content");
    mp_s(m, "hi");
}
static void v_msg_not_map(struct mp *m)
{
    msgpack_pack_array(&m->pk, 1);
    mp_s(m, "hi");
}
static void v_msg_call_noname(struct mp *m)
{
    msgpack_pack_array(&m->pk, 1);
    msgpack_pack_map(&m->pk, 2);
    mp_s(m, "role");
    mp_s(m, "assistant");
    mp_s(m, "tool_calls");
    msgpack_pack_array(&m->pk, 1);
    msgpack_pack_map(&m->pk, 1);
    mp_s(m, "function");
    msgpack_pack_map(&m->pk, 1);
    mp_s(m, "arguments");
    mp_s(m, "{}");
}

TEST(bad_generate_fields)
{
    GEN_FAIL("temperature", v_str_hot, DSD_IPC_E_WRONG_TYPE, "\"temperature\" must be a number");
    GEN_FAIL("temperature", v_nan, DSD_IPC_E_BAD_VALUE, "\"temperature\"");
    GEN_FAIL("temperature", v_inf, DSD_IPC_E_BAD_VALUE, "\"temperature\"");
    GEN_FAIL("temperature", v_neg, DSD_IPC_E_BAD_VALUE, "\"temperature\"");
    GEN_FAIL("top_p", v_1_5, DSD_IPC_E_BAD_VALUE, "\"top_p\" must be a finite number in (0, 1]");
    GEN_FAIL("top_p", v_zero, DSD_IPC_E_BAD_VALUE, "\"top_p\"");
    GEN_FAIL("min_p", v_1_5, DSD_IPC_E_BAD_VALUE, "\"min_p\"");
    GEN_FAIL("repetition_penalty", v_zero, DSD_IPC_E_BAD_VALUE, "\"repetition_penalty\"");
    GEN_FAIL("frequency_penalty", v_5000, DSD_IPC_E_BAD_VALUE, "\"frequency_penalty\"");
    GEN_FAIL("top_k", v_neg, DSD_IPC_E_BAD_VALUE, "\"top_k\"");
    GEN_FAIL("top_k", v_1_5, DSD_IPC_E_WRONG_TYPE, "\"top_k\" must be an unsigned integer");
    GEN_FAIL("max_tokens", v_big, DSD_IPC_E_BAD_VALUE, "\"max_tokens\"");
    GEN_FAIL("seed", v_neg, DSD_IPC_E_BAD_VALUE, "\"seed\"");
    GEN_FAIL("priority", v_5000, DSD_IPC_E_BAD_VALUE, "\"priority\" must be in [-1000, 1000]");
    GEN_FAIL("priority", v_true, DSD_IPC_E_WRONG_TYPE, "\"priority\" must be an integer");
    GEN_FAIL("logprobs", v_zero, DSD_IPC_E_WRONG_TYPE, "\"logprobs\" must be a bool");
    GEN_FAIL("top_logprobs", v_5000, DSD_IPC_E_BAD_VALUE, "\"top_logprobs\"");
    GEN_FAIL("top_logprobs", v_1_5, DSD_IPC_E_WRONG_TYPE, "\"top_logprobs\"");
    GEN_FAIL("stop", v_stop17, DSD_IPC_E_BAD_VALUE, "\"stop\" must have 0 to 16 entries");
    GEN_FAIL("stop", v_stop_empty, DSD_IPC_E_BAD_VALUE, "\"stop[0]\"");
    GEN_FAIL("stop", v_stop_long, DSD_IPC_E_BAD_VALUE, "257 bytes");
    GEN_FAIL("stop", v_stop_nul, DSD_IPC_E_BAD_VALUE, "\"stop[1]\" must not contain a NUL byte");
    GEN_FAIL("stop", v_str_hot, DSD_IPC_E_WRONG_TYPE, "\"stop\" must be an array");
    GEN_FAIL("stop_token_ids", v_tok_neg, DSD_IPC_E_BAD_VALUE, "entry 1");
    GEN_FAIL("ring", v_neg, DSD_IPC_E_BAD_VALUE, "\"ring\"");
    GEN_FAIL("notify", v_str_hot, DSD_IPC_E_WRONG_TYPE, "\"notify\"");
    GEN_FAIL("temperature", v_true, DSD_IPC_E_WRONG_TYPE, "\"temperature\"");
    GEN_FAIL("top_k", v_1_5, DSD_IPC_E_WRONG_TYPE, "\"top_k\"");
    /* Prompt forms. */
    gen_with(__FILE__, __LINE__, "tokens", v_tok_neg, false, DSD_IPC_E_BAD_VALUE, "entry 1 must be an integer in [0, 4294967295], got -1");
    gen_with(__FILE__, __LINE__, "tokens", v_tok_str, false, DSD_IPC_E_WRONG_TYPE, "entry 1 must be an integer in [0, 4294967295], got a string");
    gen_with(__FILE__, __LINE__, "tokens", v_tok_big, false, DSD_IPC_E_BAD_VALUE, "entry 0 must be an integer in [0, 4294967295], got 4294967296");
    gen_with(__FILE__, __LINE__, "tokens", v_empty_arr, false, DSD_IPC_E_BAD_VALUE,
             "must have 1 to");
    gen_with(__FILE__, __LINE__, "tokens", v_str_hot, false, DSD_IPC_E_WRONG_TYPE,
             "\"tokens\" must be an array");
    gen_with(__FILE__, __LINE__, "text", v_bad_utf8, false, DSD_IPC_E_BAD_VALUE, "UTF-8");
    gen_with(__FILE__, __LINE__, "text", v_bin, false, DSD_IPC_E_WRONG_TYPE, "got binary");
    gen_with(__FILE__, __LINE__, "prompt_span", v_span_no_count, false,
             DSD_IPC_E_MISSING_FIELD, "\"prompt_span.count\" is required");
    gen_with(__FILE__, __LINE__, "prompt_span", v_span_zero, false, DSD_IPC_E_BAD_VALUE,
             "\"prompt_span.count\"");
    gen_with(__FILE__, __LINE__, "prompt_span", v_str_hot, false, DSD_IPC_E_WRONG_TYPE,
             "must be a map");
    gen_with(__FILE__, __LINE__, "messages", v_msg_role, false, DSD_IPC_E_BAD_VALUE,
             "\"messages[0].role\" must be one of system, user, assistant, tool, developer");
    gen_with(__FILE__, __LINE__, "messages", v_msg_image, false, DSD_IPC_E_BAD_VALUE,
             "\"messages[0].content[1].type\"");
    gen_with(__FILE__, __LINE__, "messages", v_msg_content_int, false, DSD_IPC_E_WRONG_TYPE,
             "\"messages[0].content\"");
    gen_with(__FILE__, __LINE__, "messages", v_msg_norole, false, DSD_IPC_E_MISSING_FIELD,
             "\"messages[0].role\" is required");
    gen_with(__FILE__, __LINE__, "messages", v_msg_not_map, false, DSD_IPC_E_WRONG_TYPE,
             "\"messages[0]\" must be a map");
    gen_with(__FILE__, __LINE__, "messages", v_msg_call_noname, false, DSD_IPC_E_MISSING_FIELD,
             "\"messages[0].tool_calls[0].function.name\" is required");
    gen_with(__FILE__, __LINE__, "messages", v_empty_arr, false, DSD_IPC_E_BAD_VALUE,
             "\"messages\" must have 1 to");
    /* No prompt, two prompts, misplaced chat keys, logprob rule. */
    gen_with(__FILE__, __LINE__, NULL, NULL, false, DSD_IPC_E_MISSING_FIELD, "exactly one of");
    GEN_FAIL("text", v_str_hot, DSD_IPC_E_BAD_VALUE, "not several");
    GEN_FAIL("thinking", v_true, DSD_IPC_E_BAD_VALUE, "with \"messages\" only");
    GEN_FAIL("add_special", v_true, DSD_IPC_E_BAD_VALUE, "with \"text\" only");
    GEN_FAIL("top_logprobs", v_neg, DSD_IPC_E_BAD_VALUE, "\"top_logprobs\"");

    struct mp m;
    mp_init(&m);  /* top_logprobs without logprobs */
    mp_head(&m, 4, "generate", 3);
    mp_s(&m, "tokens");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_uint32(&m.pk, 3);
    mp_s(&m, "top_logprobs");
    msgpack_pack_uint32(&m.pk, 3);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 3, "needs \"logprobs\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* a known key twice */
    mp_head(&m, 5, "generate", 3);
    mp_s(&m, "tokens");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_uint32(&m.pk, 3);
    mp_s(&m, "temperature");
    msgpack_pack_double(&m.pk, 0.1);
    mp_s(&m, "temperature");
    msgpack_pack_double(&m.pk, 0.9);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 3,
                   "\"temperature\" is given twice");
    msgpack_sbuffer_destroy(&m.sb);
}

/* A done frame for id 2 with the given finish, per-token time and optional error map. */
static void mp_done(struct mp *m, const char *finish, double per_token, bool with_error)
{
    mp_init(m);
    mp_head(m, 5 + with_error, "done", 2);
    mp_s(m, "finish");
    mp_s(m, finish);
    mp_s(m, "usage");
    msgpack_pack_map(&m->pk, 3);
    mp_s(m, "prompt");
    msgpack_pack_uint32(&m->pk, 1);
    mp_s(m, "cached");
    msgpack_pack_uint32(&m->pk, 0);
    mp_s(m, "completion");
    msgpack_pack_uint32(&m->pk, 1);
    mp_s(m, "timings");
    msgpack_pack_map(&m->pk, 4);
    mp_s(m, "queue_us");
    msgpack_pack_uint32(&m->pk, 1);
    mp_s(m, "first_token_us");
    msgpack_pack_uint32(&m->pk, 1);
    mp_s(m, "total_us");
    msgpack_pack_uint32(&m->pk, 1);
    mp_s(m, "per_token_us");
    msgpack_pack_double(&m->pk, per_token);
    if (with_error) {
        mp_s(m, "error");
        msgpack_pack_map(&m->pk, 2);
        mp_s(m, "code");
        msgpack_pack_uint32(&m->pk, 503);
        mp_s(m, "msg");
        mp_s(m, "out of memory");
    }
}

TEST(bad_other_messages)
{
    struct mp m;
    mp_init(&m);
    mp_head(&m, 3, "hello", 1);
    mp_s(&m, "max_version");
    msgpack_pack_uint32(&m.pk, 1);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_MISSING_FIELD, 1, "\"min_version\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 4, "hello", 1);
    mp_s(&m, "min_version");
    msgpack_pack_uint32(&m.pk, 3);
    mp_s(&m, "max_version");
    msgpack_pack_uint32(&m.pk, 2);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 1, "below min_version");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 5, "hello", 1);
    mp_s(&m, "min_version");
    msgpack_pack_uint32(&m.pk, 1);
    mp_s(&m, "max_version");
    msgpack_pack_uint32(&m.pk, 1);
    mp_s(&m, "max_frame");
    msgpack_pack_uint32(&m.pk, 100);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_BAD_VALUE, 1, "\"max_frame\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 3, "detokenize", 2);
    mp_s(&m, "skip_special");
    msgpack_pack_true(&m.pk);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_MISSING_FIELD, 2, "\"tokens\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* tokenize takes no token prompt: "tokens" is just an unknown key */
    mp_head(&m, 3, "tokenize", 2);
    mp_s(&m, "tokens");
    msgpack_pack_array(&m.pk, 0);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_DAEMON, DSD_IPC_E_MISSING_FIELD, 2,
                   "exactly one of \"text\", \"messages\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 3, "done", 2);
    mp_s(&m, "finish");
    mp_s(&m, "exploded");
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_BAD_VALUE, 2, "\"finish\" must be one of stop");
    msgpack_sbuffer_destroy(&m.sb);

    mp_done(&m, "error", 1.0, false);   /* finish error without the error map */
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_MISSING_FIELD, 2,
                   "\"error\" is required with finish \"error\"");
    msgpack_sbuffer_destroy(&m.sb);
    mp_done(&m, "stop", 1.0, true);     /* an error map with another finish */
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_BAD_VALUE, 2, "only allowed with finish");
    msgpack_sbuffer_destroy(&m.sb);
    mp_done(&m, "stop", -1.0, false);   /* negative mean time per token */
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_BAD_VALUE, 2, "\"timings.per_token_us\"");
    msgpack_sbuffer_destroy(&m.sb);
    mp_done(&m, "error", 1.0, true);    /* and the well-formed one passes */
    struct dsd_ipc_msg dm;
    ASSERT_EQ_INT(dsd_ipc_decode(m.sb.data, m.sb.size, DSD_IPC_TO_CLIENT, &dm, NULL), 0);
    ASSERT_EQ_INT(dm.done.finish, DSD_IPC_FINISH_ERROR);
    ASSERT_EQ_INT(dm.done.error_code, 503);
    dsd_ipc_msg_free(&dm);
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 3, "done", 2);
    mp_s(&m, "finish");
    mp_s(&m, "stop");
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_MISSING_FIELD, 2, "\"usage\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* tokens with a logprob entry missing its logprob, deep path */
    mp_head(&m, 3, "tokens", 2);
    mp_s(&m, "logprobs");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "token");
    msgpack_pack_uint32(&m.pk, 5);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_MISSING_FIELD, 2,
                   "\"logprobs[0].logprob\" is required");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* a top pair of three */
    mp_head(&m, 3, "tokens", 2);
    mp_s(&m, "logprobs");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "token");
    msgpack_pack_uint32(&m.pk, 5);
    mp_s(&m, "logprob");
    msgpack_pack_double(&m.pk, -1);
    mp_s(&m, "top");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_array(&m.pk, 3);
    msgpack_pack_uint32(&m.pk, 5);
    msgpack_pack_double(&m.pk, -1);
    msgpack_pack_double(&m.pk, -1);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_BAD_VALUE, 2, "top[0]");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* stats with a duplicate name and with a map value */
    mp_head(&m, 3, "stats_ok", 2);
    mp_s(&m, "stats");
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "a");
    msgpack_pack_int(&m.pk, 1);
    mp_s(&m, "a");
    msgpack_pack_int(&m.pk, 2);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_BAD_VALUE, 2, "\"stats.a\" is given twice");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 3, "stats_ok", 2);
    mp_s(&m, "stats");
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "a");
    msgpack_pack_map(&m.pk, 0);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_WRONG_TYPE, 2, "\"stats.a\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 3, "hello_ok", 1);
    mp_s(&m, "version");
    msgpack_pack_uint32(&m.pk, 1);
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_MISSING_FIELD, 1, "\"model\"");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);
    mp_head(&m, 3, "health_ok", 1);
    mp_s(&m, "status");
    mp_s(&m, "meh");
    EXPECT_FAIL_MP(&m, DSD_IPC_TO_CLIENT, DSD_IPC_E_BAD_VALUE, 1, "ok, loading, draining");
    msgpack_sbuffer_destroy(&m.sb);

    mp_init(&m);  /* id 0 is fine for a connection-level error */
    mp_head(&m, 4, "error", 0);
    mp_s(&m, "code");
    msgpack_pack_uint32(&m.pk, 100);
    mp_s(&m, "msg");
    mp_s(&m, "x");
    struct dsd_ipc_msg msg;
    ASSERT_EQ_INT(dsd_ipc_decode(m.sb.data, m.sb.size, DSD_IPC_TO_CLIENT, &msg, NULL), 0);
    ASSERT_EQ_INT(msg.error.code, 100);
    dsd_ipc_msg_free(&msg);
    msgpack_sbuffer_destroy(&m.sb);
}

TEST(unknown_keys_are_ignored)
{
    struct mp m;
    mp_init(&m);
    mp_head(&m, 8, "generate", 12);
    mp_s(&m, "tokens");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_uint32(&m.pk, 1);
    msgpack_pack_uint32(&m.pk, 2);
    mp_s(&m, "future_feature");             /* any type, any shape */
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "x");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_nil(&m.pk);
    msgpack_pack_bin(&m.pk, 1);
    msgpack_pack_bin_body(&m.pk, "z", 1);
    msgpack_pack_int(&m.pk, 7);             /* a non-string key */
    mp_s(&m, "seven");
    mp_s(&m, "Temperature");                /* keys are case-sensitive: unknown */
    mp_s(&m, "not a number");
    mp_s(&m, "top_p");
    msgpack_pack_float(&m.pk, 0.5f);        /* float32 is accepted for numbers */
    uint8_t ts[] = {0xd6, 0xff, 0, 0, 0, 1};  /* an ext (timestamp) under an unknown key */
    mp_s(&m, "when");
    mp_raw(&m, ts, sizeof ts);
    struct dsd_ipc_msg msg;
    struct dsd_ipc_fail fail;
    int rc = dsd_ipc_decode(m.sb.data, m.sb.size, DSD_IPC_TO_DAEMON, &msg, &fail);
    ASSERT_EQ_INT(rc, 0);
    if (rc == 0) {
        ASSERT_EQ_INT(msg.type, DSD_IPC_GENERATE);
        ASSERT_EQ_INT(msg.generate.prompt.n_tokens, 2);
        ASSERT_EQ_INT(msg.generate.prompt.tokens[1], 2);
        ASSERT_NEAR(msg.generate.sampling.top_p, 0.5, 0, 0);
        ASSERT_NEAR(msg.generate.sampling.temperature, 1.0, 0, 0);
        ASSERT_TRUE(!msg.generate.detokenize);      /* token prompt default */
        ASSERT_TRUE(msg.generate.notify);
    } else {
        fprintf(stderr, "%s\n", fail.err.msg);
    }
    dsd_ipc_msg_free(&msg);
    msgpack_sbuffer_destroy(&m.sb);

    /* Integers are accepted where numbers are expected; content parts are joined. */
    mp_init(&m);
    mp_head(&m, 4, "generate", 13);
    mp_s(&m, "temperature");
    msgpack_pack_int(&m.pk, 0);
    mp_s(&m, "messages");
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 2);
    mp_s(&m, "role");
    mp_s(&m, "user");
    mp_s(&m, "content");
    msgpack_pack_array(&m.pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map(&m.pk, 2);
        mp_s(&m, "type");
        mp_s(&m, "text");
        mp_s(&m, "text");
        mp_s(&m, i ? "world" : "hello ");
    }
    rc = dsd_ipc_decode(m.sb.data, m.sb.size, DSD_IPC_TO_DAEMON, &msg, &fail);
    ASSERT_EQ_INT(rc, 0);
    if (rc == 0) {
        ASSERT_EQ_INT(msg.generate.prompt.kind, DSD_IPC_PROMPT_CHAT);
        ASSERT_EQ_STR(msg.generate.prompt.messages[0].content.ptr, "hello world");
        ASSERT_EQ_INT(msg.generate.prompt.messages[0].content.len, 11);
        ASSERT_NEAR(msg.generate.sampling.temperature, 0.0, 0, 0);
        ASSERT_TRUE(msg.generate.detokenize);       /* chat prompt default */
    }
    dsd_ipc_msg_free(&msg);
    msgpack_sbuffer_destroy(&m.sb);
}

TEST(encoder_errors)
{
    struct dsd_ipc_msg fx[MAX_FX];
    fx_all(fx);
    struct dsd_ipc_buf b = {0};
    struct dsd_err err = {{0}};
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &fx[0], DSD_IPC_FRAME_CEIL, &err), 0);
    size_t len = b.len;
    /* Too big for the negotiated frame: -EMSGSIZE and nothing appended. */
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &fx[4], 64, &err), -EMSGSIZE);
    ASSERT_EQ_INT(b.len, len);
    ASSERT_TRUE(strstr(err.msg, "exceeds the frame limit of 64") != NULL);
    struct dsd_ipc_msg bad = {.type = DSD_IPC_NONE, .id = 1};
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &bad, DSD_IPC_FRAME_CEIL, &err), -EINVAL);
    bad.type = DSD_IPC_TYPE_COUNT;
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &bad, DSD_IPC_FRAME_CEIL, &err), -EINVAL);
    bad = (struct dsd_ipc_msg){.type = DSD_IPC_DONE, .id = 1};
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &bad, DSD_IPC_FRAME_CEIL, &err), -EINVAL);
    bad = (struct dsd_ipc_msg){.type = DSD_IPC_GENERATE, .id = 1};
    dsd_ipc_generate_default(&bad.generate);
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &bad, DSD_IPC_FRAME_CEIL, &err), -EINVAL);
    bad.generate.sampling.n_stop = 17;
    bad.generate.prompt.kind = DSD_IPC_PROMPT_TEXT;
    ASSERT_EQ_INT(dsd_ipc_encode(&b, &bad, DSD_IPC_FRAME_CEIL, &err), -EINVAL);
    ASSERT_EQ_INT(b.len, len);
    dsd_ipc_buf_free(&b);
}

TEST(error_frames_from_failures)
{
    /* A failure that quotes peer bytes cut mid-character still makes a valid error frame. */
    struct dsd_ipc_fail fail = {.code = DSD_IPC_E_BAD_VALUE, .id = 9};
    snprintf(fail.err.msg, sizeof fail.err.msg, "bad \"%s\"", "\xe6\x9d");
    struct dsd_ipc_buf b = {0};
    ASSERT_EQ_INT(dsd_ipc_encode_fail(&b, &fail, DSD_IPC_HELLO_FRAME, NULL), 0);
    struct dsd_ipc_msg m;
    struct dsd_ipc_fail f2;
    int rc = decode_frame(b.data, b.len, DSD_IPC_TO_CLIENT, &m, &f2);
    ASSERT_EQ_INT(rc, 0);
    if (rc == 0) {
        ASSERT_EQ_INT(m.type, DSD_IPC_ERROR);
        ASSERT_EQ_INT(m.id, 9);
        ASSERT_EQ_INT(m.error.code, DSD_IPC_E_BAD_VALUE);
        ASSERT_TRUE(!m.error.fatal);
        ASSERT_EQ_STR(m.error.msg.ptr, "bad \"??\"");
    }
    dsd_ipc_msg_free(&m);
    dsd_ipc_buf_free(&b);
    /* Fatal codes travel as fatal. */
    fail = (struct dsd_ipc_fail){.code = DSD_IPC_E_FRAME_TOO_LARGE};
    ASSERT_EQ_INT(dsd_ipc_encode_fail(&b, &fail, DSD_IPC_HELLO_FRAME, NULL), 0);
    ASSERT_EQ_INT(decode_frame(b.data, b.len, DSD_IPC_TO_CLIENT, &m, &f2), 0);
    ASSERT_TRUE(m.error.fatal);
    ASSERT_EQ_INT(m.id, 0);
    dsd_ipc_msg_free(&m);
    dsd_ipc_buf_free(&b);
}

TEST(tables)
{
    int fatal[] = {100, 104, 105, 300, 301, 307};
    int codes[] = {100, 101, 102, 103, 104, 105, 200, 201, 202, 203, 300, 301, 303, 304, 305,
                   306, 307, 400, 401, 402, 403, 404, 405, 500, 501, 502, 503};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        ASSERT_TRUE(dsd_ipc_code_name(codes[i]) != NULL);
        bool want = false;
        for (size_t k = 0; k < sizeof fatal / sizeof fatal[0]; k++)
            want |= fatal[k] == codes[i];
        ASSERT_EQ_INT(dsd_ipc_code_fatal(codes[i]), want);
    }
    ASSERT_EQ_STR(dsd_ipc_code_name(202), "bad_value");
    ASSERT_TRUE(dsd_ipc_code_name(999) == NULL);
    ASSERT_TRUE(dsd_ipc_code_fatal(999));
    /* 302 is reserved (it was permission_denied, never sent): not a code of this protocol. */
    ASSERT_TRUE(dsd_ipc_code_name(302) == NULL);
    ASSERT_EQ_STR(dsd_ipc_code_name(105), "frame_timeout");
    ASSERT_EQ_STR(dsd_ipc_code_name(307), "idle_timeout");
    for (int t = DSD_IPC_NONE + 1; t < DSD_IPC_TYPE_COUNT; t++) {
        const char *nm = dsd_ipc_type_name(t);
        ASSERT_TRUE(nm != NULL);
        ASSERT_EQ_INT(dsd_ipc_type_from_name(nm, (uint32_t)strlen(nm)), t);
        ASSERT_EQ_INT(dsd_ipc_type_dir(t), t >= DSD_IPC_HELLO_OK ? DSD_IPC_TO_CLIENT
                                                                 : DSD_IPC_TO_DAEMON);
    }
    ASSERT_EQ_STR(dsd_ipc_type_name(DSD_IPC_GENERATE), "generate");
    ASSERT_EQ_INT(dsd_ipc_type_from_name("generat", 7), DSD_IPC_NONE);
    ASSERT_TRUE(dsd_ipc_type_name(DSD_IPC_NONE) == NULL);
    ASSERT_EQ_INT(DSD_IPC_FINISH_CANCELLED, 5);     /* ring finish word numbers: PROTOCOL §7.2 */
    ASSERT_EQ_STR(dsd_ipc_finish_name(DSD_IPC_FINISH_CONTEXT_FULL), "context_full");
}

TEST(utf8_rules)
{
    ASSERT_TRUE(dsd_ipc_utf8_valid("", 0));
    ASSERT_TRUE(dsd_ipc_utf8_valid("a\xc3\xa9\xe6\x9d\xb1\xf0\x9f\x94\x8d", 10));
    ASSERT_TRUE(dsd_ipc_utf8_valid("\xf4\x8f\xbf\xbf", 4));     /* U+10FFFF */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\xc0\x80", 2));             /* overlong */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\xe0\x80\x80", 3));         /* overlong */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\xed\xa0\x80", 3));         /* surrogate */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\xf4\x90\x80\x80", 4));     /* > U+10FFFF */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\xe6\x9d", 2));             /* truncated */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\x80", 1));                 /* lone continuation */
    ASSERT_TRUE(!dsd_ipc_utf8_valid("\xff", 1));
    ASSERT_EQ_INT(dsd_ipc_utf8_cut("ab\xe6\x9d\xb1", 5, 4), 2);
    ASSERT_EQ_INT(dsd_ipc_utf8_cut("ab\xe6\x9d\xb1", 5, 5), 5);
    ASSERT_EQ_INT(dsd_ipc_utf8_cut("abcd", 4, 2), 2);
}

/* xorshift: reproducible without depending on libc's rand() sequence. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

TEST(random_bytes_never_crash)
{
    /* Random bytes, and valid frames with random bytes flipped: every result is success or a
     * known code; successes re-encode and decode to the same dump. */
    struct dsd_ipc_msg fx[MAX_FX];
    int nfx = fx_all(fx);
    struct dsd_ipc_buf frames[MAX_FX];
    for (int i = 0; i < nfx; i++) {
        frames[i] = (struct dsd_ipc_buf){0};
        dsd_ipc_encode(&frames[i], &fx[i], DSD_IPC_FRAME_CEIL, NULL);
    }
    uint8_t buf[2048];
    int ok = 0, failed = 0;
    for (int iter = 0; iter < 40000; iter++) {
        size_t len;
        enum dsd_ipc_dir dir;
        if (iter % 2) {
            len = rng() % 96;
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rng();
            dir = (enum dsd_ipc_dir)(rng() & 1);
        } else {
            const struct dsd_ipc_buf *f = &frames[rng() % (uint64_t)nfx];
            len = f->len - 4 < sizeof buf ? f->len - 4 : sizeof buf;
            memcpy(buf, f->data + 4, len);
            int flips = 1 + (int)(rng() % 4);
            for (int k = 0; k < flips && len; k++)
                buf[rng() % len] = (uint8_t)rng();
            dir = (enum dsd_ipc_dir)(rng() & 1);
        }
        struct dsd_ipc_msg m;
        struct dsd_ipc_fail fail;
        int rc = dsd_ipc_decode(buf, len, dir, &m, &fail);
        if (rc == 0) {
            ok++;
            struct dsd_ipc_buf b = {0};
            struct dsd_ipc_msg m2;
            ASSERT_EQ_INT(dsd_ipc_encode(&b, &m, DSD_IPC_FRAME_CEIL, NULL), 0);
            ASSERT_EQ_INT(dsd_ipc_decode(b.data + 4, b.len - 4, dir, &m2, NULL), 0);
            ASSERT_EQ_STR(dump_msg(&m2, dump_a, DUMP_CAP), dump_msg(&m, dump_b, DUMP_CAP));
            dsd_ipc_msg_free(&m2);
            dsd_ipc_buf_free(&b);
        } else {
            failed++;
            ASSERT_EQ_INT(rc, -EPROTO);
            ASSERT_TRUE(dsd_ipc_code_name(fail.code) != NULL);
            ASSERT_TRUE(fail.err.msg[0] != 0);
        }
        dsd_ipc_msg_free(&m);
    }
    printf("random: %d decoded, %d rejected\n", ok, failed);
    ASSERT_TRUE(ok > 100);      /* the flips leave enough frames valid to test re-encoding */
    for (int i = 0; i < nfx; i++)
        dsd_ipc_buf_free(&frames[i]);
}

/* ---- the examples of PROTOCOL.md §11 decode as written ---------------------------------- */

static void json_to_mp(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach((json_t *)j, k, v) {
            msgpack_pack_str(pk, strlen(k));
            msgpack_pack_str_body(pk, k, strlen(k));
            json_to_mp(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, v)
            json_to_mp(pk, v);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(j));
        msgpack_pack_str_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    default: msgpack_pack_nil(pk); break;
    }
}

static const char *doc_path;

static void check_example(const char *text, enum dsd_ipc_dir dir, int *count)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j) {
        TEST_FAIL_AT("PROTOCOL.md example is not JSON (%s): %s", jerr.text, text);
        return;
    }
    struct mp m;
    mp_init(&m);
    json_to_mp(&m.pk, j);
    struct dsd_ipc_msg msg;
    struct dsd_ipc_fail fail;
    int rc = dsd_ipc_decode(m.sb.data, m.sb.size, dir, &msg, &fail);
    if (rc != 0)
        TEST_FAIL_AT("PROTOCOL.md example does not decode (%s): %s", fail.err.msg, text);
    /* Decoding then encoding keeps every key the example gives (none is silently dropped
     * as unknown, which would mean the doc names a key the code does not know). */
    if (rc == 0) {
        struct dsd_ipc_buf b = {0};
        ASSERT_EQ_INT(dsd_ipc_encode(&b, &msg, DSD_IPC_FRAME_CEIL, NULL), 0);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        ASSERT_EQ_INT(msgpack_unpack_next(&up, (const char *)b.data + 4, b.len - 4, &off),
                      MSGPACK_UNPACK_SUCCESS);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            bool found = false;
            for (uint32_t i = 0; i < up.data.via.map.size; i++) {
                const msgpack_object *key = &up.data.via.map.ptr[i].key;
                found |= key->via.str.size == strlen(k) &&
                         memcmp(key->via.str.ptr, k, strlen(k)) == 0;
            }
            if (!found && strcmp(k, "fatal") != 0)   /* fatal:false is the default */
                TEST_FAIL_AT("PROTOCOL.md example key \"%s\" is not kept: %s", k, text);
        }
        msgpack_unpacked_destroy(&up);
        dsd_ipc_buf_free(&b);
        (*count)++;
    }
    dsd_ipc_msg_free(&msg);
    msgpack_sbuffer_destroy(&m.sb);
    json_decref(j);
}

/* PROTOCOL.md §6's table and ipc/'s code table say the same: every row "| N | `name` | yes/no |"
 * is a code with that name and fatality, every code has its row, and a reserved number has a
 * row without a name. */
TEST(protocol_error_table)
{
    FILE *f = doc_path ? fopen(doc_path, "r") : NULL;
    if (!f) {
        TEST_FAIL_AT("cannot open PROTOCOL.md (%s)", doc_path ? doc_path : "no path given");
        return;
    }
    char line[1024];
    bool in6 = false;
    int rows = 0, named = 0;
    bool seen[1000] = {false};
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "## ", 3) == 0)
            in6 = strncmp(line, "## 6.", 5) == 0;
        unsigned code;
        char name[64], fatal[16];
        if (!in6 || sscanf(line, "| %u | %63s | %15s |", &code, name, fatal) != 3 || code >= 1000)
            continue;
        rows++;
        seen[code] = true;
        if (strcmp(name, "(reserved)") == 0) {
            if (dsd_ipc_code_name(code) != NULL)
                TEST_FAIL_AT("PROTOCOL.md reserves %u, ipc/ names it %s", code,
                             dsd_ipc_code_name(code));
            continue;
        }
        named++;
        size_t n = strlen(name);
        if (n < 3 || name[0] != '`' || name[n - 1] != '`') {
            TEST_FAIL_AT("PROTOCOL.md §6 row %u: name %s is not `quoted`", code, name);
            continue;
        }
        name[n - 1] = 0;
        const char *want = dsd_ipc_code_name(code);
        if (!want || strcmp(want, name + 1) != 0)
            TEST_FAIL_AT("PROTOCOL.md §6: %u is %s, ipc/ says %s", code, name + 1,
                         want ? want : "(no such code)");
        if (dsd_ipc_code_fatal(code) != (strcmp(fatal, "yes") == 0))
            TEST_FAIL_AT("PROTOCOL.md §6: %u fatal \"%s\", ipc/ says %s", code, fatal,
                         dsd_ipc_code_fatal(code) ? "yes" : "no");
    }
    fclose(f);
    for (unsigned c = 100; c < 1000; c++)
        if (dsd_ipc_code_name(c) && !seen[c])
            TEST_FAIL_AT("code %u (%s) has no row in PROTOCOL.md §6", c, dsd_ipc_code_name(c));
    printf("  PROTOCOL.md §6: %d rows, %d named codes agree with ipc/\n", rows, named);
    ASSERT_TRUE(named >= 26);
}

TEST(protocol_examples_decode)
{
    FILE *f = doc_path ? fopen(doc_path, "r") : NULL;
    if (!f) {
        TEST_FAIL_AT("cannot open PROTOCOL.md (%s)", doc_path ? doc_path : "no path given");
        return;
    }
    char line[1024], text[8192] = "";
    bool in_examples = false, in_block = false;
    enum dsd_ipc_dir dir = DSD_IPC_TO_DAEMON;
    int count = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "## 11.", 6) == 0)
            in_examples = true;
        else if (strncmp(line, "## ", 3) == 0)
            in_examples = false;
        if (!in_examples)
            continue;
        bool fence = strncmp(line, "```", 3) == 0;
        bool to_d = strncmp(line, "\xe2\x86\x92 ", 4) == 0;     /* "→ " */
        bool to_c = strncmp(line, "\xe2\x86\x90 ", 4) == 0;     /* "← " */
        if ((fence || to_d || to_c) && text[0]) {
            check_example(text, dir, &count);
            text[0] = 0;
        }
        if (fence) {
            in_block = !in_block;
            continue;
        }
        if (!in_block)
            continue;
        if (to_d || to_c) {
            dir = to_d ? DSD_IPC_TO_DAEMON : DSD_IPC_TO_CLIENT;
            strncat(text, line + 4, sizeof text - strlen(text) - 1);
        } else if (text[0]) {
            strncat(text, line, sizeof text - strlen(text) - 1);
        }
    }
    fclose(f);
    ASSERT_EQ_INT(count, 9);
}

/* Writes the fuzz seeds for fuzz_ipc_decode (tests/data/ipc/decode): every fixture as a bare
 * body and as a prefixed stream frame, plus the classic hostile inputs. */
static int write_corpus(const char *dir)
{
    struct dsd_ipc_msg fx[MAX_FX];
    int n = fx_all(fx);
    char path[4096];
    int files = 0;
    for (int i = 0; i < n; i++) {
        struct dsd_ipc_buf b = {0};
        if (dsd_ipc_encode(&b, &fx[i], DSD_IPC_FRAME_CEIL, NULL) < 0)
            return 1;
        for (int prefixed = 0; prefixed < 2; prefixed++) {
            snprintf(path, sizeof path, "%s/%s-%02d%s", dir, dsd_ipc_type_name(fx[i].type), i,
                     prefixed ? "-stream" : "");
            FILE *f = fopen(path, "wb");
            if (!f)
                return 1;
            /* byte 0: direction bit, and chunk step 1 + (byte >> 1) */
            uint8_t head = (uint8_t)(dir_of(&fx[i]) | (uint8_t)((i * 5 % 64) << 1));
            fwrite(&head, 1, 1, f);
            fwrite(b.data + (prefixed ? 0 : 4), 1, b.len - (prefixed ? 0 : 4), f);
            fclose(f);
            files++;
        }
        dsd_ipc_buf_free(&b);
    }
    static const uint8_t hostile[][10] = {
        {0, 0xdd, 0x01, 0x00, 0x00, 0x00},
        {0, 0xdf, 0xff, 0xff, 0xff, 0xff},
        {0, 0x81, 0xa1, 't', 0xdb, 0xff, 0xff, 0xff, 0xf0, 'a'},
        {0, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91},
        {0, 0xff, 0xff, 0xff, 0x7f, 0x80},
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        snprintf(path, sizeof path, "%s/hostile-%zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f)
            return 1;
        fwrite(hostile[i], 1, sizeof hostile[i], f);
        fclose(f);
        files++;
    }
    printf("wrote %d seeds to %s\n", files, dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    doc_path = argc > 1 ? argv[1] : NULL;
    RUN(roundtrip_every_type);
    RUN(reader_any_chunking);
    RUN(reader_offsets_and_zero_copy);
    RUN(reader_rejects_oversized_prefix_before_buffering);
    RUN(buffer_append_consume);
    RUN(bad_msgpack_structure);
    RUN(too_complex);
    RUN(not_a_map_and_header_fields);
    RUN(bad_generate_fields);
    RUN(bad_other_messages);
    RUN(unknown_keys_are_ignored);
    RUN(encoder_errors);
    RUN(error_frames_from_failures);
    RUN(tables);
    RUN(utf8_rules);
    RUN(random_bytes_never_crash);
    RUN(protocol_examples_decode);
    RUN(protocol_error_table);
    return test_report();
}
