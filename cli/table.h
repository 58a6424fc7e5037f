// A plain-text table for terminal reports: columns are sized to their widest cell, numbers
// are right-aligned. Used by every `loom` command that prints results.
#pragma once

#include <string>
#include <vector>

namespace loom::cli {

class Table {
 public:
  enum class Align { kLeft, kRight };
  void add_column(std::string header, Align align = Align::kRight);
  void add_row(std::vector<std::string> cells);
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<Align> aligns_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace loom::cli
