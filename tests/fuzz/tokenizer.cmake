# libFuzzer target for the tokenizer and the streaming detokenizer (tests/text).
dsd_add_fuzz(fuzz_tokenizer
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/../text/test_tokenizer_fuzz.c
             LIBS dsd_tokenizer dsd::JANSSON dsd_test_harness
             SECONDS 20)
target_include_directories(fuzz_tokenizer PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../text)
