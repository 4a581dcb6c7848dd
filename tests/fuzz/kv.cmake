# libFuzzer targets of daemon/kv (included by tests/fuzz/CMakeLists.txt): the page record's
# verification (docs/KV_CACHE.md §6). No seed corpus: the target builds valid records itself.
dsd_add_fuzz(fuzz_kv_page SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_kv_page.c LIBS dsd_kv SECONDS 10)
