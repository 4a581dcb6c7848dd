/* chat_json: Python json.dumps(ensure_ascii=False) text, byte for byte. Every expected
 * string below is what CPython 3.11 prints for the same value. */
#include <errno.h>
#include <jansson.h>

#include "chat_json.h"
#include "test.h"

static char *dump_text(const char *json)
{
    static char out[4096];
    json_error_t jerr;
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v) {
        snprintf(out, sizeof out, "(parse error: %s)", jerr.text);
        return out;
    }
    struct dsd_chat_buf b = {0};
    struct dsd_err err;
    if (dsd_chat_json_dump(&b, v, &err) < 0)
        snprintf(out, sizeof out, "(dump error: %s)", err.msg);
    else
        snprintf(out, sizeof out, "%s", b.data);
    dsd_chat_buf_free(&b);
    json_decref(v);
    return out;
}

static const char *real(double x)
{
    static char out[32];
    dsd_chat_json_format_real(x, out);
    return out;
}

TEST(reals_match_python_repr)
{
    ASSERT_EQ_STR(real(0.1), "0.1");
    ASSERT_EQ_STR(real(1.0), "1.0");
    ASSERT_EQ_STR(real(-0.0), "-0.0");
    ASSERT_EQ_STR(real(0.0), "0.0");
    ASSERT_EQ_STR(real(1e16), "1e+16");
    ASSERT_EQ_STR(real(1e15), "1000000000000000.0");
    ASSERT_EQ_STR(real(123456789012345678.0), "1.2345678901234568e+17");
    ASSERT_EQ_STR(real(0.0001), "0.0001");
    ASSERT_EQ_STR(real(0.00001), "1e-05");
    ASSERT_EQ_STR(real(1e-7), "1e-07");
    ASSERT_EQ_STR(real(2.5e-05), "2.5e-05");
    ASSERT_EQ_STR(real(9999999999999998.0), "9999999999999998.0");
    ASSERT_EQ_STR(real(1e22), "1e+22");
    ASSERT_EQ_STR(real(1.7976931348623157e308), "1.7976931348623157e+308");
    ASSERT_EQ_STR(real(5e-324), "5e-324");
    ASSERT_EQ_STR(real(3.141592653589793), "3.141592653589793");
    ASSERT_EQ_STR(real(-1.25e+20), "-1.25e+20");
    ASSERT_EQ_STR(real(12345.678), "12345.678");
    ASSERT_EQ_STR(real(6.02214076e23), "6.02214076e+23");
    ASSERT_EQ_STR(real(1.2345678901234567e-5), "1.2345678901234568e-05");
    ASSERT_EQ_STR(real(4.35), "4.35");
    ASSERT_EQ_STR(real(1152921504606846976.0), "1.152921504606847e+18"); /* 2^60 */
    /* Powers of two where the nearest 17-digit decimal is not the shortest round trip: the
     * rounding interval is lopsided there, and Python picks the shorter neighbour. */
    ASSERT_EQ_STR(real(ldexp(1.0, -1017)), "7.120236347223045e-307");
    ASSERT_EQ_STR(real(ldexp(1.0, -1007)), "7.291122019556398e-304");
    ASSERT_EQ_STR(real(ldexp(1.0, -957)), "8.209073602596753e-289");
    ASSERT_EQ_STR(real(NAN), "NaN");
    ASSERT_EQ_STR(real(-INFINITY), "-Infinity");
}

TEST(values_and_separators)
{
    ASSERT_EQ_STR(dump_text("{\"a\":1,\"b\":[true,false,null],\"c\":{}}"),
                  "{\"a\": 1, \"b\": [true, false, null], \"c\": {}}");
    ASSERT_EQ_STR(dump_text("[]"), "[]");
    ASSERT_EQ_STR(dump_text("[1.50, 1e2, -0, 100]"), "[1.5, 100.0, 0, 100]");
    ASSERT_EQ_STR(dump_text("[[[1]], {\"x\": [{}]}]"), "[[[1]], {\"x\": [{}]}]");
    ASSERT_EQ_STR(dump_text("-9223372036854775808"), "-9223372036854775808");
}

TEST(keys_keep_insertion_order_and_last_duplicate_wins_in_first_place)
{
    ASSERT_EQ_STR(dump_text("{\"z\": 1, \"a\": 2, \"m\": 3}"), "{\"z\": 1, \"a\": 2, \"m\": 3}");
    ASSERT_EQ_STR(dump_text("{\"b\": 1, \"a\": 2, \"b\": 3}"), "{\"b\": 3, \"a\": 2}");
}

TEST(string_escapes)
{
    ASSERT_EQ_STR(dump_text("\"quote \\\" backslash \\\\ slash / \""),
                  "\"quote \\\" backslash \\\\ slash / \"");
    ASSERT_EQ_STR(dump_text("\"\\n\\r\\t\\b\\f\""), "\"\\n\\r\\t\\b\\f\"");
    ASSERT_EQ_STR(dump_text("\"\\u0001\\u001f\\u007f\""), "\"\\u0001\\u001f\x7f\"");
    ASSERT_EQ_STR(dump_text("\"caf\\u00e9 \\u6e29 \\ud83d\\ude00 \\u2028\""),
                  "\"café 温 😀 \u2028\"");
    ASSERT_EQ_STR(dump_text("{\"k\\u001b\": \"v\"}"), "{\"k\\u001b\": \"v\"}");
}

TEST(nul_bytes_are_escaped)
{
    struct dsd_chat_buf b = {0};
    ASSERT_EQ_INT(dsd_chat_json_dump_string(&b, "a\0b", 3), 0);
    ASSERT_EQ_INT(b.len, 10);
    ASSERT_EQ_STR(b.data, "\"a\\u0000b\"");
    dsd_chat_buf_free(&b);
}

TEST(too_deep_is_an_error)
{
    json_t *root = json_array(), *cur = root;
    for (int i = 0; i < 2100; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    struct dsd_chat_buf b = {0};
    struct dsd_err err = {{0}};
    ASSERT_EQ_INT(dsd_chat_json_dump(&b, root, &err), -EINVAL);
    ASSERT_TRUE(strstr(err.msg, "deeper") != NULL);
    dsd_chat_buf_free(&b);
    json_decref(root);
}

int main(void)
{
    RUN(reals_match_python_repr);
    RUN(values_and_separators);
    RUN(keys_keep_insertion_order_and_last_duplicate_wins_in_first_place);
    RUN(string_escapes);
    RUN(nul_bytes_are_escaped);
    RUN(too_deep_is_an_error);
    return test_report();
}
