# ipc/ fuzz targets (PROTOCOL.md §10 and §7): the frame reader + message decoder, and the shm
# header validator + ring producer against hostile positions. Seeds: tests/data/ipc/, written
# by `test_ipc_msg --write-corpus DIR` and `test_ipc_shm --write-corpus DIR`.
# (Libraries are coverage-instrumented when DSD_FUZZ=ON: see the root CMakeLists.txt.)
foreach(t decode shm)
  dsd_add_fuzz(fuzz_ipc_${t} SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_ipc_${t}.c
               LIBS dsd_ipc dsd_util dsd::MSGPACK SECONDS 20
               CORPUS ${PROJECT_SOURCE_DIR}/tests/data/ipc/${t})
  target_include_directories(fuzz_ipc_${t} PRIVATE ${PROJECT_SOURCE_DIR}/ipc)
endforeach()
