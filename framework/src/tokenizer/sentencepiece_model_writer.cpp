// Protobuf wire format by hand: a tag is (field << 3 | wire type); varints for integers, bools and
// enums (negative int32 as ten-byte two's complement), fixed32 for floats, length-delimited bytes
// for strings and nested messages.
#include "kvlab/tokenizer/sentencepiece_model_writer.h"

#include <cstring>

#include "kvlab/common/error.h"

namespace kvlab {
namespace {

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void tag(std::string& out, int field, int wire) { varint(out, static_cast<uint64_t>(field) << 3 | wire); }
void int_field(std::string& out, int field, int64_t v) {
  tag(out, field, 0);
  varint(out, static_cast<uint64_t>(v));
}
void bytes_field(std::string& out, int field, const std::string& bytes) {
  tag(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}
void float_field(std::string& out, int field, float v) {
  tag(out, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);  // little-endian host (checked by the GGUF reader)
  out.append(b, 4);
}

}  // namespace

std::string sentencepiece_model_proto(const SentencePieceModelSpec& s) {
  if (s.scores.size() != s.pieces.size() || s.types.size() != s.pieces.size())
    fail("sentencepiece model: {} pieces, {} scores, {} types", s.pieces.size(), s.scores.size(), s.types.size());
  std::string out, msg;
  for (size_t i = 0; i < s.pieces.size(); ++i) {  // ModelProto.pieces = 1
    msg.clear();
    bytes_field(msg, 1, s.pieces[i]);
    float_field(msg, 2, s.scores[i]);
    int_field(msg, 3, s.types[i]);
    bytes_field(out, 1, msg);
  }
  msg.clear();  // ModelProto.trainer_spec = 2
  int_field(msg, 3, 2);  // model_type: BPE
  int_field(msg, 4, static_cast<int64_t>(s.pieces.size()));
  int_field(msg, 35, 1);  // byte_fallback
  int_field(msg, 40, s.unk_id);
  int_field(msg, 41, s.bos_id);
  int_field(msg, 42, s.eos_id);
  int_field(msg, 43, s.pad_id);
  bytes_field(out, 2, msg);
  msg.clear();  // ModelProto.normalizer_spec = 3
  bytes_field(msg, 1, "identity");
  int_field(msg, 3, s.add_dummy_prefix);
  int_field(msg, 4, 0);  // remove_extra_whitespaces
  int_field(msg, 5, 1);  // escape_whitespaces
  bytes_field(out, 3, msg);
  return out;
}

}  // namespace kvlab
