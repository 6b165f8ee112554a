// The benchmarks' result table (ipcfs_bench, ipcfs_redis_bench): every figure with its
// anchor, the ratio, the target and whether it is met, printed as a Markdown table,
// then a "targets: N met, N not met, N n/a" line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bench.hpp"

namespace bench {

std::string grouped(long long v);  // 1234567 -> "1,234,567"
std::string number(Value v);       // "n/a", grouped above 1,000, else 2-3 significant digits
std::string cpuModel();            // from /proc/cpuinfo

class Table {
 public:
  void anchor(const std::string& figure, Value v, const std::string& unit);
  // value / anchorValue >= minRatio (or without a target when minRatio <= 0).
  void ratio(const std::string& figure, Value v, const std::string& unit, const std::string& anchorName,
             Value anchorValue, double minRatio);
  // An absolute bound: value < limit (strict) or value <= limit.
  void limit(const std::string& figure, Value v, const std::string& unit, double bound, bool strict);

  void print() const;
  void summary() const;

 private:
  struct Row {
    std::string figure;
    Value value;
    std::string unit;
    std::string anchor;       // "" for an anchor row
    Value anchorValue;
    std::string target;       // "" when the issue sets none
    std::optional<bool> met;  // nullopt: no target, or not measurable
    bool hasTarget = false;
  };
  std::vector<Row> rows_;
};

}  // namespace bench
