/*
 * Text and chat through the real daemon, with a tiny checkpoint that carries the real
 * DeepSeek tokenizer (fixture tiny_tok_model):
 *   test_daemon_text DEEPSEEKD MODEL_DIR
 *  - tokenize/detokenize agree with the tokenizer library;
 *  - a text prompt generates exactly the in-process engine's tokens, and the streamed text
 *    deltas are exactly the detokenized ids;
 *  - logprobs and top logprobs are consistent; stop strings cut the text where they start;
 *  - chat prompts are the chat encoder's (marked tokenization), malformed chats and tools are
 *    named errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_encoder.h"
#include "daemon_harness.h"
#include "engine_harness.h"
#include "model.h"
#include "sampling.h"
#include "test.h"
#include "tokenizer.h"

static struct daemon g_d;
static struct dsd_model *g_m;
static struct dsd_tokenizer *g_tok;

static void reference(const int32_t *prompt, int np, int n, int32_t *out)
{
    harness_greedy(g_m, prompt, np, n, out);
}

/* Collects a generation: ids, concatenated text, logprobs of the first step. */
struct result {
    uint32_t ids[256];
    int n;
    char text[8192];
    size_t text_len;
    int n_logprobs, top_ok;
    struct dsd_ipc_msg done;
};

static int collect(int fd, uint64_t id, struct result *r, int top_n)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        struct dsd_ipc_msg m;
        int rc = raw_recv(fd, &m, 60000);
        if (rc)
            return rc;
        if (m.id != id) {
            dsd_ipc_msg_free(&m);
            continue;
        }
        if (m.type == DSD_IPC_TOKENS) {
            for (uint32_t i = 0; i < m.tokens.n_ids && r->n < 256; i++)
                r->ids[r->n++] = m.tokens.ids[i];
            if (m.tokens.text.ptr && r->text_len + m.tokens.text.len < sizeof r->text) {
                memcpy(r->text + r->text_len, m.tokens.text.ptr, m.tokens.text.len);
                r->text_len += m.tokens.text.len;
            }
            for (uint32_t i = 0; i < m.tokens.n_logprobs; i++) {
                const struct dsd_ipc_logprob *lp = &m.tokens.logprobs[i];
                r->n_logprobs++;
                /* the sampled (greedy) token is the most likely one: its logprob is top[0]'s */
                bool ok = lp->logprob <= 0 && (int)lp->n_top == top_n && lp->top[0].token == lp->token &&
                          fabs(lp->top[0].logprob - lp->logprob) < 1e-6;
                for (uint32_t k = 1; k < lp->n_top; k++)
                    ok &= lp->top[k].logprob <= lp->top[k - 1].logprob;
                r->top_ok += ok;
            }
        }
        if (m.type == DSD_IPC_DONE || m.type == DSD_IPC_ERROR) {
            r->done = m;
            return (int)m.type;
        }
        dsd_ipc_msg_free(&m);
    }
}

TEST(tokenize_and_detokenize)
{
    int fd = raw_connect(&g_d);
    const char *text = "Hello, world! 你好 <\xef\xbd\x9cUser\xef\xbd\x9c>";
    struct dsd_ipc_msg q = { .type = DSD_IPC_TOKENIZE, .id = 3 }, r;
    q.tokenize.prompt.kind = DSD_IPC_PROMPT_TEXT;
    q.tokenize.prompt.text = dsd_ipc_s(text);
    q.tokenize.prompt.add_special = false;
    ASSERT_EQ_INT(raw_send(fd, &q), 0);
    ASSERT_EQ_INT(raw_wait_done(fd, 3, &r, NULL, NULL, 0, 10000), DSD_IPC_TOKENIZE_OK);
    struct dsd_tok_ids want = {0};
    struct dsd_err err;
    dsd_tokenizer_encode(g_tok, text, strlen(text), 0, &want, &err);   /* markers in text stay text */
    ASSERT_EQ_INT(r.tokenize_ok.n_tokens, want.len);
    ASSERT_TRUE(memcmp(r.tokenize_ok.tokens, want.ids, want.len * 4) == 0);
    struct dsd_ipc_msg d = { .type = DSD_IPC_DETOKENIZE, .id = 4 }, rd;
    d.detokenize.tokens = r.tokenize_ok.tokens;
    d.detokenize.n_tokens = r.tokenize_ok.n_tokens;
    ASSERT_EQ_INT(raw_send(fd, &d), 0);
    ASSERT_EQ_INT(raw_wait_done(fd, 4, &rd, NULL, NULL, 0, 10000), DSD_IPC_DETOKENIZE_OK);
    ASSERT_TRUE(rd.detokenize_ok.text.len == strlen(text) && memcmp(rd.detokenize_ok.text.ptr, text, strlen(text)) == 0);
    dsd_ipc_msg_free(&rd);
    dsd_ipc_msg_free(&r);
    dsd_tok_ids_free(&want);
    close(fd);
}

TEST(text_generation_streams_exact_ids_and_text)
{
    const char *prompt = "The quick brown fox jumps over the lazy dog. Then it";
    struct dsd_tok_ids ids = {0};
    struct dsd_err err;
    dsd_tok_ids_push(&ids, 0);  /* BOS (add_special) */
    dsd_tokenizer_encode(g_tok, prompt, strlen(prompt), 0, &ids, &err);
    int32_t want[24];
    reference(ids.ids, (int)ids.len, 24, want);
    int fd = raw_connect(&g_d);
    struct dsd_ipc_msg m = { .type = DSD_IPC_GENERATE, .id = 8 };
    dsd_ipc_generate_default(&m.generate);
    m.generate.prompt.kind = DSD_IPC_PROMPT_TEXT;
    m.generate.prompt.text = dsd_ipc_s(prompt);
    m.generate.prompt.add_special = true;
    m.generate.detokenize = true;
    m.generate.sampling.temperature = 0;
    m.generate.sampling.max_tokens = 24;
    m.generate.sampling.ignore_eos = true;
    m.generate.sampling.logprobs = true;
    m.generate.sampling.top_logprobs = 5;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    struct result r;
    ASSERT_EQ_INT(collect(fd, 8, &r, 5), DSD_IPC_DONE);
    ASSERT_EQ_INT(r.n, 24);
    ASSERT_TRUE(memcmp(r.ids, want, sizeof want) == 0);
    ASSERT_EQ_INT(r.done.done.usage.prompt, ids.len);
    struct dsd_tok_text t = {0};
    dsd_tokenizer_decode(g_tok, want, 24, DSD_TOK_LOSSY | DSD_TOK_SKIP_SPECIAL, &t, &err);
    ASSERT_TRUE(r.text_len == t.len && memcmp(r.text, t.data, t.len) == 0);
    ASSERT_EQ_INT(r.n_logprobs, 24);
    ASSERT_EQ_INT(r.top_ok, 24);
    printf("  %d tokens, text \"%.*s\"\n", r.n, (int)(r.text_len < 60 ? r.text_len : 60), r.text);
    dsd_ipc_msg_free(&r.done);

    /* The same with a stop string taken from the middle of that text: the deltas end where it
     * starts, finish stop_string. */
    size_t cut = t.len / 2;
    while (cut < t.len && (t.data[cut] & 0xc0) == 0x80)
        cut++;
    char stop[8];
    size_t sl = t.len - cut < 5 ? t.len - cut : 5;
    memcpy(stop, t.data + cut, sl);
    stop[sl] = 0;
    const char *first = strstr(t.data, stop);
    struct dsd_ipc_str st = dsd_ipc_s(stop);
    m.id = 9;
    m.generate.sampling.n_stop = 1;
    m.generate.sampling.stop = &st;
    m.generate.sampling.logprobs = false;
    m.generate.sampling.top_logprobs = 0;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    ASSERT_EQ_INT(collect(fd, 9, &r, 0), DSD_IPC_DONE);
    ASSERT_EQ_INT(r.done.done.finish, DSD_IPC_FINISH_STOP_STRING);
    ASSERT_TRUE(r.done.done.stop_string.ptr && strcmp(r.done.done.stop_string.ptr, stop) == 0);
    ASSERT_TRUE(r.text_len == (size_t)(first - t.data) && memcmp(r.text, t.data, r.text_len) == 0);
    dsd_ipc_msg_free(&r.done);
    dsd_tok_text_free(&t);
    dsd_tok_ids_free(&ids);
    close(fd);
}

static struct dsd_ipc_msg chat_msg(uint64_t id, const struct dsd_ipc_chat_msg *msgs, int n, const char *tools)
{
    struct dsd_ipc_msg m = { .type = DSD_IPC_GENERATE, .id = id };
    dsd_ipc_generate_default(&m.generate);
    m.generate.prompt.kind = DSD_IPC_PROMPT_CHAT;
    m.generate.prompt.messages = msgs;
    m.generate.prompt.n_messages = (uint32_t)n;
    m.generate.prompt.tools = dsd_ipc_s(tools);
    m.generate.detokenize = true;
    m.generate.sampling.temperature = 0;
    m.generate.sampling.max_tokens = 6;
    return m;
}

TEST(chat_prompts_are_the_encoders)
{
    struct dsd_ipc_chat_msg msgs[2] = {
        { .role = DSD_IPC_ROLE_SYSTEM, .content = dsd_ipc_s("Be brief.") },
        { .role = DSD_IPC_ROLE_USER, .content = dsd_ipc_s("Say hi <\xef\xbd\x9c" "Assistant\xef\xbd\x9c> now") },
    };
    /* the prompt the daemon must use: the chat encoder + marked tokenization */
    json_t *req = json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "messages", "role", "system", "content", "Be brief.", "role",
                            "user", "content", "Say hi <\xef\xbd\x9c" "Assistant\xef\xbd\x9c> now");
    struct dsd_chat_prompt cp;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_chat_encode_marked(req, NULL, &cp, &err), 0);
    json_decref(req);
    struct dsd_tok_range rg[64];
    for (size_t i = 0; i < cp.n_markup; i++)
        rg[i] = (struct dsd_tok_range){ cp.markup[i].start, cp.markup[i].end };
    struct dsd_tok_ids ids = {0};
    dsd_tokenizer_encode_marked(g_tok, cp.text, cp.len, rg, cp.n_markup, &ids, &err);
    dsd_chat_prompt_free(&cp);
    int32_t want[6];
    reference(ids.ids, (int)ids.len, 6, want);

    int fd = raw_connect(&g_d);
    struct dsd_ipc_msg m = chat_msg(20, msgs, 2, NULL);
    m.generate.sampling.ignore_eos = true;
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    struct result r;
    ASSERT_EQ_INT(collect(fd, 20, &r, 0), DSD_IPC_DONE);
    ASSERT_EQ_INT(r.done.done.usage.prompt, ids.len);
    ASSERT_TRUE(r.n == 6 && memcmp(r.ids, want, sizeof want) == 0);
    dsd_ipc_msg_free(&r.done);

    /* malformed: a tool role without a preceding call; tools that are not JSON */
    struct dsd_ipc_chat_msg bad[1] = { { .role = DSD_IPC_ROLE_TOOL, .content = dsd_ipc_s("42") } };
    m = chat_msg(21, bad, 1, NULL);
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    ASSERT_EQ_INT(collect(fd, 21, &r, 0), DSD_IPC_ERROR);
    ASSERT_EQ_INT(r.done.error.code, DSD_IPC_E_BAD_VALUE);
    printf("  bad chat -> %s\n", r.done.error.msg.ptr);
    dsd_ipc_msg_free(&r.done);
    m = chat_msg(22, msgs, 2, "[{\"type\": \"function\", oops");
    ASSERT_EQ_INT(raw_send(fd, &m), 0);
    ASSERT_EQ_INT(collect(fd, 22, &r, 0), DSD_IPC_ERROR);
    ASSERT_EQ_INT(r.done.error.code, DSD_IPC_E_BAD_VALUE);
    printf("  bad tools -> %s\n", r.done.error.msg.ptr);
    dsd_ipc_msg_free(&r.done);
    dsd_tok_ids_free(&ids);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_daemon_text DEEPSEEKD MODEL_DIR\n");
        return 2;
    }
    /* the in-process engine the daemon's output is compared with, and the model's tokenizer */
    if (!(g_m = harness_load(argv[2], DSD_NUMERICS_PRODUCTION, DSD_KV_FP8, 1)))
        return 1;
    struct dsd_err err;
    if (dsd_tokenizer_load(&g_tok, argv[2], &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    static const char *const extra[] = { "--threads", "2", "--kv_memory_mb", "64", NULL };
    if (daemon_start(&g_d, argv[1], argv[2], extra, 120))
        return 1;
    RUN(tokenize_and_detokenize);
    RUN(text_generation_streams_exact_ids_and_text);
    RUN(chat_prompts_are_the_encoders);
    if (test_failures_total)
        daemon_print_log(&g_d);
    ASSERT_EQ_INT(daemon_stop(&g_d), 0);
    dsd_tokenizer_free(g_tok);
    dsd_model_free(g_m);
    return test_report();
}
