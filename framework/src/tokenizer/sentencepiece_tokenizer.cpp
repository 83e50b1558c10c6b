#include "kvlab/tokenizer/sentencepiece_tokenizer.h"

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/tokenizer/sentencepiece_library.h"

namespace kvlab {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path) : path_(path) {
  if (!std::filesystem::exists(path)) fail("{}: tokenizer file not found", path);
  check_input_file(path, "SentencePiece model", kMaxTokenizerFileBytes);
  char err[512] = {0};
  handle_ = SentencePieceLibrary::get().load(path.c_str(), err, sizeof err);
  if (handle_ == nullptr) fail("{}: not a valid SentencePiece model ({})", path, err);
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (handle_ != nullptr) SentencePieceLibrary::get().destroy(handle_);
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special) const {
  const auto& lib = SentencePieceLibrary::get();
  int* ids = nullptr;
  size_t count = 0;
  char err[512] = {0};
  if (lib.encode(handle_, text.data(), text.size(), &ids, &count, err, sizeof err) != 0)
    fail("{}: encode failed: {}", path_, err);
  std::vector<int32_t> out;
  out.reserve(count + 1);
  if (add_special && lib.bos_id(handle_) >= 0) out.push_back(lib.bos_id(handle_));
  out.insert(out.end(), ids, ids + count);
  lib.free(ids);
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const auto& lib = SentencePieceLibrary::get();
  std::vector<int> in;
  in.reserve(ids.size());
  const int n = lib.piece_size(handle_);
  for (int32_t id : ids) {
    if (id < 0 || id >= n) fail("{}: token id {} out of range [0, {})", path_, id, n);
    if (skip_special && lib.is_control(handle_, id)) continue;
    in.push_back(id);
  }
  char* text = nullptr;
  size_t len = 0;
  char err[512] = {0};
  if (lib.decode(handle_, in.data(), in.size(), &text, &len, err, sizeof err) != 0)
    fail("{}: decode failed: {}", path_, err);
  std::string out(text, len);
  lib.free(text);
  return out;
}

int32_t SentencePieceTokenizer::vocab_size() const { return SentencePieceLibrary::get().piece_size(handle_); }

std::optional<int32_t> SentencePieceTokenizer::bos_id() const {
  const int id = SentencePieceLibrary::get().bos_id(handle_);
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

std::optional<int32_t> SentencePieceTokenizer::eos_id() const {
  const int id = SentencePieceLibrary::get().eos_id(handle_);
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

namespace {

// Trains with `input` and `prefix` as they are (neither may hold white space or a ',').
void train_at(const std::string& input, const std::string& prefix, int vocab_size, const std::string& text_path) {
  // Llama conventions: BPE with byte fallback, digits split, no normalization, <unk>=0 <s>=1 </s>=2.
  const std::string args =
      "--input=" + input + " --model_prefix=" + prefix + " --model_type=bpe" +
      " --vocab_size=" + std::to_string(vocab_size) +
      " --byte_fallback=true --hard_vocab_limit=false --character_coverage=0.9995"
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=2 --minloglevel=2"
      " --split_digits=true --allow_whitespace_only_pieces=true --remove_extra_whitespaces=false"
      " --normalization_rule_name=identity";
  char err[512] = {0};
  if (SentencePieceLibrary::get().train(args.c_str(), err, sizeof err) != 0)
    fail("{}: tokenizer training failed: {}", text_path, err);
}

bool trainer_safe(const std::string& path) { return path.find_first_of(" \t\n\r\f\v,") == std::string::npos; }

}  // namespace

void train_sentencepiece(const std::string& text_path, const std::string& out_prefix, int vocab_size) {
  namespace fs = std::filesystem;
  if (!fs::exists(text_path)) fail("{}: tokenizer training text not found", text_path);
  if (vocab_size < 300) fail("tokenizer vocab size {} too small: byte fallback alone needs 259", vocab_size);
  if (trainer_safe(text_path) && trainer_safe(out_prefix)) return train_at(text_path, out_prefix, vocab_size, text_path);
  // SentencePiece takes its options as one string split at white space (and --input at commas): it
  // trains in a fresh temporary folder under names of its own, the text linked in, and the model is
  // copied out. (The model records the paths it was trained with; only these get the temporary ones.)
  std::string tmpl = (fs::temp_directory_path() / "kvlab_spm_XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) fail("{}: cannot create a temporary folder for tokenizer training", tmpl);
  const fs::path work = tmpl;
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{work};
  if (!trainer_safe(work.string()))
    fail("{}: the temporary folder (TMPDIR) holds white space or a ',', which SentencePiece's trainer cannot take",
         work.string());
  fs::create_symlink(fs::absolute(text_path), work / "input.txt");
  train_at((work / "input.txt").string(), (work / "tokenizer").string(), vocab_size, text_path);
  for (const char* ext : {".model", ".vocab"})
    fs::copy_file(work / (std::string("tokenizer") + ext), out_prefix + ext, fs::copy_options::overwrite_existing);
}

}  // namespace kvlab
