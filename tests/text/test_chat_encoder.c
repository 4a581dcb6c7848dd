/*
 * The V3.2 chat encoder, one rule per case, with literal expected prompts (written from the
 * rules of DeepSeek's encoding_dsv32.py; the official test vectors are in
 * test_chat_vectors.c). B/E/U/A/T/ET below are BOS, EOS, <｜User｜>, <｜Assistant｜>, <think>
 * and </think>.
 */
#include <errno.h>
#include <stdbool.h>

#include "chat_encoder.h"
#include "chat_markers.h"
#include "test.h"

#define B DSD_CHAT_BOS
#define E DSD_CHAT_EOS
#define U DSD_CHAT_USER
#define A DSD_CHAT_ASSISTANT
#define T DSD_CHAT_THINK_START
#define ET DSD_CHAT_THINK_END

/* The tools block exactly as the official template has it, around the given schema lines. */
#define TOOLS(schemas)                                                                            \
    "## Tools\n\nYou have access to a set of tools you can use to answer the user's question.\n" \
    "You can invoke functions by writing a \"<｜DSML｜function_calls>\" block like the following " \
    "as part of your reply to the user:\n<｜DSML｜function_calls>\n<｜DSML｜invoke "                \
    "name=\"$FUNCTION_NAME\">\n<｜DSML｜parameter name=\"$PARAMETER_NAME\" "                        \
    "string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n...\n</｜DSML｜invoke>\n"         \
    "<｜DSML｜invoke name=\"$FUNCTION_NAME2\">\n...\n</｜DSML｜invoke>\n</｜DSML｜function_calls>"   \
    "\n\nString and scalar parameters should be specified as is without any escaping or quotes, " \
    "while lists and objects should use JSON format. The \"string\" attribute should be set to "  \
    "\"true\" for string type parameters and \"false\" for other types (numbers, booleans, "      \
    "arrays, objects).\n\nIf the thinking_mode is enabled, then after function results you "     \
    "should strongly consider outputting a thinking block. Here is an example:\n\n"              \
    "<｜DSML｜function_calls>\n...\n</｜DSML｜function_calls>\n\n<function_results>\n...\n"        \
    "</function_results>\n\n<think>...thinking about results</think>\n\nHere are the functions " \
    "available in JSONSchema format:\n<functions>\n" schemas "\n</functions>\n"

#define WEATHER_TOOL                                                                     \
    "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": " \
    "\"Weather of a city\", \"parameters\": {\"type\": \"object\", \"properties\": "     \
    "{\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}"
#define WEATHER_SCHEMA                                                                   \
    "{\"name\": \"get_weather\", \"description\": \"Weather of a city\", \"parameters\": " \
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "         \
    "\"required\": [\"city\"]}}"
#define RESPONSE_FORMAT(schema)                                                          \
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" schema

/* The tool loop used by several cases: a question, two parallel calls, their results. */
#define LOOP_CALLS                                                                            \
    "{\"role\": \"user\", \"content\": \"Weather in Paris and Rome?\"},"                      \
    "{\"role\": \"assistant\", \"content\": null, \"reasoning_content\": \"Need both.\","    \
    " \"tool_calls\": ["                                                                      \
    "{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\","      \
    " \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}},"                                    \
    "{\"id\": \"c2\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\","      \
    " \"arguments\": {\"city\": \"Rome\", \"days\": 2}}}]},"                                  \
    "{\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"18C\"},"                   \
    "{\"role\": \"tool\", \"tool_call_id\": \"c2\", \"content\": \"21C\"}"
#define LOOP_CALLS_TEXT                                                                       \
    "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"                    \
    "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"              \
    "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"get_weather\">\n"                                \
    "<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n"               \
    "<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n"                 \
    "</｜DSML｜invoke>\n</｜DSML｜function_calls>" E
#define LOOP_RESULTS_TEXT "\n\n<function_results>\n<result>18C</result>\n<result>21C</result>\n</function_results>"

struct enc_case {
    const char *name;
    bool thinking;
    const char *request;
    const char *expected;
};

static const struct enc_case CASES[] = {
    {"user turn, chat mode: the reply starts after </think>", false,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
     B U "hi" A ET},
    {"user turn, thinking mode: the reply starts inside <think>", true,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
     B U "hi" A T},
    {"system text is raw, no markers", false,
     "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
     " {\"role\": \"user\", \"content\": \"hi\"}]}",
     B "Be brief." U "hi" A ET},
    {"system content null renders as nothing", false,
     "{\"messages\": [{\"role\": \"system\", \"content\": null},"
     " {\"role\": \"user\", \"content\": \"hi\"}]}",
     B U "hi" A ET},
    {"thinking: earlier turns end with </think> and lose their reasoning", true,
     "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"},"
     " {\"role\": \"user\", \"content\": \"hi\"},"
     " {\"role\": \"assistant\", \"content\": \"Hello\", \"reasoning_content\": \"greet\"},"
     " {\"role\": \"user\", \"content\": \"1+1?\"}]}",
     B "S" U "hi" A ET "Hello" E U "1+1?" A T},
    {"chat mode: same conversation, every turn closed", false,
     "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"},"
     " {\"role\": \"user\", \"content\": \"hi\"},"
     " {\"role\": \"assistant\", \"content\": \"Hello\", \"reasoning_content\": \"greet\"},"
     " {\"role\": \"user\", \"content\": \"1+1?\"}]}",
     B "S" U "hi" A ET "Hello" E U "1+1?" A ET},
    {"thinking: assistant after the last user keeps reasoning + </think> (prefill)", true,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
     " {\"role\": \"assistant\", \"content\": \"Hello\", \"reasoning_content\": \"greet\"}]}",
     B U "hi" A T "greet" ET "Hello" E},
    {"chat mode: assistant after the last user has no reasoning", false,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
     " {\"role\": \"assistant\", \"content\": \"Hello\", \"reasoning_content\": \"greet\"}]}",
     B U "hi" A ET "Hello" E},
    {"empty user content is allowed", false,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"\"}]}",
     B U A ET},
    {"content as text parts is joined with one space", false,
     "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"},"
     " {\"type\": \"text\", \"text\": \"b\"}]}]}",
     B U "a b" A ET},
    {"tool loop, thinking: reasoning, calls, results, then <think> again", true,
     "{\"messages\": [" LOOP_CALLS "]}",
     B U "Weather in Paris and Rome?" A T "Need both." ET LOOP_CALLS_TEXT LOOP_RESULTS_TEXT
     "\n\n" T},
    {"tool loop, chat mode: results are followed by </think>", false,
     "{\"messages\": [" LOOP_CALLS "]}",
     B U "Weather in Paris and Rome?" A ET LOOP_CALLS_TEXT LOOP_RESULTS_TEXT "\n\n" ET},
    {"tool loop, thinking, next user turn: the old loop loses reasoning, results close </think>",
     true,
     "{\"messages\": [" LOOP_CALLS ","
     " {\"role\": \"assistant\", \"content\": \"Paris 18C, Rome 21C.\","
     " \"reasoning_content\": \"Both known.\"},"
     " {\"role\": \"user\", \"content\": \"Thanks\"}]}",
     B U "Weather in Paris and Rome?" A ET LOOP_CALLS_TEXT LOOP_RESULTS_TEXT "\n\n" ET
     "Paris 18C, Rome 21C." E U "Thanks" A T},
    {"tool loop, thinking, answer after results keeps its reasoning", true,
     "{\"messages\": [" LOOP_CALLS ","
     " {\"role\": \"assistant\", \"content\": \"Paris 18C, Rome 21C.\","
     " \"reasoning_content\": \"Both known.\"}]}",
     B U "Weather in Paris and Rome?" A T "Need both." ET LOOP_CALLS_TEXT LOOP_RESULTS_TEXT
     "\n\n" T "Both known." ET "Paris 18C, Rome 21C." E},
    {"one call, one result, no tool_call_id: results match calls by order", false,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"time?\"},"
     " {\"role\": \"assistant\", \"content\": \"Checking.\", \"tool_calls\": [{\"function\":"
     " {\"name\": \"now\", \"arguments\": \"{}\"}}]},"
     " {\"role\": \"tool\", \"content\": \"12:00\"}]}",
     B U "time?" A ET "Checking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"now\">\n\n"
     "</｜DSML｜invoke>\n</｜DSML｜function_calls>" E
     "\n\n<function_results>\n<result>12:00</result>\n</function_results>\n\n" ET},
    {"argument values: strings raw, everything else json.dumps", false,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"},"
     " {\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\":"
     " \"{\\\"s\\\": \\\"a\\\\n\\\\\\\"b\\\\\\\"\\\", \\\"i\\\": -7, \\\"f\\\": 1.50,"
     " \\\"g\\\": 1e2, \\\"b\\\": true, \\\"n\\\": null, \\\"a\\\": [1, \\\"two\\\", {}],"
     " \\\"o\\\": {\\\"k\\\": \\\"\\\\u6e29\\\", \\\"q\\\": \\\"\\\\\\\"\\\"}, \\\"e\\\": \\\"\\\"}\"}}]}]}",
     B U "x" A ET "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
     "<｜DSML｜parameter name=\"s\" string=\"true\">a\n\"b\"</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"i\" string=\"false\">-7</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"f\" string=\"false\">1.5</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"g\" string=\"false\">100.0</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"b\" string=\"false\">true</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"n\" string=\"false\">null</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"a\" string=\"false\">[1, \"two\", {}]</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"o\" string=\"false\">{\"k\": \"温\", \"q\": \"\\\"\"}"
     "</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"e\" string=\"true\"></｜DSML｜parameter>\n"
     "</｜DSML｜invoke>\n</｜DSML｜function_calls>" E},
    {"request-level tools without a system message get an empty system prompt", false,
     "{\"tools\": [" WEATHER_TOOL "], \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
     B "\n\n" TOOLS(WEATHER_SCHEMA) U "hi" A ET},
    {"request-level tools and response_format join messages[0] (system)", false,
     "{\"tools\": [" WEATHER_TOOL ", " WEATHER_TOOL "], \"response_format\": {\"type\":"
     " \"json_schema\", \"json_schema\": {\"name\": \"r\", \"schema\": {\"type\": \"object\"}}},"
     " \"messages\": [{\"role\": \"system\", \"content\": \"Sys\"},"
     " {\"role\": \"user\", \"content\": \"hi\"}]}",
     B "Sys\n\n" TOOLS(WEATHER_SCHEMA "\n" WEATHER_SCHEMA) "\n\n"
     RESPONSE_FORMAT("{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"r\", \"schema\":"
                     " {\"type\": \"object\"}}}") U "hi" A ET},
    {"request-level response_format {\"type\": \"text\"} means no format; empty tools none",
     false,
     "{\"tools\": [], \"response_format\": {\"type\": \"text\"},"
     " \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
     B U "hi" A ET},
    {"system message with its own tools and response_format", false,
     "{\"messages\": [{\"role\": \"system\", \"content\": \"\", \"tools\": [" WEATHER_TOOL "],"
     " \"response_format\": {\"type\": \"json_object\"}},"
     " {\"role\": \"user\", \"content\": \"hi\"}]}",
     B "\n\n" TOOLS(WEATHER_SCHEMA) "\n\n" RESPONSE_FORMAT("{\"type\": \"json_object\"}") U "hi"
     A ET},
    {"developer: a user turn carrying tools, format and the message", true,
     "{\"messages\": [{\"role\": \"developer\", \"content\": \"Find X\", \"tools\": ["
     WEATHER_TOOL "], \"response_format\": {\"type\": \"json_object\"}}]}",
     B U "\n\n" TOOLS(WEATHER_SCHEMA) "\n\n" RESPONSE_FORMAT("{\"type\": \"json_object\"}")
     "\n\n# The user's message is: Find X" A T},
    {"developer without extras; it counts as the last user message", true,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"},"
     " {\"role\": \"developer\", \"content\": \"b\"}]}",
     B U "a" A ET U "\n\n# The user's message is: b" A T},
    {"tool results after the last user in thinking mode reopen <think>", true,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"go\"},"
     " {\"role\": \"assistant\", \"reasoning_content\": \"r\", \"tool_calls\": [{\"function\":"
     " {\"name\": \"f\", \"arguments\": {\"x\": \"1\"}}}]},"
     " {\"role\": \"tool\", \"content\": \"ok\"}]}",
     B U "go" A T "r" ET "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n"
     "<｜DSML｜parameter name=\"x\" string=\"true\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
     "</｜DSML｜function_calls>" E "\n\n<function_results>\n<result>ok</result>\n"
     "</function_results>\n\n" T},
    {"thinking: a tool-calling assistant needs no reasoning (empty reasoning + </think>)", true,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"go\"},"
     " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"function\":"
     " {\"name\": \"f\", \"arguments\": \"{}\"}}]}]}",
     B U "go" A T ET "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n\n"
     "</｜DSML｜invoke>\n</｜DSML｜function_calls>" E},
    {"unknown top-level and message keys are ignored", false,
     "{\"model\": \"x\", \"temperature\": 1, \"messages\": [{\"role\": \"user\", \"name\": \"bob\","
     " \"content\": \"hi\"}]}",
     B U "hi" A ET},
};

TEST(every_rule_renders_as_the_official_encoder)
{
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        struct dsd_chat_options opt = {.thinking = CASES[i].thinking};
        char *prompt = NULL;
        size_t len = 0;
        struct dsd_err err = {{0}};
        int rc = dsd_chat_encode_json(CASES[i].request, strlen(CASES[i].request), &opt, &prompt,
                                      &len, &err);
        if (rc != 0)
            fprintf(stderr, "case \"%s\": %s\n", CASES[i].name, err.msg);
        ASSERT_EQ_INT(rc, 0);
        if (prompt && strcmp(prompt, CASES[i].expected) != 0)
            fprintf(stderr, "case \"%s\"\n got: %s\nwant: %s\n", CASES[i].name, prompt,
                    CASES[i].expected);
        ASSERT_TRUE(prompt && strcmp(prompt, CASES[i].expected) == 0);
        ASSERT_EQ_INT(len, strlen(CASES[i].expected));
        free(prompt);
    }
}

TEST(omit_bos_and_json_t_entry_point)
{
    json_t *req = json_pack("{s:[{s:s,s:s}]}", "messages", "role", "user", "content", "hi");
    struct dsd_chat_options opt = {.omit_bos = true};
    char *prompt;
    size_t len;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_chat_encode(req, &opt, &prompt, &len, &err), 0);
    ASSERT_EQ_STR(prompt, U "hi" A ET);
    free(prompt);
    ASSERT_EQ_INT(dsd_chat_encode(req, NULL, &prompt, &len, &err), 0);
    ASSERT_EQ_STR(prompt, B U "hi" A ET);
    free(prompt);
    json_decref(req);
}

TEST(nul_bytes_in_content_survive)
{
    const char req[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}";
    char *prompt;
    size_t len;
    struct dsd_err err;
    ASSERT_EQ_INT(dsd_chat_encode_json(req, sizeof req - 1, NULL, &prompt, &len, &err), 0);
    const char want[] = B U "a\0b" A ET;
    ASSERT_EQ_INT(len, sizeof want - 1);
    ASSERT_TRUE(memcmp(prompt, want, sizeof want - 1) == 0);
    free(prompt);
}

TEST(prompt_opens_reasoning)
{
    ASSERT_TRUE(dsd_chat_prompt_opens_reasoning(B U "x" A T, strlen(B U "x" A T)));
    ASSERT_TRUE(!dsd_chat_prompt_opens_reasoning(B U "x" A ET, strlen(B U "x" A ET)));
    ASSERT_TRUE(!dsd_chat_prompt_opens_reasoning("", 0));
}

struct err_case {
    bool thinking;
    const char *request;
    const char *message; /* a part of the expected error message */
};

static const struct err_case ERRORS[] = {
    {false, "[1]", "is an array, expected a JSON object"},
    {false, "{\"messages\": [", "not valid JSON"},
    {false, "{}", "has no \"messages\""},
    {false, "{\"messages\": {}}", "\"messages\" is an object, expected an array"},
    {false, "{\"messages\": []}", "\"messages\" is empty"},
    {false, "{\"messages\": [\"hi\"]}", "messages[0] is a string, expected an object"},
    {false, "{\"messages\": [{\"content\": \"hi\"}]}", "messages[0]: field \"role\" is missing"},
    {false, "{\"messages\": [{\"role\": 3}]}", "messages[0]: field \"role\" is an integer"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\"}]}",
     "messages[1]: unknown role \"bot\""},
    {false, "{\"messages\": [{\"role\": \"user\"}]}",
     "messages[0] (user): field \"content\" is missing"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": null}]}",
     "messages[0] (user): field \"content\" is null"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
     "messages[0] (user): field \"content\" is an integer"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
     "messages[0] (user): content[0] is not a {\"type\": \"text\""},
    {false, "{\"messages\": [{\"role\": \"developer\", \"content\": \"\"}]}",
     "messages[0] (developer): \"content\" is empty"},
    {false, "{\"messages\": [{\"role\": \"system\", \"content\": \"s\", \"tools\": {}}]}",
     "messages[0]: \"tools\" is an object, expected an array"},
    {false, "{\"tools\": [{\"name\": \"f\"}], \"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
     "the request: tools[0] has no \"function\" object"},
    {false, "{\"tools\": [{\"function\": {}}], \"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
     "the request: tools[0].function.name is missing"},
    {false, "{\"tools\": [" WEATHER_TOOL "], \"messages\": [{\"role\": \"system\", \"content\":"
     " \"s\", \"tools\": [" WEATHER_TOOL "]}]}",
     "messages[0] (system) has \"tools\" and so does the request"},
    {false, "{\"response_format\": \"json\", \"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
     "\"response_format\" is a string, expected an object"},
    {false, "{\"messages\": [{\"role\": \"system\", \"content\": \"s\", \"response_format\": 1}]}",
     "messages[0]: \"response_format\" is an integer"},
    {false, "{\"messages\": [{\"role\": \"tool\", \"content\": \"r\"}]}",
     "messages[0] (tool): a tool result must follow an assistant message with \"tool_calls\""},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"content\": \"b\"}, {\"role\": \"tool\", \"content\": \"r\"}]}",
     "messages[2] (tool): a tool result must follow an assistant message"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]},"
     " {\"role\": \"tool\", \"content\": \"r\"}, {\"role\": \"tool\", \"content\": \"s\"}]}",
     "messages[3] (tool): messages[1] made 1 tool call but this is tool result number 2"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{}\"}},"
     " {\"function\": {\"name\": \"g\", \"arguments\": \"{}\"}}]},"
     " {\"role\": \"tool\", \"content\": \"r\"}, {\"role\": \"user\", \"content\": \"u\"}]}",
     "messages[1] (assistant) made 2 tool calls but only 1 tool result follows"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"id\": \"c1\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]},"
     " {\"role\": \"tool\", \"tool_call_id\": \"c9\", \"content\": \"r\"}]}",
     "messages[2] (tool): \"tool_call_id\" \"c9\" matches none of the tool calls of messages[1]"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]},"
     " {\"role\": \"tool\", \"tool_call_id\": 7, \"content\": \"r\"}]}",
     "messages[2] (tool): \"tool_call_id\" is an integer"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]},"
     " {\"role\": \"tool\"}]}",
     "messages[2] (tool): field \"content\" is missing"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": {}}]}",
     "messages[1] (assistant): \"tool_calls\" is an object, expected an array"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"name\": \"f\"}]}]}",
     "messages[1] (assistant): tool_calls[0] has no \"function\" object"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"arguments\": \"{}\"}}]}]}",
     "messages[1] (assistant): tool_calls[0].function.name is missing"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{\\\"x\\\": \"}}]}]}",
     "messages[1] (assistant): tool_calls[0].function.arguments is not valid JSON"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"[1]\"}}]}]}",
     "messages[1] (assistant): tool_calls[0].function.arguments is an array, expected a JSON "
     "object"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"tool_calls\": [{\"function\": {\"name\": \"f\"}}]}]}",
     "messages[1] (assistant): tool_calls[0].function.arguments is missing"},
    {false, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"reasoning_content\": 1, \"content\": \"b\"}]}",
     "messages[1] (assistant): field \"reasoning_content\" is an integer"},
    {true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
     " \"content\": \"b\"}]}",
     "messages[1] (assistant): in thinking mode an assistant message after the last user "
     "message needs \"reasoning_content\" or \"tool_calls\""},
};

TEST(malformed_requests_are_errors_naming_the_message_and_field)
{
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++) {
        struct dsd_chat_options opt = {.thinking = ERRORS[i].thinking};
        char *prompt = (char *)"untouched";
        size_t len = 7;
        struct dsd_err err = {{0}};
        int rc = dsd_chat_encode_json(ERRORS[i].request, strlen(ERRORS[i].request), &opt,
                                      &prompt, &len, &err);
        ASSERT_EQ_INT(rc, -EINVAL);
        ASSERT_TRUE(prompt == NULL && len == 0);
        if (!strstr(err.msg, ERRORS[i].message))
            fprintf(stderr, "error case %zu\n got: %s\nwant: ...%s...\n", i, err.msg,
                    ERRORS[i].message);
        ASSERT_TRUE(strstr(err.msg, ERRORS[i].message) != NULL);
    }
}

int main(void)
{
    RUN(every_rule_renders_as_the_official_encoder);
    RUN(omit_bos_and_json_t_entry_point);
    RUN(nul_bytes_in_content_survive);
    RUN(prompt_opens_reasoning);
    RUN(malformed_requests_are_errors_naming_the_message_and_field);
    return test_report();
}
