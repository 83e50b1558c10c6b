#pragma once
// Checks on YAML files that yaml-cpp lets pass: a key written twice in one map (yaml-cpp keeps both
// and a lookup silently takes the first) is an error naming file:line of both; so is a key that is
// a map or a list.
#include <string>

namespace kvlab {

// Throws kvlab::Error "<path>:<line>: key '<k>' appears twice in one map (first at line <n>)" for
// the first duplicate scalar key, and "<path>:<line>: a key is a map; keys must be plain names" for a
// map, list or alias of one in key position; reads the file again with yaml-cpp's event parser (aliases are
// not expanded, so shared or self-referencing anchors cost nothing). Syntax errors are left to the
// caller's own load.
void refuse_duplicate_yaml_keys(const std::string& path);

}  // namespace kvlab
