/*
 * daemon/text/chat_markers.h: the special strings of DeepSeek V3.2's chat format, shared by
 * the chat encoder (which writes them) and the output parser (which reads them).
 *
 * "｜" is U+FF5C (fullwidth vertical line) and "▁" is U+2581; the source is UTF-8. Each of
 * BOS, EOS, USER, ASSISTANT, THINK_START and THINK_END is one token in DeepSeek's vocabulary
 * (ids 0, 1, 128803, 128804, 128798, 128799).
 */
#ifndef DSD_TEXT_CHAT_MARKERS_H
#define DSD_TEXT_CHAT_MARKERS_H

#define DSD_CHAT_BOS "<｜begin▁of▁sentence｜>"
#define DSD_CHAT_EOS "<｜end▁of▁sentence｜>"
#define DSD_CHAT_USER "<｜User｜>"
#define DSD_CHAT_ASSISTANT "<｜Assistant｜>"
#define DSD_CHAT_THINK_START "<think>"
#define DSD_CHAT_THINK_END "</think>"

/* DSML, the tool-call markup. A call block as the official encoder writes it:
 *   \n\n<｜DSML｜function_calls>\n
 *   <｜DSML｜invoke name="NAME">\n
 *   <｜DSML｜parameter name="KEY" string="true">raw text</｜DSML｜parameter>\n
 *   <｜DSML｜parameter name="KEY" string="false">JSON</｜DSML｜parameter>\n
 *   </｜DSML｜invoke>\n
 *   </｜DSML｜function_calls> */
#define DSD_CHAT_DSML "｜DSML｜"
#define DSD_CHAT_DSML_OPEN "<｜DSML｜"
#define DSD_CHAT_DSML_CLOSE "</｜DSML｜"
#define DSD_CHAT_CALLS_OPEN "<｜DSML｜function_calls>"
#define DSD_CHAT_CALLS_CLOSE "</｜DSML｜function_calls>"
#define DSD_CHAT_INVOKE_OPEN "<｜DSML｜invoke"
#define DSD_CHAT_INVOKE_CLOSE "</｜DSML｜invoke>"
#define DSD_CHAT_PARAM_OPEN "<｜DSML｜parameter"
#define DSD_CHAT_PARAM_CLOSE "</｜DSML｜parameter>"
/* DeepSeek V4's name for the block; accepted by the parser, never written. */
#define DSD_CHAT_TOOL_CALLS_OPEN "<｜DSML｜tool_calls>"
#define DSD_CHAT_TOOL_CALLS_CLOSE "</｜DSML｜tool_calls>"

#endif
