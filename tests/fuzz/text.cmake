# Fuzz targets of daemon/text.
# The output parser (and the chat encoder on inputs flagged for it): whole vs split feeding
# must agree; deltas stay clean UTF-8 text; tool-call arguments round-trip.
dsd_add_fuzz(fuzz_output_parser SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_output_parser.c
             LIBS dsd_chat SECONDS 20 CORPUS ${PROJECT_SOURCE_DIR}/tests/data/chat/parser_seeds)
# Coverage feedback needs the code under test instrumented too, not only the target's own file
# (dsd_add_fuzz puts -fsanitize=fuzzer on the executable alone); without it libFuzzer sees
# ~90 edges of the harness and mutates blind.
target_compile_options(dsd_chat PRIVATE -fsanitize=fuzzer-no-link)
