#pragma once
// GPT-2's bytes_to_unicode: byte-level BPE vocabularies spell every byte as one printable
// character, so that tokens are readable text in tokenizer.json. Bytes printable in Latin-1
// (!..~, ¡..¬, ®..ÿ) stand for themselves; the other 68 map, in byte order, to U+0100 onwards.
// Private to framework/src.
#include <string>
#include <string_view>

namespace kvlab::bpe {

// The raw bytes a token spells in the byte-level alphabet; false (and *bytes unspecified) if
// the token has a character outside the alphabet, as added tokens such as "<|im_start|>" may.
bool byte_level_to_bytes(std::string_view token, std::string* bytes);

// The byte-level spelling of raw bytes.
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace kvlab::bpe
