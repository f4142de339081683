// rrloader/chunk/entity_path.h — entity path helpers shared by the layers above chunk.
// Paths are Rerun's: "/" is the root, parts are separated by '/', empty parts are ignored.
// Stateless functions; thread-safe.
#pragma once

#include <string>
#include <vector>

namespace rrl::chunk {

// EntityPathParts: "/a/b" -> {"a", "b"}; "/" -> {}. Comparing parts (rather than the
// strings) orders "/a/b" after "/a" and before "/a_", as Rerun orders entity paths.
[[nodiscard]] std::vector<std::string> EntityPathParts(const std::string& path);

// StrictAncestors: "/a/b/c" -> {"/a/b", "/a", "/"}, nearest first; "/" -> {}.
[[nodiscard]] std::vector<std::string> StrictAncestors(const std::string& path);

}  // namespace rrl::chunk
