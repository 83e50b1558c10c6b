#pragma once
// Build a folder once, safely when several processes (shards) want it at the same time: the first
// takes a lock beside the target and builds in its own staging folder, renamed into place when
// complete; the others wait for the lock and find the folder built. A reader never sees a half-built
// folder, and staging folders left by a killed build are removed by the next one.
#include <functional>
#include <string>

namespace kvlab {

// Returns final_dir, building it with build(staging_dir) when it does not exist yet.
std::string build_once(const std::string& final_dir, const std::function<void(const std::string&)>& build);

}  // namespace kvlab
