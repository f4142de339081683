#include "rrloader/chunk/entity_path.h"

namespace rrl::chunk {

std::vector<std::string> EntityPathParts(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 1;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

std::vector<std::string> StrictAncestors(const std::string& path) {
  std::vector<std::string> out;
  std::string p = path;
  while (p.size() > 1) {
    auto slash = p.rfind('/');
    if (slash == std::string::npos) break;
    p = slash == 0 ? "/" : p.substr(0, slash);
    out.push_back(p);
  }
  return out;
}

}  // namespace rrl::chunk
