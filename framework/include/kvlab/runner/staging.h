#pragma once
// Build a folder once, safely when several processes (shards) want it at the same time: each builds
// in its own staging folder beside the target and renames it into place; the first rename wins and
// the others discard theirs. A reader never sees a half-built folder.
#include <functional>
#include <string>

namespace kvlab {

// Returns final_dir, building it with build(staging_dir) when it does not exist yet.
std::string build_once(const std::string& final_dir, const std::function<void(const std::string&)>& build);

}  // namespace kvlab
