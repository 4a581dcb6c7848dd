/*
 * deepseekd-run: generate in-process with the engine (no daemon): load a checkpoint, prefill
 * a prompt, decode N tokens, print the generated ids and the speed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "npy.h"
#include "run_engine.h"
#include "sampling.h"
#include "tokenizer.h"

static const char usage[] =
    "usage: deepseekd-run --model DIR (--prompt-tokens \"0 17 42 ...\" | --prompt TEXT) --max-tokens N\n"
    "                     [--greedy | --temperature T --top-p P --seed S] [--kv fp8|bf16]\n"
    "                     [--numerics production|exact] [--dump-logits FILE] [--threads N]\n"
    "                     [--chunk N] [--ignore-eos] [--backend cpu|cuda] [--gpu N] [--no-graphs]\n"
    "                     [--speculative-tokens K [--spec-force none|accept|reject] [--batch N]]\n"
    "                     [--index-topk-freq N | --index-topk-pattern FS...]\n"
    "Generates with the engine and prints the generated token ids on one line (and, with\n"
    "--prompt, the generated text on the next), then load, prefill and decode speed on stderr.\n"
    "  --prompt TEXT  text prompt, tokenized with the model's tokenizer.json (BOS first)\n"
    "  --numerics     production (bf16 activations, FP8 linears/indexer/KV; default) or exact\n"
    "                 (fp32, dequantized weights: what transformers computes)\n"
    "  --kv           KV cache entries: fp8 (656 B/token/layer for V3.2; default) or bf16\n"
    "  --dump-logits  write every prompt position's and every step's logits as a float32 .npy\n"
    "  --chunk N      prefill in chunks of N tokens (default: the whole prompt at once)\n"
    "  --ignore-eos   keep generating past the end-of-sentence token\n"
    "  --backend      cpu (the reference; default) or cuda (one Hopper GPU, production numerics)\n"
    "  --gpu N        which GPU the cuda backend uses (default 0)\n"
    "  --no-graphs    run every decode step op by op (no recorded CUDA graphs), to compare\n"
    "  --speculative-tokens K  run through the daemon's engine (continuous batching) with\n"
    "                 speculative decoding, K = 0..3 MTP drafts per step (docs/SPECULATIVE.md);\n"
    "                 prints the verify steps, drafts and accepted drafts too\n"
    "  --spec-force   TEST/MEASUREMENT: accept every draft (the speed ceiling; the output is\n"
    "                 then not the model's) or reject every one (the overhead; exact output)\n"
    "  --batch N      with --speculative-tokens: N concurrent copies of the prompt\n"
    "  --index-topk-freq N, --index-topk-pattern P\n"
    "                 IndexCache (docs/INDEXCACHE.md): the daemon's keys of those names, over\n"
    "                 config.json's; it changes the outputs\n"
    "Tokens are sampled on the backend (docs/SAMPLING.md), on the host with --dump-logits.\n"
    "The last stderr line reports decode steps replayed from recordings vs run op by op, the\n"
    "host time each kind took to enqueue and the kernel launches of a recorded step.\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(const char *fmt, const char *arg)
{
    fprintf(stderr, "deepseekd-run: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 1;
}

static int parse_tokens(const char *s, int32_t **out, int *n)
{
    int cap = 16, cnt = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            break;
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return -EINVAL;
        }
        if (cnt == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                return -ENOMEM;
            }
            v = nv;
        }
        v[cnt++] = (int32_t)x;
        s = end;
    }
    *out = v;
    *n = cnt;
    return cnt > 0 ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *prompt_tokens = NULL, *prompt_text = NULL, *dump = NULL;
    long max_tokens = -1, chunk = 0, spec_k = -1, batch = 1;
    int spec_force = 0;
    bool ignore_eos = false;
    struct dsd_sampling_params sp = dsd_sampling_default_params();
    struct dsd_model_params mp = dsd_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--greedy")) {
            sp.temperature = 0.0f;
            continue;
        }
        if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
            continue;
        }
        if (!strcmp(a, "--no-graphs")) {
            mp.no_graphs = true;
            continue;
        }
        if (!v)
            return fail("%s needs a value (see --help)", a);
        i++;
        char *end = NULL;
        errno = 0;
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--prompt-tokens"))
            prompt_tokens = v;
        else if (!strcmp(a, "--prompt"))
            prompt_text = v;
        else if (!strcmp(a, "--dump-logits"))
            dump = v;
        else if (!strcmp(a, "--max-tokens")) {
            max_tokens = strtol(v, &end, 10);
            if (*end || errno || max_tokens < 0 || max_tokens > 1 << 24)
                return fail("--max-tokens must be a count, got \"%s\"", v);
        } else if (!strcmp(a, "--chunk")) {
            chunk = strtol(v, &end, 10);
            if (*end || errno || chunk < 1)
                return fail("--chunk must be a positive count, got \"%s\"", v);
        } else if (!strcmp(a, "--speculative-tokens")) {
            spec_k = strtol(v, &end, 10);
            if (*end || errno || spec_k < 0 || spec_k > 3)
                return fail("--speculative-tokens must be 0..3, got \"%s\"", v);
        } else if (!strcmp(a, "--batch")) {
            batch = strtol(v, &end, 10);
            if (*end || errno || batch < 1 || batch > 4096)
                return fail("--batch must be 1..4096, got \"%s\"", v);
        } else if (!strcmp(a, "--spec-force")) {
            if (!strcmp(v, "none"))
                spec_force = 0;
            else if (!strcmp(v, "accept"))
                spec_force = 1;
            else if (!strcmp(v, "reject"))
                spec_force = 2;
            else
                return fail("--spec-force must be none, accept or reject, got \"%s\"", v);
        } else if (!strcmp(a, "--threads")) {
            long t = strtol(v, &end, 10);
            if (*end || errno || t < 0 || t > 1024)
                return fail("--threads must be in [0, 1024], got \"%s\"", v);
            mp.n_threads = (int)t;
        } else if (!strcmp(a, "--temperature")) {
            sp.temperature = strtof(v, &end);
            if (*end || errno)
                return fail("--temperature must be a number, got \"%s\"", v);
        } else if (!strcmp(a, "--top-p")) {
            sp.top_p = strtof(v, &end);
            if (*end || errno)
                return fail("--top-p must be a number, got \"%s\"", v);
        } else if (!strcmp(a, "--seed")) {
            sp.seed = strtoull(v, &end, 0);
            if (*end || errno)
                return fail("--seed must be an integer, got \"%s\"", v);
        } else if (!strcmp(a, "--kv")) {
            if (!strcmp(v, "fp8"))
                mp.kv_dtype = DSD_KV_FP8;
            else if (!strcmp(v, "bf16"))
                mp.kv_dtype = DSD_KV_BF16;
            else
                return fail("--kv must be fp8 or bf16, got \"%s\"", v);
        } else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "cpu"))
                mp.backend = DSD_MODEL_BACKEND_CPU;
            else if (!strcmp(v, "cuda"))
                mp.backend = DSD_MODEL_BACKEND_CUDA;
            else
                return fail("--backend must be cpu or cuda, got \"%s\"", v);
        } else if (!strcmp(a, "--gpu")) {
            long g = strtol(v, &end, 10);
            if (*end || errno || g < 0 || g > 1023)
                return fail("--gpu must be a GPU ordinal 0..1023, got \"%s\"", v);
            mp.device = (int)g;
        } else if (!strcmp(a, "--index-topk-freq")) {
            long f = strtol(v, &end, 10);
            if (*end || errno || f < 1 || f > 65536)
                return fail("--index-topk-freq must be a layer count 1..65536, got \"%s\"", v);
            mp.index_topk_freq = (int)f;
        } else if (!strcmp(a, "--index-topk-pattern")) {
            mp.index_topk_pattern = v;  /* checked against the model's layers at load */
        } else if (!strcmp(a, "--numerics")) {
            if (!strcmp(v, "production"))
                mp.numerics = DSD_NUMERICS_PRODUCTION;
            else if (!strcmp(v, "exact"))
                mp.numerics = DSD_NUMERICS_EXACT;
            else
                return fail("--numerics must be production or exact, got \"%s\"", v);
        } else {
            return fail("unknown option %s (see --help)", a);
        }
    }
    if (!model_dir || (!prompt_tokens && !prompt_text) || max_tokens < 0) {
        fputs(usage, stderr);
        return 64;
    }
    int32_t *prompt;
    int n_prompt;
    struct dsd_tokenizer *tok = NULL;
    if (prompt_text) {
        /* The model directory's tokenizer.json; BOS first when the model has one (the text
         * itself never becomes special tokens). */
        struct dsd_err terr;
        if (dsd_tokenizer_load(&tok, model_dir, &terr) < 0)
            return fail("--prompt needs the model's tokenizer.json: %s", terr.msg);
        struct dsd_tok_ids ids = {0};
        int32_t bos = dsd_tokenizer_bos_id(tok);
        if (bos < 0)
            bos = 0;
        dsd_tok_ids_push(&ids, bos);
        if (dsd_tokenizer_encode(tok, prompt_text, strlen(prompt_text), 0, &ids, &terr) < 0)
            return fail("%s", terr.msg);
        prompt = ids.ids;
        n_prompt = (int)ids.len;
    } else if (parse_tokens(prompt_tokens, &prompt, &n_prompt)) {
        return fail("--prompt-tokens must be space-separated non-negative ids, got \"%s\"", prompt_tokens);
    }

    struct dsd_err err = {{0}};
    if (dsd_sampling_params_check(&sp, &err))
        return fail("%s", err.msg);
    if (spec_k >= 0) {
        if (dump)
            return fail("%s", "--dump-logits runs without the engine: drop --speculative-tokens");
        struct run_engine_args ra = {
            .model_dir = model_dir, .mp = mp, .sp = sp, .prompt = prompt, .n_prompt = n_prompt,
            .max_tokens = (int)max_tokens, .batch = (int)batch, .speculative_tokens = (int)spec_k,
            .spec_force = spec_force, .ignore_eos = ignore_eos,
        };
        int rc = run_engine(&ra);
        free(prompt);
        dsd_tokenizer_free(tok);
        return rc;
    }
    double t0 = now();
    struct dsd_model *m;
    if (dsd_model_load(model_dir, &mp, &m, &err))
        return fail("%s", err.msg);
    double t_load = now() - t0;
    const int64_t V = m->cfg.vocab_size;
    int total = n_prompt + (int)max_tokens;
    int pages = (total + DSD_KV_PAGE_TOKENS - 1) / DSD_KV_PAGE_TOKENS + 1;
    struct dsd_kv_cache *kv = dsd_model_kv_cache_new(m, pages, &err);
    if (!kv)
        return fail("%s", err.msg);
    struct dsd_kv_seq seq = {0};
    struct dsd_sampler *sampler;
    if (dsd_kv_seq_reserve(kv, &seq, total) || dsd_sampler_new(&sp, V, &sampler, &err))
        return fail("%s", err.msg[0] ? err.msg : "out of KV pages");
    dsd_sampler_accept_prompt(sampler, prompt, n_prompt);
    /* sampling on the backend (the daemon's path) unless the logits are wanted on the host */
    const bool on_backend = dump == NULL;
    const bool penalized = dsd_sampler_penalized(sampler);
    if (on_backend && penalized &&
        (dsd_model_penalty_reserve(m, 1, &err) || dsd_model_penalty_load(m, 0, prompt, n_prompt, n_prompt, &err)))
        return fail("%s", err.msg);
    struct dsd_sample_row srow;
    struct dsd_sample_result sres;

    struct dsd_npy_writer *npy = NULL;
    if (dump && dsd_npy_writer_open(dump, V, &npy, &err))
        return fail("%s", err.msg);
    float *logits = malloc((size_t)(dump ? n_prompt : 1) * (size_t)V * sizeof *logits);
    int32_t *gen = malloc(((size_t)max_tokens + 1) * sizeof *gen);
    if (!logits || !gen)
        return fail("%s", "out of memory");

    /* Prefill (in chunks when asked); the last chunk's last row predicts the first token. */
    double t1 = now();
    int step = chunk > 0 ? (int)chunk : n_prompt;
    for (int p0 = 0; p0 < n_prompt; p0 += step) {
        int n = n_prompt - p0 < step ? n_prompt - p0 : step;
        struct dsd_batch_seq b = { .tokens = prompt + p0, .n_tokens = n, .pos0 = p0, .kv = &seq,
                                   .logits_all = dump != NULL, .no_logits = on_backend && p0 + n < n_prompt };
        struct dsd_forward_out out = { .logits = dump ? logits + (size_t)p0 * V : NULL };
        if (on_backend && p0 + n == n_prompt) {
            dsd_sampler_row(sampler, -1, &srow);
            srow.pen_slot = penalized ? 0 : -1;
            out.sample = &srow;
            out.samples = &sres;
        }
        if (dsd_model_forward(m, kv, &b, 1, &out, &err))
            return fail("%s", err.msg);
    }
    if (npy && dsd_npy_writer_rows(npy, logits, n_prompt, &err))
        return fail("%s", err.msg);
    double t2 = now();
    const float *last = dump ? logits + (size_t)(n_prompt - 1) * V : logits;
    float *row = malloc((size_t)V * sizeof *row);
    if (!row)
        return fail("%s", "out of memory");
    int n_gen = 0;
    for (int i = 0; i < max_tokens; i++) {
        int32_t next;
        if (on_backend) {
            if (sres.status != DSD_SAMPLE_OK)
                return fail("the model's logits for the next token are not finite numbers (NaN or infinite): "
                            "its weights or scales are likely corrupt%s",
                            "");
            next = sres.token;
        } else {
            memcpy(row, last, (size_t)V * sizeof *row);
            next = dsd_sampler_sample(sampler, row, NULL);
            dsd_sampler_accept(sampler, next);
        }
        gen[n_gen++] = next;
        if ((!ignore_eos && next == m->cfg.eos_token_id) || i + 1 == max_tokens)
            break;
        struct dsd_batch_seq b = { .tokens = &next, .n_tokens = 1, .pos0 = n_prompt + i, .kv = &seq };
        struct dsd_forward_out out = { .logits = on_backend ? NULL : logits };
        if (on_backend) {
            dsd_sampler_row(sampler, -1, &srow);
            srow.pen_slot = penalized ? 0 : -1;
            out.sample = &srow;
            out.samples = &sres;
        }
        if (dsd_model_forward(m, kv, &b, 1, &out, &err))
            return fail("%s", err.msg);
        if (npy && dsd_npy_writer_rows(npy, logits, 1, &err))
            return fail("%s", err.msg);
        last = logits;
    }
    double t3 = now();
    if (npy && dsd_npy_writer_close(npy, &err))
        return fail("%s", err.msg);
    for (int i = 0; i < n_gen; i++)
        printf("%s%d", i ? " " : "", gen[i]);
    printf("\n");
    if (tok) {      /* and the text, when the prompt was text */
        struct dsd_tok_text t = {0};
        struct dsd_err terr;
        if (dsd_tokenizer_decode(tok, gen, (size_t)n_gen, DSD_TOK_LOSSY | DSD_TOK_SKIP_SPECIAL, &t, &terr) >= 0)
            printf("%.*s\n", (int)t.len, t.data ? t.data : "");
        dsd_tok_text_free(&t);
        dsd_tokenizer_free(tok);
    }
    fflush(stdout);
    fprintf(stderr, "load %.3f s; prefill %d tokens %.3f s (%.1f tok/s); decode %d tokens %.3f s (%.2f tok/s)\n",
            t_load, n_prompt, t2 - t1, n_prompt / (t2 - t1), n_gen > 1 ? n_gen - 1 : 0, t3 - t2,
            n_gen > 1 ? (n_gen - 1) / (t3 - t2) : 0.0);
    struct dsd_step_stats ss;
    dsd_model_step_stats(m, &ss);
    fprintf(stderr,
            "steps: %llu replayed (host %.3f ms each to enqueue, %zu kernels), %llu op by op (host %.3f ms each)\n",
            (unsigned long long)ss.graph_steps, ss.graph_steps ? (double)ss.graph_host_ns / 1e6 / (double)ss.graph_steps : 0.0,
            ss.graph_kernels, (unsigned long long)ss.eager_steps,
            ss.eager_steps ? (double)ss.eager_host_ns / 1e6 / (double)ss.eager_steps : 0.0);
    free(row);
    free(gen);
    free(logits);
    free(prompt);
    dsd_sampler_free(sampler);
    dsd_kv_seq_release(kv, &seq);
    dsd_kv_seq_destroy(&seq);
    dsd_kv_cache_free(kv);
    dsd_model_free(m);
    return 0;
}
