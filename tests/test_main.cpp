// GoogleTest entry point. ctest runs test processes in parallel, so each uses one LibTorch thread
// unless KVLAB_TEST_THREADS says otherwise.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kvlab/model/dtype.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* env = std::getenv("KVLAB_TEST_THREADS");
  kvlab::set_threads(env ? std::stoi(env) : 1);
  return RUN_ALL_TESTS();
}
