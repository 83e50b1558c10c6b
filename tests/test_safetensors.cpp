// Tests of the safetensors reader, checkpoint loader and writer. Expectations are independent of
// the code under test: files are built byte by byte from literal headers and known IEEE bit
// patterns, or come from the reference Python package (tests/data/safetensors/py_written.safetensors).
#include "kvlab/model/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kvlab/common/error.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "kvlab_st_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Little-endian encodings, written out by hand so they do not depend on the writer under test.
std::string le(uint64_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
std::string le16(std::initializer_list<uint16_t> bits) {
  std::string s;
  for (uint16_t b : bits) s += le(b, 2);
  return s;
}
std::string le32(std::initializer_list<uint32_t> bits) {
  std::string s;
  for (uint32_t b : bits) s += le(b, 4);
  return s;
}

// [u64 header length][header][data]
std::string st_file(const std::string& header, const std::string& data) { return le(header.size(), 8) + header + data; }

std::string pad8(std::string header) {
  while (header.size() % 8 != 0) header += ' ';
  return header;
}

// The message of the kvlab::Error thrown by `f` ("" and a test failure if none is thrown).
using test::error_of;

// Each defect is one line that names the file (or dir) and says what is wrong.
void expect_error(const std::string& message, const std::string& path, const std::vector<std::string>& words) {
  EXPECT_NE(message.find(path), std::string::npos) << "path '" << path << "' missing from: " << message;
  for (const auto& w : words) EXPECT_NE(message.find(w), std::string::npos) << "'" << w << "' missing from: " << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "multi-line message: " << message;
}

std::vector<float> floats(const at::Tensor& t) {
  at::Tensor f = t.to(at::kFloat).contiguous();
  return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

std::string raw(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// IEEE bit patterns: F32 1.0, -2.5, 0.5, 3.0; F16 1.0, -2.0, 0.5; BF16 1.5, -4.0.
const std::string kF32Data = le32({0x3F800000, 0xC0200000, 0x3F000000, 0x40400000});
const std::string kF16Data = le16({0x3C00, 0xC000, 0x3800});
const std::string kBF16Data = le16({0x3FC0, 0xC080});
const std::string kHandHeader =
    R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("h":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},)"
    R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[22,26]},)"
    R"("__metadata__":{"format":"pt","note":"hand built"}})";

// ---- reading files not produced by our writer ------------------------------------------------

TEST(SafetensorsRead, HandBuiltFile) {
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  write_bytes(path, st_file(pad8(kHandHeader), kF32Data + kF16Data + kBF16Data));

  SafetensorsFile f(path);
  ASSERT_EQ(f.entries().size(), 3u);
  EXPECT_EQ(f.entries()[0].name, "w");  // header order is kept
  EXPECT_EQ(f.entries()[1].name, "h");
  EXPECT_EQ(f.entries()[2].name, "b");
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hand built"}}));
  EXPECT_FALSE(f.contains("__metadata__"));
  EXPECT_EQ(f.entry("h").dtype, "F16");
  EXPECT_EQ(f.entry("h").begin, 16u);
  EXPECT_EQ(f.entry("h").end, 22u);

  at::Tensor w = f.tensor("w");
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_EQ(w.sizes().vec(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(floats(w), (std::vector<float>{1.0f, -2.5f, 0.5f, 3.0f}));
  at::Tensor h = f.tensor("h");
  EXPECT_EQ(h.scalar_type(), at::kHalf);
  EXPECT_EQ(floats(h), (std::vector<float>{1.0f, -2.0f, 0.5f}));
  at::Tensor b = f.tensor("b");
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  EXPECT_EQ(floats(b), (std::vector<float>{1.5f, -4.0f}));

  // Aligned data is a zero-copy view: two reads share the mapped bytes.
  EXPECT_EQ(f.tensor("w").data_ptr(), w.data_ptr());
  EXPECT_TRUE(f.contains("w"));
  expect_error(error_of([&] { f.entry("nope"); }), path, {"no tensor", "'nope'"});
  expect_error(error_of([&] { f.tensor("nope"); }), path, {"no tensor", "'nope'"});
}

TEST(SafetensorsRead, MisalignedDataIsCopied) {
  // An unpadded header of odd length leaves the F32 data at an odd address.
  TempDir dir;
  std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  if (header.size() % 2 == 0) header += ' ';
  const std::string path = dir.file("odd.safetensors");
  write_bytes(path, st_file(header, kF32Data));

  SafetensorsFile f(path);
  at::Tensor w = f.tensor("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data_ptr()) % alignof(float), 0u);
  EXPECT_EQ(floats(w), (std::vector<float>{1.0f, -2.5f, 0.5f, 3.0f}));
}

TEST(SafetensorsRead, PythonWrittenFixture) {
  // Written by scripts/make_safetensors_fixture.py with the reference `safetensors` package.
  const std::string path = std::string(KVLAB_TEST_DATA) + "/safetensors/py_written.safetensors";
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"source", "kvlab fixture"}}));
  EXPECT_EQ(f.entries().size(), 5u);
  EXPECT_EQ(floats(f.tensor("f32")), (std::vector<float>{0.0f, 1.0f, -2.5f, 3.25f, 0.125f, 1024.0f}));
  EXPECT_EQ(f.tensor("f32").sizes().vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.tensor("f16").scalar_type(), at::kHalf);
  EXPECT_EQ(floats(f.tensor("f16")), (std::vector<float>{1.0f, -0.5f, 65504.0f, 1.0f / 1024.0f}));
  EXPECT_EQ(f.tensor("bf16").scalar_type(), at::kBFloat16);
  EXPECT_EQ(f.tensor("bf16").sizes().vec(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(floats(f.tensor("bf16")), (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f}));
  EXPECT_EQ(f.tensor("empty").sizes().vec(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(floats(f.tensor("scalar")), (std::vector<float>{7.0f}));
}

TEST(SafetensorsRead, TensorOutlivesFile) {
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  write_bytes(path, st_file(pad8(kHandHeader), kF32Data + kF16Data + kBF16Data));
  auto f = std::make_unique<SafetensorsFile>(path);
  at::Tensor w = f->tensor("w");
  at::Tensor b = f->tensor("b");
  f.reset();
  fs::remove(path);  // the mapping, held by the tensors, outlives even the directory entry
  EXPECT_EQ(floats(w), (std::vector<float>{1.0f, -2.5f, 0.5f, 3.0f}));
  EXPECT_EQ(floats(b), (std::vector<float>{1.5f, -4.0f}));
}

TEST(SafetensorsRead, EmptyHeaderAndZeroSizeTensors) {
  TempDir dir;
  const std::string empty = dir.file("empty.safetensors");
  write_bytes(empty, st_file("{}      ", ""));
  EXPECT_TRUE(SafetensorsFile(empty).entries().empty());

  // Zero-size tensors may share an offset with each other and with a neighbour's boundary.
  const std::string zeros = dir.file("zeros.safetensors");
  write_bytes(zeros, st_file(pad8(R"({"z":{"dtype":"F16","shape":[0,4],"data_offsets":[0,0]},)"
                                  R"("w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("y":{"dtype":"BF16","shape":[3,0],"data_offsets":[16,16]}})"),
                             kF32Data));
  SafetensorsFile f(zeros);
  EXPECT_EQ(f.tensor("z").sizes().vec(), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(f.tensor("y").sizes().vec(), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(f.tensor("y").scalar_type(), at::kBFloat16);
  EXPECT_EQ(floats(f.tensor("w")), (std::vector<float>{1.0f, -2.5f, 0.5f, 3.0f}));
}

// ---- corrupt files -------------------------------------------------------------------------

struct Corruption {
  std::string name;
  std::string bytes;
  std::vector<std::string> words;  // each must appear in the error message
};

std::string one_tensor(const std::string& entry, const std::string& data = kF32Data.substr(0, 8)) {
  return st_file(R"({"a":)" + entry + "}", data);
}

TEST(SafetensorsRead, ValidBaselineOfCorruptionCases) {
  // The corruption cases below change one thing in this file, which must itself be valid.
  TempDir dir;
  const std::string path = dir.file("ok.safetensors");
  write_bytes(path, one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"));
  EXPECT_EQ(floats(SafetensorsFile(path).tensor("a")), (std::vector<float>{1.0f, -2.5f}));
}

TEST(SafetensorsRead, CorruptFilesGiveOneLineErrors) {
  const std::string d8 = kF32Data.substr(0, 8);
  const std::vector<Corruption> cases = {
      {"empty_file", "", {"truncated"}},
      {"short_file", std::string("\x10\x00\x00", 3), {"truncated"}},
      {"header_beyond_file", le(1000, 8) + "{}", {"header length 1000", "truncated"}},
      {"header_not_json", st_file(R"({"a": )", ""), {"JSON"}},
      {"header_trailing_garbage", st_file("{} xyz", ""), {"JSON"}},
      {"header_not_object", st_file("[1, 2]", ""), {"JSON", "not an object"}},
      {"entry_not_object", one_tensor("5"), {"'a'", "object"}},
      {"missing_dtype", one_tensor(R"({"shape":[2],"data_offsets":[0,8]})"), {"'a'", "dtype"}},
      {"missing_shape", one_tensor(R"({"dtype":"F32","data_offsets":[0,8]})"), {"'a'", "shape"}},
      {"missing_offsets", one_tensor(R"({"dtype":"F32","shape":[2]})"), {"'a'", "data_offsets"}},
      {"dtype_not_string", one_tensor(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), {"'a'", "dtype"}},
      {"shape_not_array", one_tensor(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"), {"'a'", "shape"}},
      {"shape_not_integer", one_tensor(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), {"'a'", "shape"}},
      {"offsets_one_number", one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), {"'a'", "data_offsets"}},
      {"offsets_strings", one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":["0","8"]})"),
       {"'a'", "data_offsets"}},
      {"offsets_negative", one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
       {"'a'", "negative", "data_offsets"}},
      {"unknown_dtype", one_tensor(R"({"dtype":"F33","shape":[2],"data_offsets":[0,8]})"),
       {"'a'", "unknown dtype", "'F33'"}},
      {"unsupported_dtype", one_tensor(R"({"dtype":"I64","shape":[1],"data_offsets":[0,8]})"),
       {"'a'", "unsupported dtype", "'I64'"}},
      {"negative_dim", one_tensor(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), {"'a'", "negative dim"}},
      {"offsets_reversed", one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), {"'a'", "begin > end"}},
      {"offsets_beyond_data", one_tensor(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), {"'a'", "truncated"}},
      {"size_mismatch", one_tensor(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), {"'a'", "size", "12"}},
      {"size_overflow",
       one_tensor(R"({"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]})"),
       {"'a'", "overflow"}},
      {"overlap",
       st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               kF32Data.substr(0, 12)),
       {"'a'", "'b'", "overlap"}},
      {"duplicate_tensor",
       st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
               kF32Data),
       {"'a'", "duplicate"}},
      {"metadata_not_object", st_file(R"({"__metadata__":5})", ""), {"__metadata__"}},
      {"metadata_not_strings", st_file(R"({"__metadata__":{"k":1}})", ""), {"__metadata__", "'k'", "not a string"}},
      // A control character in a name must not break the message over two lines.
      {"name_with_newline", st_file(R"({"x\ny":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}})", "z"),
       {"'x\\x0ay'", "dtype", "'Q8'"}},
  };
  TempDir dir;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.file(c.name + ".safetensors");
    write_bytes(path, c.bytes);
    expect_error(error_of([&] { SafetensorsFile f(path); }), path, c.words);
  }
}

TEST(SafetensorsRead, MissingFileAndDirectory) {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  expect_error(error_of([&] { SafetensorsFile f(missing); }), missing, {"cannot open"});
  expect_error(error_of([&] { SafetensorsFile f(dir.str()); }), dir.str(), {"not a regular file"});
}

// ---- writer --------------------------------------------------------------------------------

TEST(SafetensorsWrite, RoundTripIsBitIdentical) {
  at::manual_seed(7);
  at::Tensor specials = at::randn({3, 4});
  specials[0][0] = std::numeric_limits<float>::quiet_NaN();
  specials[0][1] = std::numeric_limits<float>::infinity();
  specials[0][2] = -0.0f;
  specials[0][3] = std::numeric_limits<float>::denorm_min();
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", specials},
      {"f16", at::randn({2, 3, 5}).to(at::kHalf)},
      {"bf16", at::randn({7}).to(at::kBFloat16)},
      {"one", at::full({1}, 42.5f)},
      {"scalar", at::scalar_tensor(-3.0f)},
      {"empty_f16", at::empty({0}, at::kHalf)},
      {"empty_bf16", at::empty({2, 0, 3}, at::kBFloat16)},
      {"transposed", at::arange(6, at::kFloat).view({2, 3}).t()},  // non-contiguous input
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"kvlab", "test \"quoted\" value"}};
  TempDir dir;
  const std::string path = dir.file("rt.safetensors");
  write_safetensors(path, tensors, metadata);

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata(), metadata);
  ASSERT_EQ(f.entries().size(), tensors.size());
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(f.entries()[i].name, name);  // given order
    EXPECT_EQ(f.entries()[i].begin, expected_begin);  // contiguous data section
    expected_begin += t.numel() * t.element_size();
    at::Tensor r = f.tensor(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type());
    EXPECT_EQ(r.sizes().vec(), t.sizes().vec());
    EXPECT_EQ(raw(r), raw(t));  // bit-identical, NaN payload and -0.0 included
  }
  EXPECT_EQ(floats(f.tensor("transposed")), (std::vector<float>{0, 3, 1, 4, 2, 5}));

  // Layout, checked on the raw bytes: header padded with spaces to 8, then exactly the data.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + expected_begin);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  EXPECT_EQ(header.rfind(R"({"__metadata__":{"format":"pt",)", 0), 0u) << header;
}

TEST(SafetensorsWrite, NoMetadataMeansNoMetadataKey) {
  TempDir dir;
  const std::string path = dir.file("plain.safetensors");
  write_safetensors(path, {{"x", at::ones({2})}});
  EXPECT_EQ(read_bytes(path).find("__metadata__"), std::string::npos);
  EXPECT_TRUE(SafetensorsFile(path).metadata().empty());
}

TEST(SafetensorsWrite, OverwriteIsAtomic) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  write_safetensors(path, {{"x", at::full({4}, 1.0f)}});
  SafetensorsFile old_file(path);
  at::Tensor old_x = old_file.tensor("x");

  write_safetensors(path, {{"y", at::full({3}, 2.0f).to(at::kHalf)}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  SafetensorsFile f(path);
  EXPECT_FALSE(f.contains("x"));
  EXPECT_EQ(floats(f.tensor("y")), (std::vector<float>{2.0f, 2.0f, 2.0f}));
  // The file was replaced, not rewritten in place: a view of the old one still reads the old bytes.
  EXPECT_EQ(floats(old_x), (std::vector<float>{1.0f, 1.0f, 1.0f, 1.0f}));
  std::vector<std::string> listing;
  for (const auto& e : fs::directory_iterator(dir.str())) listing.push_back(e.path().filename().string());
  EXPECT_EQ(listing, std::vector<std::string>{"w.safetensors"});
}

TEST(SafetensorsWrite, RejectsBadInputWithoutTouchingTheFile) {
  TempDir dir;
  const std::string path = dir.file("keep.safetensors");
  write_safetensors(path, {{"x", at::full({2}, 5.0f)}});
  const std::string before = read_bytes(path);

  expect_error(error_of([&] { write_safetensors(path, {{"ids", at::arange(3)}}); }), path,
               {"'ids'", "dtype", "Long"});
  expect_error(error_of([&] { write_safetensors(path, {{"d", at::ones({1}, at::kDouble)}}); }), path, {"'d'", "dtype"});
  expect_error(error_of([&] { write_safetensors(path, {{"a", at::ones({1})}, {"a", at::ones({2})}}); }), path,
               {"duplicate", "'a'"});
  expect_error(error_of([&] { write_safetensors(path, {{"__metadata__", at::ones({1})}}); }), path,
               {"__metadata__", "reserved"});
  expect_error(error_of([&] { write_safetensors(path, {{"u", at::Tensor()}}); }), path, {"'u'", "undefined"});
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const std::string nowhere = dir.file("no/such/dir/x.safetensors");
  expect_error(error_of([&] { write_safetensors(nowhere, {{"x", at::ones({1})}}); }), nowhere, {"cannot create"});
}

// ---- checkpoints ---------------------------------------------------------------------------

TEST(SafetensorsCheckpoint, SingleFile) {
  TempDir dir;
  write_bytes(dir.file("model.safetensors"), st_file(pad8(kHandHeader), kF32Data + kF16Data + kBF16Data));
  SafetensorsCheckpoint ck(dir.str());
  EXPECT_EQ(ck.dir(), dir.str());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"b", "h", "w"}));
  EXPECT_EQ(floats(ck.tensor("h")), (std::vector<float>{1.0f, -2.0f, 0.5f}));
  EXPECT_EQ(ck.entry("w").shape, (std::vector<int64_t>{2, 2}));
  expect_error(error_of([&] { ck.tensor("nope"); }), dir.str(), {"'nope'"});
  expect_error(error_of([&] { ck.entry("nope"); }), dir.str(), {"'nope'"});
}

const char* const kShard1 = "model-00001-of-00002.safetensors";
const char* const kShard2 = "model-00002-of-00002.safetensors";

void write_shards(const TempDir& dir) {
  write_bytes(dir.file(kShard1),
              st_file(pad8(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})"),
                      kF32Data));
  write_bytes(dir.file(kShard2), st_file(pad8(R"({"c":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})"), kBF16Data));
}

void write_index(const TempDir& dir, const std::string& weight_map) {
  write_bytes(dir.file("model.safetensors.index.json"),
              R"({"metadata": {"total_size": 20}, "weight_map": )" + weight_map + "}");
}

TEST(SafetensorsCheckpoint, ShardedWithIndex) {
  TempDir dir;
  write_shards(dir);
  write_index(dir, fmt::format(R"({{"a": "{0}", "b": "{0}", "c": "{1}"}})", kShard1, kShard2));
  SafetensorsCheckpoint ck(dir.str());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(ck.contains("c"));
  EXPECT_FALSE(ck.contains("d"));
  EXPECT_EQ(floats(ck.tensor("a")), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(floats(ck.tensor("b")), (std::vector<float>{0.5f, 3.0f}));
  EXPECT_EQ(ck.entry("c").dtype, "BF16");
  EXPECT_EQ(floats(ck.tensor("c")), (std::vector<float>{1.5f, -4.0f}));
  expect_error(error_of([&] { ck.tensor("d"); }), dir.str(), {"'d'"});
}

TEST(SafetensorsCheckpoint, IndexErrors) {
  TempDir dir;
  write_shards(dir);
  const std::string index = dir.file("model.safetensors.index.json");

  write_index(dir, fmt::format(R"({{"a": "{0}", "c": "model-00003-of-00002.safetensors"}})", kShard1));
  expect_error(error_of([&] { SafetensorsCheckpoint ck(dir.str()); }), index,
               {"model-00003-of-00002.safetensors", "does not exist"});

  write_index(dir, fmt::format(R"({{"a": "{0}", "c": "{0}"}})", kShard1));
  expect_error(error_of([&] { SafetensorsCheckpoint ck(dir.str()); }), index, {"'c'", "absent", kShard1});

  write_bytes(index, R"({"metadata": {}})");
  expect_error(error_of([&] { SafetensorsCheckpoint ck(dir.str()); }), index, {"weight_map"});

  write_bytes(index, R"({"weight_map": )");
  expect_error(error_of([&] { SafetensorsCheckpoint ck(dir.str()); }), index, {"JSON"});

  // A corrupt shard is reported by the shard reader, naming the shard.
  write_index(dir, fmt::format(R"({{"a": "{0}"}})", kShard1));
  write_bytes(dir.file(kShard1), "abc");
  expect_error(error_of([&] { SafetensorsCheckpoint ck(dir.str()); }), dir.file(kShard1), {"truncated"});
}

// A downloaded index may name any path: only files inside the checkpoint folder are read, and the
// refusal does not echo another file's bytes.
TEST(SafetensorsCheckpoint, IndexCannotReachOutsideTheFolder) {
  TempDir outer;
  fs::create_directories(outer.file("ck/sub"));
  TempDir dir;  // a stand-in handle for outer/ck: write_shards wants a TempDir
  const std::string ck = outer.file("ck"), index = outer.file("ck/model.safetensors.index.json");
  write_shards(dir);
  fs::copy_file(dir.file(kShard1), outer.file("outside.safetensors"));  // a valid file, but outside
  fs::copy_file(dir.file(kShard1), outer.file("ck/sub/" + std::string(kShard1)));
  fs::copy_file(dir.file(kShard2), outer.file("ck/" + std::string(kShard2)));
  auto index_with = [&](const std::string& a_shard) {
    write_bytes(index, fmt::format(R"({{"weight_map": {{"a": "{}", "c": "{}"}}}})", a_shard, kShard2));
  };
  for (const std::string& bad : std::vector<std::string>{"/etc/passwd", "../outside.safetensors",
                                                        "sub/../../outside.safetensors", outer.file("outside.safetensors")}) {
    index_with(bad);
    const std::string e = error_of([&] { SafetensorsCheckpoint c(ck); });
    expect_error(e, index, {"'a'", "outside the checkpoint folder"});
    EXPECT_EQ(e.find("root:"), std::string::npos) << e;
  }
  index_with(std::string("sub/") + kShard1);  // a subfolder is inside
  SafetensorsCheckpoint c(ck);
  EXPECT_EQ(floats(c.tensor("a")), (std::vector<float>{1.0f, -2.5f}));
}

TEST(SafetensorsCheckpoint, NeitherLayout) {
  TempDir dir;
  write_bytes(dir.file("pytorch_model.bin"), "not ours");
  expect_error(error_of([&] { SafetensorsCheckpoint ck(dir.str()); }), dir.str(),
               {"model.safetensors", "model.safetensors.index.json"});
  const std::string missing = dir.file("no_such_dir");
  expect_error(error_of([&] { SafetensorsCheckpoint ck(missing); }), missing, {"model.safetensors"});
}

}  // namespace
}  // namespace kvlab
