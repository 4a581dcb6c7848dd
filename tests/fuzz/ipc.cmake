# ipc/ fuzz targets (PROTOCOL.md §10 and §7): the frame reader + message decoder, and the shm
# header validator + ring producer against hostile positions. Seeds: tests/data/ipc/, written
# by `test_ipc_msg --write-corpus DIR` and `test_ipc_shm --write-corpus DIR`.
#
# The ipc sources are compiled into each target rather than linked from dsd_ipc: dsd_add_fuzz
# adds -fsanitize=fuzzer to the target's own sources only, and libFuzzer is blind to code
# without its coverage instrumentation (linking the library gave cov: 13 instead of ~1500).
get_target_property(dsd_ipc_srcs dsd_ipc SOURCES)
get_target_property(dsd_ipc_dir dsd_ipc SOURCE_DIR)
list(TRANSFORM dsd_ipc_srcs PREPEND ${dsd_ipc_dir}/)
foreach(t decode shm)
  dsd_add_fuzz(fuzz_ipc_${t} SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_ipc_${t}.c ${dsd_ipc_srcs}
               LIBS dsd_util dsd::MSGPACK SECONDS 20
               CORPUS ${PROJECT_SOURCE_DIR}/tests/data/ipc/${t})
  target_include_directories(fuzz_ipc_${t} PRIVATE ${dsd_ipc_dir})
endforeach()
