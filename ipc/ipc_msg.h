/*
 * ipc/ipc_msg.h: every message of the deepseekd protocol (docs/PROTOCOL.md §4, §5) as a C
 * struct, an encoder that writes one into a frame and a decoder that reads one back with
 * every field type- and bounds-checked.
 *
 * Encoding (client: requests; daemon: replies and events):
 *
 *   struct dsd_ipc_msg m = { .type = DSD_IPC_GENERATE, .id = 7 };
 *   dsd_ipc_generate_default(&m.generate);
 *   m.generate.prompt.kind = DSD_IPC_PROMPT_TOKENS;
 *   m.generate.prompt.tokens = ids;  m.generate.prompt.n_tokens = n;
 *   m.generate.sampling.temperature = 0.6;
 *   struct dsd_ipc_buf out = {0};
 *   if (dsd_ipc_encode(&out, &m, max_frame, &err) < 0) ...;   // appends prefix + body
 *   ... send out.data[0..out.len) ...
 *
 * The encoder writes what it is given (keys whose value is the default are left out); it
 * checks only what it must to produce a well-formed frame (type, counts, size). The receiver
 * is the judge: dsd_ipc_decode() applies every rule of PROTOCOL.md. Strings are
 * struct dsd_ipc_str {ptr, len}; dsd_ipc_s("text") makes one from a C string.
 *
 * Decoding (a frame body from dsd_ipc_reader_push()):
 *
 *   struct dsd_ipc_msg m;
 *   struct dsd_ipc_fail fail;
 *   int rc = dsd_ipc_decode(f.body, f.len, DSD_IPC_TO_DAEMON, &m, &fail);
 *   if (rc < 0) { reply error(fail.id, fail.code, fail.err.msg); }
 *   else { switch (m.type) { case DSD_IPC_GENERATE: ... m.generate ... } }
 *   dsd_ipc_msg_free(&m);                                     // also after a failure
 *
 * A decoded message owns its memory (one arena freed by dsd_ipc_msg_free()); it does not
 * point into the frame bytes, so the frame may be released right after decoding. Decoded
 * strings are NUL-terminated copies (len excludes the NUL; a string may contain NUL bytes, len
 * is authoritative) and valid UTF-8; absent strings have ptr == NULL. Defaults of absent
 * optional keys are filled in. The decoder checks types, counts, string lengths and enum
 * values; semantic limits that depend on the model or the daemon (token id < vocab, prompt
 * length, ring index < ring_count, JSON validity of `tools`/`arguments`) are the daemon's.
 *
 * Bad input from the peer is never a crash: the pre-scan (ipc_scan.h) bounds every
 * allocation before msgpack-c runs, and every failure is a struct dsd_ipc_fail.
 * Thread safety: no global state; a message, a buffer, a reader belong to one thread at a time.
 */
#ifndef DSD_IPC_MSG_H
#define DSD_IPC_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "ipc_frame.h"
#include "ipc_proto.h"

/* A byte string (UTF-8 on the wire). ptr == NULL means absent. */
struct dsd_ipc_str {
    const char *ptr;
    uint32_t len;
};

/* A dsd_ipc_str viewing a C string (NULL gives an absent string). */
struct dsd_ipc_str dsd_ipc_s(const char *s);

enum dsd_ipc_finish {
    DSD_IPC_FINISH_NONE = 0,    /* still running (the ring's finish word) */
    DSD_IPC_FINISH_STOP = 1,
    DSD_IPC_FINISH_LENGTH = 2,
    DSD_IPC_FINISH_STOP_STRING = 3,
    DSD_IPC_FINISH_TOOL_CALLS = 4,
    DSD_IPC_FINISH_CANCELLED = 5,
    DSD_IPC_FINISH_CONTEXT_FULL = 6,
    DSD_IPC_FINISH_ERROR = 7,
    DSD_IPC_FINISH_COUNT
};
/* "stop", "length", ...; NULL for NONE and out-of-range values. */
const char *dsd_ipc_finish_name(enum dsd_ipc_finish f);

enum dsd_ipc_role {
    DSD_IPC_ROLE_SYSTEM = 0,
    DSD_IPC_ROLE_USER,
    DSD_IPC_ROLE_ASSISTANT,
    DSD_IPC_ROLE_TOOL,
    DSD_IPC_ROLE_DEVELOPER,
    DSD_IPC_ROLE_COUNT
};
const char *dsd_ipc_role_name(enum dsd_ipc_role r);

enum dsd_ipc_health {
    DSD_IPC_STATUS_OK = 0,
    DSD_IPC_STATUS_LOADING,
    DSD_IPC_STATUS_DRAINING,
    DSD_IPC_STATUS_UNHEALTHY,
    DSD_IPC_STATUS_COUNT
};
const char *dsd_ipc_health_name(enum dsd_ipc_health h);

/* ---- client -> daemon ------------------------------------------------------------------ */

struct dsd_ipc_hello {
    uint32_t min_version, max_version;
    struct dsd_ipc_str client;          /* optional, <= 128 bytes */
    uint32_t max_frame;                 /* 0 = no preference, else 65536..2^26 */
};

struct dsd_ipc_tool_call {              /* a chat message's tool call (OpenAI shape) */
    struct dsd_ipc_str id;              /* optional, <= 256 bytes */
    struct dsd_ipc_str name;            /* required, 1..256 bytes */
    struct dsd_ipc_str arguments;       /* required, JSON text */
};

struct dsd_ipc_chat_msg {
    enum dsd_ipc_role role;
    struct dsd_ipc_str content;         /* absent = nil; text parts are joined */
    struct dsd_ipc_str reasoning;       /* "reasoning_content" */
    struct dsd_ipc_str name;            /* <= 256 bytes */
    struct dsd_ipc_str tool_call_id;    /* <= 256 bytes */
    uint32_t n_tool_calls;
    const struct dsd_ipc_tool_call *tool_calls;
};

enum dsd_ipc_prompt_kind {
    DSD_IPC_PROMPT_NONE = 0,
    DSD_IPC_PROMPT_TOKENS,              /* "tokens" */
    DSD_IPC_PROMPT_SPAN,                /* "prompt_span" */
    DSD_IPC_PROMPT_TEXT,                /* "text" */
    DSD_IPC_PROMPT_CHAT,                /* "messages" (+ "tools", "thinking") */
};

struct dsd_ipc_prompt {
    enum dsd_ipc_prompt_kind kind;
    uint32_t n_tokens;                  /* TOKENS: 1..2^24 */
    const uint32_t *tokens;
    uint64_t span_offset;               /* SPAN: in tokens from the arena start */
    uint32_t span_count;                /* SPAN: >= 1 */
    struct dsd_ipc_str text;            /* TEXT */
    uint32_t n_messages;                /* CHAT: 1..65536 */
    const struct dsd_ipc_chat_msg *messages;
    struct dsd_ipc_str tools;           /* CHAT: JSON text of the OpenAI tools array, optional */
    bool add_special;                   /* TEXT: prepend BOS (default true) */
    bool thinking;                      /* CHAT: thinking mode (default false) */
};

struct dsd_ipc_sampling {
    double temperature;                 /* 0..100, default 1 */
    double top_p;                       /* (0, 1], default 1 */
    double min_p;                       /* [0, 1], default 0 */
    double repetition_penalty;          /* (0, 10], default 1 */
    double frequency_penalty;           /* [-2, 2], default 0 */
    double presence_penalty;            /* [-2, 2], default 0 */
    uint32_t top_k;                     /* 0 = off, <= 2^31 */
    uint32_t max_tokens;                /* 0 = the daemon's limit, <= 2^31 */
    uint32_t top_logprobs;              /* 0..20, needs logprobs */
    int32_t priority;                   /* -1000..1000, default 0 */
    uint64_t seed;                      /* valid when has_seed */
    uint32_t n_stop;                    /* <= 16 strings of 1..256 bytes */
    const struct dsd_ipc_str *stop;
    uint32_t n_stop_ids;                /* <= 64 */
    const uint32_t *stop_ids;
    bool has_seed;
    bool ignore_eos;
    bool logprobs;
};

struct dsd_ipc_generate {
    struct dsd_ipc_prompt prompt;
    struct dsd_ipc_sampling sampling;
    uint32_t ring;                      /* valid when use_ring */
    bool use_ring;                      /* "ring" given: output through that shm ring */
    bool notify;                        /* default true */
    bool detokenize;                    /* default: true for TEXT/CHAT, false otherwise */
};

struct dsd_ipc_tokenize {
    struct dsd_ipc_prompt prompt;       /* TEXT or CHAT */
};

struct dsd_ipc_detokenize {
    uint32_t n_tokens;                  /* 0..2^24 */
    const uint32_t *tokens;
    bool skip_special;
};

/* ---- daemon -> client ------------------------------------------------------------------ */

struct dsd_ipc_model_facts {
    struct dsd_ipc_str name;            /* <= 256 bytes */
    uint32_t vocab_size;                /* required */
    uint32_t max_context;               /* required */
    uint32_t n_eos;                     /* required, 1..8 */
    uint32_t eos_ids[DSD_IPC_MAX_EOS];
    uint32_t bos_id;                    /* valid when has_bos */
    struct dsd_ipc_str kv_dtype;        /* <= 32 bytes, informational */
    struct dsd_ipc_str backend;         /* <= 32 bytes, informational */
    bool has_bos;
};

struct dsd_ipc_limits {                 /* 0 = not given, except max_frame (required) */
    uint32_t max_frame;
    uint32_t max_prompt_tokens;
    uint32_t max_tokens;
    uint32_t max_inflight;
    uint32_t max_top_logprobs;
    uint64_t max_shm_bytes;
};

struct dsd_ipc_hello_ok {               /* also the first part of info_ok */
    uint32_t version;
    struct dsd_ipc_str daemon;          /* <= 128 bytes */
    struct dsd_ipc_model_facts model;
    struct dsd_ipc_limits limits;
};

struct dsd_ipc_shm_ok {
    uint64_t size;
    uint64_t prompt_capacity;
    uint32_t ring_count;
    uint32_t ring_capacity;
};

struct dsd_ipc_accepted {
    uint32_t prompt_tokens;
    uint64_t ring_start;                /* valid when has_ring_start */
    bool has_ring_start;
};

struct dsd_ipc_tool_delta {             /* a streamed tool-call item */
    uint32_t index;                     /* < 128 */
    struct dsd_ipc_str id;              /* <= 256 bytes, optional */
    struct dsd_ipc_str name;            /* <= 256 bytes, optional */
    struct dsd_ipc_str arguments;       /* JSON fragment, optional */
};

struct dsd_ipc_top_logprob {
    uint32_t token;
    double logprob;
};

struct dsd_ipc_logprob {
    uint32_t token;
    double logprob;
    uint32_t n_top;                     /* <= 20 */
    const struct dsd_ipc_top_logprob *top;
};

struct dsd_ipc_tokens {
    uint32_t n_ids;                     /* frame output */
    const uint32_t *ids;
    uint64_t pos;                       /* ring output, valid when has_pos */
    struct dsd_ipc_str text;
    struct dsd_ipc_str reasoning;
    uint32_t n_tool_calls;              /* <= 128 */
    const struct dsd_ipc_tool_delta *tool_calls;
    struct dsd_ipc_str tool_call_error; /* malformed tool calls skipped, one message per line */
    uint32_t n_logprobs;
    const struct dsd_ipc_logprob *logprobs;
    bool has_pos;
    bool stalled;
};

struct dsd_ipc_usage {
    uint32_t prompt, cached, completion;
    /* optional: of cached, tokens from each tier of the prefix cache (sent when has_tiers) */
    bool has_tiers;
    uint32_t cached_device, cached_host, cached_disk;
};

struct dsd_ipc_timings {
    uint64_t queue_us, first_token_us, total_us;
    double per_token_us;
};

struct dsd_ipc_done {
    enum dsd_ipc_finish finish;         /* never NONE */
    uint32_t stop_token;                /* valid when has_stop_token */
    struct dsd_ipc_str stop_string;     /* <= 256 bytes, optional */
    struct dsd_ipc_usage usage;
    struct dsd_ipc_timings timings;
    uint64_t ring_end;                  /* valid when has_ring_end */
    uint32_t error_code;                /* with finish == ERROR and has_error */
    struct dsd_ipc_str error_msg;
    bool has_stop_token;
    bool has_ring_end;
    bool has_error;
};

struct dsd_ipc_tokenize_ok {
    uint32_t n_tokens;
    const uint32_t *tokens;
};

struct dsd_ipc_detokenize_ok {
    struct dsd_ipc_str text;
};

enum dsd_ipc_kv_kind {
    DSD_IPC_KV_INT = 0,
    DSD_IPC_KV_FLOAT,
    DSD_IPC_KV_BOOL,
    DSD_IPC_KV_STR,
};

struct dsd_ipc_kv {                     /* one entry of info_ok.server / stats_ok.stats */
    struct dsd_ipc_str key;             /* 1..64 bytes */
    enum dsd_ipc_kv_kind kind;
    int64_t i;
    double f;
    struct dsd_ipc_str s;               /* <= 1024 bytes */
    bool b;
};

struct dsd_ipc_info_ok {
    struct dsd_ipc_hello_ok facts;      /* version, daemon, model, limits */
    uint32_t n_server;                  /* <= 256 */
    const struct dsd_ipc_kv *server;
};

struct dsd_ipc_stats_ok {
    uint32_t n_stats;                   /* <= 256 */
    const struct dsd_ipc_kv *stats;
};

struct dsd_ipc_health_ok {
    enum dsd_ipc_health status;
    struct dsd_ipc_str detail;          /* <= 1024 bytes */
};

struct dsd_ipc_error {
    uint32_t code;                      /* enum dsd_ipc_code; unknown codes are kept */
    struct dsd_ipc_str msg;             /* <= 1024 bytes */
    bool fatal;
};

struct dsd_ipc_arena;

/* One message. shm_attach, cancel, resume, info, stats, health have no fields beyond id. */
struct dsd_ipc_msg {
    enum dsd_ipc_type type;
    uint64_t id;                        /* >= 1 in requests; 0 only in connection errors */
    union {
        struct dsd_ipc_hello hello;
        struct dsd_ipc_generate generate;
        struct dsd_ipc_tokenize tokenize;
        struct dsd_ipc_detokenize detokenize;
        struct dsd_ipc_hello_ok hello_ok;
        struct dsd_ipc_shm_ok shm_ok;
        struct dsd_ipc_accepted accepted;
        struct dsd_ipc_tokens tokens;
        struct dsd_ipc_done done;
        struct dsd_ipc_tokenize_ok tokenize_ok;
        struct dsd_ipc_detokenize_ok detokenize_ok;
        struct dsd_ipc_info_ok info_ok;
        struct dsd_ipc_stats_ok stats_ok;
        struct dsd_ipc_health_ok health_ok;
        struct dsd_ipc_error error;
    };
    struct dsd_ipc_arena *arena;        /* memory of a decoded message; NULL when built by hand */
};

/* Defaults of PROTOCOL.md §4.3 (prompt kind NONE, detokenize false: set it for text/chat). */
void dsd_ipc_sampling_default(struct dsd_ipc_sampling *s);
void dsd_ipc_generate_default(struct dsd_ipc_generate *g);

/*
 * Appends one frame (prefix + body) holding m to out.
 *   0          done; out->len grew by the frame size
 *   -EINVAL    m cannot be encoded: unknown type, a count above the codec's hard bounds, a
 *              prompt kind NONE in generate/tokenize, a finish NONE in done (err says which)
 *   -EMSGSIZE  the body would exceed max_frame (err names the size); for the daemon this is
 *              result_too_large, for a client a request to shrink or move into shm
 *   -ENOMEM    out of memory
 * On failure out->len is unchanged (bytes past it may have been written).
 */
int dsd_ipc_encode(struct dsd_ipc_buf *out, const struct dsd_ipc_msg *m, uint32_t max_frame,
                   struct dsd_err *err);

/* Appends an `error` frame with fail's code, id and message (fatal from the code table);
 * the message is cut to 1024 bytes at a UTF-8 boundary. Returns as dsd_ipc_encode(). */
int dsd_ipc_encode_fail(struct dsd_ipc_buf *out, const struct dsd_ipc_fail *fail,
                        uint32_t max_frame, struct dsd_err *err);

/*
 * Decodes one frame body (without its length prefix) travelling in direction dir.
 *   0         *out holds the message (free it with dsd_ipc_msg_free())
 *   -EPROTO   the frame is bad: fail->code is the wire code (bad_msgpack, too_complex,
 *             not_a_map, missing_field, wrong_type, bad_value, unknown_type), fail->id the
 *             frame's id when it could be read (else 0), fail->err.msg names the key
 *   -ENOMEM   out of memory (fail->code DSD_IPC_E_INTERNAL)
 * On failure *out is empty (type NONE, no memory held); dsd_ipc_msg_free() is still allowed.
 * Memory used is bounded by a small multiple of len (PROTOCOL.md §10).
 */
int dsd_ipc_decode(const void *body, size_t len, enum dsd_ipc_dir dir, struct dsd_ipc_msg *out,
                   struct dsd_ipc_fail *fail);

/* Frees a decoded message's memory and empties it. NULL and hand-built messages are fine. */
void dsd_ipc_msg_free(struct dsd_ipc_msg *m);

/* Whether n bytes are valid UTF-8 (no overlong forms, no surrogates, nothing above
 * U+10FFFF): the rule for every wire string. The daemon must hold back a partial character
 * of a text delta until it is complete. */
bool dsd_ipc_utf8_valid(const void *s, size_t n);

/* The longest prefix of s[0..n) that does not end inside a UTF-8 sequence (for cutting a
 * message to a byte limit). */
size_t dsd_ipc_utf8_cut(const char *s, size_t n, size_t max);

#endif
