# Fuzz targets of daemon/text.
# The output parser (and the chat encoder on inputs flagged for it): whole vs split feeding
# must agree; deltas stay clean UTF-8 text; tool-call arguments round-trip.
dsd_add_fuzz(fuzz_output_parser SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_output_parser.c
             LIBS dsd_chat SECONDS 20 CORPUS ${PROJECT_SOURCE_DIR}/tests/data/chat/parser_seeds)
