# CUDA kernels, tier 1 (included from the top-level CMakeLists.txt): plain CUDA with a C API
# (kernels/cuda/include/kvlab/cuda/kv_cuda.h), no torch types.
#   kvlab_cuda_emu_tests   the kernel tests, the kernels compiled as C++ for the host emulator;
#                          always built (with KVLAB_TESTS), run by ctest.
#   kvlab_cuda_kernels     the kernels for the GPU (nvcc, KVLAB_CUDA_ARCHITECTURES, default 90);
#   cuda_kernel_tests      the same tests against the CPU reference on a GPU (static cudart);
#   cuda_kernel_bench      bandwidth against the copy ceiling (static cudart).
#                          These three when KVLAB_CUDA_KERNELS is ON, or AUTO (default) and nvcc is
#                          found; ctest runs cuda_kernel_tests, which reports "skipped" (exit 77)
#                          where no GPU is usable.
set(KVLAB_CUDA_KERNELS AUTO CACHE STRING "Build the CUDA kernels with nvcc: AUTO (when nvcc is found), ON, OFF")
set(KVLAB_CUDA_DIR ${PROJECT_SOURCE_DIR}/kernels/cuda)

# The CPU reference the CUDA kernels are tested against, without LibTorch's libraries (c10::Half is
# header-only) and with fmt header-only, so the test binaries carry no shared-library dependencies.
add_library(kvlab_kernel_reference OBJECT
  ${PROJECT_SOURCE_DIR}/kernels/cpu/group_quant_reference.cpp
  ${PROJECT_SOURCE_DIR}/kernels/cpu/packed_attention_reference.cpp
  ${PROJECT_SOURCE_DIR}/kernels/cpu/packing.cpp)
target_include_directories(kvlab_kernel_reference PUBLIC
  ${PROJECT_SOURCE_DIR}/kernels/include ${PROJECT_SOURCE_DIR}/framework/include ${KVLAB_CUDA_DIR}/include
  ${TORCH_INCLUDE_DIRS})
target_compile_definitions(kvlab_kernel_reference PUBLIC FMT_HEADER_ONLY=1)
target_compile_options(kvlab_kernel_reference PRIVATE ${KVLAB_WARNINGS})

if(KVLAB_TESTS)
  add_executable(kvlab_cuda_emu_tests
    ${KVLAB_CUDA_DIR}/emulator/cuda_emulator.cpp
    ${KVLAB_CUDA_DIR}/emulator/emulated_quantize_pack.cpp
    ${KVLAB_CUDA_DIR}/emulator/emulated_decode_attention.cpp
    ${KVLAB_CUDA_DIR}/tests/cuda_kernel_tests.cpp
    ${KVLAB_CUDA_DIR}/tests/emulator_tests.cpp)
  target_include_directories(kvlab_cuda_emu_tests PRIVATE ${KVLAB_CUDA_DIR})
  target_compile_definitions(kvlab_cuda_emu_tests PRIVATE KVLAB_CUDA_EMULATE)
  target_link_libraries(kvlab_cuda_emu_tests PRIVATE kvlab_kernel_reference GTest::gtest Threads::Threads)
  gtest_discover_tests(kvlab_cuda_emu_tests TEST_PREFIX "emulated." DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 900)
endif()

set(KVLAB_HAVE_CUDA_KERNELS OFF)
if(KVLAB_WITH_CUDA OR NOT KVLAB_CUDA_KERNELS STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(KVLAB_HAVE_CUDA_KERNELS ON)
  elseif(KVLAB_CUDA_KERNELS STREQUAL "ON" OR KVLAB_WITH_CUDA)
    message(FATAL_ERROR "the CUDA kernels are needed (KVLAB_CUDA_KERNELS=ON or KVLAB_CUDA) but no CUDA compiler "
                        "(nvcc) was found; set CMAKE_CUDA_COMPILER")
  else()
    message(STATUS "kvlab: nvcc not found, the CUDA kernels are not compiled (the emulated kernel tests still run)")
  endif()
endif()

if(KVLAB_HAVE_CUDA_KERNELS)
  # Set per target: a LibTorch with CUDA resets CMAKE_CUDA_ARCHITECTURES (to OFF) for its own use.
  set(KVLAB_CUDA_ARCHITECTURES 90 CACHE STRING "GPU architectures of the CUDA kernels (90: H100/H200)")
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES ${KVLAB_CUDA_ARCHITECTURES})
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "kvlab: CUDA kernels for sm_${KVLAB_CUDA_ARCHITECTURES} with nvcc ${CMAKE_CUDA_COMPILER_VERSION}")
  add_library(kvlab_cuda_kernels STATIC ${KVLAB_CUDA_DIR}/quantize_pack.cu ${KVLAB_CUDA_DIR}/decode_attention.cu)
  target_include_directories(kvlab_cuda_kernels PUBLIC ${KVLAB_CUDA_DIR}/include ${CUDAToolkit_INCLUDE_DIRS})
  # The runtime library is chosen by each consumer: static for the standalone test and bench, the
  # shared one LibTorch uses for kvlab itself.
  set_target_properties(kvlab_cuda_kernels PROPERTIES CUDA_STANDARD 17 POSITION_INDEPENDENT_CODE ON
                        CUDA_RUNTIME_LIBRARY None CUDA_ARCHITECTURES "${KVLAB_CUDA_ARCHITECTURES}")
  # Exact IEEE division and rounding (bit-identical quantization): never --use_fast_math here.
  target_compile_options(kvlab_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
  option(KVLAB_CUDA_PTXAS_VERBOSE "Print registers / spills per kernel while compiling" OFF)
  if(KVLAB_CUDA_PTXAS_VERBOSE)
    target_compile_options(kvlab_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
  endif()

  if(KVLAB_TESTS)
    add_executable(cuda_kernel_tests ${KVLAB_CUDA_DIR}/tests/cuda_kernel_tests.cpp)
    target_link_libraries(cuda_kernel_tests PRIVATE kvlab_cuda_kernels kvlab_kernel_reference CUDA::cudart_static
                          GTest::gtest Threads::Threads)
    add_test(NAME cuda_kernel_tests COMMAND cuda_kernel_tests)
    set_tests_properties(cuda_kernel_tests PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900)
  endif()
  add_executable(cuda_kernel_bench ${KVLAB_CUDA_DIR}/bench/cuda_kernel_bench.cu)
  target_link_libraries(cuda_kernel_bench PRIVATE kvlab_cuda_kernels CUDA::cudart_static)
  set_target_properties(cuda_kernel_bench PROPERTIES CUDA_STANDARD 17 CUDA_RUNTIME_LIBRARY None
                        CUDA_ARCHITECTURES "${KVLAB_CUDA_ARCHITECTURES}")
endif()
