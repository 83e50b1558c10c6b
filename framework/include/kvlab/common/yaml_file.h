#pragma once
// Checks on YAML files that yaml-cpp lets pass: a key written twice in one map (yaml-cpp keeps both
// and a lookup silently takes the first) is an error naming file:line of both.
#include <string>

namespace kvlab {

// Throws kvlab::Error "<path>:<line>: key '<k>' appears twice in one map (first at line <n>)" for
// the first duplicate scalar key; reads the file again with yaml-cpp's event parser (aliases are
// not expanded, so shared or self-referencing anchors cost nothing). Syntax errors are left to the
// caller's own load.
void refuse_duplicate_yaml_keys(const std::string& path);

}  // namespace kvlab
