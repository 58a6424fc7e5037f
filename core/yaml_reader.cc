// Strict YAML mapping reader: see yaml_reader.h.
#include "core/yaml_reader.h"

#include <fstream>
#include <sstream>

namespace loom::core {

Result<YAML::Node> load_yaml_string(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return error(ErrorCode::kParse, "{}:{}:{}: YAML syntax error: {}", origin, e.mark.line + 1,
                 e.mark.column + 1, e.msg);
  } catch (const YAML::Exception& e) {
    return error(ErrorCode::kParse, "{}: YAML error: {}", origin, e.what());
  }
}

Result<YAML::Node> load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return error(ErrorCode::kNotFound, "cannot open '{}': no such file or not readable", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return load_yaml_string(buffer.str(), path);
}

std::string describe_yaml_value(const YAML::Node& node) {
  if (!node || node.IsNull()) return "null";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  return "a mapping";
}

YamlReader::YamlReader(YAML::Node node, std::string file, std::string prefix)
    : node_(std::move(node)), file_(std::move(file)), prefix_(std::move(prefix)) {
  if (!node_ || node_.IsNull()) {
    node_ = YAML::Node(YAML::NodeType::Map);
  } else if (!node_.IsMap()) {
    status_ = error(ErrorCode::kInvalidArgument, "{}:{}: {} must be a mapping of key: value, got {}",
                    file_, node_.Mark().line + 1, prefix_.empty() ? "the document" : "'" + prefix_ + "'",
                    describe_yaml_value(node_));
  }
}

std::string YamlReader::field_name(const std::string& key) const {
  return prefix_.empty() ? key : prefix_ + "." + key;
}

std::string YamlReader::where(const std::string& key) const {
  int line = node_.Mark().line;
  for (const auto& kv : node_) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) {
      line = kv.second.Mark().line >= 0 ? kv.second.Mark().line : kv.first.Mark().line;
      break;
    }
  }
  if (line < 0) return fmt::format("{}: field '{}'", file_, field_name(key));
  return fmt::format("{}:{}: field '{}'", file_, line + 1, field_name(key));
}

bool YamlReader::has(const std::string& key) const {
  if (!status_.ok()) return false;
  YAML::Node v = node_[key];
  return v && !v.IsNull();
}

YAML::Node YamlReader::lookup(const std::string& key, bool required, Status* status) {
  if (!status_.ok()) {
    *status = status_;
    return YAML::Node();
  }
  consumed_.insert(key);
  YAML::Node v = node_[key];
  if (!v || v.IsNull()) {
    if (required) {
      *status = error(ErrorCode::kInvalidArgument, "{}: missing required field '{}'", file_,
                      field_name(key));
    }
    return YAML::Node();
  }
  return v;
}

Result<YAML::Node> YamlReader::required_node(const std::string& key) {
  Status st;
  YAML::Node v = lookup(key, /*required=*/true, &st);
  if (!st.ok()) return st;
  return v;
}

YamlReader YamlReader::child(const std::string& key, bool required) {
  Status st;
  YAML::Node v = lookup(key, required, &st);
  YamlReader reader(v, file_, field_name(key));
  if (!st.ok()) reader.status_ = st;
  return reader;
}

Status YamlReader::finish() const {
  if (!status_.ok()) return status_;
  for (const auto& kv : node_) {
    const std::string key = kv.first.Scalar();
    if (consumed_.count(key)) continue;
    std::string allowed;
    for (const auto& k : consumed_) allowed += (allowed.empty() ? "" : ", ") + k;
    return error(ErrorCode::kInvalidArgument, "{}:{}: unknown key '{}'{} (allowed: {})", file_,
                 kv.first.Mark().line + 1, key,
                 prefix_.empty() ? "" : " in '" + prefix_ + "'", allowed);
  }
  return ok_status();
}

}  // namespace loom::core
