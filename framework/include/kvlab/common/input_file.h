#pragma once
// Every file kvlab reads may come from a stranger (checkpoints, tokenizers, LongBench data, plans,
// specs). Each reader calls check_input_file before it opens its file, so that what is not a file
// is refused by name instead of blocking or never ending: a FIFO blocks open() until a writer
// appears, a device such as /dev/zero never reaches end of file, and a directory is not a file.
// Files read whole are capped at a size that no genuine file of their kind comes near, so a huge or
// hostile file is refused before it is read into memory.
#include <cstdint>
#include <istream>
#include <limits>
#include <string>

namespace kvlab {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kNoSizeLimit = std::numeric_limits<uint64_t>::max();
// Caps for files read whole (far above genuine ones: a Llama-3 config.json is 1 KB, its
// tokenizer.json 9 MB; a plan or experiment spec a few KB).
constexpr uint64_t kMaxJsonFileBytes = 64 * kMiB;        // config.json, index.json, templates
constexpr uint64_t kMaxTokenizerFileBytes = 1024 * kMiB;  // tokenizer.json, tokenizer.model
constexpr uint64_t kMaxYamlFileBytes = 64 * kMiB;        // experiment specs, presets, plans
// One line of a JSON-lines file (a LongBench record with its whole context is below 2 MB).
constexpr uint64_t kMaxJsonLineBytes = 256 * kMiB;

// Refuses, with kvlab::Error "<path>: <what> is <kind>, not a regular file", a path that exists but
// is a FIFO, a device, a socket or a directory; and a regular file larger than max_bytes ("<path>:
// <what> is N bytes, above the limit of M bytes"). A path that does not exist passes, so that each
// reader's own open reports it in its own words.
void check_input_file(const std::string& path, const std::string& what, uint64_t max_bytes = kNoSizeLimit);

// std::getline with a cap: false at end of input; a line longer than max_bytes is kvlab::Error
// "<path>:<line_no>: line is longer than the limit of M bytes".
bool getline_at_most(std::istream& in, std::string& line, uint64_t max_bytes, const std::string& path,
                     int64_t line_no);

}  // namespace kvlab
