# Helpers that keep every module's CMakeLists.txt to one or two lines.
#
# cutover_library(NAME DEPS ...)    library cutover_NAME from src/NAME/*.cpp (not *_test.cpp,
#                                   *_fuzz.cpp); tests from src/NAME/*_test.cpp become NAME_test,
#                                   registered with ctest under the label "unit".
# cutover_fuzz(NAME SOURCE f.cpp DEPS ... CORPUS dir)
#                                   NAME_replay (g++/clang, replays the corpus in ctest, label
#                                   "fuzz"); with CUTOVER_LIBFUZZER=ON also NAME_fuzz (libFuzzer).
# cutover_bench(NAME SOURCES ... DEPS ...)  Google Benchmark executable.

function(cutover_library name)
  cmake_parse_arguments(ARG "" "" "DEPS;TEST_DEPS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cpp)
  file(GLOB fuzzers CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_fuzz.cpp)
  if(tests)
    list(REMOVE_ITEM srcs ${tests})
  endif()
  if(fuzzers)
    list(REMOVE_ITEM srcs ${fuzzers})
  endif()
  add_library(cutover_${name} STATIC ${srcs})
  target_include_directories(cutover_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(cutover_${name} PUBLIC ${ARG_DEPS})
  if(tests)
    add_executable(${name}_test ${tests})
    target_link_libraries(${name}_test PRIVATE cutover_${name} ${ARG_TEST_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
    target_compile_definitions(${name}_test PRIVATE CUTOVER_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                                    CUTOVER_BINARY_DIR="${PROJECT_BINARY_DIR}")
    # PRE_TEST: list the tests when ctest runs, not after every link (faster rebuilds).
    gtest_discover_tests(${name}_test DISCOVERY_MODE PRE_TEST PROPERTIES LABELS unit DISCOVERY_TIMEOUT 120
                         TEST_PREFIX "${name}.")
  endif()
endfunction()

function(cutover_fuzz name)
  cmake_parse_arguments(ARG "" "SOURCE;CORPUS" "DEPS" ${ARGN})
  add_executable(${name}_replay ${ARG_SOURCE} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.cpp)
  target_link_libraries(${name}_replay PRIVATE ${ARG_DEPS})
  add_test(NAME fuzz.${name}.replay COMMAND ${name}_replay ${ARG_CORPUS})
  set_tests_properties(fuzz.${name}.replay PROPERTIES LABELS fuzz)
  if(CUTOVER_LIBFUZZER)
    if(NOT TARGET fuzzers)
      add_custom_target(fuzzers)  # `make fuzz` builds only these (and what they link)
    endif()
    add_executable(${name}_fuzz ${ARG_SOURCE})
    add_dependencies(fuzzers ${name}_fuzz)
    target_compile_options(${name}_fuzz PRIVATE -fsanitize=fuzzer)
    target_link_options(${name}_fuzz PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name}_fuzz PRIVATE ${ARG_DEPS})
  endif()
endfunction()

function(cutover_bench name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  find_package(benchmark REQUIRED)
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
endfunction()
