// Passkey and needle-in-a-haystack prompts (kvlab/eval/passkey.h). The texts are the project's own.
#include <algorithm>
#include <cmath>
#include <random>

#include "kvlab/common/error.h"
#include "kvlab/eval/passkey.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {
namespace {

const char* const kPasskeyIntro =
    "There is a pass key hidden inside a lot of irrelevant text. Find it and remember it: you will be asked for "
    "it at the end.";
// Filler sentences, repeated in turn; the needle goes at a sentence boundary.
const std::vector<std::string> kPasskeyFiller = {"The hills are quiet.", "The river keeps running.",
                                                 "The day is long.", "The road goes on."};

const char* const kNeedleIntro =
    "Read the text below carefully. One sentence in it states a secret number, and you will be asked for that "
    "number at the end.";
const char* const kBuiltinHaystack =
    "The harbour town woke early, long before the fishing boats came back with the tide. Bakers opened their "
    "shutters while the street lamps were still lit. A cart loaded with apples rolled slowly towards the market "
    "square. Children ran along the sea wall, counting the gulls that circled above the pier. In the old library "
    "the clocks ticked in the silence, and a cat slept on the warm stones of the window sill. By noon the wind "
    "had turned, carrying the smell of salt and tar through the narrow lanes. Travellers rested at the inn and "
    "spoke of the mountain roads, the rivers they had crossed and the cities still ahead of them. When evening "
    "came, the lighthouse keeper climbed the spiral stairs and lit the great lamp once more.";
const std::vector<std::string> kThings = {"silver lighthouse", "green lantern", "old harbour", "copper kettle",
                                          "northern bridge",   "quiet library", "red balloon", "stone tower",
                                          "winter garden",     "blue violin"};

// Pieces tokenized alone must read as words separated by spaces when concatenated. SentencePiece
// (and llama2.c) prepend a space to every encoded text; byte-level BPE does not, so the piece gets one.
class Pieces {
 public:
  explicit Pieces(const Tokenizer& tok) : tok_(tok) {
    auto a = tok.encode("a", false);
    const auto b = tok.encode("b", false);
    a.insert(a.end(), b.begin(), b.end());
    spaced_ = tok.decode(a, true) == "a b";
  }
  std::vector<int32_t> encode(const std::string& text) const { return tok_.encode(spaced_ ? text : " " + text, false); }

 private:
  const Tokenizer& tok_;
  bool spaced_;
};

std::mt19937_64 sample_rng(SyntheticKind kind, uint64_t seed, int64_t index) {
  const auto i = static_cast<uint64_t>(index);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(i),
                    static_cast<uint32_t>(i >> 32), static_cast<uint32_t>(kind)};
  return std::mt19937_64(seq);
}

// A number of exactly `digits` digits (raw generator output, so the same on every standard library).
std::string random_number(std::mt19937_64& rng, int64_t digits) {
  if (digits < 1 || digits > 18) fail("synthetic task: digits must be in 1..18, got {}", digits);
  uint64_t lo = 1;
  for (int64_t d = 1; d < digits; ++d) lo *= 10;
  const uint64_t span = lo * 9;  // [lo, 10 * lo)
  return std::to_string(lo + rng() % span);
}

std::vector<int32_t> concat(std::initializer_list<const std::vector<int32_t>*> parts) {
  std::vector<int32_t> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

// Filler budget: what is left of context_length after the fixed pieces.
int64_t filler_budget(const SyntheticOptions& o, SyntheticKind kind, size_t fixed) {
  const int64_t f = o.context_length - static_cast<int64_t>(fixed);
  if (f < 0)
    fail("{}: context_length {} is too short: the intro, needle and question alone take {} tokens",
         synthetic_kind_name(kind), o.context_length, fixed);
  if (o.depth < 0 || o.depth > 1) fail("{}: depth must be in [0, 1], got {}", synthetic_kind_name(kind), o.depth);
  return f;
}

SyntheticSample assemble(const std::vector<int32_t>& prefix, const std::vector<int32_t>& filler, int64_t at,
                         const std::vector<int32_t>& needle, const std::vector<int32_t>& question, std::string answer) {
  SyntheticSample s;
  const std::vector<int32_t> before(filler.begin(), filler.begin() + at), after(filler.begin() + at, filler.end());
  s.ids = concat({&prefix, &before, &needle, &after, &question});
  s.answer = std::move(answer);
  s.needle_position = static_cast<int64_t>(prefix.size()) + at;
  s.needle_tokens = static_cast<int64_t>(needle.size());
  s.filler_tokens = static_cast<int64_t>(filler.size());
  s.depth = filler.empty() ? 0.0 : static_cast<double>(at) / static_cast<double>(filler.size());
  return s;
}

SyntheticSample passkey_sample(const Tokenizer& tok, const SyntheticOptions& o, int64_t index) {
  auto rng = sample_rng(SyntheticKind::Passkey, o.seed, index);
  const std::string key = random_number(rng, o.digits);
  const Pieces pieces(tok);
  const auto prefix = tok.encode(kPasskeyIntro, /*add_special=*/true);
  const auto needle = pieces.encode("The pass key is " + key + ". Remember it. " + key + " is the pass key.");
  const auto question = pieces.encode("What is the pass key? The pass key is");
  const int64_t f = filler_budget(o, SyntheticKind::Passkey, prefix.size() + needle.size() + question.size());

  std::vector<std::vector<int32_t>> sentences;
  for (const auto& s : kPasskeyFiller) sentences.push_back(pieces.encode(s));
  std::vector<int32_t> filler;
  std::vector<int64_t> boundaries = {0};  // token offsets where a filler sentence starts (or the filler ends)
  for (size_t k = 0; static_cast<int64_t>(filler.size()) < f; ++k) {
    const auto& s = sentences[k % sentences.size()];
    filler.insert(filler.end(), s.begin(), s.end());
    boundaries.push_back(std::min(f, static_cast<int64_t>(filler.size())));
  }
  filler.resize(static_cast<size_t>(f));
  // The needle goes at the sentence boundary nearest to the requested depth (the earlier on a tie).
  const double target = o.depth * static_cast<double>(f);
  int64_t at = 0;
  for (int64_t b : boundaries)
    if (std::abs(static_cast<double>(b) - target) < std::abs(static_cast<double>(at) - target)) at = b;
  return assemble(prefix, filler, at, needle, question, key);
}

SyntheticSample needle_sample(const Tokenizer& tok, const SyntheticOptions& o, int64_t index) {
  auto rng = sample_rng(SyntheticKind::Needle, o.seed, index);
  const std::string thing = kThings[rng() % kThings.size()];
  const std::string value = random_number(rng, o.digits + 2);
  const Pieces pieces(tok);
  const auto prefix = tok.encode(kNeedleIntro, /*add_special=*/true);
  const auto needle = pieces.encode("The secret number of the " + thing + " is " + value + ".");
  const auto question =
      pieces.encode("What is the secret number of the " + thing + "? The secret number of the " + thing + " is");
  const int64_t f = filler_budget(o, SyntheticKind::Needle, prefix.size() + needle.size() + question.size());

  // The haystack from a seeded offset (the start of a sentence), wrapping around, tokenized in one piece.
  const std::string text = o.haystack.empty() ? kBuiltinHaystack : o.haystack;
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) fail("needle: the haystack text is empty");
  size_t start = static_cast<size_t>(rng() % text.size());
  const size_t sentence = text.find(". ", start);
  start = sentence == std::string::npos ? 0 : sentence + 2;
  std::vector<int32_t> filler;
  for (size_t chars = static_cast<size_t>(f) * 8 + 256; static_cast<int64_t>(filler.size()) < f; chars *= 2) {
    std::string window;
    for (size_t pos = start; window.size() < chars; pos = 0) window += text.substr(pos, chars - window.size()) + " ";
    filler = pieces.encode(window);
  }
  filler.resize(static_cast<size_t>(f));
  // The needle goes after the last sentence end at or before the requested depth (within 64 tokens).
  const int64_t target = std::llround(o.depth * static_cast<double>(f));
  int64_t at = target;
  for (int64_t q = target; q > 0 && q >= target - 64; --q) {
    const std::string piece = tok.decode({filler[static_cast<size_t>(q - 1)]}, true);
    if (!piece.empty() && piece.back() == '.') {
      at = q;
      break;
    }
  }
  return assemble(prefix, filler, at, needle, question, value);
}

}  // namespace

std::string synthetic_kind_name(SyntheticKind k) { return k == SyntheticKind::Passkey ? "passkey" : "needle"; }

SyntheticSample make_synthetic_sample(SyntheticKind kind, const Tokenizer& tok, const SyntheticOptions& o,
                                      int64_t index) {
  return kind == SyntheticKind::Passkey ? passkey_sample(tok, o, index) : needle_sample(tok, o, index);
}

bool synthetic_match(const std::string& generated, const std::string& answer) {
  const size_t b = generated.find_first_of("0123456789");
  if (b == std::string::npos) return false;
  const size_t e = generated.find_first_not_of("0123456789", b);
  return generated.substr(b, e == std::string::npos ? std::string::npos : e - b) == answer;
}

}  // namespace kvlab
