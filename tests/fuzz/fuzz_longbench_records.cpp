// LongBench data files (<task>.jsonl records).
#include "fuzz_input.h"
#include "kvlab/eval/longbench/records.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "task.jsonl");
  kvlab::fuzz::run_parser([&] { (void)kvlab::longbench::load_records(path); });
  return 0;
}
