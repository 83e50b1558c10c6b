// The GGUF reader: metadata of every type, tensor infos and alignment from files built byte by byte
// (gguf_builder.h) and from files written by llama.cpp's own Python writer (the `gguf` package,
// scripts/make_gguf_fixtures.py); every malformed-file case gives one error line that names the
// file and the field or tensor at fault.
#include "kvlab/model/gguf_file.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "gguf_builder.h"
#include "kvlab/common/error.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::GgufBuilder;
using test::TempDir;

const std::string kFixtures = std::string(KVLAB_TEST_DATA) + "/gguf";

// Two tensors and three metadata entries: the base every corruption below edits.
GgufBuilder valid_builder() {
  GgufBuilder b;
  b.kv_string("general.architecture", "llama");
  b.kv_u32("general.alignment", 32);
  b.kv_i32s("test.ints", {1, -2, 3});
  b.tensor_f32("a", {4}, {1.f, 2.f, 3.f, 4.f});
  std::string q8;  // two Q8_0 blocks: d = 1.0 (0x3c00), q = 0..31 and -1..-32
  for (int blk = 0; blk < 2; ++blk) {
    q8 += std::string("\x00\x3c", 2);
    for (int i = 0; i < 32; ++i) q8.push_back(static_cast<char>(blk == 0 ? i : -1 - i));
  }
  b.tensor("b", {32, 2}, 8, q8);
  return b;
}

// The message a file with these bytes fails with; checks it is one line and names the file.
std::string open_error(const std::string& bytes) {
  const std::string m = test::error_of([&] { GgufFile::from_bytes(bytes, "bad.gguf"); }, /*one_line=*/true);
  EXPECT_EQ(m.rfind("bad.gguf: ", 0), 0u) << m;
  return m;
}

void expect_has(const std::string& message, const std::string& needle) {
  EXPECT_NE(message.find(needle), std::string::npos) << "message: " << message << "\nexpected to contain: " << needle;
}

TEST(GgufFile, ReadsMetadataTensorsAndData) {
  const auto f = GgufFile::from_bytes(valid_builder().bytes(), "ok.gguf");
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_ints("test.ints"), (std::vector<int64_t>{1, -2, 3}));
  GgufBuilder e;  // an empty array (the Python writer cannot write one)
  e.kv_strings("test.none", {});
  EXPECT_EQ(GgufFile::from_bytes(e.bytes())->get_strings("test.none").size(), 0u);
  ASSERT_EQ(f->tensors().size(), 2u);
  const GgufTensorInfo& b = f->tensor("b");
  EXPECT_EQ(b.shape(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(b.type, GgmlType::Q8_0);
  EXPECT_EQ(b.bytes, 68u);
  EXPECT_EQ(b.offset, 32u);  // 16 bytes of "a", then the next multiple of 32
  EXPECT_EQ(f->data_offset() % 32, 0u);
  const at::Tensor a = f->load("a");
  EXPECT_TRUE(at::equal(a, at::tensor({1.f, 2.f, 3.f, 4.f})));
  const at::Tensor q = f->load("b");
  EXPECT_EQ(q.sizes(), at::IntArrayRef({2, 32}));
  EXPECT_EQ(q[0][31].item<float>(), 31.f);
  EXPECT_EQ(q[1][0].item<float>(), -1.f);
  EXPECT_EQ(q[1][31].item<float>(), -32.f);
  EXPECT_TRUE(at::equal(f->load("b", at::kBFloat16).to(at::kFloat), q));
  // Typed getters name the key on a mismatch.
  expect_has(test::error_of([&] { f->get_int("general.architecture"); }), "'general.architecture': expected an integer");
  expect_has(test::error_of([&] { f->get_string("nope"); }), "missing metadata key 'nope'");
  expect_has(test::error_of([&] { f->tensor("c"); }), "no tensor 'c'");
}

TEST(GgufFile, VersionTwoAndCustomAlignment) {
  GgufBuilder b = valid_builder();
  b.version = 2;
  const auto f2 = GgufFile::from_bytes(b.bytes(), "v2.gguf");
  EXPECT_EQ(f2->version(), 2u);

  GgufBuilder c;
  c.alignment = 64;
  c.kv_u32("general.alignment", 64);
  c.tensor_f32("a", {3}, {1, 2, 3});
  c.tensor_f32("b", {2}, {5, 6});
  const auto f = GgufFile::from_bytes(c.bytes(), "a64.gguf");
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->tensor("b").offset, 64u);
  EXPECT_TRUE(at::equal(f->load("b"), at::tensor({5.f, 6.f})));
}

TEST(GgufFile, EveryMalformedHeaderIsOneLineNamingTheField) {
  const std::string good = valid_builder().bytes();
  {  // bad magic
    std::string b = good;
    b[0] = 'X';
    expect_has(open_error(b), "not a GGUF file (bad magic");
  }
  for (uint32_t v : {1u, 4u, 0x03000000u}) {  // unsupported versions, a big-endian file
    std::string b = good;
    std::memcpy(&b[4], &v, 4);
    const std::string m = open_error(b);
    expect_has(m, "version");
    if (v == 0x03000000u) expect_has(m, "big-endian");
  }
  {  // absurd counts, checked before any allocation
    std::string b = good;
    const uint64_t huge = uint64_t{1} << 60;
    std::memcpy(&b[16], &huge, 8);
    expect_has(open_error(b), "metadata count 1152921504606846976 cannot fit");
    b = good;
    std::memcpy(&b[8], &huge, 8);
    expect_has(open_error(b), "tensor count 1152921504606846976 cannot fit");
  }
  // Truncated at every byte of the header: each names what it was reading.
  const auto f = GgufFile::from_bytes(good, "ok");
  for (size_t cut = 0; cut < f->data_offset(); ++cut) {
    const std::string m = open_error(good.substr(0, cut));
    const bool named = m.find("truncated") != std::string::npos || m.find("bad magic") != std::string::npos ||
                       m.find("exceeds") != std::string::npos || m.find("cannot fit") != std::string::npos ||
                       m.find("runs past the end") != std::string::npos;
    EXPECT_TRUE(named) << "cut at " << cut << ": " << m;
  }
  // Layout: 24-byte header; entries at 24 (45 bytes), 69 (33), 102 (45); tensor infos at 147 (33)
  // and 180 (41); data at 224.
  expect_has(open_error(good.substr(0, 30)), "metadata count 3 cannot fit in the 30 bytes");
  expect_has(open_error(good.substr(0, 80)), "metadata key #1: string length 17 exceeds the 3 bytes left");
  expect_has(open_error(good.substr(0, 100)), "truncated file: metadata key 'general.alignment' needs 4 bytes at offset 98");
  expect_has(open_error(good.substr(0, 130)), "metadata key 'test.ints' element count");
  expect_has(open_error(good.substr(0, 200)), "truncated file: tensor 'b' dimensions needs 8 bytes at offset 193");
  expect_has(open_error(good.substr(0, 222)), "the data section would start at offset 224");
  // Truncated tensor data.
  expect_has(open_error(good.substr(0, good.size() - 1)), "tensor 'b': data [32, 100) runs past the end");
}

TEST(GgufFile, BadStringsArraysAndValues) {
  {  // a string longer than the file
    GgufBuilder b;
    std::string p;
    GgufBuilder::u64(p, uint64_t{1} << 40);
    p += "abc";
    b.kv("general.name", 8, p);
    expect_has(open_error(b.bytes()), "metadata key 'general.name': string length 1099511627776 exceeds");
  }
  {  // an array count no file of this size can hold
    GgufBuilder b;
    std::string p;
    GgufBuilder::u32(p, 5);
    GgufBuilder::u64(p, uint64_t{1} << 50);
    b.kv("test.array", 9, p);
    expect_has(open_error(b.bytes()), "metadata key 'test.array': array of 1125899906842624 int32 elements cannot fit");
  }
  {  // a string array whose strings are missing (the file's padding holds a few empty ones at most)
    GgufBuilder b;
    std::string p;
    GgufBuilder::u32(p, 8);
    GgufBuilder::u64(p, 100);
    GgufBuilder::str(p, "x");
    b.kv("tokenizer.ggml.tokens", 9, p);
    expect_has(open_error(b.bytes()), "cannot fit");
  }
  {  // unknown value type, unknown array element type, a bool that is not 0/1
    GgufBuilder b;
    b.kv("x.y", 13, "");
    expect_has(open_error(b.bytes()), "metadata key 'x.y': unknown value type 13");
    GgufBuilder c;
    std::string p;
    GgufBuilder::u32(p, 77);
    GgufBuilder::u64(p, 0);
    c.kv("x.arr", 9, p);
    expect_has(open_error(c.bytes()), "metadata key 'x.arr': unknown array element type 77");
    GgufBuilder d;
    d.kv("x.flag", 7, std::string(1, '\x02'));
    expect_has(open_error(d.bytes()), "metadata key 'x.flag': bool value 2");
  }
  {  // nesting deeper than any model needs
    GgufBuilder b;
    std::string p;
    for (int i = 0; i < 20; ++i) {
      GgufBuilder::u32(p, 9);
      GgufBuilder::u64(p, 1);
    }
    GgufBuilder::u32(p, 4);
    GgufBuilder::u64(p, 0);
    b.kv("x.deep", 9, p.substr(0));  // the entry's type is array, payload starts with the element type
    expect_has(open_error(b.bytes()), "nested deeper than");
  }
  {  // duplicate key, alignment of the wrong type or not a power of two
    GgufBuilder b = valid_builder();
    b.kv_string("general.architecture", "qwen2");
    expect_has(open_error(b.bytes()), "duplicate metadata key 'general.architecture'");
    GgufBuilder c;
    c.kv_string("general.alignment", "32");
    expect_has(open_error(c.bytes()), "metadata key 'general.alignment': expected uint32, got string '32'");
    GgufBuilder d;
    d.kv_u32("general.alignment", 48);
    expect_has(open_error(d.bytes()), "metadata key 'general.alignment': 48 is not a power of two");
  }
}

TEST(GgufFile, BadTensorInfos) {
  const std::string four_floats(16, '\0');
  {  // misaligned offset
    GgufBuilder b;
    b.tensor("a", {4}, 0, four_floats);
    b.tensor("b", {4}, 0, four_floats, 40);
    expect_has(open_error(b.bytes()), "tensor 'b': data offset 40 is not a multiple of the alignment 32");
  }
  {  // overlapping data
    GgufBuilder b;
    b.tensor("a", {16}, 0, std::string(64, '\0'));
    b.tensor("b", {4}, 0, four_floats, 32);
    expect_has(open_error(b.bytes()), "tensor 'b': data [32, 48) overlaps tensor 'a' [0, 64)");
  }
  {  // unknown type, duplicate name, too many dimensions
    GgufBuilder b;
    b.tensor("a", {4}, 99, four_floats);
    expect_has(open_error(b.bytes()), "tensor 'a': unknown ggml type 99");
    GgufBuilder c;
    c.tensor("a", {4}, 0, four_floats);
    c.tensor("a", {4}, 0, four_floats);
    expect_has(open_error(c.bytes()), "duplicate tensor name 'a'");
    GgufBuilder d;
    d.tensor("a", {1, 1, 1, 1, 4}, 0, four_floats);
    expect_has(open_error(d.bytes()), "tensor 'a': 5 dimensions (at most 4)");
  }
  {  // element counts that overflow int64
    GgufBuilder b;
    b.tensor("big", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, four_floats);
    expect_has(open_error(b.bytes()), "tensor 'big': the element count overflows");
    GgufBuilder c;
    c.tensor("big", {~uint64_t{0}}, 0, four_floats);
    expect_has(open_error(c.bytes()), "tensor 'big': the element count overflows");
    // Found by fuzz_gguf: no elements (a zero dimension), but the other dimensions' product, which
    // the tensor's strides and storage size are made of, overflows.
    GgufBuilder z;
    z.tensor("empty", {1613758640, uint64_t{103583890941149184}, uint64_t{1} << 41, 0}, 0, four_floats);
    expect_has(open_error(z.bytes()), "tensor 'empty': the element count overflows (dimension 1");
    GgufBuilder y;
    y.tensor("empty", {uint64_t{1} << 61, 0}, 0, four_floats);  // its fp32 bytes would overflow
    expect_has(open_error(y.bytes()), "tensor 'empty': the element count overflows (dimension 0");
  }
  {  // a size consistent with the header but past the end of the file
    GgufBuilder b;
    b.tensor("a", {uint64_t{1} << 30}, 0, four_floats);
    expect_has(open_error(b.bytes()), "tensor 'a': data [0, 4294967296) runs past the end");
  }
  {  // a row that is not whole blocks
    GgufBuilder b;
    b.tensor("q", {48}, 8, std::string(68, '\0'));
    expect_has(open_error(b.bytes()), "tensor 'q': row length 48 is not a multiple of the Q8_0 block size 32");
  }
  {  // a type the reader knows but kvlab cannot dequantize: refused when loaded, naming both
    GgufBuilder b;
    b.tensor("iq", {256}, 16, std::string(66, '\0'));
    const auto f = GgufFile::from_bytes(b.bytes(), "iq.gguf");
    const std::string m = test::error_of([&] { f->load("iq"); }, true);
    expect_has(m, "iq.gguf: tensor 'iq' has type IQ2_XXS, which kvlab cannot dequantize");
  }
}

TEST(GgufFile, OpensFilesAndRefusesOthers) {
  TempDir tmp;
  valid_builder().write(tmp / "m.gguf");
  EXPECT_TRUE(is_gguf_file(tmp / "m.gguf"));
  EXPECT_FALSE(is_gguf_file(tmp.str()));
  GgufFile f(tmp / "m.gguf");
  EXPECT_EQ(f.path(), tmp / "m.gguf");
  EXPECT_EQ(f.file_size(), valid_builder().bytes().size());
  expect_has(test::error_of([&] { GgufFile g(tmp / "missing.gguf"); }, true), "cannot open GGUF file");
  expect_has(test::error_of([&] { GgufFile g(tmp.str()); }, true), "not a regular file");
  { std::ofstream(tmp / "empty.gguf"); }
  expect_has(test::error_of([&] { GgufFile g(tmp / "empty.gguf"); }, true), "empty.gguf: not a GGUF file");
}

// ---- files written by llama.cpp's gguf package (scripts/make_gguf_fixtures.py)

TEST(GgufFile, MetadataOfEveryTypeAsThePythonWriterWroteIt) {
  GgufFile f(kFixtures + "/dequant.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "kvlab-test");
  EXPECT_EQ(f.value("test.u8").type, GgufValueType::UInt8);
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000);
  EXPECT_EQ(f.get_int("test.u64"), int64_t{1} << 62);
  EXPECT_EQ(f.get_int("test.i64"), -(int64_t{1} << 62));
  EXPECT_EQ(f.value("test.f32").type, GgufValueType::Float32);
  EXPECT_EQ(f.get_float("test.f32"), 0.1f);
  EXPECT_EQ(f.get_float("test.f64"), 0.1);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.get_string("test.string"), "héllo\nwörld");
  EXPECT_EQ(f.get_strings("test.strings"), (std::vector<std::string>{"a", "", "ünï"}));
  EXPECT_EQ(f.get_ints("test.ints"), (std::vector<int64_t>{-1, 0, 7}));
  EXPECT_EQ(f.get_floats("test.floats"), (std::vector<double>{0.5, -2.0}));
  EXPECT_EQ(f.value("test.bools").elem_type, GgufValueType::Bool);
  EXPECT_EQ(f.value("test.bools").integers, (std::vector<int64_t>{1, 0}));
  const GgufValue& nested = f.value("test.nested");
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[1].integers, (std::vector<int64_t>{3, 4, 5}));
}

}  // namespace
}  // namespace kvlab
