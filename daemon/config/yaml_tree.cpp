// A config's YAML as a light tree of nodes with their positions, built from yaml-cpp's parser events.
#include "config/yaml_tree.hpp"

#include <map>
#include <sstream>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

namespace spliced::config::yaml {

namespace {

const std::string no_text;
const std::vector<node::entry> no_entries;

}  // namespace

bool node::IsNull() const { return !d_ || d_->type == node_data::kind::null; }
bool node::IsScalar() const { return d_ && d_->type == node_data::kind::scalar; }
bool node::IsSequence() const { return d_ && d_->type == node_data::kind::sequence; }
bool node::IsMap() const { return d_ && d_->type == node_data::kind::map; }
YAML::Mark node::Mark() const { return d_ ? d_->mark : YAML::Mark::null_mark(); }
const std::string& node::Scalar() const { return IsScalar() ? d_->scalar : no_text; }
std::size_t node::size() const { return !d_ ? 0 : IsMap() ? d_->entries.size() : d_->items.size(); }
node node::operator[](std::size_t i) const { return IsSequence() && i < d_->items.size() ? d_->items[i] : node(); }
std::vector<node::entry>::const_iterator node::begin() const { return (IsMap() ? d_->entries : no_entries).begin(); }
std::vector<node::entry>::const_iterator node::end() const { return (IsMap() ? d_->entries : no_entries).end(); }

// Builds the tree of the first document from the parser's events; counts the nodes of every document.
class builder : public YAML::EventHandler {
public:
    builder(document& doc, std::size_t max_nodes) : doc_(doc), max_nodes_(max_nodes) {}
    bool in_first = true;  // false from the second document on: counted, not built
    YAML::Mark started;    // where the latest document starts

    void OnDocumentStart(const YAML::Mark& m) override {
        started = m;
        first_node_ = true;
    }
    void OnDocumentEnd() override { in_first = false; }
    void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override { add(make(node_data::kind::null, m), anchor); }
    void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
        count(m);
        if (!in_first) return;
        auto it = anchors_.find(anchor);
        attach(it != anchors_.end() ? it->second : make(node_data::kind::null, m));
    }
    void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor, const std::string& value) override {
        node_data* d = make(node_data::kind::scalar, m);
        if (d) d->scalar = value;
        add(d, anchor);
    }
    void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                         YAML::EmitterStyle::value) override {
        open(make(node_data::kind::sequence, m), anchor);
    }
    void OnSequenceEnd() override { close(); }
    void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
        open(make(node_data::kind::map, m), anchor);
    }
    void OnMapEnd() override { close(); }

private:
    struct open_collection {
        node_data* data;
        node key;  // a mapping's key waiting for its value
        bool has_key = false;
    };

    void count(const YAML::Mark& m) {
        if (first_node_) started = m;
        first_node_ = false;
        if (++nodes_ > max_nodes_) throw too_many_nodes{m};
    }
    // A new node of the first document (counted in any); null past the first.
    node_data* make(node_data::kind k, const YAML::Mark& m) {
        count(m);
        if (!in_first) return nullptr;
        auto& d = doc_.nodes_.emplace_back();
        d.type = k;
        d.mark = m;
        return &d;
    }
    void add(node_data* d, YAML::anchor_t anchor) {
        if (!d) return;
        if (anchor) anchors_[anchor] = d;
        attach(d);
    }
    void attach(const node_data* d) {
        const node n(d);
        if (open_.empty()) {
            doc_.root_ = n;
            return;
        }
        auto& top = open_.back();
        if (top.data->type == node_data::kind::sequence) {
            top.data->items.push_back(n);
        } else if (!top.has_key) {
            top.key = n;
            top.has_key = true;
        } else {
            top.data->entries.emplace_back(top.key, n);
            top.has_key = false;
        }
    }
    void open(node_data* d, YAML::anchor_t anchor) {
        if (!d) {
            ++closed_depth_;
            return;
        }
        add(d, anchor);
        open_.push_back({d, {}, false});
    }
    void close() {
        if (closed_depth_ > 0) --closed_depth_;
        else if (!open_.empty()) open_.pop_back();
    }

    document& doc_;
    std::size_t max_nodes_;
    std::size_t nodes_ = 0;
    bool first_node_ = true;
    unsigned closed_depth_ = 0;  // collections open past the first document
    std::vector<open_collection> open_;
    std::map<YAML::anchor_t, const node_data*> anchors_;
};

parsed parse(std::string_view text, std::size_t max_nodes) {
    parsed out;
    std::istringstream in{std::string(text)};
    YAML::Parser parser(in);
    builder b(out.first, max_nodes);
    if (parser.HandleNextDocument(b) && parser.HandleNextDocument(b)) out.second = b.started;
    return out;
}

}  // namespace spliced::config::yaml
