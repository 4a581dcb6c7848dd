/*
 * daemon/serve/config.c: the table of configuration keys and everything driven by it.
 *
 * Like redis's standardConfig table, each key is one row: name, type, field, bounds,
 * default, whether a reload applies it, and its documentation. Parsing (file and flags),
 * --help, the example file and reload all walk this table; adding a key is adding a row
 * (and a field in struct dsd_serve_config).
 *
 * Defaults are written as text and go through the same parser as the file, so a default
 * outside its own bounds is caught the first time the table is used.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "index_cache.h"

#ifndef DSD_VERSION
#define DSD_VERSION "unknown"
#endif
/* Set by the build from the install prefix (daemon/serve/CMakeLists.txt). */
#ifndef DSD_SERVE_CONFIG_DEFAULT_PATH
#define DSD_SERVE_CONFIG_DEFAULT_PATH "/etc/deepseekd/deepseekd.conf"
#endif

/* ============================== The table ============================== */

enum cfg_type {
    CFG_PATH,       /* a file system path; any text, length-checked */
    CFG_STRING,     /* any text, length-checked */
    CFG_INT,        /* int64_t in [min, max] */
    CFG_SIZE,       /* int64_t in [min, max] units of 2^unit_shift bytes; K/M/G/T suffixes */
    CFG_FRACTION,   /* double in [min, max], written as a decimal (0.9) */
    CFG_ENUM,       /* int: one of the named values */
    CFG_BOOL,       /* bool: yes/no, true/false, on/off, 1/0 */
    CFG_MODE,       /* unsigned: octal permission bits in [min, max] */
};

enum {
    CFG_RELOADABLE = 1 << 0,    /* dsd_serve_config_reload applies it */
    CFG_REQUIRED = 1 << 1,      /* no default: must be set */
};

struct cfg_enum_value {
    const char *name;
    int value;
};

struct cfg_key {
    const char *name;
    const char *group;          /* heading in --help and the example file */
    enum cfg_type type;
    size_t offset, size;        /* the field in struct dsd_serve_config */
    int64_t min, max;
    int unit_shift;             /* CFG_SIZE: 0 = bytes, 10 = KiB, 20 = MiB */
    const struct cfg_enum_value *values;    /* CFG_ENUM, NULL-name terminated */
    const char *def;            /* default, as written in the file; NULL when CFG_REQUIRED */
    const char *example;        /* shown in the example file when there is no default */
    unsigned flags;
    const char *arg;            /* placeholder in --help: DIR, N, MODE, ... */
    const char *summary;        /* one line for --help */
    const char *doc;            /* paragraph for the example file */
};

/* Whether this build has the CUDA backend (the build system defines it to 1). */
#ifndef DSD_SERVE_HAVE_CUDA
#define DSD_SERVE_HAVE_CUDA 0
#endif

#define FIELD(f) offsetof(struct dsd_serve_config, f), sizeof(((struct dsd_serve_config *)0)->f)

static const struct cfg_enum_value backend_values[] = {
    { "cpu", DSD_SERVE_BACKEND_CPU }, { "cuda", DSD_SERVE_BACKEND_CUDA }, { NULL, 0 },
};
static const struct cfg_enum_value numerics_values[] = {
    { "production", DSD_SERVE_NUMERICS_PRODUCTION }, { "exact", DSD_SERVE_NUMERICS_EXACT },
    { NULL, 0 },
};
static const struct cfg_enum_value kv_dtype_values[] = {
    { "fp8", DSD_SERVE_KV_FP8 }, { "bf16", DSD_SERVE_KV_BF16 }, { NULL, 0 },
};
static const struct cfg_enum_value fairness_values[] = {
    { "uid", DSD_SERVE_FAIR_UID }, { "connection", DSD_SERVE_FAIR_CONNECTION }, { "off", DSD_SERVE_FAIR_OFF },
    { NULL, 0 },
};
static const struct cfg_enum_value spec_force_values[] = {
    { "none", DSD_SERVE_SPEC_FORCE_NONE }, { "accept", DSD_SERVE_SPEC_FORCE_ACCEPT },
    { "reject", DSD_SERVE_SPEC_FORCE_REJECT }, { NULL, 0 },
};
static const struct cfg_enum_value log_level_values[] = {
    { "err", LOG_ERR }, { "warning", LOG_WARNING }, { "notice", LOG_NOTICE },
    { "info", LOG_INFO }, { "debug", LOG_DEBUG }, { NULL, 0 },
};

static const struct cfg_key cfg_keys[] = {
    /* ---- Model and engine ---- */
    { "model", "Model and engine", CFG_PATH, FIELD(model), 0, 0, 0, NULL,
      NULL, "/srv/models/DeepSeek-V3.2", CFG_REQUIRED, "DIR",
      "model directory: config.json, safetensors, tokenizer",
      "Directory of the DeepSeek V3.2 checkpoint as downloaded from the model hub: "
      "config.json, model.safetensors.index.json, the model-*.safetensors shards, "
      "tokenizer.json and tokenizer_config.json. Nothing is converted ahead of time. "
      "deepseekd.service hides /home (ProtectHome=), so keep models elsewhere, for "
      "example under /srv or /var/lib/deepseekd." },
    { "backend", "Model and engine", CFG_ENUM, FIELD(backend), 0, 0, 0, backend_values,
      "cpu", NULL, 0, "cpu|cuda", "where the forward pass runs",
      "Where the forward pass runs. cpu is the reference implementation in plain C; it is "
      "slow and meant for small test models and verification. cuda runs on an NVIDIA "
      "Hopper GPU (H100, H200; the one named by gpu) with weights and the KV cache in its "
      "memory, production numerics only. A deepseekd built without CUDA refuses cuda." },
    { "gpu", "Model and engine", CFG_INT, FIELD(gpu), 0, 1023, 0, NULL,
      "0", NULL, 0, "N", "GPU ordinal for backend = cuda",
      "Which GPU the cuda backend uses, as CUDA numbers them (CUDA_VISIBLE_DEVICES "
      "applies). Ignored by the cpu backend." },
    { "numerics", "Model and engine", CFG_ENUM, FIELD(numerics), 0, 0, 0, numerics_values,
      "production", NULL, 0, "production|exact", "arithmetic of the forward pass",
      "Arithmetic of the forward pass. production computes as the GPU kernels do: bf16 "
      "activations, FP8 linear layers, FP8 indexer keys and KV cache. exact computes in "
      "fp32 with dequantized weights, matching the transformers reference; it is slower "
      "and meant for verification." },
    { "kv_dtype", "Model and engine", CFG_ENUM, FIELD(kv_dtype), 0, 0, 0, kv_dtype_values,
      "fp8", NULL, 0, "fp8|bf16", "KV cache storage (production numerics)",
      "How the KV cache stores the attention latent under production numerics: fp8 "
      "(e4m3 with one scale per 128 values; 656 bytes per token and layer for V3.2) or "
      "bf16 (1152 bytes, no FP8 rounding). exact numerics always keep fp32." },
    { "index_topk_freq", "Model and engine", CFG_INT, FIELD(index_topk_freq), 0, 65536, 0, NULL,
      "0", NULL, 0, "N", "IndexCache: compute the DSA indexer every N layers, 0 = config.json's",
      "IndexCache (docs/INDEXCACHE.md): main layer l computes the DSA indexer when max(l - 1, "
      "0) is a multiple of N (layers 0, 1, then every N-th); the others skip it and reuse the "
      "top-k selection of the computing layer before them. Faster at long context, but it "
      "changes the model's outputs. 1 computes everywhere (off). 0 keeps what config.json "
      "says (its index_topk_freq / index_topk_pattern; off when absent). Setting this or "
      "index_topk_pattern replaces both of config.json's keys. The MTP layer always computes." },
    { "index_topk_pattern", "Model and engine", CFG_STRING, FIELD(index_topk_pattern), 0, 0, 0, NULL,
      "", NULL, 0, "PATTERN", "IndexCache: F (compute) or S (reuse) per layer, \"\" = config.json's",
      "IndexCache as an explicit per-layer plan: one character per main layer, layer 0 first, "
      "F computes the DSA indexer and S reuses the top-k of the F layer before it; it must "
      "start with F and have num_hidden_layers characters (61 for V3.2). Empty keeps "
      "config.json's setting. When both this and index_topk_freq are set, the pattern wins." },
    { "threads", "Model and engine", CFG_INT, FIELD(threads), 0, 1024, 0, NULL,
      "0", NULL, 0, "N", "CPU worker threads, 0 = one per online CPU",
      "Worker threads of the CPU backend. 0 starts one per online CPU." },

    /* ---- Memory and batching ---- */
    { "kv_pages", "Memory and batching", CFG_INT, FIELD(kv_pages), 0, 16777216, 0, NULL,
      "0", NULL, 0, "N", "KV cache size in 64-token pages, 0 = derive",
      "Size of the KV cache in pages of 64 tokens (per GPU with the cuda backend). 0 "
      "derives the number of pages: on GPUs from kv_gpu_fraction, else from kv_memory_mb "
      "and the model's page size." },
    { "kv_memory_mb", "Memory and batching", CFG_SIZE, FIELD(kv_memory_mb), 16, 16777216, 20,
      NULL, "1024", NULL, 0, "MIB", "KV cache memory when kv_pages = 0",
      "Memory given to the KV cache when kv_pages is 0, in MiB: on the cpu backend, and "
      "on each GPU when kv_gpu_fraction is 0. Suffixes K, M, G and T are accepted: 64G is "
      "65536." },
    { "kv_gpu_fraction", "Memory and batching", CFG_FRACTION, FIELD(kv_gpu_fraction), 0, 1,
      0, NULL, "0.9", NULL, 0, "FRACTION", "share of free GPU memory for KV pages",
      "Share of each GPU's memory left after the weights and the step workspace that "
      "becomes KV pages, when kv_pages is 0 (the rest stays free for the CUDA runtime, "
      "NCCL and fragmentation). 0 uses kv_memory_mb per GPU instead. deepseekd --plan "
      "shows the resulting pages and tokens." },
    { "prefix_cache", "Memory and batching", CFG_BOOL, FIELD(prefix_cache), 0, 0, 0, NULL,
      "yes", NULL, 0, "yes|no", "share cached prompt prefixes between requests",
      "Keep the KV of finished requests in whole 64-token pages and give a new request "
      "the longest prefix already computed (system prompts, chat turns, documents): it "
      "only computes the rest, and its usage reports the reused tokens as cached. The "
      "pages stay on the device while nobody needs the room, then move to the host and "
      "disk tiers below when those are configured. no turns the cache and both tiers off." },
    { "host_cache_gb", "Memory and batching", CFG_FRACTION, FIELD(host_cache_gb), 0, 65536,
      0, NULL, "0", NULL, 0, "GIB", "host RAM tier of the KV cache, 0 = none",
      "Host memory (pinned on a GPU) for the host tier of the prefix cache, in GiB, a "
      "decimal (0.5 is 512 MiB); 0 = no host tier. Cached pages the device needs room "
      "for, and the pages of preempted requests, move here instead of being dropped and "
      "computed again." },
    { "disk_cache_dir", "Memory and batching", CFG_PATH, FIELD(disk_cache_dir), 0, 0, 0,
      NULL, "/var/cache/deepseekd", NULL, 0, "DIR", "directory of the disk tier",
      "Directory of the disk tier of the prefix cache: one preallocated file per model "
      "(kv-<fingerprint>.dsdkv). The default is the CacheDirectory= of deepseekd.service. "
      "A directory that cannot be used is logged and the daemon runs without the tier." },
    { "disk_cache_gb", "Memory and batching", CFG_FRACTION, FIELD(disk_cache_gb), 0,
      1048576, 0, NULL, "0", NULL, 0, "GIB", "disk tier of the KV cache, 0 = none",
      "Size of the disk tier of the prefix cache, in GiB, a decimal; 0 = no disk tier. "
      "Every page the cache keeps is also written here once, so a restarted daemon "
      "serves the prefixes an earlier one computed. Pages are checked whole when read: a "
      "damaged or foreign page is dropped with a warning and computed again." },
    { "gpus", "Memory and batching", CFG_INT, FIELD(gpus), 1, 256, 0, NULL,
      "1", NULL, 0, "N", "GPUs the model is spread over",
      "GPUs of this host the cuda backend uses: attention runs data-parallel (every GPU "
      "holds the attention weights and whole sequences) and the routed experts are split "
      "over the GPUs. Used by deepseekd --plan until the cuda backend exists." },
    { "gpu_mem", "Memory and batching", CFG_SIZE, FIELD(gpu_mem), 0, 1125899906842624LL, 0,
      NULL, "0", NULL, 0, "BYTES", "usable memory per GPU, 0 = ask the GPU",
      "Usable memory of each GPU in bytes (suffixes K, M, G and T accepted: 80G). 0 takes "
      "what the GPU reports free once the CUDA context exists; deepseekd --plan, which "
      "asks no GPU, then assumes an H100 80GB (81559 MiB, 85520809984 bytes)." },
    { "max_batch", "Memory and batching", CFG_INT, FIELD(max_batch), 1, 4096, 0, NULL,
      "64", NULL, 0, "N", "most sequences in one engine step",
      "Most sequences in one engine step. Batching is continuous: every running request "
      "decodes one token per step, and new requests join between steps." },
    { "max_batch_tokens", "Memory and batching", CFG_INT, FIELD(max_batch_tokens), 1, 1048576,
      0, NULL, "2048", NULL, 0, "N", "most tokens in one engine step",
      "Most tokens in one engine step: one decode token per running sequence, the rest "
      "spent on prefill chunks of new requests." },
    { "prefill_chunk", "Memory and batching", CFG_INT, FIELD(prefill_chunk), 1, 1048576, 0,
      NULL, "512", NULL, 0, "N", "most prompt tokens of one request per step",
      "Most prompt tokens of one request prefilled in one step. Longer prompts are "
      "prefilled over several steps, so running requests keep decoding meanwhile." },
    { "fairness", "Memory and batching", CFG_ENUM, FIELD(fairness), 0, 0, 0, fairness_values,
      "uid", NULL, 0, "uid|connection|off", "how the batch is shared between clients",
      "How the max_batch slots are shared when more requests want to run than fit. uid: "
      "every client user with requests ready to run gets an equal share (a user who needs "
      "less keeps only what it needs, the rest is shared by the others), and each user's "
      "share is divided the same way among its connections. connection: every connection "
      "gets an equal share. While a client below its share waits, a request of the client "
      "furthest above its share steps back to waiting (it keeps its KV cache) so the waiting "
      "one runs in the next step. Within a share, requests run by priority, then arrival. "
      "off: no shares, priority then arrival only (one client can hold the whole batch). "
      "A request whose client is not reading its output never holds a slot." },
    { "speculative_tokens", "Memory and batching", CFG_INT, FIELD(speculative_tokens), 0, 3, 0, NULL,
      "0", NULL, 0, "K", "MTP draft tokens verified per decode step, 0 = off",
      "Speculative decoding with the checkpoint's own multi-token-prediction layer: after "
      "each step the MTP layer drafts this many tokens per decoding request (0 to 3) and "
      "the next step verifies them all in one forward pass; accepted drafts come out as "
      "extra tokens of that step. The output is exact: greedy requests get the very tokens "
      "plain decoding gives, sampled ones the model's own distribution (rejection "
      "sampling). Requests with repetition, frequency or presence penalties decode "
      "plainly. Costs host memory for the verify logits (max_batch x (K+1) rows of the "
      "vocabulary). docs/SPECULATIVE.md has the details and the measured speeds." },

    /* ---- Socket ---- */
    { "socket", "Socket", CFG_PATH, FIELD(socket), 0, 0, 0, NULL,
      "/run/deepseekd/deepseekd.sock", NULL, 0, "PATH", "path of the listening Unix socket",
      "Path of the listening Unix socket (at most 107 bytes). Ignored when systemd passes "
      "the socket (socket activation through deepseekd.socket, whose ListenStream= "
      "decides the path)." },
    { "socket_mode", "Socket", CFG_MODE, FIELD(socket_mode), 0, 0777, 0, NULL,
      "0660", NULL, 0, "MODE", "permission bits of the socket (octal)",
      "Permission bits of the socket file, in octal. A client needs write permission to "
      "connect. Ignored under socket activation (SocketMode= of deepseekd.socket)." },
    { "socket_group", "Socket", CFG_STRING, FIELD(socket_group), 0, 0, 0, NULL,
      "", NULL, 0, "GROUP", "group of the socket, \"\" = unchanged",
      "Group given to the socket file, so that its members may connect. Empty keeps the "
      "group the socket was created with. Ignored under socket activation (SocketGroup= "
      "of deepseekd.socket)." },

    /* ---- Requests and clients ---- */
    { "max_prompt_tokens", "Requests and clients", CFG_INT, FIELD(max_prompt_tokens), 0,
      2147483648LL, 0, NULL, "0", NULL, 0, "N", "longest prompt, 0 = the model's context",
      "Longest prompt accepted, in tokens. 0 allows the model's whole context "
      "(max_position_embeddings in config.json)." },
    { "max_tokens", "Requests and clients", CFG_INT, FIELD(max_tokens), 1, 2147483648LL, 0,
      NULL, "4096", NULL, CFG_RELOADABLE, "N", "most tokens one request may generate",
      "Most tokens one request may generate: a request asking for more, or for no limit, "
      "is capped at this." },
    { "max_connections_per_uid", "Requests and clients", CFG_INT,
      FIELD(max_connections_per_uid), 1, 65536, 0, NULL, "64", NULL, CFG_RELOADABLE, "N",
      "most open connections of one client user",
      "Most open connections of one client user (the uid the kernel reports for the peer, "
      "SO_PEERCRED). Further connections are refused with an error." },
    { "max_inflight", "Requests and clients", CFG_INT, FIELD(max_inflight), 1, 65536, 0, NULL,
      "256", NULL, CFG_RELOADABLE, "N", "most requests in flight on one connection",
      "Most requests in flight on one connection." },
    { "max_inflight_per_uid", "Requests and clients", CFG_INT, FIELD(max_inflight_per_uid),
      1, 1048576, 0, NULL, "1024", NULL, CFG_RELOADABLE, "N",
      "most requests in flight of one client user",
      "Most requests in flight over all connections of one client user." },
    { "max_frame_kb", "Requests and clients", CFG_SIZE, FIELD(max_frame_kb), 64, 65536, 10,
      NULL, "4096", NULL, 0, "KIB", "largest protocol frame a client may send",
      "Largest protocol frame accepted from a client, in KiB (suffixes K, M, G accepted); "
      "the length is checked before anything is parsed. Long chat conversations and large "
      "tool lists need large frames; prompts passed in shared memory do not." },
    { "max_shm_mb", "Requests and clients", CFG_SIZE, FIELD(max_shm_mb), 1, 1048576, 20, NULL,
      "1024", NULL, 0, "MIB", "largest shared-memory region of one client",
      "Largest shared-memory region (prompt arena and output rings) one client may attach, "
      "in MiB (suffixes K, M, G, T accepted)." },

    /* ---- Timeouts ---- */
    { "stall_timeout_s", "Timeouts", CFG_INT, FIELD(stall_timeout_s), 1, 86400, 0, NULL,
      "60", NULL, CFG_RELOADABLE, "SECONDS", "cancel requests of a client that stopped reading",
      "A request whose output cannot be delivered for this many seconds -- its "
      "shared-memory ring stays full, or its connection has more than 1 MiB of replies "
      "unread, so the daemon stopped reading from it -- is cancelled (done with error "
      "stall_timeout) and its KV cache freed, so a stuck client cannot hold memory others "
      "need." },
    { "drain_timeout_s", "Timeouts", CFG_INT, FIELD(drain_timeout_s), 0, 3600, 0, NULL,
      "30", NULL, CFG_RELOADABLE, "SECONDS", "time in-flight requests get to finish on stop",
      "On stop (SIGTERM) deepseekd refuses new requests and lets those in flight finish "
      "for up to this many seconds, then cancels the rest and exits. Keep TimeoutStopSec= "
      "of deepseekd.service above it." },
    { "frame_timeout_s", "Timeouts", CFG_INT, FIELD(frame_timeout_s), 1, 3600, 0, NULL,
      "30", NULL, CFG_RELOADABLE, "SECONDS", "time a client has to finish a frame it started",
      "A frame whose first byte has arrived must be complete within this many seconds; "
      "otherwise the connection gets the fatal error frame_timeout and is closed, so a "
      "client that sends half a frame and stalls cannot hold a connection and its buffer. "
      "Time during which the daemon itself has stopped reading (the client is not reading "
      "its replies) does not count." },
    { "idle_timeout_s", "Timeouts", CFG_INT, FIELD(idle_timeout_s), 0, 604800, 0, NULL,
      "600", NULL, CFG_RELOADABLE, "SECONDS", "close connections idle this long, 0 = never",
      "A connection with no generate request in flight that has neither sent nor received "
      "a byte for this many seconds gets the fatal error idle_timeout and is closed. 0 "
      "keeps idle connections open forever." },

    /* ---- Logging ---- */
    { "log_level", "Logging", CFG_ENUM, FIELD(log_level), 0, 0, 0, log_level_values,
      "info", NULL, CFG_RELOADABLE, "LEVEL", "least important messages logged",
      "Least important messages written to the log (stderr, which journald reads with "
      "each line's priority): err, warning, notice, info or debug." },

    /* ---- Testing ---- */
    { "test_force_trigger", "Testing", CFG_STRING, FIELD(test_force_trigger), 0, 0, 0, NULL,
      "", NULL, 0, "TEXT", "TEST ONLY: chats ending with this get test_force_output",
      "For tests only; leave empty in production. When this and test_force_output are both "
      "set, a chat request whose last message is a user message ending with this text "
      "gets test_force_output (tokenized with special tokens, then the end-of-sentence "
      "token) as the model's output instead of sampled tokens; logprobs still come from "
      "the model. Tests use it to make a random-weight model write a tool call." },
    { "test_force_output", "Testing", CFG_STRING, FIELD(test_force_output), 0, 0, 0, NULL,
      "", NULL, 0, "TEXT", "TEST ONLY: the output forced by test_force_trigger",
      "For tests only: the model output text that test_force_trigger forces, for example a "
      "DSML tool call block (docs/CHAT.md)." },
    { "test_load_delay_ms", "Testing", CFG_INT, FIELD(test_load_delay_ms), 0, 600000, 0, NULL,
      "0", NULL, 0, "MS", "TEST ONLY: wait this long before loading the model",
      "For tests only; leave 0 in production. The engine waits this many milliseconds "
      "before it loads the model, so that a test sees the daemon in its loading state "
      "(requests answered with `loading`) however small the model is." },
    { "test_spec_force", "Testing", CFG_ENUM, FIELD(test_spec_force), 0, 0, 0, spec_force_values,
      "none", NULL, 0, "none|accept|reject", "TEST ONLY: accept or reject every speculative draft",
      "For tests and measurements only; leave none in production. accept emits every draft "
      "whatever the model says (the output is then not the model's: it measures the speed "
      "ceiling of full acceptance); reject accepts none (exact output, the overhead of "
      "drafting and verifying for nothing). Needs speculative_tokens > 0." },
    { "test_disk_write_delay_ms", "Testing", CFG_INT, FIELD(test_disk_write_delay_ms), 0, 600000, 0, NULL,
      "0", NULL, 0, "MS", "TEST ONLY: every disk KV page write sleeps this long",
      "For tests only; leave 0 in production. Each page the disk KV tier writes sleeps this "
      "many milliseconds between its data and its header (on the tier I/O thread), so a "
      "test sees that a slow disk does not slow the engine and can cut a write short." },
};

#define N_KEYS ((int)(sizeof cfg_keys / sizeof cfg_keys[0]))
_Static_assert(sizeof cfg_keys / sizeof cfg_keys[0] <= DSD_SERVE_CONFIG_MAX_KEYS,
               "raise DSD_SERVE_CONFIG_MAX_KEYS");

/* ============================== Lookup ============================== */

static const struct cfg_key *key_find(const char *name, int *index)
{
    for (int i = 0; i < N_KEYS; i++) {
        if (strcmp(cfg_keys[i].name, name) == 0) {
            if (index)
                *index = i;
            return &cfg_keys[i];
        }
    }
    return NULL;
}

/* Edit distance, for "did you mean". Names are short (< 64), so a two-row table is plenty. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    int prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof prev);
    }
    return prev[lb];
}

static const char *key_suggest(const char *name)
{
    const char *best = NULL;
    int best_d = 3;     /* suggest only close names */
    for (int i = 0; i < N_KEYS; i++) {
        int d = edit_distance(name, cfg_keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = cfg_keys[i].name;
        }
    }
    return best;
}

static void *field_ptr(struct dsd_serve_config *cfg, const struct cfg_key *k)
{
    return (char *)cfg + k->offset;
}

static const void *field_cptr(const struct dsd_serve_config *cfg, const struct cfg_key *k)
{
    return (const char *)cfg + k->offset;
}

/* ============================== Values ============================== */

/* Where a value came from, for messages: "FILE:LINE" or "option --flag". */
struct cfg_where {
    char text[DSD_SERVE_CONFIG_PATH_MAX + 32];
};

/* A value quoted for a message: printable, at most 80 bytes. */
static const char *quote_value(const char *v, char *buf, size_t size)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; v[i] && o + 6 < size; i++) {
        if (i == 80) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)v[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

static int value_error(struct dsd_err *err, const struct cfg_where *w, const struct cfg_key *k,
                       const char *value, const char *problem)
{
    char q[96];
    return dsd_errf(err, -EINVAL, "%s: %s = %s: %s", w->text, k->name,
                    quote_value(value, q, sizeof q), problem);
}

static int parse_int64(const char *s, int64_t *out, const char **end)
{
    if (!isdigit((unsigned char)s[0]) && !((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1])))
        return -EINVAL;
    errno = 0;
    char *e;
    long long v = strtoll(s, &e, 10);
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    *end = e;
    return 0;
}

/* The unit of a CFG_SIZE key's plain numbers. */
static const char *unit_name(const struct cfg_key *k)
{
    return k->unit_shift == 0 ? "bytes" : k->unit_shift == 10 ? "KiB" : "MiB";
}

static void bounds_text(const struct cfg_key *k, char *buf, size_t size)
{
    if (k->type == CFG_MODE)
        snprintf(buf, size, "%04llo..%04llo", (long long)k->min, (long long)k->max);
    else
        snprintf(buf, size, "%lld..%lld", (long long)k->min, (long long)k->max);
}

static int check_bounds(const struct cfg_key *k, const struct cfg_where *w, const char *value,
                        int64_t v, struct dsd_err *err)
{
    if (v >= k->min && v <= k->max)
        return 0;
    char b[64], problem[128];
    bounds_text(k, b, sizeof b);
    snprintf(problem, sizeof problem, "out of range (allowed: %s%s%s)", b,
             k->type == CFG_SIZE ? " " : "", k->type == CFG_SIZE ? unit_name(k) : "");
    return value_error(err, w, k, value, problem);
}

/* Parses value for key k and stores it into cfg. */
static int parse_value(const struct cfg_key *k, const char *value, struct dsd_serve_config *cfg,
                       const struct cfg_where *w, struct dsd_err *err)
{
    void *f = field_ptr(cfg, k);
    char problem[256];
    switch (k->type) {
    case CFG_PATH:
    case CFG_STRING: {
        size_t n = strlen(value);
        if (n >= k->size) {
            snprintf(problem, sizeof problem, "too long (%zu bytes, at most %zu)", n,
                     k->size - 1);
            return value_error(err, w, k, value, problem);
        }
        memcpy(f, value, n + 1);
        return 0;
    }
    case CFG_INT: {
        int64_t v;
        const char *end;
        int rc = parse_int64(value, &v, &end);
        if (rc == 0 && *end)
            rc = -EINVAL;
        if (rc < 0) {
            char b[64];
            bounds_text(k, b, sizeof b);
            snprintf(problem, sizeof problem, "%s (allowed: %s)",
                     rc == -ERANGE ? "out of range" : "not an integer", b);
            return value_error(err, w, k, value, problem);
        }
        if ((rc = check_bounds(k, w, value, v, err)) < 0)
            return rc;
        *(int64_t *)f = v;
        return 0;
    }
    case CFG_SIZE: {
        /* A plain number is in the key's unit; a K/M/G/T suffix (optionally followed by
         * "B" or "iB", any case) converts, and must give a whole number of units. */
        int64_t v;
        const char *end;
        const char *unit = unit_name(k);
        int rc = parse_int64(value, &v, &end);
        int shift = k->unit_shift;
        if (rc == 0 && *end) {
            const char *sfx = strchr("KMGT", toupper((unsigned char)*end));
            if (!sfx || !*end)
                rc = -EINVAL;
            else {
                shift = 10 * (int)(sfx - "KMGT" + 1);
                const char *rest = end + 1;
                if (strcasecmp(rest, "") != 0 && strcasecmp(rest, "b") != 0 &&
                    strcasecmp(rest, "ib") != 0)
                    rc = -EINVAL;
            }
        }
        if (rc < 0) {
            char b[64];
            bounds_text(k, b, sizeof b);
            snprintf(problem, sizeof problem,
                     "%s (allowed: %s %s, or a size with suffix K, M, G or T)",
                     rc == -ERANGE ? "out of range" : "not a size", b, unit);
            return value_error(err, w, k, value, problem);
        }
        if (v < 0)
            return check_bounds(k, w, value, v, err);
        if (shift >= k->unit_shift) {
            int up = shift - k->unit_shift;
            if (v > (INT64_MAX >> up))
                return check_bounds(k, w, value, INT64_MAX, err);
            v <<= up;
        } else {
            int down = k->unit_shift - shift;
            if (v & ((INT64_C(1) << down) - 1)) {
                snprintf(problem, sizeof problem, "not a whole number of %s", unit);
                return value_error(err, w, k, value, problem);
            }
            v >>= down;
        }
        if ((rc = check_bounds(k, w, value, v, err)) < 0)
            return rc;
        *(int64_t *)f = v;
        return 0;
    }
    case CFG_ENUM:
        for (const struct cfg_enum_value *e = k->values; e->name; e++) {
            if (strcmp(e->name, value) == 0) {
                *(int *)f = e->value;
                return 0;
            }
        }
        {
            size_t o = (size_t)snprintf(problem, sizeof problem, "must be one of");
            for (const struct cfg_enum_value *e = k->values; e->name && o < sizeof problem; e++)
                o += (size_t)snprintf(problem + o, sizeof problem - o, "%s %s",
                                      e == k->values ? "" : ",", e->name);
        }
        return value_error(err, w, k, value, problem);
    case CFG_BOOL: {
        static const char *const yes[] = { "yes", "true", "on", "1" };
        static const char *const no[] = { "no", "false", "off", "0" };
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *(bool *)f = strcasecmp(value, yes[i]) == 0;
                return 0;
            }
        }
        return value_error(err, w, k, value, "must be yes or no (or true/false, on/off, 1/0)");
    }
    case CFG_FRACTION: {
        /* A plain decimal (0.9, 1, .5), optionally signed so that "-1" reads as out of
         * range rather than malformed; no exponents, no hex, no inf/nan. */
        const char *q = value + (value[0] == '-' || value[0] == '+');
        int digits = 0, dots = 0;
        for (; *q; q++) {
            if (isdigit((unsigned char)*q))
                digits++;
            else if (*q == '.')
                dots++;
            else
                break;
        }
        if (*q || digits == 0 || dots > 1 || strlen(value) > 32) {
            char b[64];
            bounds_text(k, b, sizeof b);
            snprintf(problem, sizeof problem, "not a decimal number (allowed: %s, e.g. 0.9)", b);
            return value_error(err, w, k, value, problem);
        }
        double v = strtod(value, NULL);
        if (!(v >= (double)k->min && v <= (double)k->max)) {
            char b[64];
            bounds_text(k, b, sizeof b);
            snprintf(problem, sizeof problem, "out of range (allowed: %s)", b);
            return value_error(err, w, k, value, problem);
        }
        *(double *)f = v;
        return 0;
    }
    case CFG_MODE: {
        /* Octal digits only, with or without a leading 0 (0660 or 660). */
        size_t n = strlen(value);
        bool ok = n > 0 && n <= 6;
        for (size_t i = 0; ok && i < n; i++)
            ok = value[i] >= '0' && value[i] <= '7';
        if (!ok) {
            char b[64];
            bounds_text(k, b, sizeof b);
            snprintf(problem, sizeof problem, "not an octal mode (allowed: %s, e.g. 0660)", b);
            return value_error(err, w, k, value, problem);
        }
        int64_t v = strtoll(value, NULL, 8);
        int rc = check_bounds(k, w, value, v, err);
        if (rc < 0)
            return rc;
        *(unsigned *)f = (unsigned)v;
        return 0;
    }
    }
    return dsd_errf(err, -EINVAL, "internal: key %s has no type", k->name);
}

static int format_value(const struct dsd_serve_config *cfg, const struct cfg_key *k, char *buf,
                        size_t size)
{
    const void *f = field_cptr(cfg, k);
    switch (k->type) {
    case CFG_PATH:
    case CFG_STRING:
        return snprintf(buf, size, "%s", (const char *)f);
    case CFG_INT:
    case CFG_SIZE:
        return snprintf(buf, size, "%lld", (long long)*(const int64_t *)f);
    case CFG_ENUM:
        for (const struct cfg_enum_value *e = k->values; e->name; e++)
            if (e->value == *(const int *)f)
                return snprintf(buf, size, "%s", e->name);
        return snprintf(buf, size, "%d", *(const int *)f);
    case CFG_FRACTION:
        return snprintf(buf, size, "%.15g", *(const double *)f);
    case CFG_BOOL:
        return snprintf(buf, size, "%s", *(const bool *)f ? "yes" : "no");
    case CFG_MODE:
        return snprintf(buf, size, "%04o", *(const unsigned *)f);
    }
    return snprintf(buf, size, "?");
}

/* ============================== Defaults ============================== */

static size_t type_field_size(enum cfg_type t)
{
    switch (t) {
    case CFG_INT:
    case CFG_SIZE: return sizeof(int64_t);
    case CFG_FRACTION: return sizeof(double);
    case CFG_ENUM: return sizeof(int);
    case CFG_BOOL: return sizeof(bool);
    case CFG_MODE: return sizeof(unsigned);
    default: return 0;     /* strings: any buffer */
    }
}

void dsd_serve_config_defaults(struct dsd_serve_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    struct cfg_where w;
    snprintf(w.text, sizeof w.text, "built-in default");
    for (int i = 0; i < N_KEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        struct dsd_err err;
        size_t want = type_field_size(k->type);
        DSD_CHECK(want == 0 || want == k->size);
        DSD_CHECK((k->def == NULL) == ((k->flags & CFG_REQUIRED) != 0));
        if (k->def && parse_value(k, k->def, cfg, &w, &err) < 0) {
            fprintf(stderr, "<2>deepseekd: %s\n", err.msg);
            DSD_CHECK(!"configuration table default out of its own bounds");
        }
    }
}

/* ============================== The file ============================== */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

/* The largest configuration file read: the documented file is a few KiB, and a path that
 * never ends (--config /dev/zero, a FIFO someone keeps writing) must not grow memory
 * without bound. */
#define CFG_FILE_MAX ((size_t)1 << 20)

/* Reads all of f (at most CFG_FILE_MAX bytes) into a NUL-terminated buffer. Returns 0 with
 * *out (free it) and *n, -EFBIG, -ENOMEM or -EIO. */
static int read_capped(FILE *f, char **out, size_t *n)
{
    char *buf = malloc(CFG_FILE_MAX + 2);
    if (!buf)
        return -ENOMEM;
    size_t got = fread(buf, 1, CFG_FILE_MAX + 1, f);
    if (ferror(f)) {
        free(buf);
        return -EIO;
    }
    if (got > CFG_FILE_MAX) {
        free(buf);
        return -EFBIG;
    }
    buf[got] = 0;
    *out = buf;
    *n = got;
    return 0;
}

/* Applies path's lines to cfg. origin[i] becomes the line that set key i. Returns 0,
 * -ENOENT (missing; err says so), -EINVAL (a bad line), -EFBIG (larger than
 * CFG_FILE_MAX), or another negative errno. */
static int apply_file(const char *path, struct dsd_serve_config *cfg, int origin[],
                      struct dsd_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        return dsd_errf(err, -e, "cannot open configuration file %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return dsd_errf(err, -EISDIR, "configuration file %s is a directory", path);
    }
    char *text = NULL;
    size_t n = 0;
    int rc = read_capped(f, &text, &n);
    fclose(f);
    if (rc == -EFBIG)
        return dsd_errf(err, rc, "configuration file %s is larger than %zu KiB: not a deepseekd configuration",
                        path, CFG_FILE_MAX >> 10);
    if (rc)
        return dsd_errf(err, rc, "cannot read configuration file %s: %s", path, strerror(-rc));
    int lineno = 0;
    struct cfg_where w;
    for (char *line = text, *next; line < text + n; line = next) {
        char *end = memchr(line, '\n', (size_t)(text + n - line));
        if (!end)
            end = text + n;             /* the last line, without a newline (text is NUL-terminated) */
        *end = 0;
        next = end + 1;
        lineno++;
        snprintf(w.text, sizeof w.text, "%s:%d", path, lineno);
        if (strlen(line) != (size_t)(end - line)) {
            rc = dsd_errf(err, -EINVAL, "%s: line contains a NUL byte", w.text);
            break;
        }
        char *s = trim(line);
        if (*s == 0 || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            char q[96];
            rc = dsd_errf(err, -EINVAL, "%s: expected \"key = value\", got %s", w.text,
                          quote_value(s, q, sizeof q));
            break;
        }
        *eq = 0;
        char *name = trim(s), *value = trim(eq + 1);
        int index;
        const struct cfg_key *k = key_find(name, &index);
        if (!k) {
            char q[96];
            const char *hint = key_suggest(name);
            if (hint)
                rc = dsd_errf(err, -EINVAL, "%s: unknown key %s (did you mean \"%s\"?)",
                              w.text, quote_value(name, q, sizeof q), hint);
            else
                rc = dsd_errf(err, -EINVAL,
                              "%s: unknown key %s (deepseekd --help lists every key)", w.text,
                              quote_value(name, q, sizeof q));
            break;
        }
        size_t vn = strlen(value);
        const bool opens = vn >= 1 && value[0] == '"', closes = vn >= 2 && value[vn - 1] == '"';
        if (opens != closes) {
            char q[96];
            rc = dsd_errf(err, -EINVAL, "%s: %s: unbalanced double quote in %s (quote the whole value or none of it)",
                          w.text, k->name, quote_value(value, q, sizeof q));
            break;
        }
        if (opens) {
            value[vn - 1] = 0;
            value++;
        }
        if ((rc = parse_value(k, value, cfg, &w, err)) < 0)
            break;
        origin[index] = lineno;
    }
    free(text);
    return rc;
}

/* The file a load or reload reads: the explicit one, else the default when it exists.
 * A relative --config is made absolute, so a reload after a chdir() reads the same file. */
static int choose_file(const char *explicit_path, char *out, struct dsd_err *err)
{
    out[0] = 0;
    if (explicit_path) {
        char cwd[DSD_SERVE_CONFIG_PATH_MAX] = "";
        if (explicit_path[0] != '/' && !getcwd(cwd, sizeof cwd))
            return dsd_errf(err, -errno, "--config %s: cannot resolve a relative path: %s",
                            explicit_path, strerror(errno));
        size_t n = (size_t)snprintf(out, DSD_SERVE_CONFIG_PATH_MAX, "%s%s%s", cwd,
                                    cwd[0] ? "/" : "", explicit_path);
        if (n >= DSD_SERVE_CONFIG_PATH_MAX) {
            out[0] = 0;
            return dsd_errf(err, -ENAMETOOLONG, "--config: path too long");
        }
        return 0;
    }
    if (access(DSD_SERVE_CONFIG_DEFAULT_PATH, F_OK) == 0)
        snprintf(out, DSD_SERVE_CONFIG_PATH_MAX, "%s", DSD_SERVE_CONFIG_DEFAULT_PATH);
    return 0;
}

/* ============================== Validation ============================== */

static void dashed(char *s)
{
    for (; *s; s++)
        if (*s == '_')
            *s = '-';
}

/* Where key i's value came from: ORIGIN_DEFAULT, ORIGIN_FLAG or a line of the file. */
enum { ORIGIN_DEFAULT = 0, ORIGIN_FLAG = -1 };

static void origin_text(const struct dsd_serve_config *cfg, const int origin[], int i,
                        struct cfg_where *w)
{
    if (origin[i] == ORIGIN_FLAG) {
        snprintf(w->text, sizeof w->text, "option --%s", cfg_keys[i].name);
        dashed(w->text + 9);
    } else if (origin[i] > 0)
        snprintf(w->text, sizeof w->text, "%s:%d", cfg->config_path, origin[i]);
    else
        snprintf(w->text, sizeof w->text, "default of %s", cfg_keys[i].name);
}

/* Cross-key rules and what this build cannot do. */
static int validate(const struct dsd_serve_config *cfg, const int origin[], struct dsd_err *err)
{
    struct cfg_where w;
    int i;
    if (!cfg->model[0])
        return dsd_errf(err, -EINVAL,
                        "no model directory: set \"model = DIR\" in the configuration file "
                        "or pass --model DIR");
    /* The one place that knows which backends this build has and what each can do (--plan
     * runs no backend). */
    if (cfg->backend == DSD_SERVE_BACKEND_CUDA && !DSD_SERVE_HAVE_CUDA && !cfg->plan) {
        key_find("backend", &i);
        origin_text(cfg, origin, i, &w);
        return dsd_errf(err, -EINVAL,
                        "%s: backend = \"cuda\": this deepseekd was built without the CUDA backend "
                        "(build it with -DDSD_CUDA=ON on a machine with the CUDA toolkit); use backend = cpu",
                        w.text);
    }
    if (cfg->backend == DSD_SERVE_BACKEND_CUDA && cfg->numerics == DSD_SERVE_NUMERICS_EXACT && !cfg->plan) {
        key_find("backend", &i);
        origin_text(cfg, origin, i, &w);
        return dsd_errf(err, -EINVAL,
                        "%s: backend = \"cuda\" with numerics = exact: exact numerics run on the CPU "
                        "backend only; use numerics = production on the GPU", w.text);
    }
    if (cfg->index_topk_freq > 0 || cfg->index_topk_pattern[0]) {
        /* the model's own rules; the pattern's length is checked against its layers at load */
        key_find(cfg->index_topk_pattern[0] ? "index_topk_pattern" : "index_topk_freq", &i);
        origin_text(cfg, origin, i, &w);
        int rc = dsd_index_cache_check(cfg->index_topk_freq > 0 ? (int)cfg->index_topk_freq : 1,
                                       cfg->index_topk_pattern, 0, w.text, err);
        if (rc)
            return rc;
    }
    if (!cfg->socket[0]) {
        key_find("socket", &i);
        origin_text(cfg, origin, i, &w);
        return dsd_errf(err, -EINVAL, "%s: socket = \"\": a socket path is required", w.text);
    }
    return 0;
}

/* ============================== Loading ============================== */

static bool is_flag(const char *arg, const char *name)
{
    return strcmp(arg, name) == 0;
}

/* Parses "--name" or "--name=value" into a key. Returns the key or NULL (err set). */
static const struct cfg_key *flag_key(const char *arg, const char **inline_value, int *index,
                                      struct dsd_err *err)
{
    char name[64];
    const char *p = arg + 2;
    size_t n = 0;
    while (p[n] && p[n] != '=' && n < sizeof name - 1) {
        name[n] = p[n] == '-' ? '_' : p[n];
        n++;
    }
    name[n] = 0;
    *inline_value = p[n] == '=' ? p + n + 1 : NULL;
    const struct cfg_key *k = (p[n] == 0 || p[n] == '=') ? key_find(name, index) : NULL;
    if (!k) {
        char q[96], hint[64];
        const char *h = key_suggest(name);
        if (h) {
            snprintf(hint, sizeof hint, "%s", h);
            dashed(hint);
            dsd_errf(err, -EINVAL, "unknown option %s (did you mean --%s?)",
                     quote_value(arg, q, sizeof q), hint);
        } else {
            dsd_errf(err, -EINVAL, "unknown option %s (see deepseekd --help)",
                     quote_value(arg, q, sizeof q));
        }
    }
    return k;
}

/* One pass over argv. With cfg == NULL it only checks the syntax, finds --config and
 * handles --help/--version/--print-config; with cfg it applies every key option. */
static int scan_flags(int argc, char **argv, struct dsd_serve_config *cfg, int origin[],
                      const char **config_path, struct dsd_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_flag(a, "--plan")) {
            if (cfg)
                cfg->plan = true;
            continue;
        }
        if (!cfg) {
            if (is_flag(a, "--help") || is_flag(a, "-h")) {
                dsd_serve_config_print_help(stdout);
                return DSD_SERVE_CONFIG_HANDLED;
            }
            if (is_flag(a, "--version")) {
                printf("deepseekd %s\n", DSD_VERSION);
                return DSD_SERVE_CONFIG_HANDLED;
            }
            if (is_flag(a, "--print-config")) {
                dsd_serve_config_print_example(stdout);
                return DSD_SERVE_CONFIG_HANDLED;
            }
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
            char q[96];
            return dsd_errf(err, -EINVAL,
                            "unexpected argument %s: options are --KEY VALUE or --KEY=VALUE "
                            "(see deepseekd --help)", quote_value(a, q, sizeof q));
        }
        const char *value;
        int index = -1;
        bool is_config = strncmp(a, "--config", 8) == 0 && (a[8] == 0 || a[8] == '=');
        const struct cfg_key *k = NULL;
        if (is_config)
            value = a[8] == '=' ? a + 9 : NULL;
        else if (!(k = flag_key(a, &value, &index, err)))
            return -EINVAL;
        if (!value) {
            /* A value starting with "--" is almost surely a forgotten value followed by
             * the next option; such a value can still be given as --KEY=VALUE. */
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
                return dsd_errf(err, -EINVAL, "%s needs a value (%s VALUE or %s=VALUE)", a,
                                a, a);
            value = argv[++i];
        }
        if (is_config) {
            if (!value[0])
                return dsd_errf(err, -EINVAL, "--config needs a file name");
            *config_path = value;
            continue;
        }
        if (!cfg)
            continue;
        struct cfg_where w;
        snprintf(w.text, sizeof w.text, "option --%s", k->name);
        dashed(w.text + 9);
        int rc = parse_value(k, value, cfg, &w, err);
        if (rc < 0)
            return rc;
        cfg->from_flag[index] = true;
        origin[index] = ORIGIN_FLAG;
    }
    return 0;
}

int dsd_serve_config_load(int argc, char **argv, struct dsd_serve_config *cfg,
                          struct dsd_err *err)
{
    int origin[DSD_SERVE_CONFIG_MAX_KEYS] = { 0 };
    const char *explicit_path = NULL;
    dsd_serve_config_defaults(cfg);
    int rc = scan_flags(argc, argv, NULL, origin, &explicit_path, err);
    if (rc != 0)
        return rc;
    if ((rc = choose_file(explicit_path, cfg->config_path, err)) < 0)
        return rc;
    cfg->config_explicit = explicit_path != NULL;
    if (cfg->config_path[0] && (rc = apply_file(cfg->config_path, cfg, origin, err)) < 0)
        return rc;
    if ((rc = scan_flags(argc, argv, cfg, origin, &explicit_path, err)) < 0)
        return rc;
    return validate(cfg, origin, err);
}

/* ============================== Reload ============================== */

static void set_change_value(char *dst, size_t size, const char *v)
{
    size_t n = strlen(v);
    if (n < size) {
        memcpy(dst, v, n + 1);
        return;
    }
    memcpy(dst, v, size - 4);
    memcpy(dst + size - 4, "...", 4);
}

int dsd_serve_config_reload(struct dsd_serve_config *cfg, struct dsd_serve_config_changes *changes,
                            struct dsd_err *err)
{
    int origin[DSD_SERVE_CONFIG_MAX_KEYS] = { 0 };
    /* Two whole configurations plus two formatted values: keep them off the stack. */
    struct reload_scratch {
        struct dsd_serve_config next;
        char a[DSD_SERVE_CONFIG_PATH_MAX], b[DSD_SERVE_CONFIG_PATH_MAX];
    } *s = malloc(sizeof *s);
    if (!s)
        return dsd_errf(err, -ENOMEM, "out of memory re-reading the configuration");
    struct dsd_serve_config *next = &s->next;
    dsd_serve_config_defaults(next);
    int rc = choose_file(cfg->config_explicit ? cfg->config_path : NULL, next->config_path, err);
    next->config_explicit = cfg->config_explicit;
    if (rc == 0 && next->config_path[0])
        rc = apply_file(next->config_path, next, origin, err);
    if (rc < 0)
        goto out;
    /* Options still override the file: keep their values. */
    for (int i = 0; i < N_KEYS; i++) {
        if (cfg->from_flag[i]) {
            memcpy(field_ptr(next, &cfg_keys[i]), field_cptr(cfg, &cfg_keys[i]),
                   cfg_keys[i].size);
            next->from_flag[i] = true;
            origin[i] = ORIGIN_FLAG;
        }
    }
    if ((rc = validate(next, origin, err)) < 0)
        goto out;

    changes->count = 0;
    for (int i = 0; i < N_KEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        format_value(cfg, k, s->a, sizeof s->a);
        format_value(next, k, s->b, sizeof s->b);
        if (strcmp(s->a, s->b) == 0)
            continue;
        struct dsd_serve_config_change *c = &changes->item[changes->count++];
        c->key = k->name;
        c->needs_restart = !(k->flags & CFG_RELOADABLE);
        set_change_value(c->old_value, sizeof c->old_value, s->a);
        set_change_value(c->new_value, sizeof c->new_value, s->b);
        if (!c->needs_restart)
            memcpy(field_ptr(cfg, k), field_cptr(next, k), k->size);
    }
    memcpy(cfg->config_path, next->config_path, sizeof cfg->config_path);
out:
    free(s);
    return rc;
}

/* ============================== Queries ============================== */

int dsd_serve_config_format(const struct dsd_serve_config *cfg, const char *key, char *buf,
                            size_t size)
{
    const struct cfg_key *k = key_find(key, NULL);
    if (!k)
        return -ENOENT;
    return format_value(cfg, k, buf, size);
}

const char *dsd_serve_config_default_path(void)
{
    return DSD_SERVE_CONFIG_DEFAULT_PATH;
}

const char *dsd_serve_config_key_name(int i)
{
    return i >= 0 && i < N_KEYS ? cfg_keys[i].name : NULL;
}

bool dsd_serve_config_key_reloadable(const char *key)
{
    const struct cfg_key *k = key_find(key, NULL);
    return k && (k->flags & CFG_RELOADABLE);
}

static const char *enum_name(const struct cfg_enum_value *values, int v)
{
    for (const struct cfg_enum_value *e = values; e->name; e++)
        if (e->value == v)
            return e->name;
    return "?";
}

const char *dsd_serve_backend_name(enum dsd_serve_backend b) { return enum_name(backend_values, (int)b); }
const char *dsd_serve_fairness_name(enum dsd_serve_fairness f) { return enum_name(fairness_values, (int)f); }
const char *dsd_serve_numerics_name(enum dsd_serve_numerics n) { return enum_name(numerics_values, (int)n); }
const char *dsd_serve_kv_dtype_name(enum dsd_serve_kv_dtype k) { return enum_name(kv_dtype_values, (int)k); }
const char *dsd_serve_log_level_name(int level) { return enum_name(log_level_values, level); }

/* ============================== Help and example ============================== */

/* Writes text word-wrapped to width, every line starting with prefix (the first line
 * continues at column first_col when it is already partly written). */
static void wrap(FILE *out, const char *text, const char *prefix, int first_col, int width)
{
    int col = first_col;
    int plen = (int)strlen(prefix);
    bool line_empty = true;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        int wl = (int)strcspn(p, " ");
        if (!line_empty && col + 1 + wl > width) {
            fputc('\n', out);
            fputs(prefix, out);
            col = plen;
            line_empty = true;
        }
        if (!line_empty) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, (size_t)wl, out);
        col += wl;
        line_empty = false;
        p += wl;
    }
    fputc('\n', out);
}

static void default_text(const struct cfg_key *k, char *buf, size_t size)
{
    if (!k->def)
        snprintf(buf, size, "none, required");
    else if (!k->def[0])
        snprintf(buf, size, "\"\"");
    else if (k->type == CFG_MODE)
        snprintf(buf, size, "%04llo", strtoll(k->def, NULL, 8));
    else
        snprintf(buf, size, "%s", k->def);
}

#define HELP_COL 28
#define HELP_INDENT "                            "

void dsd_serve_config_print_help(FILE *out)
{
    fprintf(out,
            "Usage: deepseekd [--config FILE] [--KEY VALUE | --KEY=VALUE]...\n"
            "       deepseekd --plan [--config FILE] [--KEY VALUE]...\n"
            "       deepseekd --help | --version | --print-config\n"
            "\n"
            "deepseekd serves DeepSeek V3.2 to programs on this host over a Unix socket.\n"
            "\n"
            "Every key of the configuration file is also an option: --KEY VALUE or\n"
            "--KEY=VALUE (dashes or underscores). Options override the file. [reload] marks\n"
            "keys that a reload (SIGHUP, systemctl reload deepseekd) applies; the others\n"
            "need a restart.\n"
            "\n"
            "Options:\n"
            "  --config FILE             configuration file; without it, this one if it\n"
            "                            exists: %s\n"
            "  --plan                    print the GPU memory plan of --model (weights per\n"
            "                            GPU, workspace, KV pages and tokens, host tier) for\n"
            "                            --gpus, --gpu-mem and the memory keys, and exit:\n"
            "                            status 0 if it fits, 2 if it does not, 1 if the\n"
            "                            model cannot be read; DIR may hold config.json alone\n"
            "  --print-config            print a configuration file documenting every key\n"
            "  --version                 print the version\n"
            "  -h, --help                print this help\n",
            DSD_SERVE_CONFIG_DEFAULT_PATH);
    const char *group = NULL;
    for (int i = 0; i < N_KEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!group || strcmp(group, k->group) != 0) {
            group = k->group;
            fprintf(out, "\n%s:\n", group);
        }
        char flag[96];
        int n = snprintf(flag, sizeof flag, "  --%s %s", k->name, k->arg);
        for (char *c = flag + 4; *c && *c != ' '; c++)
            if (*c == '_')
                *c = '-';
        fputs(flag, out);
        if (n + 2 > HELP_COL) {
            fprintf(out, "\n%*s", HELP_COL, "");
        } else {
            fprintf(out, "%*s", HELP_COL - n, "");
        }
        wrap(out, k->summary, HELP_INDENT, HELP_COL, 79);
        char facts[512], def[128], b[64];
        default_text(k, def, sizeof def);
        int o = snprintf(facts, sizeof facts, "(default: %s", def);
        if (k->type == CFG_INT || k->type == CFG_SIZE || k->type == CFG_MODE || k->type == CFG_FRACTION) {
            bounds_text(k, b, sizeof b);
            o += snprintf(facts + o, sizeof facts - o, "; %s%s%s", b, k->type == CFG_SIZE ? " " : "",
                          k->type == CFG_SIZE ? unit_name(k) : "");
        }
        snprintf(facts + o, sizeof facts - o, ")%s",
                 (k->flags & CFG_RELOADABLE) ? " [reload]" : "");
        fputs(HELP_INDENT, out);
        wrap(out, facts, HELP_INDENT, HELP_COL, 79);
    }
}

void dsd_serve_config_print_example(FILE *out)
{
    fputs("# deepseekd.conf: configuration of deepseekd, the DeepSeek V3.2 inference\n"
          "# daemon.\n"
          "#\n"
          "# Generated by `deepseekd --print-config`. Installed as deepseekd.conf.example:\n"
          "# copy it to deepseekd.conf in the same directory and uncomment what you\n"
          "# change. Every key is shown at its default.\n"
          "#\n"
          "# Format: one `key = value` per line. Lines starting with # are comments. A\n"
          "# later line for the same key wins. A value may be wrapped in double quotes\n"
          "# (needed only for an empty string). Every key is also a command-line option,\n"
          "# --key value, which overrides this file. An unknown key or a value out of\n"
          "# bounds is an error: deepseekd refuses to start and names the line.\n"
          "#\n"
          "# Reload: `systemctl reload deepseekd` (SIGHUP) re-reads this file and applies\n"
          "# the keys marked \"Reloadable\"; changes to the others take effect at the next\n"
          "# restart (the log lists them).\n", out);
    const char *group = NULL;
    for (int i = 0; i < N_KEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!group || strcmp(group, k->group) != 0) {
            group = k->group;
            fprintf(out, "\n# ======== %s ========\n", group);
        }
        fputs("\n# ", out);
        wrap(out, k->doc, "# ", 2, 79);

        char facts[512], def[128], b[64];
        int o = 0;
        switch (k->type) {
        case CFG_INT:
            bounds_text(k, b, sizeof b);
            o = snprintf(facts, sizeof facts, "Integer, %s.", b);
            break;
        case CFG_SIZE:
            bounds_text(k, b, sizeof b);
            o = snprintf(facts, sizeof facts, "Size, %s %s.", b, unit_name(k));
            break;
        case CFG_MODE:
            bounds_text(k, b, sizeof b);
            o = snprintf(facts, sizeof facts, "Octal mode, %s.", b);
            break;
        case CFG_FRACTION:
            bounds_text(k, b, sizeof b);
            o = snprintf(facts, sizeof facts, "Decimal number, %s.", b);
            break;
        case CFG_ENUM:
            o = snprintf(facts, sizeof facts, "One of:");
            for (const struct cfg_enum_value *e = k->values; e->name; e++)
                o += snprintf(facts + o, sizeof facts - o, "%s %s", e == k->values ? "" : ",",
                              e->name);
            o += snprintf(facts + o, sizeof facts - o, ".");
            break;
        case CFG_BOOL:
            o = snprintf(facts, sizeof facts, "yes or no.");
            break;
        case CFG_PATH:
            o = snprintf(facts, sizeof facts, "Path.");
            break;
        case CFG_STRING:
            o = snprintf(facts, sizeof facts, "Text.");
            break;
        }
        default_text(k, def, sizeof def);
        snprintf(facts + o, sizeof facts - o, " Default: %s. %s", def,
                 (k->flags & CFG_RELOADABLE) ? "Reloadable." : "Needs a restart.");
        fputs("# ", out);
        wrap(out, facts, "# ", 2, 79);
        if (k->def)
            fprintf(out, "#%s = %s\n", k->name, k->def[0] ? def : "\"\"");
        else
            fprintf(out, "#%s = %s\n", k->name, k->example);
    }
}
