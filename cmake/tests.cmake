# ctest is the single entry point: C unit tests and Busted specs (run through build/myrmex, so
# they exercise the real bindings) are registered here by globbing, so adding a test touches no
# shared file.
find_program(BUSTED busted PATHS /usr/bin)

file(GLOB MYRMEX_C_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/c/test_*.c)
# Scanners the specs start must not reach past loopback: trivy fs and trivy image send an
# anonymous usage report (a DNS lookup first, seen with strace) unless told not to, even with
# their database in place; the version checks of trivy and grype are turned off too.
set(SCANNERS_OFFLINE "TRIVY_DISABLE_TELEMETRY=true;TRIVY_SKIP_VERSION_CHECK=true;GRYPE_CHECK_FOR_APP_UPDATE=false")
foreach(src IN LISTS MYRMEX_C_TESTS)
  get_filename_component(name ${src} NAME_WE)
  string(REGEX REPLACE "^test_" "" short ${name})
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE myrmex_core)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/c)
  add_test(NAME c:${short} COMMAND ${name})
  set_tests_properties(c:${short} PROPERTIES LABELS "c" TIMEOUT 300)
endforeach()

file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/spec-logs)
file(GLOB MYRMEX_SPECS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/spec/*_spec.lua)
foreach(spec IN LISTS MYRMEX_SPECS)
  get_filename_component(name ${spec} NAME_WE)
  string(REGEX REPLACE "_spec$" "" short ${name})
  file(STRINGS ${spec} first LIMIT_COUNT 1)
  set(labels "spec")
  if(first MATCHES "^-- needs: (.*)$")
    string(REPLACE " " ";" needs "${CMAKE_MATCH_1}")
    list(APPEND labels ${needs})
  endif()
  # --plain: busted's colour objects (term.colors) concatenate through __concat, which corrupts
  # the heap on liblua 5.4.4 when the stack grows inside it (docs/recipes.md): with --color every
  # spec's summary line risked it, a crash at the end of a spec whose tests had all passed.
  add_test(NAME spec:${short}
    COMMAND $<TARGET_FILE:myrmex> ${BUSTED} --output=utfTerminal -Xoutput --plain
      --helper=${PROJECT_SOURCE_DIR}/tests/support/spec_helper.lua ${spec}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  # Specs that share an engine (dockerd, a cluster) do not run at the same time: prunes and
  # listings in one would see the other's objects.
  set(locks ${labels})
  list(REMOVE_ITEM locks spec)
  set_tests_properties(spec:${short} PROPERTIES LABELS "${labels}" TIMEOUT 900
    RESOURCE_LOCK "${locks}"
    ENVIRONMENT "MYRMEX_BIN=$<TARGET_FILE:myrmex>;MYRMEX_SPEC_LOG=${PROJECT_BINARY_DIR}/spec-logs/${short}.log;MYRMEX_SOURCE_DIR=${PROJECT_SOURCE_DIR};MYRMEX_BUILD_DIR=${PROJECT_BINARY_DIR};MYRMEX_FIXTURES=${PROJECT_SOURCE_DIR}/tests/fixtures;${SCANNERS_OFFLINE}")
endforeach()

if(EXISTS ${PROJECT_SOURCE_DIR}/tests/k8s/CMakeLists.txt)
  add_subdirectory(tests/k8s)
endif()

# Static checks and short fuzz runs are ctest tests too, so one ctest run is the whole gate.
find_program(LUACHECK luacheck)
find_program(CLANG_TIDY clang-tidy)
find_program(CPPCHECK cppcheck)
if(LUACHECK AND CLANG_TIDY AND CPPCHECK AND NOT MYRMEX_SANITIZE AND NOT MYRMEX_FUZZ)
  add_test(NAME lint COMMAND ${PROJECT_SOURCE_DIR}/.ci/lint ${PROJECT_BINARY_DIR}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(lint PROPERTIES LABELS "lint" TIMEOUT 600)
endif()
find_program(CLANG clang)
if(CLANG AND NOT MYRMEX_SANITIZE AND NOT MYRMEX_FUZZ)
  add_test(NAME fuzz:short COMMAND ${PROJECT_SOURCE_DIR}/tests/fuzz/run.sh 15
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(fuzz:short PROPERTIES LABELS "fuzz" TIMEOUT 900
    ENVIRONMENT "MYRMEX_FUZZ_BUILD=${PROJECT_BINARY_DIR}/fuzz;MYRMEX_FIXTURES=${PROJECT_SOURCE_DIR}/tests/fixtures")
endif()
