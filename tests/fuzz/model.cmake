# libFuzzer targets of daemon/model (included by tests/fuzz/CMakeLists.txt).
# (Libraries are coverage-instrumented when DSD_FUZZ=ON: see the root CMakeLists.txt.)
dsd_add_fuzz(fuzz_st_header SOURCES fuzz_st_header.c LIBS dsd_safetensors dsd::JANSSON SECONDS 20
             CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/st_header)
dsd_add_fuzz(fuzz_st_index SOURCES fuzz_st_index.c LIBS dsd_safetensors dsd::JANSSON SECONDS 10
             CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/corpus/st_index)
foreach(t fuzz_st_header fuzz_st_index)
  target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/daemon/model)
endforeach()
