// The result table shared by the benchmarks.
#include "bench_table.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace bench {

namespace {

std::string ratioText(Value a, Value b) {
  if (!a || !b || *b == 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", *a / *b);
  return buf;
}

}  // namespace

std::string grouped(long long v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string number(Value v) {
  if (!v) return "n/a";
  double x = *v;
  char buf[64];
  if (std::fabs(x) >= 1000) return grouped(std::llround(x));
  if (x == std::floor(x)) return std::to_string(std::llround(x));  // counts, limits
  if (std::fabs(x) >= 100) std::snprintf(buf, sizeof buf, "%.0f", x);
  else if (std::fabs(x) >= 10) std::snprintf(buf, sizeof buf, "%.1f", x);
  else std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

void Table::anchor(const std::string& figure, Value v, const std::string& unit) {
  rows_.push_back({figure, v, unit, "", std::nullopt, "", std::nullopt, false});
}

void Table::ratio(const std::string& figure, Value v, const std::string& unit, const std::string& anchorName,
                  Value anchorValue, double minRatio) {
  Row r{figure, v, unit, anchorName, anchorValue, "", std::nullopt, minRatio > 0};
  if (minRatio > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "≥ %.2f", minRatio);
    r.target = buf;
    if (v && anchorValue && *anchorValue > 0) r.met = *v / *anchorValue >= minRatio;
  }
  rows_.push_back(r);
}

void Table::limit(const std::string& figure, Value v, const std::string& unit, double bound, bool strict) {
  Row r{figure, v, unit, "(absolute)", std::nullopt, "", std::nullopt, true};
  r.target = std::string(strict ? "< " : "≤ ") + number(bound) + " " + unit;
  if (v) r.met = strict ? *v < bound : *v <= bound;
  rows_.push_back(r);
}

void Table::print() const {
  const std::vector<std::string> head = {"figure", "value", "unit", "anchor", "anchor value", "ratio", "target", "met"};
  std::vector<std::vector<std::string>> cells;
  for (const Row& r : rows_) {
    bool isAnchor = r.anchor.empty();
    std::string met = !r.hasTarget ? "—" : r.met ? (*r.met ? "yes" : "no") : "n/a";
    cells.push_back({r.figure, number(r.value), r.unit, isAnchor ? "—" : r.anchor,
                     isAnchor || r.anchor == "(absolute)" ? "—" : number(r.anchorValue),
                     isAnchor || r.anchor == "(absolute)" ? "—" : ratioText(r.value, r.anchorValue),
                     r.target.empty() ? "—" : r.target, met});
  }
  std::vector<std::size_t> width(head.size());
  auto len = [](const std::string& s) {  // display width: count UTF-8 lead bytes
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  for (std::size_t i = 0; i < head.size(); ++i) width[i] = len(head[i]);
  for (const auto& row : cells)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], len(row[i]));
  auto line = [&](const std::vector<std::string>& row) {
    std::string out = "|";
    for (std::size_t i = 0; i < row.size(); ++i) {
      bool right = i == 1 || i == 4 || i == 5;
      std::string pad(width[i] - len(row[i]), ' ');
      out += ' ';
      if (right) out += pad;
      out += row[i];
      if (!right) out += pad;
      out += " |";
    }
    std::puts(out.c_str());
  };
  line(head);
  std::string sep = "|";
  for (std::size_t i = 0; i < head.size(); ++i) {
    bool right = i == 1 || i == 4 || i == 5;
    sep += right ? std::string(width[i] + 1, '-') + ":|" : std::string(width[i] + 2, '-') + "|";
  }
  std::puts(sep.c_str());
  for (const auto& row : cells) line(row);
}

void Table::summary() const {
  int met = 0, missed = 0, na = 0;
  for (const Row& r : rows_) {
    if (!r.hasTarget) continue;
    if (!r.met) ++na;
    else if (*r.met) ++met;
    else ++missed;
  }
  std::printf("targets: %d met, %d not met, %d n/a\n", met, missed, na);
}

std::string cpuModel() {
  std::string info = bench::readFile("/proc/cpuinfo");
  auto pos = info.find("model name");
  if (pos == std::string::npos) return "unknown CPU";
  pos = info.find(':', pos);
  auto end = info.find('\n', pos);
  return info.substr(pos + 2, end - pos - 2);
}

}  // namespace bench
