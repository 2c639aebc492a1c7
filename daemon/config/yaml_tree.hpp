// A config's YAML as a light tree of nodes with their positions, built from yaml-cpp's parser events: a
// few dozen bytes a node where YAML::Load takes hundreds, and a cap on the node count that refuses a
// huge document as it is read, before its tree has grown.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <yaml-cpp/mark.h>

namespace spliced::config::yaml {

struct node_data;

// A handle on one node of a document (valid while the document lives); the names follow YAML::Node's.
class node {
public:
    node() = default;
    explicit node(const node_data* d) : d_(d) {}
    explicit operator bool() const { return d_ != nullptr; }
    bool IsNull() const;
    bool IsScalar() const;
    bool IsSequence() const;
    bool IsMap() const;
    YAML::Mark Mark() const;
    const std::string& Scalar() const;  // empty unless a scalar
    std::size_t size() const;           // items of a list, entries of a mapping
    node operator[](std::size_t i) const;  // item i of a list
    using entry = std::pair<node, node>;   // a mapping's key and value
    std::vector<entry>::const_iterator begin() const;
    std::vector<entry>::const_iterator end() const;

private:
    const node_data* d_ = nullptr;
};

struct node_data {
    enum class kind : unsigned char { null, scalar, sequence, map } type = kind::null;
    YAML::Mark mark;
    std::string scalar;
    std::vector<node> items;                 // a list's
    std::vector<node::entry> entries;        // a mapping's, in document order
};

// One parsed document: its nodes and the root.
class document {
public:
    node root() const { return root_; }

private:
    friend class builder;
    std::deque<node_data> nodes_;
    node root_;
};

// Thrown once a text has more than the nodes it may have; `at` is the first node past the cap.
struct too_many_nodes {
    YAML::Mark at;
};

struct parsed {
    document first;                     // the first document (its root is null when the text has none)
    std::optional<YAML::Mark> second;   // where a second document starts, if there is one
};

// Parses the first document of `text`, and whether a second one follows. Throws YAML::Exception on a
// syntax error and too_many_nodes past `max_nodes` nodes (both documents counted).
parsed parse(std::string_view text, std::size_t max_nodes);

}  // namespace spliced::config::yaml
