/* tools/text/commands.h: the subcommands of deepseekd-text that live outside main.c. */
#ifndef DSD_TOOLS_TEXT_COMMANDS_H
#define DSD_TOOLS_TEXT_COMMANDS_H

struct subcommand;

int cmd_tokenize(const struct subcommand *cmd, int argc, char **argv);
int cmd_detokenize(const struct subcommand *cmd, int argc, char **argv);

#endif
