// Strict YAML reading: unknown keys, wrong types and syntax errors are reported with the
// file, the line and the field.
#include "core/yaml_reader.h"

#include <gtest/gtest.h>

namespace loom::core {
namespace {

TEST(YamlReader, ReadsFieldsAndKeepsDefaultsForMissingOrNull) {
  auto node = load_yaml_string("a: 3\nb: null\nc: hello\n", "test.yaml");
  ASSERT_TRUE(node.ok());
  YamlReader r(*node, "test.yaml");
  int64_t a = 0, b = 7, d = 9;
  std::string c;
  EXPECT_TRUE(r.required("a", a).ok());
  EXPECT_TRUE(r.optional("b", b).ok());
  EXPECT_TRUE(r.optional("c", c).ok());
  EXPECT_TRUE(r.optional("d", d).ok());
  EXPECT_TRUE(r.finish().ok());
  EXPECT_EQ(a, 3);
  EXPECT_EQ(b, 7);
  EXPECT_EQ(c, "hello");
  EXPECT_EQ(d, 9);
}

TEST(YamlReader, UnknownKeyNamesKeyFileLineAndAllowedKeys) {
  auto node = load_yaml_string("num_layers: 2\nhiden_size: 64\n", "models/x.yaml");
  ASSERT_TRUE(node.ok());
  YamlReader r(*node, "models/x.yaml");
  int64_t layers = 0, hidden = 0;
  ASSERT_TRUE(r.required("num_layers", layers).ok());
  ASSERT_TRUE(r.optional("hidden_size", hidden).ok());
  const Status st = r.finish();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("models/x.yaml:2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("unknown key 'hiden_size'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("hidden_size"), std::string::npos) << st.message();
}

TEST(YamlReader, WrongTypeNamesFieldLineAndValue) {
  auto node = load_yaml_string("gpu:\n  memory_gib: lots\n", "c.yaml");
  ASSERT_TRUE(node.ok());
  YamlReader r(*node, "c.yaml");
  YamlReader gpu = r.child("gpu", true);
  double mem = 0;
  const Status st = gpu.required("memory_gib", mem);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("c.yaml:2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("gpu.memory_gib"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'lots' is not a number"), std::string::npos) << st.message();
}

TEST(YamlReader, MissingRequiredFieldIsAnError) {
  auto node = load_yaml_string("a: 1\n", "t.yaml");
  YamlReader r(*node, "t.yaml");
  int64_t b = 0;
  const Status st = r.required("b", b);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("missing required field 'b'"), std::string::npos);
}

TEST(YamlReader, SyntaxErrorNamesLineAndColumn) {
  auto node = load_yaml_string("a: [1, 2\nb: 3\n", "broken.yaml");
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.status().code(), ErrorCode::kParse);
  EXPECT_NE(node.status().message().find("broken.yaml:"), std::string::npos);
}

TEST(YamlReader, MissingFileIsNotFound) {
  auto node = load_yaml_file("/nonexistent/loom.yaml");
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.status().code(), ErrorCode::kNotFound);
}

TEST(YamlReader, DocumentThatIsNotAMappingIsRejected) {
  auto node = load_yaml_string("- 1\n- 2\n", "list.yaml");
  ASSERT_TRUE(node.ok());
  YamlReader r(*node, "list.yaml");
  EXPECT_FALSE(r.finish().ok());
  EXPECT_NE(r.status().message().find("must be a mapping"), std::string::npos);
}

}  // namespace
}  // namespace loom::core
