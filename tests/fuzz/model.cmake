# libFuzzer targets of daemon/model (included by tests/fuzz/CMakeLists.txt).
#
# The safetensors sources are compiled into each target instead of linking dsd_safetensors:
# dsd_add_fuzz() instruments only the target's own sources, and a fuzzer that cannot see
# coverage inside the parser runs blind.
set(dsd_st_fuzz_sources ${PROJECT_SOURCE_DIR}/daemon/model/safetensors.c
                        ${PROJECT_SOURCE_DIR}/daemon/model/safetensors_write.c)
dsd_add_fuzz(fuzz_st_header SOURCES fuzz_st_header.c ${dsd_st_fuzz_sources}
             LIBS dsd_util dsd::JANSSON Threads::Threads SECONDS 20
             CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/st_header)
dsd_add_fuzz(fuzz_st_index SOURCES fuzz_st_index.c ${dsd_st_fuzz_sources}
             LIBS dsd_util dsd::JANSSON Threads::Threads SECONDS 10
             CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/st_index)
foreach(t fuzz_st_header fuzz_st_index)
  target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/daemon/model)
endforeach()
