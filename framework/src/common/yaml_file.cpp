#include "kvlab/common/yaml_file.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <fstream>
#include <map>
#include <set>
#include <vector>

#include "kvlab/common/error.h"

namespace kvlab {
namespace {

// Follows the event stream with a stack of open collections; in a map, nodes alternate key, value.
class DuplicateKeyFinder : public YAML::EventHandler {
 public:
  explicit DuplicateKeyFinder(const std::string& path) : path_(path) {}

  void OnDocumentStart(const YAML::Mark&) override { open_.clear(); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { node(mark, nullptr); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (collection_anchors_.count(anchor)) refuse_collection_key(mark, "an alias of a map or list");
    node(mark, nullptr);
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string& value) override {
    node(mark, &value);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    refuse_collection_key(mark, "a list");
    node(mark, nullptr);
    if (anchor != YAML::NullAnchor) collection_anchors_.insert(anchor);
    open_.push_back({false, true, {}});
  }
  void OnSequenceEnd() override { open_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    refuse_collection_key(mark, "a map");
    node(mark, nullptr);
    if (anchor != YAML::NullAnchor) collection_anchors_.insert(anchor);
    open_.push_back({true, true, {}});
  }
  void OnMapEnd() override { open_.pop_back(); }

 private:
  struct Collection {
    bool is_map;
    bool expect_key;                    // maps: the next node is a key
    std::map<std::string, int> keys;    // scalar key -> its line (1-based)
  };

  // Every key kvlab reads is a name: a map or list in key position (`? [a, b]: 1`, `{a: 1}: 2`)
  // would otherwise surface as yaml-cpp's bare "bad conversion" far from the file.
  void refuse_collection_key(const YAML::Mark& mark, const char* what) const {
    if (!open_.empty() && open_.back().is_map && open_.back().expect_key)
      fail("{}:{}: a key is {}; keys must be plain names", path_, mark.line + 1, what);
  }

  // A node starts; `scalar` is its text when it is a scalar.
  void node(const YAML::Mark& mark, const std::string* scalar) {
    if (open_.empty() || !open_.back().is_map) return;
    Collection& map = open_.back();
    if (map.expect_key && scalar) {
      const auto [it, fresh] = map.keys.emplace(*scalar, mark.line + 1);
      if (!fresh)
        fail("{}:{}: key '{}' appears twice in one map (first at line {}); remove one", path_, mark.line + 1, *scalar,
             it->second);
    }
    map.expect_key = !map.expect_key;
  }

  std::string path_;
  std::vector<Collection> open_;
  std::set<YAML::anchor_t> collection_anchors_;
};

}  // namespace

void refuse_duplicate_yaml_keys(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return;  // the caller's load reports an unreadable file
  DuplicateKeyFinder finder(path);
  try {
    // The first document only: it is the one YAML::LoadFile returns. (yaml-cpp 0.7's parser also
    // reports "another document" forever after a stray ',' at the top level, without advancing.)
    YAML::Parser parser(in);
    parser.HandleNextDocument(finder);
  } catch (const YAML::Exception&) {
    // A syntax error: the caller's own load reports it with its position.
  }
}

}  // namespace kvlab
