/*
 * The streaming output parser. Every case runs on the whole text, fed one byte at a time, in
 * chunks of 2..7 bytes and at pseudo-random splits; all must give the same events (adjacent
 * deltas of one kind merged), equal to the expected list. Expected events are written
 *   "C:text"  content        "R:text"  reasoning
 *   "T:name {json}"  tool call (arguments as arguments_json)
 *   "E:part"  an error whose message contains part
 */
#include <errno.h>
#include <stdbool.h>

#include "chat_buf.h"
#include "chat_markers.h"
#include "output_parser.h"
#include "test.h"

#define MAX_EVENTS 16

struct run {
    struct dsd_chat_buf ev[MAX_EVENTS];
    int n;
    bool overflow, bad_delta;
};

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
        } else {
            return false;
        }
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            unsigned char d = s[i + k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF))
                return false;
        }
        i += need + 1;
    }
    return true;
}

static int on_event(void *user, const struct dsd_output_event *ev)
{
    struct run *r = user;
    char tag = ev->kind == DSD_OUTPUT_CONTENT     ? 'C'
               : ev->kind == DSD_OUTPUT_REASONING ? 'R'
               : ev->kind == DSD_OUTPUT_TOOL_CALL ? 'T'
                                                  : 'E';
    if (tag == 'C' || tag == 'R') {
        /* A delta on its own: whole characters, never markup. */
        if (ev->len == 0 || !valid_utf8((const unsigned char *)ev->text, ev->len) ||
            memmem(ev->text, ev->len, DSD_CHAT_DSML_OPEN, strlen(DSD_CHAT_DSML_OPEN)) ||
            memmem(ev->text, ev->len, DSD_CHAT_DSML_CLOSE, strlen(DSD_CHAT_DSML_CLOSE)))
            r->bad_delta = true;
        if (r->n && r->ev[r->n - 1].data[0] == tag)
            return dsd_chat_buf_put(&r->ev[r->n - 1], ev->text, ev->len);
    }
    if (r->n == MAX_EVENTS) {
        r->overflow = true;
        return 0;
    }
    struct dsd_chat_buf *b = &r->ev[r->n++];
    dsd_chat_buf_put(b, &tag, 1);
    dsd_chat_buf_put(b, ":", 1);
    if (tag == 'T') {
        ASSERT_TRUE(json_is_object(ev->arguments));
        dsd_chat_buf_put(b, ev->name, ev->name_len);
        dsd_chat_buf_put(b, " ", 1);
        dsd_chat_buf_put(b, ev->arguments_json, ev->arguments_len);
    } else {
        dsd_chat_buf_put(b, ev->text, ev->len);
    }
    return 0;
}

static void free_run(struct run *r)
{
    for (int i = 0; i < MAX_EVENTS; i++)
        dsd_chat_buf_free(&r->ev[i]);
}

/* Feeds text in pieces: chunk > 0 fixed size, chunk == 0 pseudo-random sizes 1..9. */
static void parse(const char *text, size_t len, bool reasoning, size_t chunk, unsigned seed,
                  struct run *r)
{
    memset(r, 0, sizeof *r);
    struct dsd_output_parser_options opt = {.start_in_reasoning = reasoning};
    struct dsd_output_parser *p;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_output_parser_create(&opt, on_event, r, &p, &err), 0);
    for (size_t off = 0; off < len;) {
        size_t n = chunk;
        if (!n) {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 9;
        }
        if (n > len - off)
            n = len - off;
        ASSERT_EQ_INT(dsd_output_parser_feed(p, text + off, n, &err), 0);
        off += n;
    }
    ASSERT_EQ_INT(dsd_output_parser_finish(p, &err), 0);
    dsd_output_parser_free(p);
}

static bool event_matches(const struct dsd_chat_buf *got, const char *want)
{
    if (!got->data)
        return false;
    if (want[0] == 'E')
        return got->data[0] == 'E' && strstr(got->data + 2, want + 2) != NULL;
    return strlen(want) == got->len && memcmp(got->data, want, got->len) == 0;
}

static void check(const char *name, const char *text, size_t len, bool reasoning,
                  const char *const *want)
{
    int n_want = 0;
    while (want[n_want])
        n_want++;
    static const size_t chunks[] = {(size_t)-1, 1, 2, 3, 5, 7, 0, 0, 0};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        struct run r;
        parse(text, len, reasoning, chunks[c] == (size_t)-1 ? len + 1 : chunks[c],
              (unsigned)c * 7919u, &r);
        bool ok = !r.overflow && !r.bad_delta && r.n == n_want;
        for (int i = 0; ok && i < n_want; i++)
            ok = event_matches(&r.ev[i], want[i]);
        if (!ok) {
            fprintf(stderr, "case \"%s\", chunk %zd:%s%s\n", name, (ssize_t)chunks[c],
                    r.bad_delta ? " (a delta was not clean UTF-8 text)" : "",
                    r.overflow ? " (too many events)" : "");
            for (int i = 0; i < r.n; i++)
                fprintf(stderr, "   got  %s\n", r.ev[i].data);
            for (int i = 0; i < n_want; i++)
                fprintf(stderr, "   want %s\n", want[i]);
        }
        ASSERT_TRUE(ok);
        free_run(&r);
    }
}

#define CHECK(name, reasoning, text, ...)                                                      \
    do {                                                                                       \
        static const char t_[] = text;                                                         \
        static const char *const w_[] = {__VA_ARGS__, NULL};                                   \
        check(name, t_, sizeof t_ - 1, reasoning, w_);                                         \
    } while (0)
#define NOTHING NULL

/* The official block: what the V3.2 encoder writes after an assistant's content. */
#define CALL_BLOCK                                                                             \
    "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"                     \
    "<｜DSML｜parameter name=\"city\" string=\"true\">Tokyo</｜DSML｜parameter>\n"              \
    "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"                 \
    "</｜DSML｜invoke>\n</｜DSML｜function_calls>"
#define WEATHER_CALL "T:get_weather {\"city\": \"Tokyo\", \"days\": 3}"

TEST(content_and_reasoning)
{
    CHECK("plain content", false, "Hello, world.", "C:Hello, world.");
    CHECK("empty output", false, "", NOTHING);
    CHECK("starts inside reasoning", true, "Let me think.</think>The answer is 4.",
          "R:Let me think.", "C:The answer is 4.");
    CHECK("reasoning only (cut off)", true, "still thinking", "R:still thinking");
    CHECK("think block in chat mode output", false, "<think>hmm</think>ok", "R:hmm", "C:ok");
    CHECK("stray </think> in content is dropped", false, "a</think>b", "C:ab");
    CHECK("a repeated <think> inside reasoning is dropped", true, "<think>x</think>y", "R:x",
          "C:y");
    CHECK("angle brackets that are not markers", false, "a < b, <div>, <｜x, </th>, <",
          "C:a < b, <div>, <｜x, </th>, <");
    CHECK("a marker prefix at the very end is text", false, "see <thin", "C:see <thin");
    CHECK("newlines at the end are kept", false, "line\n\n", "C:line\n\n");
    CHECK("newlines before </think> are reasoning", true, "r\n\n</think>\n\nc", "R:r\n\n",
          "C:\n\nc");
}

TEST(end_of_sentence)
{
    CHECK("EOS ends the output", false, "done" DSD_CHAT_EOS, "C:done");
    CHECK("whitespace after EOS is fine", false, "done" DSD_CHAT_EOS "\n", "C:done");
    CHECK("text after EOS is an error, not content", false, "done" DSD_CHAT_EOS "more",
          "C:done", "E:after the end-of-sentence");
}

TEST(official_tool_calls)
{
    CHECK("content, then the canonical block", false, "Let me check." CALL_BLOCK DSD_CHAT_EOS,
          "C:Let me check.", WEATHER_CALL);
    CHECK("thinking, content, block", true, "need weather</think>Checking." CALL_BLOCK,
          "R:need weather", "C:Checking.", WEATHER_CALL);
    CHECK("block right after </think>", true, "r</think>" CALL_BLOCK DSD_CHAT_EOS, "R:r",
          WEATHER_CALL);
    CHECK("only the two newlines before a block are format", false,
          "a\n\n\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\"/>\n"
          "</｜DSML｜function_calls>",
          "C:a\n\n", "T:f {}");
    CHECK("several invokes, in order", false,
          "<｜DSML｜function_calls>\n"
          "<｜DSML｜invoke name=\"a\">\n<｜DSML｜parameter name=\"x\" string=\"false\">1"
          "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
          "<｜DSML｜invoke name=\"b\">\n<｜DSML｜parameter name=\"y\" string=\"true\">two"
          "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
          "<｜DSML｜invoke name=\"c\">\n</｜DSML｜invoke>\n"
          "</｜DSML｜function_calls>",
          "T:a {\"x\": 1}", "T:b {\"y\": \"two\"}", "T:c {}");
    CHECK("string values are raw text, kept exactly", false,
          "<｜DSML｜function_calls><｜DSML｜invoke name=\"w\"><｜DSML｜parameter name=\"code\" "
          "string=\"true\">  if (a < b) {\n\t\"q\" \\ }\n</｜DSML｜parameter></｜DSML｜invoke>"
          "</｜DSML｜function_calls>",
          "T:w {\"code\": \"  if (a < b) {\\n\\t\\\"q\\\" \\\\ }\\n\"}");
    CHECK("JSON values of every kind", false,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
          "<｜DSML｜parameter name=\"n\" string=\"false\"> 1.50 </｜DSML｜parameter>\n"
          "<｜DSML｜parameter name=\"b\" string=\"false\">true</｜DSML｜parameter>\n"
          "<｜DSML｜parameter name=\"z\" string=\"false\">null</｜DSML｜parameter>\n"
          "<｜DSML｜parameter name=\"l\" string=\"false\">[1, \"a\", {\"k\": []}]"
          "</｜DSML｜parameter>\n"
          "<｜DSML｜parameter name=\"o\" string=\"false\">{\"温\": \"度\"}</｜DSML｜parameter>\n"
          "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
          "T:f {\"n\": 1.5, \"b\": true, \"z\": null, \"l\": [1, \"a\", {\"k\": []}], "
          "\"o\": {\"温\": \"度\"}}");
    CHECK("V4's tool_calls block name", false,
          "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\"/>\n</｜DSML｜tool_calls>after",
          "T:f {}", "C:after");
}

TEST(shapes_the_leading_stack_got_wrong)
{
    /* SGLang #21179: a block before </think> must still be a call, and the rest of the
     * reasoning must stay reasoning. */
    CHECK("tool block inside reasoning", true,
          "I need the weather." CALL_BLOCK "\nStill thinking.</think>Done.",
          "R:I need the weather.", WEATHER_CALL, "R:\nStill thinking.", "C:Done.");
    /* #14332 / #24199: invokes without the function_calls wrapper. */
    CHECK("wrapper-less invokes", false,
          "ok\n\n<｜DSML｜invoke name=\"a\">\n<｜DSML｜parameter name=\"x\" string=\"true\">1"
          "</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"b\"/>\nbye",
          "C:ok", "T:a {\"x\": \"1\"}", "T:b {}", "C:bye");
    CHECK("wrapper-less invoke inside reasoning", true,
          "r <｜DSML｜invoke name=\"a\"></｜DSML｜invoke></think>c", "R:r ", "T:a {}", "C:c");
    CHECK("self-closing invoke", false, "<｜DSML｜invoke name=\"ping\" />", "T:ping {}");
    CHECK("direct JSON body", false,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n{\"a\": 1, \"b\": [true]}\n"
          "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
          "T:f {\"a\": 1, \"b\": [true]}");
    CHECK("unterminated wrapper with complete invokes: calls, no error", false,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\"/>\n", "T:f {}");
    CHECK("unterminated wrapper ended by EOS", false,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\"/>" DSD_CHAT_EOS, "T:f {}");
    /* #21546: malformed JSON must neither leak nor wedge the stream. */
    CHECK("malformed JSON value fails closed, later calls still parse", false,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"bad\">\n<｜DSML｜parameter "
          "name=\"x\" string=\"false\">{\"a\": </｜DSML｜parameter>\n</｜DSML｜invoke>\n"
          "<｜DSML｜invoke name=\"good\">\n<｜DSML｜parameter name=\"y\" string=\"false\">2"
          "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>after",
          "E:tool call \"bad\" was dropped: parameter \"x\" (string=\"false\") is not valid JSON",
          "T:good {\"y\": 2}", "C:after");
    CHECK("a direct JSON body that is not an object", false,
          "<｜DSML｜invoke name=\"f\">[1, 2]</｜DSML｜invoke>", "E:not an object");
    CHECK("a direct JSON body that does not parse", false,
          "<｜DSML｜invoke name=\"f\">{oops}</｜DSML｜invoke>", "E:not valid JSON");
}

TEST(malformed_and_unterminated_calls_fail_closed)
{
    CHECK("unterminated invoke at the end", false,
          "x<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter "
          "name=\"a\" string=\"true\">par",
          "C:x", "E:tool call \"f\" was dropped: the output ended before it was complete");
    CHECK("output ends inside an open tag", false, "<｜DSML｜invoke name=\"f",
          "E:ended inside a tool call tag");
    CHECK("output ends inside a DSML marker", false, "text\n\n<｜DSML｜funct", "C:text",
          "E:ended inside a tool call tag");
    CHECK("output ends right after the block opens", false, "<｜DSML｜function_calls>\n",
          "E:no call in it");
    CHECK("output ends in a half-written next invoke", false,
          "<｜DSML｜invoke name=\"a\"/>\n<｜DSML｜inv", "T:a {}",
          "E:ended inside a tool call tag");
    CHECK("invoke closed by the block end instead of its own tag", false,
          "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜function_calls>c",
          "E:tool call \"f\" was dropped: it is not closed", "C:c");
    CHECK("invoke cut by EOS", false, "<｜DSML｜invoke name=\"f\">\n" DSD_CHAT_EOS "junk",
          "E:it is not closed", "E:after the end-of-sentence");
    CHECK("missing string attribute", false,
          "<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\">1</｜DSML｜parameter>"
          "</｜DSML｜invoke>",
          "E:needs exactly name=\"...\" and string=\"true|false\"");
    CHECK("bad string attribute", false,
          "<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\" string=\"yes\">1"
          "</｜DSML｜parameter></｜DSML｜invoke>",
          "E:string=\"yes\", expected true or false");
    CHECK("duplicate parameter", false,
          "<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\" string=\"true\">1"
          "</｜DSML｜parameter><｜DSML｜parameter name=\"a\" string=\"true\">2"
          "</｜DSML｜parameter></｜DSML｜invoke>",
          "E:parameter \"a\" appears twice");
    CHECK("unclosed parameter", false,
          "<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\" string=\"true\">1"
          "</｜DSML｜invoke>",
          "E:parameter \"a\" is not closed");
    CHECK("text among parameters", false,
          "<｜DSML｜invoke name=\"f\">hello<｜DSML｜parameter name=\"a\" string=\"true\">1"
          "</｜DSML｜parameter></｜DSML｜invoke>",
          "E:unexpected text among its parameters");
    CHECK("invoke without a name", false, "<｜DSML｜invoke id=\"f\"/>",
          "E:its invoke tag needs exactly name");
    CHECK("text inside the wrapper is dropped up to the next invoke", false,
          "<｜DSML｜function_calls>\nSorry, let me retry.\n<｜DSML｜invoke name=\"f\"/>\n"
          "</｜DSML｜function_calls>ok",
          "E:unexpected text inside a tool call block", "T:f {}", "C:ok");
    CHECK("stray parameter outside any invoke", false,
          "a <｜DSML｜parameter name=\"x\" string=\"true\">v</｜DSML｜parameter> b",
          "C:a ", "E:unexpected DSML markup", "C:b");
    CHECK("stray close tags are not shown", false,
          "a</｜DSML｜function_calls>b</｜DSML｜invoke>c</｜DSML｜parameter>d", "C:abcd");
    CHECK("an unknown DSML tag is an error and skipped to a resync point", false,
          "a<｜DSML｜weird x=\"1\">zz</｜DSML｜parameter> b", "C:a", "E:unexpected DSML markup",
          "C:b");
}

TEST(utf8_is_repaired_and_never_split)
{
    CHECK("multi-byte characters", false, "温度 😀 é", "C:温度 😀 é");
    CHECK("invalid bytes become U+FFFD", false, "a\xff" "b\xc3(\xe2\x82", "C:a\xEF\xBF\xBD"
          "b\xEF\xBF\xBD(\xEF\xBF\xBD");
    CHECK("surrogates and overlongs are invalid", false, "\xed\xa0\x80|\xc0\xaf",
          "C:\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD|\xEF\xBF\xBD\xEF\xBF\xBD");
    CHECK("a call name and value in Chinese", false,
          "<｜DSML｜invoke name=\"查询\"><｜DSML｜parameter name=\"城市\" string=\"true\">"
          "杭州</｜DSML｜parameter></｜DSML｜invoke>",
          "T:查询 {\"城市\": \"杭州\"}");
}

static int stop_at_tool_call(void *user, const struct dsd_output_event *ev)
{
    int *calls = user;
    if (ev->kind == DSD_OUTPUT_TOOL_CALL) {
        ASSERT_EQ_INT(ev->tool_index, *calls);
        ASSERT_EQ_INT(ev->name_len, strlen(ev->name));
        ASSERT_EQ_INT(ev->arguments_len, strlen(ev->arguments_json));
        if (++*calls == 2)
            return -ECANCELED;
    }
    return 0;
}

TEST(tool_index_and_callback_stop)
{
    const char text[] = "<｜DSML｜invoke name=\"a\"/><｜DSML｜invoke name=\"b\"/>"
                        "<｜DSML｜invoke name=\"c\"/>";
    int calls = 0;
    struct dsd_output_parser *p;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_output_parser_create(NULL, stop_at_tool_call, &calls, &p, &err), 0);
    ASSERT_EQ_INT(dsd_output_parser_feed(p, text, sizeof text - 1, &err), -ECANCELED);
    ASSERT_EQ_INT(calls, 2);
    ASSERT_EQ_INT(dsd_output_parser_tool_calls(p), 2);
    ASSERT_EQ_INT(dsd_output_parser_feed(p, "x", 1, &err), -ECANCELED);
    ASSERT_EQ_INT(dsd_output_parser_finish(p, &err), -ECANCELED);
    dsd_output_parser_free(p);
}

static int count_events(void *user, const struct dsd_output_event *ev)
{
    ((int *)user)[ev->kind]++;
    return 0;
}

TEST(oversized_call_is_dropped_and_feed_after_finish_is_refused)
{
    int counts[8] = {0};
    struct dsd_output_parser_options opt = {.max_tool_call_bytes = 64};
    struct dsd_output_parser *p;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_output_parser_create(&opt, count_events, counts, &p, &err), 0);
    const char head[] = "<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\" string=\"true\">";
    ASSERT_EQ_INT(dsd_output_parser_feed(p, head, sizeof head - 1, &err), 0);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ_INT(dsd_output_parser_feed(p, "xxxxxxxxxx", 10, &err), 0);
    const char tail[] = "</｜DSML｜parameter></｜DSML｜invoke>after";
    ASSERT_EQ_INT(dsd_output_parser_feed(p, tail, sizeof tail - 1, &err), 0);
    ASSERT_EQ_INT(dsd_output_parser_finish(p, &err), 0);
    ASSERT_EQ_INT(counts[DSD_OUTPUT_ERROR], 1);
    ASSERT_EQ_INT(counts[DSD_OUTPUT_TOOL_CALL], 0);
    ASSERT_EQ_INT(counts[DSD_OUTPUT_CONTENT], 1); /* "after" */
    ASSERT_EQ_INT(dsd_output_parser_feed(p, "x", 1, &err), -EINVAL);
    ASSERT_EQ_INT(dsd_output_parser_finish(p, &err), 0);
    dsd_output_parser_free(p);
}

TEST(large_call_in_small_pieces_stays_linear)
{
    /* 4 MB of argument text fed 3 bytes at a time: the end search must not rescan. */
    int counts[8] = {0};
    struct dsd_output_parser *p;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_output_parser_create(NULL, count_events, counts, &p, &err), 0);
    const char head[] = "<｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"a\" string=\"true\">";
    ASSERT_EQ_INT(dsd_output_parser_feed(p, head, sizeof head - 1, &err), 0);
    for (int i = 0; i < 4 * 1024 * 1024 / 3; i++)
        dsd_output_parser_feed(p, "abc", 3, &err);
    const char tail[] = "</｜DSML｜parameter></｜DSML｜invoke>";
    ASSERT_EQ_INT(dsd_output_parser_feed(p, tail, sizeof tail - 1, &err), 0);
    ASSERT_EQ_INT(dsd_output_parser_finish(p, &err), 0);
    ASSERT_EQ_INT(counts[DSD_OUTPUT_TOOL_CALL], 1);
    ASSERT_EQ_INT(counts[DSD_OUTPUT_ERROR], 0);
    dsd_output_parser_free(p);
}

int main(void)
{
    RUN(content_and_reasoning);
    RUN(end_of_sentence);
    RUN(official_tool_calls);
    RUN(shapes_the_leading_stack_got_wrong);
    RUN(malformed_and_unterminated_calls_fail_closed);
    RUN(utf8_is_repaired_and_never_split);
    RUN(tool_index_and_callback_stop);
    RUN(oversized_call_is_dropped_and_feed_after_finish_is_refused);
    RUN(large_call_in_small_pieces_stays_linear);
    return test_report();
}
