// Strict reading of YAML mappings into structs. Every key a reader does not consume is an
// error naming the file, the line and the allowed keys, so a typo ("hiden_size") never
// silently falls back to a default. Used for model presets, cluster profiles and layouts;
// tested in tests/core/yaml_reader_test.cc.
//
//   LOOM_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_file(path));
//   YamlReader r(root, path);
//   LOOM_RETURN_IF_ERROR(r.required("num_layers", spec.num_layers));
//   LOOM_RETURN_IF_ERROR(r.optional("norm_eps", spec.norm_eps));
//   LOOM_RETURN_IF_ERROR(r.finish());
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/status.h"

namespace loom::core {

// Parses a file; a syntax error names file:line:column.
Result<YAML::Node> load_yaml_file(const std::string& path);
// Parses text (for tests and inline specs); `origin` names it in messages.
Result<YAML::Node> load_yaml_string(const std::string& text, const std::string& origin);

class YamlReader {
 public:
  // `node` must be a mapping; `prefix` is the dotted path of the node ("gpu") for messages.
  YamlReader(YAML::Node node, std::string file, std::string prefix = "");

  // A mapping node that is missing or not a map makes every call fail with this status.
  const Status& status() const { return status_; }

  // Reads `key` into `out` (int, int64_t, double, bool, std::string, std::vector<int>, ...).
  // optional(): a missing key or an explicit null keeps `out` unchanged.
  template <typename T>
  Status required(const std::string& key, T& out) { return read(key, out, /*required=*/true); }
  template <typename T>
  Status optional(const std::string& key, T& out) { return read(key, out, /*required=*/false); }

  // Reads a string and converts it with `parse`, which returns the allowed values on failure.
  template <typename E>
  Status enum_field(const std::string& key, E& out, bool required,
                    Result<E> (*parse)(const std::string&));

  bool has(const std::string& key) const;
  // A sub-document another loader reads (e.g. a plan's embedded model); marked consumed.
  core::Result<YAML::Node> required_node(const std::string& key);
  // A nested mapping; missing + !required gives a reader over an empty map.
  YamlReader child(const std::string& key, bool required);

  // Fails when a key was present that no call consumed.
  Status finish() const;

  std::string where(const std::string& key) const;  // "file:line: field 'prefix.key'"
  const std::string& file() const { return file_; }

 private:
  template <typename T>
  Status read(const std::string& key, T& out, bool required);
  YAML::Node lookup(const std::string& key, bool required, Status* status);
  std::string field_name(const std::string& key) const;

  YAML::Node node_;
  std::string file_;
  std::string prefix_;
  Status status_;
  std::set<std::string> consumed_;
};

std::string describe_yaml_value(const YAML::Node& node);

template <typename T>
Status YamlReader::read(const std::string& key, T& out, bool required) {
  Status st;
  YAML::Node value = lookup(key, required, &st);
  if (!st.ok() || !value || value.IsNull()) return st;
  try {
    out = value.as<T>();
  } catch (const YAML::Exception&) {
    std::string expected;
    if constexpr (std::is_same_v<T, bool>) expected = "true or false";
    else if constexpr (std::is_integral_v<T>) expected = "an integer";
    else if constexpr (std::is_floating_point_v<T>) expected = "a number";
    else if constexpr (std::is_same_v<T, std::string>) expected = "a string";
    else expected = "a list of integers";
    return error(ErrorCode::kInvalidArgument, "{}: value {} is not {}", where(key),
                 describe_yaml_value(value), expected);
  }
  return ok_status();
}

template <typename E>
Status YamlReader::enum_field(const std::string& key, E& out, bool required,
                              Result<E> (*parse)(const std::string&)) {
  std::string text;
  Status st;
  YAML::Node value = lookup(key, required, &st);
  if (!st.ok() || !value || value.IsNull()) return st;
  if (!value.IsScalar()) {
    return error(ErrorCode::kInvalidArgument, "{}: expected a name, got {}", where(key),
                 describe_yaml_value(value));
  }
  Result<E> parsed = parse(value.Scalar());
  if (!parsed.ok()) return parsed.status().with_context(where(key));
  out = *parsed;
  return ok_status();
}

}  // namespace loom::core
